
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
