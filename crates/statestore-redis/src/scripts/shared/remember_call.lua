
if wfield ~= '' then
  if wevict then rcall('HDEL', W, 'g:' .. wevict) end
  if (wk == '0' and wg == '0') or stale then
    rcall('HSET', W, '~', @RING_NOTE@)
  end
  rcall('HSET', W, wslot, string.sub(wfield, 3), wfield, nv .. ' 0 0')
  wg = tostring(tonumber(wg) + 1)
end
