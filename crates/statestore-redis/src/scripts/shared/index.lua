
if IX ~= '' then
  local id = string.match(ixkey, '{(.*)}')
  if string.find(id, '%', 1, true) then
    id = (string.gsub(id, '%%(%x%x)', { ['25'] = '%', ['7B'] = '{', ['7D'] = '}' }))
  end
  rcall('ZADD', IX .. '}:recent', ixat, id)
  if ixnew then rcall('ZADD', IX .. '}:ids', 0, id) end
  if ixwas and ixwas ~= ixuser then
    local k = IX .. ':' .. (string.gsub(ixwas, '[%%{}]', { ['%'] = '%25', ['{'] = '%7B', ['}'] = '%7D' }))
    rcall('ZREM', k .. '}:recent', id)
    rcall('ZREM', k .. '}:ids', id)
  end
  if ixuser then
    local k = IX .. ':' .. (string.gsub(ixuser, '[%%{}]', { ['%'] = '%25', ['{'] = '%7B', ['}'] = '%7D' }))
    rcall('ZADD', k .. '}:recent', ixat, id)
    if ixnew or ixwas ~= ixuser then rcall('ZADD', k .. '}:ids', 0, id) end
  end
end
