
local done = redis.pcall('HEXISTS', KEYS[1], ARGV[1])
if done == 1 then return 'ok' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 'ok'
