-- PENDING: `put_pending(id, key, pending)`. Records the progress of an
-- execute under a caller's key, unless the key's write is already
-- remembered (then the progress is done with).
--
-- KEYS
--   1     the session's remembered-writes hash (keys.rs)
--   2     its progress hash
-- ARGV
--   1     the key's field, k:<key>
--   2     the progress, as JSON
--   3     the TTL in ms, 0 for none
--
-- Reply (one string)
--   ok

local done = redis.pcall('HEXISTS', KEYS[1], ARGV[1])
if done == 1 then return 'ok' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 'ok'
