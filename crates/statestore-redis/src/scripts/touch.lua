-- TOUCH: `touch(id)`. Updates last_accessed_at and restarts the TTL of
-- every key; running it twice does what running it once does.
--
-- KEYS
--   1..5  the session's header, messages, summaries, metadata and
--         remembered writes (keys.rs: H, M, S, D, W below), one slot
-- ARGV
--   1     now, ms since the epoch (client clock; stored, never compared)
--   2     TTL in ms for every key, 0 for none (given to PEXPIRE as sent)
--
-- Reply (one string)
--   ok
--   missing                no session
--   corrupt <description>  a key of the wrong type, a torn session (a
--                          count the header records does not match), a
--                          malformed header or argument
--   schema <found>         the header is of a newer schema than this build's
--
--#include shared/prelude.lua

local f = rpcall('HMGET', H, 'version', 'n')
--#include shared/header.lua

if not V then return 'missing' end
if not stale then
  --#include shared/check_lens.lua

end
rcall('HSET', H, 'last_accessed_at', NOW)
--#include shared/expire_all.lua

return 'ok'
