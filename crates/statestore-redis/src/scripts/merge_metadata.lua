--#include shared/prelude.lua
--#include shared/write_key.lua

local f = rpcall('HMGET', H, 'version', 'n', 'user_id')
--#include shared/header.lua

local leftovers = false
if V then
  if not stale then
    if nm ~= '0' then
--#include shared/check_len.lua key='M' count='nm' cmd='LLEN' role='message list' want='list'

    end
    if ns ~= '0' then
--#include shared/check_len.lua key='S' count='ns' cmd='LLEN' role='summary list' want='list'

    end
--#include shared/check_len.lua key='D' count='nd' cmd='HLEN' role='metadata hash' want='hash'

  end
else
--#include shared/leftovers.lua

  s, nm, ns, nd, wk, wg = SCHEMA, '0', '0', '0', '0', '0'
end
--#include shared/replayed_call.lua
--#include shared/expect.lua

-- Every check passed: write.
if leftovers then rcall('DEL', M, S, D, W) end
local first_del = 5 + 2 * tonumber(ARGV[4])
--#include shared/merge_patch.lua set='5' set_last='first_del - 1' del='first_del' last='#ARGV'

local nv = '1'
if V then nv = tostring(tonumber(V) + 1) end
--#include shared/remember_call.lua
--#include shared/bump.lua
--#include shared/expire_all.lua

return 'ok ' .. nv
