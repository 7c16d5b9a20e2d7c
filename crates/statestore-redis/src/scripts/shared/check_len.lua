-- Compares the length of one key with the count the header records for it.
-- Not needed after the counts were adopted (stale): they are those lengths.
--
-- Parameters: @key@ (M, S or D), @count@ (its count: nm, ns or nd, a
--   string), @cmd@ (LLEN or HLEN), @role@ and @want@ (its name and type,
--   for the error reply).
-- Returns: corrupt for a key of the wrong type or a torn session.

do
  local l = rpcall('@cmd@', @key@)
  if type(l) == 'table' then return wrong_type(@key@, '@role@', '@want@') end
  if l ~= tonumber(@count@) then return torn('@role@ entries', @count@, l) end
end
