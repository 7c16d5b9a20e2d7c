
do
  local l = rpcall('@cmd@', @key@)
  if type(l) == 'table' then return wrong_type(@key@, '@role@', '@want@') end
  if l ~= tonumber(@count@) then return torn('@role@ entries', @count@, l) end
end
