-- DELETE: `delete_with(id, options)`. Removes the session's five keys and
-- its progress hash, freed in the background (UNLINK), and — where the
-- scripts keep them (IX ~= '') — its entries in the list indexes. Takes no
-- now or TTL.
--
-- KEYS
--   1..5  the session's header, messages, summaries, metadata and
--         remembered writes (keys.rs)
--   6     its progress hash
--   7     where the client may re-send a call (the cluster client): the
--         session's deletion mark (keys.rs)
-- ARGV
--   1     the expectation: a (any), n (must not exist) or the exact version;
--         a session it does not admit is a conflict, and nothing is removed
--   2     with KEYS 7: a token the store made for this call. A delete that
--         finds the session leaves it in the mark for 60 s; a re-send that
--         finds the session gone and its own token there replies what the
--         first run did
--
-- Reply (one string)
--   ok 1                   the header existed
--   ok 0                   it did not
--   conflict <version>     the expectation failed (-1: no session)

local existed = redis.call('EXISTS', KEYS[1])
local want, token = ARGV[1], ARGV[2]
if token and existed == 0 and redis.call('GET', KEYS[7]) == token then
  return 'ok 1'
end
-- A header field, or false: a header that is not a hash (corrupt, or not
-- ours) has no version and no owner, so that deleting it still works.
local function field(f)
  if existed == 0 then
    return false
  end
  local r = redis.pcall('HGET', KEYS[1], f)
  if type(r) == 'table' and r.err then
    return false
  end
  return r
end
if want ~= 'a' then
  local v = field('version')
  if (want == 'n' and existed == 1) or (want ~= 'n' and v ~= want) then
    return 'conflict ' .. (v or '-1')
  end
end
if token and existed == 1 then
  redis.call('SET', KEYS[7], token, 'PX', 60000)
end
local IX = @IX@
if IX ~= '' then
  -- Out of the list indexes (keys.rs): every session's, and its owner's.
  local id = string.match(KEYS[1], '{(.*)}')
  if string.find(id, '%', 1, true) then
    id = (string.gsub(id, '%%(%x%x)', { ['25'] = '%', ['7B'] = '{', ['7D'] = '}' }))
  end
  redis.call('ZREM', IX .. '}:recent', id)
  redis.call('ZREM', IX .. '}:ids', id)
  local u = field('user_id')
  if u then
    local k = IX .. ':' .. (string.gsub(u, '[%%{}]', { ['%'] = '%25', ['{'] = '%7B', ['}'] = '%7D' }))
    redis.call('ZREM', k .. '}:recent', id)
    redis.call('ZREM', k .. '}:ids', id)
  end
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return 'ok ' .. existed
