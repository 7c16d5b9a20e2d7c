
if want == 'n' then
  if V then return 'conflict ' .. V end
elseif want ~= 'a' and V ~= want then
  return 'conflict ' .. (V or '-1')
end
