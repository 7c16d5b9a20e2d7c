
if not (string.find(w1, '^%d+ %d+ %d+$') or string.find(w1, '^%d+ %d+ %d+ %d+$')) then
  return 'corrupt a remembered write is malformed'
end
local rec = '0 ' .. w1
local rv = rcall('HGET', H, 'r')
if rv and tonumber(string.match(w1, '^%d+')) < tonumber(rv) then rec = '1 ' .. w1 end
