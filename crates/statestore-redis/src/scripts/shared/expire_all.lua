-- Restarts the TTL of every key of the session that exists, by the counts
-- as the script leaves them. TTL '0': no expiry, nothing sent.
--
-- Uses: EXPIRE, TTL, H, M, S, D, W, and nm, ns, nd, wk, wg (strings).

if TTL ~= '0' then
  rcall(EXPIRE, H, TTL)
  if nm ~= '0' then rcall(EXPIRE, M, TTL) end
  if ns ~= '0' then rcall(EXPIRE, S, TTL) end
  if nd ~= '0' then rcall(EXPIRE, D, TTL) end
  if wk ~= '0' or wg ~= '0' then rcall(EXPIRE, W, TTL) end
end
