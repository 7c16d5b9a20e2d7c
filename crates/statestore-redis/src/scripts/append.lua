-- APPEND: `append_with(id, append)`. Appends messages to a session,
-- creating it when it does not exist; adds to counters in the header and
-- merges a metadata patch; remembers the call under its key, so that a
-- repeat is a replay. Every check runs before the first write; the key is
-- looked up after the integrity checks and before the expectation, so a
-- repeat is a replay whatever it expects.
--
-- KEYS
--   1..5  the session's header, messages, summaries, metadata and
--         remembered writes (keys.rs: H, M, S, D, W below), one slot
--   6     only for an append under a caller's key: its progress hash
--         (keys.rs), whose entry for the key the write removes
-- ARGV
--   1     now, ms since the epoch (client clock; stored, never compared)
--   2     TTL in ms for every key, 0 for none (given to PEXPIRE as sent)
--   3     the expectation: a (any), n (must not exist) or the exact version
--   4     max messages per session, -1 for no limit
--   5     the key as its field in the remembered writes: k:<key> (the
--         caller's), g:<key> (one the store made), '' (none); preceded by a
--         decimal token and a space where the client may re-send the call
--         (kept with the write, so a re-send's replay is known as its own)
--   6     C, the number of counters; "C P Q" when the append carries a
--         metadata patch (Append::metadata): P fields to set, Q to delete.
--         Without a patch it is C alone, so the hot path pays nothing.
--   7     the number of messages
--   8 ..                the counters' header fields (c:<name>), C of them
--   8+C ..              their increments (decimal, at most i64::MAX), C
--   8+2C ..             the patch's field, value pairs (JSON text), 2P
--   8+2C+2P ..          the patch's fields to delete (its nulls), Q
--   8+2C+2P+Q .. #ARGV  the messages
-- The patch is merged only after every check passed (a replay, conflict or
-- too_large merges nothing); the metadata hash is length-checked first
-- whenever a patch writes it.
--
-- Reply (one string)
--   ok <version> <first position> <messages>
--   replayed <rewritten> <version> <first> <count> [<token>]
--                          the key is remembered: what that write did
--                          (shared/remembered.lua), having written nothing
--                          but the access time
--   conflict <version>     the expectation failed (-1: no session)
--   too_large <messages>   the count the append would have led to
--   corrupt <description>  a key of the wrong type, a torn session (a
--                          count the header records does not match), a
--                          malformed header or argument
--   schema <found>         the header is of a newer schema than this build's
--
--#include shared/prelude.lua
--#include shared/write_key.lua

local RING_NOTE = @RING_NOTE@
local nc, field, token, np, nq = tonumber(ARGV[6]), ARGV[5], '', 0, 0
if not nc then
  -- `<C> <P> <Q>`: the append carries a metadata patch (see ARGV 6).
  local c, p, q = string.match(ARGV[6], '^(%d+) (%d+) (%d+)$')
  if not c then return 'corrupt an append with malformed argument counts' end
  nc, np, nq = tonumber(c), tonumber(p), tonumber(q)
end
do
  -- `<token> <field>`: a token this call's client made (see ARGV 5).
  local b = string.byte(field)
  if b and b >= 48 and b <= 57 then
    local sp = string.find(field, ' ', 1, true)
    if not sp then return 'corrupt an append key without its field' end
    token, field = ' ' .. string.sub(field, 1, sp - 1), string.sub(field, sp + 1)
  end
end
local f
if nc == 0 then
  f = rpcall('HMGET', H, 'version', 'n', 'user_id')
else
  f = rpcall('HMGET', H, 'version', 'n', 'user_id', unpack(ARGV, 8, 7 + nc))
end
--#include shared/header.lua

local count = #ARGV - 7 - 2 * nc - 2 * np - nq
local first, evict, slot, leftovers = nil, nil, nil, false
if V then
  first = tonumber(nm)
  if not stale then
    local l = rpcall('LLEN', M)
    if type(l) == 'table' then return wrong_type(M, 'message list', 'list') end
    if l ~= first then return torn('message list entries', nm, l) end
    if ns ~= '0' then
      --#include shared/check_len.lua key='S' count='ns' cmd='LLEN' role='summary list' want='list'

    end
    -- The metadata hash: checked when counted, or when a patch writes it.
    if nd ~= '0' or np + nq > 0 then
      --#include shared/check_len.lua key='D' count='nd' cmd='HLEN' role='metadata hash' want='hash'

    end
  end
  if field ~= '' then
    -- Remembered writes: caller keys ('k', 64 deep = REMEMBERED_WRITES) and
    -- keys the store made for unkeyed appends ('g', 64 deep too). The key, the
    -- ring slot this write takes, and the newest slot (which must exist
    -- when the header records remembered writes).
    local qk, qg = tonumber(wk), tonumber(wg)
    local newest
    if qk > 0 then newest = 'K' .. ((qk - 1) % 64) elseif qg > 0 then newest = 'G' .. ((qg - 1) % 64) end
    if string.byte(field) == 107 then slot = 'K' .. (qk % 64) else slot = 'G' .. (qg % 64) end
    local w = rpcall('HMGET', W, field, slot, newest or slot)
    if w.err then return wrong_type(W, 'remembered-writes', 'hash') end
    if newest and not w[3] then
      return 'corrupt its header records remembered writes but they are gone: a key was ' ..
        'evicted or changed outside this library (see maxmemory-policy in the crate docs)'
    end
    if w[1] then
      local w1 = w[1]
      --#include shared/remembered.lua

      rcall('HSET', H, 'last_accessed_at', NOW)
      --#include shared/expire_all.lua

      return 'replayed ' .. rec
    end
    evict = w[2]
  end
  --#include shared/expect.lua

else
  --#include shared/leftovers.lua
  --#include shared/expect.lua

  s, nm, ns, nd, wk, wg, first = SCHEMA, '0', '0', '0', '0', '0', 0
  if field ~= '' then
    if string.byte(field) == 107 then slot = 'K0' else slot = 'G0' end
  end
end
if ARGV[4] ~= '-1' and first + count > tonumber(ARGV[4]) then return 'too_large ' .. (first + count) end
-- Counters: check every value before the first write.
local dec_le, dec_add
if nc > 0 then
  -- Decimal strings without leading zeros: a <= b.
  dec_le = function(a, b)
    if #a ~= #b then return #a < #b end
    return a <= b
  end
  -- a + b for decimal strings, exactly.
  dec_add = function(a, b)
    local out, carry, i, j = {}, 0, #a, #b
    while i > 0 or j > 0 or carry > 0 do
      local d = carry
      if i > 0 then d = d + string.byte(a, i) - 48 end
      if j > 0 then d = d + string.byte(b, j) - 48 end
      table.insert(out, 1, d % 10)
      carry = (d - d % 10) / 10
      i, j = i - 1, j - 1
    end
    return table.concat(out)
  end
  for i = 1, nc do
    local cur = f[3 + i]
    -- A value as HINCRBY keeps it: '0' or 1-19 digits up to i64::MAX.
    if cur and not (cur == '0' or (string.find(cur, '^[1-9]%d*$') and dec_le(cur, '9223372036854775807'))) then
      return 'corrupt its counter ' .. string.sub(ARGV[7 + i], 3) .. ' is not an integer from 0 to 2^63-1'
    end
  end
end
-- Every check passed: write.
if leftovers then rcall('DEL', M, S, D, W) end
local pushed = 0
--#include shared/push.lua cmd='RPUSH' key='M' list='ARGV' first='8 + 2 * nc + 2 * np + nq' last='#ARGV'

local old_nm = nm
if count > 0 then nm = tostring(first + count) end
for i = 1, nc do
  local cur, delta = f[3 + i] or '0', ARGV[7 + nc + i]
  if #cur < 18 and #delta < 18 then
    rcall('HINCRBY', H, ARGV[7 + i], delta)
  else
    local sum = dec_add(cur, delta)
    if not dec_le(sum, '9223372036854775807') then sum = '9223372036854775807' end
    rcall('HSET', H, ARGV[7 + i], sum)
  end
end
if np + nq > 0 then
  local mset, mdel = 8 + 2 * nc, 8 + 2 * nc + 2 * np
  --#include shared/merge_patch.lua set='mset' set_last='mdel - 1' del='mdel' last='mdel + nq - 1'

end
local nv = '1'
if V then nv = tostring(tonumber(V) + 1) end
local outcome = nv .. ' ' .. old_nm .. ' ' .. ARGV[7]
if field ~= '' then
  if evict then rcall('HDEL', W, string.sub(field, 1, 2) .. evict) end
  if (wk == '0' and wg == '0') or stale then
    -- A new hash (or one an older version made): with a value over 64
    -- bytes (hash-max-listpack-value) Redis keeps it as a hash table, so
    -- looking a key up costs O(1), not a scan of its 128 entries.
    rcall('HSET', W, '~', RING_NOTE, slot, string.sub(field, 3), field, outcome .. token)
  else
    rcall('HSET', W, slot, string.sub(field, 3), field, outcome .. token)
  end
  if string.byte(field) == 107 then wk = tostring(tonumber(wk) + 1) else wg = tostring(tonumber(wg) + 1) end
  -- The progress recorded under a caller's key is done with.
  if KEYS[6] then rcall('HDEL', KEYS[6], field) end
end
--#include shared/bump.lua
--#include shared/expire_all.lua

return 'ok ' .. outcome
