--#include shared/prelude.lua
--#include shared/write_key.lua

local f = rpcall('HMGET', H, 'version', 'n', 'user_id')
--#include shared/header.lua

if not V then return 'missing' end
if not stale then
--#include shared/check_len.lua key='M' count='nm' cmd='LLEN' role='message list' want='list'
--#include shared/check_len.lua key='S' count='ns' cmd='LLEN' role='summary list' want='list'

  if nd ~= '0' or #ARGV > 7 then
--#include shared/check_len.lua key='D' count='nd' cmd='HLEN' role='metadata hash' want='hash'

  end
end
--#include shared/replayed_call.lua
--#include shared/expect.lua

local first, last, total = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(nm)
if first >= last or last > total then return 'range ' .. nm end
-- Every check passed: write.
rcall('RPUSH', S, ARGV[6])
ns = tostring(tonumber(ns) + 1)
if #ARGV > 7 then
  local first_del = 8 + 2 * tonumber(ARGV[7])
--#include shared/merge_patch.lua set='8' set_last='first_del - 1' del='first_del' last='#ARGV'

end
local nv = tostring(tonumber(V) + 1)
--#include shared/remember_call.lua
--#include shared/bump.lua
--#include shared/expire_all.lua

return 'ok ' .. nv
