
local packed = s .. ' ' .. nv .. ' ' .. nm .. ' ' .. ns .. ' ' .. nd .. ' ' .. wk .. ' ' .. wg
local ixkey, ixat, ixnew, ixwas, ixuser = H, NOW, not V, nil, nil
if V then
  rcall('HSET', H, 'version', nv, 'n', packed, 'updated_at', NOW, 'last_accessed_at', NOW)
  if old_fields then rcall('HDEL', H, 'cv', 'nm', 'ns', 'nd', 'wk', 'wg') end
  ixuser, ixwas = f[3], f[3]
else
  rcall('HSET', H, 'schema', SCHEMA, 'version', nv, 'n', packed, 'created_at', NOW,
    'updated_at', NOW, 'last_accessed_at', NOW)
end
--#include shared/index.lua
