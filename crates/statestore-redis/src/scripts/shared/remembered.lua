-- Checks the remembered write w1 ("<version> <first> <count>", then
-- " <token>" when the append carried one) and prefixes it with 1 when a
-- save rewrote the history after it, else 0: the header field r holds the
-- version of the last save of a session that had remembered writes, and
-- every write older than it has lost its positions (Appended::rewritten).
-- Read only when a key was found.
--
-- Uses: w1, H.
-- Defines: rec ("<rewritten> <version> <first> <count> [<token>]").
-- Returns: corrupt when w1 is malformed.

if not (string.find(w1, '^%d+ %d+ %d+$') or string.find(w1, '^%d+ %d+ %d+ %d+$')) then
  return 'corrupt a remembered write is malformed'
end
local rec = '0 ' .. w1
local rv = rcall('HGET', H, 'r')
if rv and tonumber(string.match(w1, '^%d+')) < tonumber(rv) then rec = '1 ' .. w1 end
