--#include shared/prelude.lua

local f = rpcall('HMGET', H, 'version', 'n')
--#include shared/header.lua

if not V then
  local leftovers
--#include shared/leftovers.lua

  return 'missing'
end
local access = TTL ~= '-'
if access and not stale then
--#include shared/check_lens.lua

end
local reply = 'ok ' .. nm .. ' ' .. ns .. ' ' .. nd
if ARGV[3] ~= '' and wk ~= '0' then
  local w = rpcall('HMGET', W, ARGV[3], 'K' .. ((tonumber(wk) - 1) % 64))
  if w.err then return wrong_type(W, 'remembered-writes', 'hash') end
  if not w[2] then
    return 'corrupt its header records remembered writes but they are gone: a key was ' ..
      'evicted or changed outside this library (see maxmemory-policy in the crate docs)'
  end
  if w[1] then
    local w1 = w[1]
--#include shared/remembered.lua

    reply = reply .. ' ' .. rec
  end
end
if access then
  rcall('HSET', H, 'last_accessed_at', NOW)
--#include shared/expire_all.lua

end
return reply
