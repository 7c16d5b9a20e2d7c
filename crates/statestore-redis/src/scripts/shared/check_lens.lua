-- The three length checks of a current header: each of the message list,
-- summary list and metadata hash that the header counts as non-empty must
-- hold exactly that many entries (shared/check_len.lua).
--
-- Uses: nm, ns, nd (shared/header.lua).
-- Returns: corrupt.

if nm ~= '0' then
  --#include shared/check_len.lua key='M' count='nm' cmd='LLEN' role='message list' want='list'
end
if ns ~= '0' then
  --#include shared/check_len.lua key='S' count='ns' cmd='LLEN' role='summary list' want='list'
end
if nd ~= '0' then
  --#include shared/check_len.lua key='D' count='nd' cmd='HLEN' role='metadata hash' want='hash'
end
