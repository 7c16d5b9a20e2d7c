//! Every Lua script this crate runs — one per multi-key operation, so each
//! is atomic and one round trip (`EVALSHA`, reloaded after `NOSCRIPT`).
//!
//! All scripts take the four keys of one session (`keys.rs`), always in the
//! order header, messages, summaries, metadata, so they all hash to one
//! cluster slot. The first three arguments are always:
//!
//! | ARGV | meaning |
//! |------|---------|
//! | 1 | the schema version this build writes (`statestore_core::codec::SCHEMA_VERSION`) |
//! | 2 | now, in ms since the epoch (client clock; stored, never compared) |
//! | 3 | TTL in ms to apply to all four keys, `0` for none |
//!
//! Writers then take the expectation: ARGV 4 is `a` (any), `v` (exact
//! version, ARGV 5) or `n` (must not exist).
//!
//! Every script returns an array whose first element is a status:
//! `ok` (then results), `missing`, `conflict` (then the version found, `-1`
//! for none), `corrupt` (then a description), `schema` (then the schema
//! found), `too_large` (then the message count that would result) or
//! `range` (then the history length).
//!
//! Invariants every script keeps:
//! - **Nothing is written before every check passed.** Redis does not roll
//!   back a script that fails half way, so key types, header fields, schema
//!   and expectation are all checked first (`read_header`).
//! - **Creating a session starts from nothing**: leftover keys of a session
//!   without a header are deleted first, so no stray data is ever adopted.
//! - **TTL moves for all keys at once** (`expire_all`), in the same atomic
//!   step as the write, so a session never half-expires.
//! - **Argument lists are pushed in chunks of 1,000**, below Lua's `unpack`
//!   limit, so a save of any size works.

use redis::Script;

/// Shared Lua helpers, prepended to every script.
macro_rules! prelude {
    () => {
        r#"
local H, M, S, D = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local SCHEMA = tonumber(ARGV[1])
local NOW = ARGV[2]
local TTL = tonumber(ARGV[3])
local ROLES = { 'header', 'messages', 'summaries', 'metadata' }
local TYPES = { 'hash', 'list', 'list', 'hash' }

-- The session's version (nil when it does not exist), or nil and an error reply.
local function read_header()
  for i = 1, 4 do
    local t = redis.call('TYPE', KEYS[i])['ok']
    if t ~= 'none' and t ~= TYPES[i] then
      return nil, { 'corrupt', 'its ' .. ROLES[i] .. ' key holds a ' .. t .. ', not a ' .. TYPES[i] }
    end
  end
  if redis.call('EXISTS', H) == 0 then
    return nil, nil
  end
  local f = redis.call('HMGET', H, 'schema', 'version')
  local schema, version = tonumber(f[1]), tonumber(f[2])
  if schema == nil or version == nil then
    return nil, { 'corrupt', 'its header has no numeric schema and version' }
  end
  if schema > SCHEMA then
    return nil, { 'schema', schema }
  end
  return version, nil
end

local function expect_ok(version)
  local mode = ARGV[4]
  if mode == 'a' then return true end
  if mode == 'n' then return version == nil end
  return version ~= nil and version == tonumber(ARGV[5])
end

local function conflict(version)
  return { 'conflict', version or -1 }
end

local function expire_all()
  if TTL > 0 then
    for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], TTL) end
  end
end

-- RPUSH (or HSET, with an even chunk) ARGV[first..last] in chunks.
local function push(cmd, key, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + 999, last)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end

-- Records a write: creates the header (version 1) or bumps the version.
local function bump(version)
  if version == nil then
    redis.call('HSET', H, 'schema', SCHEMA, 'version', 1, 'created_at', NOW,
      'updated_at', NOW, 'last_accessed_at', NOW)
    return 1
  end
  redis.call('HSET', H, 'updated_at', NOW, 'last_accessed_at', NOW)
  return redis.call('HINCRBY', H, 'version', 1)
end
"#
    };
}

