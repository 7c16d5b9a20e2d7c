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
--   1        the arguments A below, packed: a MessagePack stream of strings
--            (call.rs, Packed), unpacked by cmsgpack.unpack — for Redis
--            ~0.3k instructions a string, where an ARGV entry costs ~1k
--   2 ..     the messages
-- A (strings)
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
--   8+2C+2P .. #A       the patch's fields to delete (its nulls), Q
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

-- The prelude took NOW and TTL from ARGV 1 and 2, where the other scripts
-- have them; here they are in A.
local A = { cmsgpack.unpack(ARGV[1]) }
NOW, TTL = A[1], A[2]
local want = A[3]
local RING_NOTE = @RING_NOTE@
local nc, field, token, np, nq = tonumber(A[6]), A[5], '', 0, 0
if not nc then
  -- `<C> <P> <Q>`: the append carries a metadata patch (see A 6).
  local c, p, q = string.match(A[6], '^(%d+) (%d+) (%d+)$')
  if not c then return 'corrupt an append with malformed argument counts' end
  nc, np, nq = tonumber(c), tonumber(p), tonumber(q)
end
do
  -- `<token> <field>`: a token this call's client made (see A 5).
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
  f = rpcall('HMGET', H, 'version', 'n', 'user_id', unpack(A, 8, 7 + nc))
end
--#include shared/header.lua

local count = #ARGV - 1
local first, evict, slot, leftovers = nil, nil, nil, false
if V then
  first = tonumber(nm)
  if not stale then
    -- The message list's length is checked by the push below (its reply),
    -- which is undone when it is not the count recorded; an append of no
    -- messages checks it here.
    if count == 0 then
      local l = rpcall('LLEN', M)
      if type(l) == 'table' then return wrong_type(M, 'message list', 'list') end
      if l ~= first then return torn('message list entries', nm, l) end
    end
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
    if qk > 0 then newest = string.format('K%d', (qk - 1) % 64)
    elseif qg > 0 then newest = string.format('G%d', (qg - 1) % 64) end
    if string.byte(field) == 107 then slot = string.format('K%d', qk % 64)
    else slot = string.format('G%d', qg % 64) end
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
if A[4] ~= '-1' and first + count > tonumber(A[4]) then return 'too_large ' .. (first + count) end
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
      return 'corrupt its counter ' .. string.sub(A[7 + i], 3) .. ' is not an integer from 0 to 2^63-1'
    end
  end
end
-- Every check passed but the message list's length: write. The push comes
-- first, and its reply, the list's new length, must be the count recorded
-- plus the messages pushed; when it is not (a torn session, or a key of the
-- wrong type: nothing pushed), it is undone before anything else is
-- written, so nothing is (a script is atomic: nobody sees the push).
if leftovers then rcall('DEL', M, S, D, W) end
local old_nm = nm
if count > 0 then
  local len, i, last = 0, 2, #ARGV
  while i <= last do
    -- In chunks of 1,000 (below Lua's unpack limit).
    local j = i + 999
    if j > last then j = last end
    local r = rpcall('RPUSH', M, unpack(ARGV, i, j))
    if type(r) == 'table' then
      if string.find(r.err, 'WRONGTYPE', 1, true) then return wrong_type(M, 'message list', 'list') end
      return r
    end
    len, i = r, j + 1
  end
  if len ~= first + count then
    if len == count then rcall('DEL', M) else rcall('LTRIM', M, 0, len - count - 1) end
    return torn('message list entries', nm, len - count)
  end
  nm = string.format('%d', len)
end
for i = 1, nc do
  local cur, delta = f[3 + i] or '0', A[7 + nc + i]
  if #cur < 18 and #delta < 18 then
    rcall('HINCRBY', H, A[7 + i], delta)
  else
    local sum = dec_add(cur, delta)
    if not dec_le(sum, '9223372036854775807') then sum = '9223372036854775807' end
    rcall('HSET', H, A[7 + i], sum)
  end
end
if np + nq > 0 then
  local mset, mdel = 8 + 2 * nc, 8 + 2 * nc + 2 * np
  --#include shared/merge_patch.lua list='A' set='mset' set_last='mdel - 1' del='mdel' last='mdel + nq - 1'

end
local nv = '1'
if V then nv = string.format('%d', tonumber(V) + 1) end
local outcome = nv .. ' ' .. old_nm .. ' ' .. A[7]
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
  if string.byte(field) == 107 then wk = string.format('%d', tonumber(wk) + 1)
  else wg = string.format('%d', tonumber(wg) + 1) end
  -- The progress recorded under a caller's key is done with.
  if KEYS[6] then rcall('HDEL', KEYS[6], field) end
end
--#include shared/bump.lua
--#include shared/expire_all.lua

return 'ok ' .. outcome
