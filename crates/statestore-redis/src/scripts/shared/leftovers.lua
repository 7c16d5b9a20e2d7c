
leftovers = rcall('EXISTS', M, S, D, W) > 0
if leftovers then
  if type(rpcall('LLEN', M)) == 'table' then return wrong_type(M, 'message list', 'list') end
  if type(rpcall('LLEN', S)) == 'table' then return wrong_type(S, 'summary list', 'list') end
  if type(rpcall('HLEN', D)) == 'table' then return wrong_type(D, 'metadata hash', 'hash') end
  if type(rpcall('HLEN', W)) == 'table' then return wrong_type(W, 'remembered-writes', 'hash') end
end
