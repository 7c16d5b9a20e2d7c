-- UNLIST: removes a stale entry from one list index (list.rs) on a
-- standalone server, only if, now, the session does not exist or belongs to
-- another user: a session re-created since the listing read it keeps its
-- entries.
--
-- KEYS
--   1     the session's header
--   2, 3  the index's recent and ids sorted sets
-- ARGV
--   1     the session id
--   2     the index's user, '' for every session's
--
-- Reply (one string)
--   ok 1                   the entries were removed
--   ok 0                   they were kept

local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and ARGV[2] == '' then
  return 'ok 0'
end
if exists then
  -- A header that is not a hash (corrupt, or not ours): its owner is not
  -- known, so its entries are kept; reading it reports it as corrupt.
  local owner = redis.pcall('HGET', KEYS[1], 'user_id')
  if (type(owner) == 'table' and owner.err) or owner == ARGV[2] then
    return 'ok 0'
  end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 'ok 1'