/// `append(id, messages, expect)`.
/// ARGV 6: max messages per session (`0`: unlimited); 7..: the messages.
const APPEND: &str = concat!(
    prelude!(),
    r#"
local version, err = read_header()
if err then return err end
if not expect_ok(version) then return conflict(version) end
if version == nil then redis.call('DEL', M, S, D) end
local n = #ARGV - 6
local max = tonumber(ARGV[6])
if max > 0 then
  local total = redis.call('LLEN', M) + n
  if total > max then return { 'too_large', total } end
end
push('RPUSH', M, 7, #ARGV)
local v = bump(version)
expire_all()
return { 'ok', v }
"#
);

/// `load(id)` and `load_recent(id, n)`, one consistent snapshot.
/// ARGV 4: how many of the newest messages (`-1`: all); 5: `1` to count
/// the read as an access (update `last_accessed_at`, restart the TTL).
/// Returns `ok, header (flat), messages, summaries, metadata (flat), total`.
const LOAD: &str = concat!(
    prelude!(),
    r#"
local version, err = read_header()
if err then return err end
if version == nil then return { 'missing' } end
if ARGV[5] == '1' then
  redis.call('HSET', H, 'last_accessed_at', NOW)
  expire_all()
end
local n = tonumber(ARGV[4])
local total = redis.call('LLEN', M)
local msgs
if n < 0 or n >= total then
  msgs = redis.call('LRANGE', M, 0, -1)
elseif n == 0 then
  msgs = {}
else
  msgs = redis.call('LRANGE', M, total - n, -1)
end
return { 'ok', redis.call('HGETALL', H), msgs, redis.call('LRANGE', S, 0, -1),
  redis.call('HGETALL', D), total }
"#
);

/// `save(state, expect)`: replaces everything but `created_at`.
/// ARGV 6: created_at for a new session; 7/8: has user id, user id;
/// 9/10: has system prompt, prompt; 11/12/13: counts of messages,
/// summaries and metadata pairs; then the messages, the summaries and the
/// metadata as field, value pairs.
const SAVE: &str = concat!(
    prelude!(),
    r#"
local version, err = read_header()
if err then return err end
if not expect_ok(version) then return conflict(version) end
local created = ARGV[6]
if version ~= nil then
  created = redis.call('HGET', H, 'created_at') or created
end
redis.call('DEL', H, M, S, D)
local nm, ns, nd = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local i = 14
push('RPUSH', M, i, i + nm - 1)
i = i + nm
push('RPUSH', S, i, i + ns - 1)
i = i + ns
push('HSET', D, i, i + 2 * nd - 1)
local v = 1
if version ~= nil then v = version + 1 end
redis.call('HSET', H, 'schema', SCHEMA, 'version', v, 'created_at', created,
  'updated_at', NOW, 'last_accessed_at', NOW)
if ARGV[7] == '1' then redis.call('HSET', H, 'user_id', ARGV[8]) end
if ARGV[9] == '1' then redis.call('HSET', H, 'system_prompt', ARGV[10]) end
expire_all()
return { 'ok', v }
"#
);

/// `merge_metadata(id, patch, expect)`.
/// ARGV 6: number of field, value pairs to set; then the pairs; then the
/// fields to delete.
const MERGE_METADATA: &str = concat!(
    prelude!(),
    r#"
local version, err = read_header()
if err then return err end
if not expect_ok(version) then return conflict(version) end
if version == nil then redis.call('DEL', M, S, D) end
local first_del = 7 + 2 * tonumber(ARGV[6])
push('HSET', D, 7, first_del - 1)
push('HDEL', D, first_del, #ARGV)
local v = bump(version)
expire_all()
return { 'ok', v }
"#
);

/// `add_summary(id, summary, expect)`.
/// ARGV 6/7: the covered range's start and end; 8: the summary's JSON.
const ADD_SUMMARY: &str = concat!(
    prelude!(),
    r#"
local version, err = read_header()
if err then return err end
if version == nil then return { 'missing' } end
if not expect_ok(version) then return conflict(version) end
local len = redis.call('LLEN', M)
local first, last = tonumber(ARGV[6]), tonumber(ARGV[7])
if first >= last or last > len then return { 'range', len } end
redis.call('RPUSH', S, ARGV[8])
local v = bump(version)
expire_all()
return { 'ok', v }
"#
);

/// `touch(id)`: updates `last_accessed_at` and restarts the TTL.
const TOUCH: &str = concat!(
    prelude!(),
    r#"
local version, err = read_header()
if err then return err end
if version == nil then return { 'missing' } end
redis.call('HSET', H, 'last_accessed_at', NOW)
expire_all()
return { 'ok' }
"#
);

/// `delete(id)`: removes all four keys (freed in the background);
/// returns whether the header existed.
const DELETE: &str = r#"
local existed = redis.call('EXISTS', KEYS[1])
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return { 'ok', existed }
"#;

/// The compiled scripts (their SHA1s are computed once).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) append: Script,
    pub(crate) load: Script,
    pub(crate) save: Script,
    pub(crate) merge_metadata: Script,
    pub(crate) add_summary: Script,
    pub(crate) touch: Script,
    pub(crate) delete: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            append: Script::new(APPEND),
            load: Script::new(LOAD),
            save: Script::new(SAVE),
            merge_metadata: Script::new(MERGE_METADATA),
            add_summary: Script::new(ADD_SUMMARY),
            touch: Script::new(TOUCH),
            delete: Script::new(DELETE),
        }
    }

    /// Every script, for preloading.
    pub(crate) fn all(&self) -> [&Script; 7] {
        [
            &self.append,
            &self.load,
            &self.save,
            &self.merge_metadata,
            &self.add_summary,
            &self.touch,
            &self.delete,
        ]
    }
}
