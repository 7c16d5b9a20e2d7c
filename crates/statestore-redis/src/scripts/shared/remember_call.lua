-- Remembers a call's own key (wfield, shared/replayed_call.lua) with its
-- outcome, the new version nv: "<version> 0 0" in ring slot wslot of the
-- store keys, forgetting the key that slot held (wevict). Creates the hash
-- with @RING_NOTE@ (scripts.rs). Runs before the header is written
-- (shared/bump.lua records wg).
--
-- Uses: wfield, wslot, wevict, nv, wk, wg, stale, W.
-- Sets: wg, one more when a key was remembered.

if wfield ~= '' then
  if wevict then rcall('HDEL', W, 'g:' .. wevict) end
  if (wk == '0' and wg == '0') or stale then
    rcall('HSET', W, '~', @RING_NOTE@)
  end
  rcall('HSET', W, wslot, string.sub(wfield, 3), wfield, nv .. ' 0 0')
  wg = tostring(tonumber(wg) + 1)
end
