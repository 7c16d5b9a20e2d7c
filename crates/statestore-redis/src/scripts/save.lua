-- SAVE: `save_with(state, options)`. Replaces everything but created_at
-- and the remembered writes, which keep their keys but lose their positions
-- (the header's r, see shared/remembered.lua). A maintenance save
-- (Save::keep_clocks) of an existing session also keeps updated_at,
-- last_accessed_at and the expiry: the header's expiry time (PEXPIRETIME;
-- on Redis 6.2 its remaining PTTL), read before the keys are rewritten, is
-- given to every key in place of ARGV 2 (none when the header had none).
--
-- KEYS
--   1..5  the session's header, messages, summaries, metadata and
--         remembered writes (keys.rs: H, M, S, D, W below), one slot
-- ARGV
--   1     now, ms since the epoch (client clock; stored, never compared)
--   2     TTL in ms for every key, 0 for none (given to PEXPIRE as sent)
--   3     the expectation, and maybe the call's own key (shared/write_key.lua)
--   4     created_at, for a new session
--   5, 6  1 and the user id, or 0 and ''
--   7, 8  1 and the system prompt, or 0 and ''
--   9..12 the numbers of messages, summaries, metadata pairs and counters
--   then  the messages; the summaries; the metadata as field, value pairs
--         (values JSON text); the counters as name, value pairs
--   then  the number of remembered writes the state carries in, and each as
--         field (k:<key>), message count: remembered when the session does
--         not remember the key yet, as "0 0 <count>" (version 0: positions
--         unknown, RememberedWrite::carried)
--   last  k for a maintenance save, else -
--
-- Reply (one string)
--   ok <version>           also for a re-send of a save that ran
--   conflict <version>     the expectation failed (-1: no session)
--   corrupt <description>  a key of the wrong type, a torn session (a
--                          count the header records does not match), a
--                          malformed header or argument
--   schema <found>         the header is of a newer schema than this build's
--
--#include shared/prelude.lua
--#include shared/write_key.lua

local f = rpcall('HMGET', H, 'version', 'n', 'created_at', 'user_id')
--#include shared/header.lua

local leftovers = false
if V then
  if not stale then
    --#include shared/check_lens.lua

  end
else
  --#include shared/leftovers.lua

  wk, wg = '0', '0'
end
--#include shared/replayed_call.lua
--#include shared/expect.lua

nm, ns, nd = ARGV[9], ARGV[10], ARGV[11]
local nc = tonumber(ARGV[12])
local nv = '1'
if V then nv = tostring(tonumber(V) + 1) end
local i = 13 + tonumber(nm) + tonumber(ns) + 2 * tonumber(nd)
local cw = i + 2 * nc
local ncw = tonumber(ARGV[cw])
if ncw > 0 and V and type(rpcall('HLEN', W)) == 'table' then
  return wrong_type(W, 'remembered-writes', 'hash')
end
-- A maintenance save keeps the clocks of the session it replaces.
local up, acc = NOW, NOW
if V and ARGV[cw + 2 * ncw + 1] == 'k' then
  local c = rcall('HMGET', H, 'updated_at', 'last_accessed_at')
  up, acc = c[1] or NOW, c[2] or NOW
  -- The expiry as an absolute time where the server tells it (Redis 7:
  -- exact to the millisecond), else as the time left.
  local at = rpcall('PEXPIRETIME', H)
  if type(at) == 'number' then
    if at > 0 then TTL, EXPIRE = tostring(at), 'PEXPIREAT' else TTL = '0' end
  else
    local left = rcall('PTTL', H)
    if left > 0 then TTL = tostring(left) else TTL = '0' end
  end
end
-- Every check passed: write.
if leftovers then rcall('DEL', W) end
if ncw > 0 then
  -- Carried-in writes take the next caller-ring slots, as an append's do.
  if rcall('EXISTS', W) == 0 then
    rcall('HSET', W, '~', @RING_NOTE@)
  end
  local q = tonumber(wk)
  for k = cw + 1, cw + 2 * ncw - 1, 2 do
    local field = ARGV[k]
    if rcall('HEXISTS', W, field) == 0 then
      local slot = 'K' .. (q % 64)
      local old = rcall('HGET', W, slot)
      if old then rcall('HDEL', W, 'k:' .. old) end
      rcall('HSET', W, slot, string.sub(field, 3), field, '0 0 ' .. ARGV[k + 1])
      q = q + 1
    end
  end
  wk = tostring(q)
end
--#include shared/remember_call.lua

local h = { 'schema', SCHEMA, 'version', nv, 'created_at', f[3] or ARGV[4], 'updated_at', up,
  'last_accessed_at', acc, 'n', SCHEMA .. ' ' .. nv .. ' ' .. nm .. ' ' .. ns .. ' ' .. nd .. ' ' .. wk .. ' ' .. wg }
-- Remembered writes keep their keys but lose their positions (`r`).
if wk ~= '0' or wg ~= '0' then h[#h + 1], h[#h + 2] = 'r', nv end
if ARGV[5] == '1' then h[#h + 1], h[#h + 2] = 'user_id', ARGV[6] end
if ARGV[7] == '1' then h[#h + 1], h[#h + 2] = 'system_prompt', ARGV[8] end
for k = i, i + 2 * nc - 1, 2 do
  h[#h + 1], h[#h + 2] = 'c:' .. ARGV[k], ARGV[k + 1]
end
rcall('DEL', H, M, S, D)
local pushed = 0
--#include shared/push.lua cmd='RPUSH' key='M' list='ARGV' first='13' last='12 + tonumber(nm)'
--#include shared/push.lua cmd='RPUSH' key='S' list='ARGV' first='13 + tonumber(nm)' last='12 + tonumber(nm) + tonumber(ns)'
--#include shared/push.lua cmd='HSET' key='D' list='ARGV' first='13 + tonumber(nm) + tonumber(ns)' last='12 + tonumber(nm) + tonumber(ns) + 2 * tonumber(nd)'
--#include shared/push.lua cmd='HSET' key='H' list='h' first='1' last='#h'

local ixkey, ixat, ixnew, ixwas, ixuser = H, up, not V, f[4], nil
if ARGV[5] == '1' then ixuser = ARGV[6] end
--#include shared/index.lua
--#include shared/expire_all.lua

return 'ok ' .. nv
