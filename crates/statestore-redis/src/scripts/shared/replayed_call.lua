-- For a call that carries a key of its own (wfield, shared/write_key.lua):
-- when the session remembers it, the call ran before and this is the
-- client's re-send. Runs after the header and before the expectation, so a
-- re-send is never a conflict.
--
-- Uses: wfield, wg, V, W.
-- Defines: wslot (the store-ring slot the call will take), wevict (the key
--   that slot held).
-- Returns: ok <version>, that run's outcome, having written nothing;
--   corrupt when the remembered writes are not a hash.

local wslot, wevict
if wfield ~= '' then
  wslot = 'G' .. (tonumber(wg) % 64)
  if V then
    local w = rpcall('HMGET', W, wfield, wslot)
    if w.err then return wrong_type(W, 'remembered-writes', 'hash') end
    if w[1] then return 'ok ' .. string.match(w[1], '^%d+') end
    wevict = w[2]
  end
end
