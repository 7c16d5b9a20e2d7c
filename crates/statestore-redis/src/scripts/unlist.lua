
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and (ARGV[2] == '' or redis.call('HGET', KEYS[1], 'user_id') == ARGV[2]) then
  return 'ok 0'
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 'ok 1'
