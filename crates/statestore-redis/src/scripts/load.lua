-- LOAD: the check a load of a session whose header is of an older layout
-- (its counts not current; read.rs) runs first in its MULTI/EXEC
-- transaction (store.rs), before plain HGETALL/LRANGE reads of the keys:
-- reads the header, adopting its counts from the keys' lengths, and, when
-- the read counts as an access, checks that no key is torn and then updates
-- last_accessed_at and the TTL. A read that is not an access writes
-- nothing. Every other load is plain reads alone (read.rs).
--
-- KEYS
--   1..5  the session's header, messages, summaries, metadata and
--         remembered writes (keys.rs: H, M, S, D, W below), one slot
-- ARGV
--   1     now, ms since the epoch (client clock; stored, never compared)
--   2     TTL in ms for every key, 0 for none (given to PEXPIRE as sent);
--         or - when the read is not an access (reads do not slide, or a
--         maintenance read, Load::keep_clocks): nothing is written
--   3     a caller key to look up, as its field (k:<key>), '' for none
--
-- Reply (one string)
--   ok <nm> <ns> <nd> [<rewritten> <version> <first> <count> [<token>]]
--                          the counts of messages, summaries and metadata
--                          fields the transaction's reads must match; then,
--                          when the key is remembered, what its write did
--                          (shared/remembered.lua)
--   missing                no session
--   corrupt <description>  a key of the wrong type, a torn session (a
--                          count the header records does not match), a
--                          malformed header or argument
--   schema <found>         the header is of a newer schema than this build's
--
--#include shared/prelude.lua

local f = rpcall('HMGET', H, 'version', 'n')
--#include shared/header.lua

if not V then
  local leftovers
  --#include shared/leftovers.lua

  return 'missing'
end
local access = TTL ~= '-'
if access and not stale then
  --#include shared/check_lens.lua

end
local reply = 'ok ' .. nm .. ' ' .. ns .. ' ' .. nd
if ARGV[3] ~= '' and wk ~= '0' then
  local w = rpcall('HMGET', W, ARGV[3], 'K' .. ((tonumber(wk) - 1) % 64))
  if w.err then return wrong_type(W, 'remembered-writes', 'hash') end
  if not w[2] then
    return 'corrupt its header records remembered writes but they are gone: a key was ' ..
      'evicted or changed outside this library (see maxmemory-policy in the crate docs)'
  end
  if w[1] then
    local w1 = w[1]
    --#include shared/remembered.lua

    reply = reply .. ' ' .. rec
  end
end
if access then
  rcall('HSET', H, 'last_accessed_at', NOW)
  --#include shared/expire_all.lua

end
return reply
