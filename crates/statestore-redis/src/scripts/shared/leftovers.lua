-- For a session without a header: checks the keys a write would create,
-- in case an earlier session left some behind.
--
-- Uses: M, S, D, W.
-- Sets: leftovers (a local the script declares): whether any leftover
--   exists, to be deleted by a write.
-- Returns: corrupt when a leftover holds a type this crate never writes
--   there.

leftovers = rcall('EXISTS', M, S, D, W) > 0
if leftovers then
  if type(rpcall('LLEN', M)) == 'table' then return wrong_type(M, 'message list', 'list') end
  if type(rpcall('LLEN', S)) == 'table' then return wrong_type(S, 'summary list', 'list') end
  if type(rpcall('HLEN', D)) == 'table' then return wrong_type(D, 'metadata hash', 'hash') end
  if type(rpcall('HLEN', W)) == 'table' then return wrong_type(W, 'remembered-writes', 'hash') end
end
