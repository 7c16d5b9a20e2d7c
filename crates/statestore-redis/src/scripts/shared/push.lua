-- `@cmd@ @key@ @list@[@first@..@last@]` in chunks of 1,000 (below Lua's
-- unpack limit); adds the replies to the local pushed.
--
-- Parameters: @cmd@ (RPUSH, or HSET/HDEL with an even range), @key@,
--   @list@ (ARGV or a table), @first@ and @last@ (Lua expressions; an empty
--   range sends nothing).

do
  local i, last = @first@, @last@
  while i <= last do
    local j = i + 999
    if j > last then j = last end
    pushed = pushed + rcall('@cmd@', @key@, unpack(@list@, i, j))
    i = j + 1
  end
end
