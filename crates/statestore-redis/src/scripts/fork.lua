-- FORK: `fork(source, target)` when both sessions' keys share a slot
-- (always on a standalone server): a server-side copy with COPY (Redis >=
-- 6.2) in one atomic step. The source's remembered writes are not copied;
-- the target starts at version 1 with its own clocks and the store's TTL.
--
-- KEYS
--   1..5   the source's header, messages, summaries, metadata and
--          remembered writes (keys.rs: H, M, S, D, W below)
--   6..10  the target's, in the same order (TH, TM, TS, TD, TW)
-- ARGV
--   1     now, ms since the epoch (client clock; stored, never compared)
--   2     TTL in ms for every key, 0 for none (given to PEXPIRE as sent)
--   3     1 when the read of the source counts as an access (its
--         last_accessed_at and TTL move), else 0
--   4     where the client may re-send a call: a key the store made for
--         this call, as its field (g:<key>), remembered by the target so
--         that a re-send of a fork that ran replies ok 1; absent otherwise
--
-- Reply (one string)
--   ok 1
--   missing                no source
--   target <reply>         the target's state stands for <reply>:
--                          conflict <version> (it exists) or corrupt …
--   nocopy                 the server has no COPY; nothing written
--   corrupt <description>  a key of the wrong type, a torn session (a
--                          count the header records does not match), a
--                          malformed header or argument
--   schema <found>         the header is of a newer schema than this build's
-- or, when COPY fails otherwise, its error as it came.
--
--#include shared/prelude.lua

local TH, TM, TS, TD, TW = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local wfield = ARGV[4] or ''
local f = rpcall('HMGET', H, 'version', 'n')
--#include shared/header.lua

if not V then return 'missing' end
if not stale then
  --#include shared/check_lens.lua

end
-- A call re-sent by the client after it ran: the target remembers it.
if wfield ~= '' and type(rpcall('HGET', TW, wfield)) == 'string' then return 'ok 1' end
-- The target: absent, leftovers checked. Problems of the target are
-- reported as `target` and the reply they would be for it.
local t = rpcall('HGET', TH, 'version')
if type(t) == 'table' then return 'target ' .. wrong_type(TH, 'header', 'hash') end
if t then return 'target conflict ' .. t end
if rcall('EXISTS', TH) == 1 then return 'target corrupt its header has no integer schema and version' end
local leftovers = rcall('EXISTS', TM, TS, TD, TW) > 0
if leftovers then
  if type(rpcall('LLEN', TM)) == 'table' then return 'target ' .. wrong_type(TM, 'message list', 'list') end
  if type(rpcall('LLEN', TS)) == 'table' then return 'target ' .. wrong_type(TS, 'summary list', 'list') end
  if type(rpcall('HLEN', TD)) == 'table' then return 'target ' .. wrong_type(TD, 'metadata hash', 'hash') end
  if type(rpcall('HLEN', TW)) == 'table' then
    return 'target ' .. wrong_type(TW, 'remembered-writes', 'hash')
  end
end
-- Every check passed. The first COPY also tells whether the server has it.
local c = rpcall('COPY', H, TH)
if type(c) == 'table' then
  if string.find(string.lower(c.err), 'unknown', 1, true) then return 'nocopy' end
  return c
end
if leftovers then rcall('DEL', TM, TS, TD, TW) end
if nm ~= '0' then rcall('COPY', M, TM) end
if ns ~= '0' then rcall('COPY', S, TS) end
if nd ~= '0' then rcall('COPY', D, TD) end
local twg = '0'
if wfield ~= '' then
  -- The call's own key, so that a re-send finds the fork made.
  rcall('HSET', TW, '~', @RING_NOTE@, 'G0', string.sub(wfield, 3), wfield, '1 0 0')
  twg = '1'
end
rcall('HSET', TH, 'version', '1', 'n', s .. ' 1 ' .. nm .. ' ' .. ns .. ' ' .. nd .. ' 0 ' .. twg,
  'created_at', NOW, 'updated_at', NOW, 'last_accessed_at', NOW)
-- The target has no remembered writes, hence no rewrite mark (`r`).
if old_fields then
  rcall('HDEL', TH, 'r', 'cv', 'nm', 'ns', 'nd', 'wk', 'wg')
else
  rcall('HDEL', TH, 'r')
end
local ixkey, ixat, ixnew, ixwas, ixuser = TH, NOW, true, nil, nil
if IX ~= '' then ixuser = rcall('HGET', TH, 'user_id') end
--#include shared/index.lua

-- COPY copies each key's TTL: the target's restarts, or has none.
if TTL ~= '0' then
  rcall('PEXPIRE', TH, TTL)
  if nm ~= '0' then rcall('PEXPIRE', TM, TTL) end
  if ns ~= '0' then rcall('PEXPIRE', TS, TTL) end
  if nd ~= '0' then rcall('PEXPIRE', TD, TTL) end
  if twg ~= '0' then rcall('PEXPIRE', TW, TTL) end
else
  rcall('PERSIST', TH)
  if nm ~= '0' then rcall('PERSIST', TM) end
  if ns ~= '0' then rcall('PERSIST', TS) end
  if nd ~= '0' then rcall('PERSIST', TD) end
end
if ARGV[3] == '1' then
  rcall('HSET', H, 'last_accessed_at', NOW)
  --#include shared/expire_all.lua

end
return 'ok 1'
