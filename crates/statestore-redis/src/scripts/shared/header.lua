-- Parses the header from f, the reply of `HMGET H version n …`
-- (rpcall'ed). An older layout's header (no n, or one an older version of
-- this crate left behind when it bumped the version) has its counts
-- adopted from the keys' current lengths, and checked against its own
-- nm/ns/nd when its cv says they are current.
--
-- Uses: f, H, M, S, D, SCHEMA.
-- Defines: V (the version field, nil when the session does not exist);
--   the strings s, nm, ns, nd, wk, wg (schema; message, summary and
--   metadata counts; caller- and store-ring sequences); stale (the counts
--   were adopted: they are the keys' lengths); old_fields (the older
--   layout's fields, for the next write to delete).
-- Returns: corrupt for a header that is not a hash, has no integer
--   version or counts out of range (more than 14 digits), or is torn;
--   schema <found> for a newer schema.

if f.err then return wrong_type(H, 'header', 'hash') end
local V, stale, old_fields, s, v, nm, ns, nd, wk, wg = f[1], false, false
if V then
  if f[2] then
    s, v, nm, ns, nd, wk, wg = string.match(f[2], '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
  end
  if v ~= V then
    -- No `n`, or one an older version of this crate left behind when it
    -- bumped the version: adopt the lengths of the keys.
    local g = rcall('HMGET', H, 'schema', 'cv', 'nm', 'ns', 'nd', 'wk', 'wg')
    for i = 1, 7 do
      local x = g[i]
      if x and (#x > 14 or not string.find(x, '^%d+$')) then
        return 'corrupt its header has a count that is not an integer'
      end
    end
    if not g[1] or #V > 14 or not string.find(V, '^%d+$') then
      return 'corrupt its header has no integer schema and version'
    end
    if tonumber(g[1]) > tonumber(SCHEMA) then return 'schema ' .. g[1] end
    local lm, ls, ld = rpcall('LLEN', M), rpcall('LLEN', S), rpcall('HLEN', D)
    if type(lm) == 'table' then return wrong_type(M, 'message list', 'list') end
    if type(ls) == 'table' then return wrong_type(S, 'summary list', 'list') end
    if type(ld) == 'table' then return wrong_type(D, 'metadata hash', 'hash') end
    if g[2] == V then
      -- Counts the older version recorded at this version: still checked.
      if tonumber(g[3] or '0') ~= lm then return torn('message list entries', g[3] or '0', lm) end
      if tonumber(g[4] or '0') ~= ls then return torn('summary list entries', g[4] or '0', ls) end
      if tonumber(g[5] or '0') ~= ld then return torn('metadata hash entries', g[5] or '0', ld) end
    end
    -- Ring positions: the larger of the old fields' and a stale `n`'s.
    local k, q = tonumber(g[6] or '0'), tonumber(g[7] or '0')
    if wk then k, q = math.max(k, tonumber(wk)), math.max(q, tonumber(wg)) end
    s, nm, ns, nd, wk, wg = g[1], tostring(lm), tostring(ls), tostring(ld), tostring(k), tostring(q)
    stale = true
    old_fields = (g[2] or g[3] or g[4] or g[5] or g[6] or g[7]) ~= nil
  elseif s ~= SCHEMA and tonumber(s) > tonumber(SCHEMA) then
    return 'schema ' .. s
  end
  if #V > 14 or #nm > 14 or #wk > 14 or #wg > 14 then
    return 'corrupt its header has a count that is not an integer'
  end
elseif rcall('EXISTS', H) == 1 then
  return 'corrupt its header has no integer schema and version'
end
