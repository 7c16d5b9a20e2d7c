-- Records a write in the header: the new version, the counts in n, the
-- timestamps; creates the header when V is nil, and deletes the fields of
-- an older layout. Then moves the session to the front of the list indexes
-- (shared/index.lua; its owner, f[3] — every script that bumps reads
-- `HMGET H version n user_id …` — does not change).
--
-- Uses: nv (the new version, a string), V, s, nm, ns, nd, wk, wg,
--   old_fields, f, H, NOW, SCHEMA.

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
