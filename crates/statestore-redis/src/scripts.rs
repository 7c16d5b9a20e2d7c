//! Every Lua script this crate runs — one per multi-key operation, so each
//! is atomic and one round trip (`EVALSHA`, reloaded after `NOSCRIPT`).
//!
//! All scripts take the five keys of one session (`keys.rs`), always in the
//! order header, messages, summaries, metadata, remembered writes, so they
//! all hash to one cluster slot. The first three arguments are always:
//!
//! | ARGV | meaning |
//! |------|---------|
//! | 1 | the schema version this build writes (`statestore_core::codec::SCHEMA_VERSION`) |
//! | 2 | now, in ms since the epoch (client clock; stored, never compared) |
//! | 3 | TTL in ms to apply to every key, `0` for none (a decimal string, passed to `PEXPIRE` as given) |
//!
//! Writers then take the expectation: ARGV 4 is `a` (any), `v` (exact
//! version, ARGV 5) or `n` (must not exist).
//!
//! Every script returns an array whose first element is a status:
//! `ok` (then results), `replayed` (an append already applied under the
//! same key: then what it did), `missing`, `conflict` (then the version
//! found, `-1` for none), `corrupt` (then a description), `schema` (then
//! the schema found), `too_large` (then the message count that would
//! result) or `range` (then the history length).
//!
//! Invariants every script keeps:
//! - **Nothing is written before every check passed.** Redis does not roll
//!   back a script that fails half way, so the header (one `HMGET`, or the
//!   `HGETALL` a load needs anyway), the types and lengths of the keys the
//!   script relies on, the schema, the expectation, limits and counter
//!   values are all checked first. A key of the wrong type is detected by
//!   `redis.pcall` returning an error (`WRONGTYPE`) on the read that checks
//!   its length, which is why no `TYPE` calls are needed; every key a
//!   script writes is read (with `pcall`) before the first write.
//! - **A torn session is refused**: the header records how many messages,
//!   summaries and metadata fields the other keys hold (`nm`, `ns`, `nd`,
//!   valid while `cv == version`). Every script compares the lengths it
//!   reads with them — always for the keys it writes or returns, and for
//!   every key whose count is not zero, since such a key must exist — and
//!   answers `corrupt` when eviction (or anything else) removed or changed
//!   a key behind the header's back. A key whose count is zero is not read
//!   unless the script writes it. Remembered writes are checked by the
//!   scripts that read them (append, and a load asked about a key): the
//!   newest ring slot the header records must exist. Counts of a header an
//!   older version of this crate wrote (no `cv`, or a stale one) are
//!   adopted from the keys' current lengths.
//! - **Creating a session starts from nothing**: leftover keys of a session
//!   without a header are checked (a key of a type this crate never writes
//!   there is `corrupt`) and deleted, so no stray data is ever adopted.
//! - **TTL moves for all keys at once** (`expire_all`, on every key that
//!   exists), in the same atomic step as the write, so a session never
//!   half-expires.
//! - **Numbers are exact**: header integers are checked strictly
//!   (`^%d+$`, at most 14 digits, so a Lua double holds them exactly and
//!   prints them without an exponent);
//!   counters are added with `HINCRBY` on decimal strings, and near
//!   `i64::MAX` in exact decimal arithmetic, saturating there.
//! - **Argument lists are pushed in chunks of 1,000**, below Lua's `unpack`
//!   limit, so a save of any size works.
//!
//! This file is longer than the workspace's 600-line limit on purpose: it
//! is almost all Lua text — the shared prelude and one script per operation
//! — kept in one file so that every script can be read, and checked
//! against the invariants above, in one place. The Rust around it is the
//! [`Scripts`] table and one test.

use redis::Script;

