--#include shared/prelude.lua

local f = rpcall('HMGET', H, 'version', 'n')
--#include shared/header.lua

if not V then return 'missing' end
if not stale then
--#include shared/check_lens.lua

end
rcall('HSET', H, 'last_accessed_at', NOW)
--#include shared/expire_all.lua

return 'ok'
