-- Keeps the list indexes (keys.rs) where the scripts keep them, on a
-- standalone server (IX is '' on a cluster, whose client keeps them). The
-- id is the header key's hash tag (the text between its braces: neither
-- prefix nor escaped id holds one), unescaped; users are escaped as ids
-- are. About 4k instructions per ZADD.
--
-- Uses: IX; ixkey (the session's header key), ixat (the write's time, ms,
--   a string), ixnew (the write created the session), ixwas and ixuser
--   (its owner before and now: a string, or nil/false for none).

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
