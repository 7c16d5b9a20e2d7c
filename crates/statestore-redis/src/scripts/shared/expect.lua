-- Checks the expectation want (shared/write_key.lua) against V
-- (shared/header.lua).
--
-- Returns: conflict <version> when it fails (-1: no session).

if want == 'n' then
  if V then return 'conflict ' .. V end
elseif want ~= 'a' and V ~= want then
  return 'conflict ' .. (V or '-1')
end