/// Shared Lua helpers, prepended to every script.
///
/// Written to allocate little: a script's own time is dominated by what it
/// allocates (every table, closure and concatenated string), so there are
/// no lookup tables, the header is read into one table built by a single
/// constructor, and constant strings (interned by Lua) are passed around
/// instead of tables of options.
macro_rules! prelude {
    () => {
        r#"
local H, M, S, D, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local SCHEMA = tonumber(ARGV[1])
local NOW = ARGV[2]
local TTL = ARGV[3]
-- Remembered writes: caller keys ('k', 64 deep = REMEMBERED_WRITES) and
-- keys the store made for unkeyed appends ('g', 16 deep).
local RING_K, RING_G = 64, 16

local function corrupt(detail)
  return { 'corrupt', detail }
end

-- Whether a pcall reply is an error (a key of the wrong type).
local function failed(r)
  return type(r) == 'table' and r.err ~= nil
end

local function wrong_type(key, role, want)
  return corrupt('its ' .. role .. ' key holds a ' .. redis.call('TYPE', key)['ok'] .. ', not a ' .. want)
end

local function torn(what, recorded, found)
  return corrupt('its header records ' .. recorded .. ' ' .. what .. ' but ' .. found ..
    ' are stored: a key was evicted or changed outside this library (see maxmemory-policy in the crate docs)')
end

local function writes_gone()
  return corrupt('its header records remembered writes but they are gone: a key was evicted ' ..
    'or changed outside this library (see maxmemory-policy in the crate docs)')
end

-- A non-negative integer header field (at most 14 digits: exact as a
-- Lua number, and printed without an exponent), or nil.
local function int(s)
  if s and #s <= 14 and string.find(s, '^%d+$') then return tonumber(s) end
  return nil
end

-- Checks the header fields schema, version, cv, nm, ns, nd, wk, wg (false
-- when absent) and returns h, or nil and an error reply. h holds version;
-- nm, ns, nd (the recorded counts); fresh (whether those counts are valid:
-- written at this version); wk, wg (ring sequences, 0 when absent).
local function parse_header(schema, version, cv, nm, ns, nd, wk, wg)
  local s, v = int(schema), int(version)
  if s == nil or v == nil then return nil, corrupt('its header has no integer schema and version') end
  if s > SCHEMA then return nil, { 'schema', s } end
  local h = { version = v, fresh = cv == version and nm ~= false and ns ~= false and nd ~= false,
    nm = int(nm or '0'), ns = int(ns or '0'), nd = int(nd or '0'), wk = int(wk or '0'), wg = int(wg or '0') }
  if not (h.nm and h.ns and h.nd and h.wk and h.wg) then
    return nil, corrupt('its header has a count that is not an integer')
  end
  return h
end

-- Reads the header with one HMGET of its fields and the `...` fields after
-- them (their values are h.f[9], h.f[10], ...). Returns h, or nil when the
-- session does not exist, or nil and an error reply.
local function read_header(...)
  local f = redis.pcall('HMGET', H, 'schema', 'version', 'cv', 'nm', 'ns', 'nd', 'wk', 'wg', ...)
  if failed(f) then return nil, wrong_type(H, 'header', 'hash') end
  if not f[1] and not f[2] and redis.call('EXISTS', H) == 0 then return nil, nil end
  local h, err = parse_header(f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8])
  if h then h.f = f end
  return h, err
end

-- Checks one key's length (`cmd` is LLEN or HLEN) against the count the
-- header records in h[field]: when `always`, when that count is not zero
-- (the key must exist), and whenever the counts are not fresh (then
-- adopting the length found). Returns an error reply for a key of the
-- wrong type or a torn session.
local function check_len(h, field, key, cmd, role, want, always)
  if always or h[field] > 0 or not h.fresh then
    local n = redis.pcall(cmd, key)
    if failed(n) then return wrong_type(key, role, want) end
    if h.fresh and n ~= h[field] then return torn(role .. ' entries', h[field], n) end
    h[field] = n
  end
  return nil
end

-- check_len for the messages, summaries and metadata; `m`, `s`, `d`: the
-- keys the script writes (checked even when their count is zero).
local function check(h, m, s, d)
  return check_len(h, 'nm', M, 'LLEN', 'message list', 'list', m)
    or check_len(h, 'ns', S, 'LLEN', 'summary list', 'list', s)
    or check_len(h, 'nd', D, 'HLEN', 'metadata hash', 'hash', d)
end

-- For a session without a header: an error reply when a leftover key holds
-- a type this crate never writes there; else whether any leftover exists.
local function check_leftovers()
  if redis.call('EXISTS', M, S, D, W) == 0 then return nil, false end
  if failed(redis.pcall('LLEN', M)) then return wrong_type(M, 'message list', 'list') end
  if failed(redis.pcall('LLEN', S)) then return wrong_type(S, 'summary list', 'list') end
  if failed(redis.pcall('HLEN', D)) then return wrong_type(D, 'metadata hash', 'hash') end
  if failed(redis.pcall('HLEN', W)) then return wrong_type(W, 'remembered-writes', 'hash') end
  return nil, true
end

-- The ring slot field the newest remembered write took, or nil for none.
local function newest_slot(h)
  if h.wk > 0 then return 'K' .. ((h.wk - 1) % RING_K) end
  if h.wg > 0 then return 'G' .. ((h.wg - 1) % RING_G) end
  return nil
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

-- Restarts the TTL of every key of the session that exists.
local function expire_all(h)
  if TTL == '0' then return end
  redis.call('PEXPIRE', H, TTL)
  if h.nm > 0 then redis.call('PEXPIRE', M, TTL) end
  if h.ns > 0 then redis.call('PEXPIRE', S, TTL) end
  if h.nd > 0 then redis.call('PEXPIRE', D, TTL) end
  if h.wk + h.wg > 0 then redis.call('PEXPIRE', W, TTL) end
end

-- `cmd key list[first..last]` in chunks (RPUSH, or HSET with an even
-- chunk); returns the sum of the replies.
local function push(cmd, key, list, first, last)
  local total, i = 0, first
  while i <= last do
    local j = math.min(i + 999, last)
    total = total + redis.call(cmd, key, unpack(list, i, j))
    i = j + 1
  end
  return total
end

-- Records a write in the header with one HSET: the next version (1 for a
-- new session, h.version == nil), timestamps, and the counts the write
-- left, marked fresh. Returns the new version.
local function bump(h)
  if h.version == nil then
    redis.call('HSET', H, 'schema', SCHEMA, 'version', 1, 'cv', 1, 'created_at', NOW, 'updated_at', NOW,
      'last_accessed_at', NOW, 'nm', h.nm, 'ns', h.ns, 'nd', h.nd, 'wk', h.wk, 'wg', h.wg)
    return 1
  end
  local v = h.version + 1
  redis.call('HSET', H, 'version', v, 'cv', v, 'updated_at', NOW, 'last_accessed_at', NOW,
    'nm', h.nm, 'ns', h.ns, 'nd', h.nd, 'wk', h.wk, 'wg', h.wg)
  return v
end

-- Checks a write's target: h (nil: creating the session; err: the header
-- could not be read), the keys it writes (`m`, `s`, `d`, see check) and
-- the expectation. Returns h (a new header when creating), whether
-- leftovers must be deleted, and an error reply or nil.
local function target(h, err, m, s, d)
  if err then return nil, false, err end
  if h then
    err = check(h, m, s, d)
    if err then return nil, false, err end
    if not expect_ok(h.version) then return nil, false, conflict(h.version) end
    return h, false, nil
  end
  local leftovers
  err, leftovers = check_leftovers()
  if err then return nil, false, err end
  if not expect_ok(nil) then return nil, false, conflict(nil) end
  return { nm = 0, ns = 0, nd = 0, wk = 0, wg = 0, f = {} }, leftovers, nil
end
"#
    };
}

/// Exact counter arithmetic, for the append script.
macro_rules! counters {
    () => {
        r#"
local I64MAX = '9223372036854775807'

-- Decimal strings without leading zeros: a <= b.
local function dec_le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end

-- A counter value as HINCRBY keeps it: '0' or 1-19 digits up to i64::MAX.
local function counter_ok(s)
  return s == '0' or (string.find(s, '^[1-9]%d*$') ~= nil and dec_le(s, I64MAX))
end

-- a + b for decimal strings, exactly.
local function dec_add(a, b)
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then d = d + string.byte(a, i) - 48 end
    if j > 0 then d = d + string.byte(b, j) - 48 end
    table.insert(out, 1, d % 10)
    carry = (d - d % 10) / 10
    i, j = i - 1, j - 1
  end
  return table.concat(out)
end
"#
    };
}

/// `append_with(id, append)`.
/// ARGV 6: max messages per session (`-1`: unlimited); 7: the key's kind
/// (`k` the caller's, `g` made by the store); 8: the key; 9: the number of
/// counters `C`; 10..9+2C: counter name, increment (decimal, at most
/// `i64::MAX`); then the messages.
/// Returns `ok, version, first position, messages` — or `replayed` and the
/// same three for a key already remembered, having written nothing but the
/// access time. The key is looked up after the integrity checks and before
/// the expectation, so a repeat is a replay whatever it expects.
const APPEND: &str = concat!(
    prelude!(),
    counters!(),
    r#"
local kind, key = ARGV[7], ARGV[8]
local nc = tonumber(ARGV[9])
local h, err
if nc == 0 then
  h, err = read_header()
else
  local fields = {}
  for i = 1, nc do fields[i] = 'c:' .. ARGV[8 + 2 * i] end
  h, err = read_header(unpack(fields))
end
if err then return err end
local field = kind .. ':' .. key
local leftovers, evict = false, false
if h then
  err = check(h, true, false, false)
  if err then return err end
  -- The key, the ring slot this write takes, and the newest slot (which
  -- must exist when the header records remembered writes).
  local slot
  if kind == 'k' then slot = 'K' .. (h.wk % RING_K) else slot = 'G' .. (h.wg % RING_G) end
  local newest = newest_slot(h)
  local w = redis.pcall('HMGET', W, field, slot, newest or slot)
  if failed(w) then return wrong_type(W, 'remembered-writes', 'hash') end
  if newest and not w[3] then return writes_gone() end
  if w[1] then
    local v, first, n = string.match(w[1], '^(%d+) (%d+) (%d+)$')
    if not v then return corrupt('a remembered write is malformed') end
    redis.call('HSET', H, 'last_accessed_at', NOW)
    expire_all(h)
    return { 'replayed', v, first, n }
  end
  evict = w[2]
  if not expect_ok(h.version) then return conflict(h.version) end
else
  h, leftovers, err = target(nil, nil)
  if err then return err end
end
local n = #ARGV - 9 - 2 * nc
local max = tonumber(ARGV[6])
if max >= 0 and h.nm + n > max then return { 'too_large', h.nm + n } end
-- Counters: check every value before the first write.
for i = 1, nc do
  local cur = h.f[8 + i]
  if cur and not counter_ok(cur) then
    return corrupt('its counter ' .. ARGV[8 + 2 * i] .. ' is not an integer from 0 to 2^63-1')
  end
end
-- Every check passed: write.
if leftovers then redis.call('DEL', M, S, D, W) end
local first = h.nm
push('RPUSH', M, ARGV, 10 + 2 * nc, #ARGV)
h.nm = h.nm + n
for i = 1, nc do
  local name, cur, delta = 'c:' .. ARGV[8 + 2 * i], h.f[8 + i] or '0', ARGV[9 + 2 * i]
  if #cur < 18 and #delta < 18 then
    redis.call('HINCRBY', H, name, delta)
  else
    local sum = dec_add(cur, delta)
    if not dec_le(sum, I64MAX) then sum = I64MAX end
    redis.call('HSET', H, name, sum)
  end
end
local v = (h.version or 0) + 1
if evict then redis.call('HDEL', W, string.sub(field, 1, 2) .. evict) end
local slot
if kind == 'k' then
  slot = 'K' .. (h.wk % RING_K)
  h.wk = h.wk + 1
else
  slot = 'G' .. (h.wg % RING_G)
  h.wg = h.wg + 1
end
redis.call('HSET', W, slot, key, field, v .. ' ' .. first .. ' ' .. n)
bump(h)
expire_all(h)
return { 'ok', v, first, n }
"#
);

/// `load(id)` and `load_recent_with(id, n, lookup)`, one consistent snapshot.
/// ARGV 4: how many of the newest messages (`-1`: all); 5: `1` to count
/// the read as an access (update `last_accessed_at`, restart the TTL);
/// 6: a caller key to look up (`''`: none).
/// Returns `ok, header (flat), messages, summaries, metadata (flat), total,
/// record` where record is what the write under the key did
/// (`"version first count"`) or nil.
const LOAD: &str = concat!(
    prelude!(),
    r#"
-- The whole header, which the reply needs anyway, instead of an HMGET.
local flat = redis.pcall('HGETALL', H)
if failed(flat) then return wrong_type(H, 'header', 'hash') end
if #flat == 0 then
  local err = check_leftovers()
  if err then return err end
  return { 'missing' }
end
local schema, version, cv, nm, ns, nd, wk, wg = false, false, false, false, false, false, false, false
local accessed
for i = 1, #flat, 2 do
  local k = flat[i]
  if k == 'version' then version = flat[i + 1]
  elseif k == 'schema' then schema = flat[i + 1]
  elseif k == 'cv' then cv = flat[i + 1]
  elseif k == 'nm' then nm = flat[i + 1]
  elseif k == 'ns' then ns = flat[i + 1]
  elseif k == 'nd' then nd = flat[i + 1]
  elseif k == 'wk' then wk = flat[i + 1]
  elseif k == 'wg' then wg = flat[i + 1]
  elseif k == 'last_accessed_at' then accessed = i + 1
  end
end
local h, err = parse_header(schema, version, cv, nm, ns, nd, wk, wg)
if err then return err end
local n = tonumber(ARGV[4])
-- Stale counts are adopted from the lengths. Fresh ones are checked by the
-- reads below (a key is evicted whole, so a short read means a torn
-- session), and by LLEN for a window of no messages.
if not h.fresh then
  err = check(h, false, false, false)
elseif n == 0 then
  err = check_len(h, 'nm', M, 'LLEN', 'message list', 'list', false)
end
if err then return err end
local total, msgs = h.nm, {}
if n ~= 0 and total > 0 then
  local first = 0
  if n > 0 and n < total then first = total - n end
  msgs = redis.pcall('LRANGE', M, first, -1)
  if failed(msgs) then return wrong_type(M, 'message list', 'list') end
  if #msgs ~= total - first then return torn('message list entries', total, redis.call('LLEN', M)) end
end
local sums, meta = {}, {}
if h.ns > 0 then
  sums = redis.pcall('LRANGE', S, 0, -1)
  if failed(sums) then return wrong_type(S, 'summary list', 'list') end
  if #sums ~= h.ns then return torn('summary list entries', h.ns, #sums) end
end
if h.nd > 0 then
  meta = redis.pcall('HGETALL', D)
  if failed(meta) then return wrong_type(D, 'metadata hash', 'hash') end
  if #meta ~= 2 * h.nd then return torn('metadata hash entries', h.nd, #meta / 2) end
end
local record = false
if ARGV[6] ~= '' and h.wk > 0 then
  local w = redis.pcall('HMGET', W, 'k:' .. ARGV[6], newest_slot(h))
  if failed(w) then return wrong_type(W, 'remembered-writes', 'hash') end
  if not w[2] then return writes_gone() end
  record = w[1]
end
if ARGV[5] == '1' then
  redis.call('HSET', H, 'last_accessed_at', NOW)
  expire_all(h)
  if accessed then
    flat[accessed] = NOW
  else
    flat[#flat + 1], flat[#flat + 2] = 'last_accessed_at', NOW
  end
end
return { 'ok', flat, msgs, sums, meta, total, record }
"#
);

/// `save(state, expect)`: replaces everything but `created_at` and the
/// remembered writes.
/// ARGV 6: created_at for a new session; 7/8: has user id, user id;
/// 9/10: has system prompt, prompt; 11/12/13/14: counts of messages,
/// summaries, metadata pairs and counters; then the messages, the
/// summaries, the metadata as field, value pairs and the counters as name,
/// value pairs.
const SAVE: &str = concat!(
    prelude!(),
    r#"
local h, err = read_header('created_at')
local leftovers
h, leftovers, err = target(h, err, false, false, false)
if err then return err end
local nm, ns, nd, nc = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local v = (h.version or 0) + 1
local f = { 'schema', SCHEMA, 'version', v, 'cv', v, 'created_at', h.f[9] or ARGV[6],
  'updated_at', NOW, 'last_accessed_at', NOW, 'nm', nm, 'ns', ns, 'nd', nd, 'wk', h.wk, 'wg', h.wg }
if ARGV[7] == '1' then f[#f + 1], f[#f + 2] = 'user_id', ARGV[8] end
if ARGV[9] == '1' then f[#f + 1], f[#f + 2] = 'system_prompt', ARGV[10] end
local i = 15 + nm + ns + 2 * nd
for k = i, i + 2 * nc - 1, 2 do
  f[#f + 1], f[#f + 2] = 'c:' .. ARGV[k], ARGV[k + 1]
end
-- Every check passed: write.
if leftovers then redis.call('DEL', W) end
redis.call('DEL', H, M, S, D)
i = 15
push('RPUSH', M, ARGV, i, i + nm - 1)
i = i + nm
push('RPUSH', S, ARGV, i, i + ns - 1)
i = i + ns
push('HSET', D, ARGV, i, i + 2 * nd - 1)
push('HSET', H, f, 1, #f)
h.nm, h.ns, h.nd = nm, ns, nd
expire_all(h)
return { 'ok', v }
"#
);

/// `merge_metadata(id, patch, expect)`.
/// ARGV 6: number of field, value pairs to set; then the pairs; then the
/// fields to delete.
const MERGE_METADATA: &str = concat!(
    prelude!(),
    r#"
local h, err = read_header()
local leftovers
h, leftovers, err = target(h, err, false, false, true)
if err then return err end
if leftovers then redis.call('DEL', M, S, D, W) end
local first_del = 7 + 2 * tonumber(ARGV[6])
local added = push('HSET', D, ARGV, 7, first_del - 1)
local removed = push('HDEL', D, ARGV, first_del, #ARGV)
h.nd = h.nd + added - removed
local v = bump(h)
expire_all(h)
return { 'ok', v }
"#
);

/// `add_summary(id, summary, expect)`.
/// ARGV 6/7: the covered range's start and end; 8: the summary's JSON.
const ADD_SUMMARY: &str = concat!(
    prelude!(),
    r#"
local h, err = read_header()
if err then return err end
if h == nil then return { 'missing' } end
err = check(h, true, true, false)
if err then return err end
if not expect_ok(h.version) then return conflict(h.version) end
local first, last = tonumber(ARGV[6]), tonumber(ARGV[7])
if first >= last or last > h.nm then return { 'range', h.nm } end
redis.call('RPUSH', S, ARGV[8])
h.ns = h.ns + 1
local v = bump(h)
expire_all(h)
return { 'ok', v }
"#
);

/// `touch(id)`: updates `last_accessed_at` and restarts the TTL.
const TOUCH: &str = concat!(
    prelude!(),
    r#"
local h, err = read_header()
if err then return err end
if h == nil then return { 'missing' } end
err = check(h, false, false, false)
if err then return err end
redis.call('HSET', H, 'last_accessed_at', NOW)
expire_all(h)
return { 'ok' }
"#
);

/// `delete(id)`: removes all five keys (freed in the background);
/// returns whether the header existed.
const DELETE: &str = r#"
local existed = redis.call('EXISTS', KEYS[1])
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_caller_ring_remembers_what_core_promises() {
        let ring = format!("RING_K, RING_G = {},", statestore_core::REMEMBERED_WRITES);
        assert!(super::APPEND.contains(&ring), "RING_K must be {ring}");
    }
}
