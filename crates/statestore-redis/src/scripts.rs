//! Every Lua script this crate runs — one per multi-key operation, so each
//! is atomic and one round trip (`EVALSHA`, reloaded after `NOSCRIPT`).
//!
//! All scripts take the five keys of one session (`keys.rs`), always in the
//! order header, messages, summaries, metadata, remembered writes, so they
//! all hash to one cluster slot (`FORK` takes the source's five keys, then
//! the target's, and runs only where both share a slot). The schema
//! version this build writes (`statestore_core::codec::SCHEMA_VERSION`)
//! is part of each script's text. The first two arguments are always:
//!
//! | ARGV | meaning |
//! |------|---------|
//! | 1 | now, in ms since the epoch (client clock; stored, never compared) |
//! | 2 | TTL in ms to apply to every key, `0` for none (a decimal string, passed to `PEXPIRE` as given) |
//!
//! Writers then take the expectation, ARGV 3: `a` (any), `n` (must not
//! exist), or the exact version (compared as the decimal string the header
//! holds).
//!
//! # Calls the client re-sends
//!
//! The cluster client sends a request again by itself after a dropped
//! connection, not knowing whether the first one ran. So on that client
//! every write carries a key the store made for the call, and remembers it
//! (in the store ring of the remembered writes, `keys.rs`) in the same
//! atomic step: a re-send of a call that ran finds its key and returns
//! what the first run did, having written nothing — for `APPEND` (its key
//! field), `SAVE`, `MERGE_METADATA`, `ADD_SUMMARY` ([`write_key!`],
//! [`replayed_call!`], [`remember_call!`]), `FORK` (the target remembers
//! the key) and `DELETE` (a deletion mark holds the call's token for 60 s).
//! `TOUCH` needs none: running it twice does what running it once does.
//!
//! # Metadata patches
//!
//! `MERGE_METADATA`, and an `APPEND` or `ADD_SUMMARY` that carries a
//! metadata patch (`Append::metadata`, `AddSummary::metadata`), merge it
//! with the one `merge_patch!`: `HSET` of the values (JSON text), `HDEL`
//! of the `null`s on the metadata hash, `nd` adjusted — after every check
//! passed, so a replay, a conflict, `too_large` or `range` merges nothing.
//! An append without a patch sends and runs exactly what it did before.
//!
//! Every script returns one string: a status, then its arguments,
//! separated by spaces (a table reply would cost the server ~7k
//! instructions more): `ok` (then results), `replayed` (an append already
//! applied under the same key: then what it did), `missing`, `conflict`
//! (then the version found, `-1` for none), `corrupt` (then a
//! description), `schema` (then the schema found), `too_large` (then the
//! message count that would result), `range` (then the history length),
//! `target` (`FORK`: then the reply the target's state stands for) or
//! `nocopy` (`FORK` on a server without `COPY`; nothing written).
//!
//! # Reads run outside Lua
//!
//! A load is one `MULTI … EXEC` transaction (`store.rs`): `LOAD` below,
//! which checks the header (and, when the read counts as an access, that no
//! key is torn, before it updates `last_accessed_at` and the TTL), then
//! `HGETALL` of the header, `LRANGE` of the newest messages, `LRANGE` of the
//! summaries and `HGETALL` of the metadata as plain commands. Atomic like a
//! script, one round trip like a script, but the bulk of a load — every
//! message — goes from Redis to the client without being converted into
//! Lua strings and back (which costs ~2.7k instructions per message in the
//! server, against ~0.3k for a plain `LRANGE`). The client compares what it
//! received with the counts `LOAD` returned.
//!
//! # Invariants every script keeps
//!
//! - **Nothing is written before every check passed.** Redis does not roll
//!   back a script that fails half way, so the header (one `HMGET`), the
//!   types and lengths of the keys the script relies on, the schema, the
//!   expectation, limits and counter values are all checked first. A key of
//!   the wrong type is detected by `redis.pcall` returning an error
//!   (`WRONGTYPE`) on the read that checks its length, which is why no
//!   `TYPE` calls are needed (`TYPE` runs only to word the error); every
//!   key a script writes is read (with `pcall`) before the first write.
//! - **A torn session is refused**: the header's `n` field records how many
//!   messages, summaries and metadata fields the other keys hold (valid
//!   while the version it records is the header's `version`, see
//!   `keys.rs`). Every script compares the lengths it reads with them —
//!   always for the keys it writes, and for every key whose count is not
//!   zero, since such a key must exist — and answers `corrupt` when
//!   eviction (or anything else) removed or changed a key behind the
//!   header's back. A key whose count is zero is not read unless the
//!   script writes it. A load that only reads leaves the comparison of
//!   what it read to the client; a load that counts as an access compares
//!   first, since it writes. Remembered writes are checked by the scripts
//!   that read them (a keyed append, and a load asked about a key): the
//!   newest ring slot the header records must exist. Counts of a header an
//!   older version of this crate wrote (no `n`, or a stale one) are adopted
//!   from the keys' current lengths — compared with the older version's own
//!   `nm`/`ns`/`nd` when its `cv` says they are current — and the next
//!   write records them in `n` and deletes the old fields.
//! - **Creating a session starts from nothing**: leftover keys of a session
//!   without a header are checked (a key of a type this crate never writes
//!   there is `corrupt`) and deleted, so no stray data is ever adopted.
//! - **TTL moves for all keys at once** (on every key that exists), in the
//!   same atomic step as the write, so a session never half-expires.
//! - **Numbers are exact**: the header's numbers are digit strings (the
//!   pattern that splits `n` accepts nothing else), at most 14 digits where
//!   the script computes with them, so a Lua double holds them exactly and
//!   prints them without an exponent; counters are added with `HINCRBY` on
//!   decimal strings, and near `i64::MAX` in exact decimal arithmetic,
//!   saturating there.
//! - **Argument lists are pushed in chunks of 1,000**, below Lua's `unpack`
//!   limit, so a save of any size works.
//!
//! # What a call costs the server, and why the scripts look like this
//!
//! Measured with callgrind on redis 7.0 (instructions, which unlike times
//! do not move with the machine's load; ~13,000 per µs on the benchmark
//! VM): an `EVALSHA` costs ~10k before its body runs, plus ~1.1k per key
//! and argument; each `redis.call` ~3k, plus ~1.5–2.5k per field or element
//! it sends or returns (every reply is converted into Lua values and back);
//! a Lua closure ~0.45k; `tonumber` of a string ~1.3k and a number
//! concatenated into a string ~2k (`strtod` and `sprintf` underneath). So
//! the scripts have no per-call helper library — the checks are inlined
//! Lua text, repeated through the `macro_rules!` below — they read the
//! header with one `HMGET` of two fields (`version` and the packed `n`),
//! compare numbers as the strings Redis returns where they can, convert
//! each number at most once, and write the header with one `HSET` of four
//! fields. Redis Functions (`FCALL`) were measured too: ~4.7k instructions
//! less per call than `EVALSHA` for the same body, not worth a library
//! that must be versioned and loaded on every node by hand.
//!
//! This file is longer than the workspace's 600-line limit on purpose: it
//! is almost all Lua text — the shared snippets and one script per
//! operation — kept in one file so that every script can be read, and
//! checked against the invariants above, in one place. The Rust around it
//! is the [`Scripts`] table and its tests.

use redis::Script;
use statestore_core::codec::SCHEMA_VERSION;

/// The start of every script: its keys and common arguments, the schema
/// this build writes (`@SCHEMA@`, filled in by [`Scripts::new`]), and the
/// two helpers that word error replies (two closures, ~1k instructions).
macro_rules! prelude {
    () => {
        r#"
local rcall, rpcall = redis.call, redis.pcall
local H, M, S, D, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local SCHEMA, NOW, TTL, EXPIRE = '@SCHEMA@', ARGV[1], ARGV[2], 'PEXPIRE'
local IX = @IX@

local function wrong_type(key, role, want)
  return 'corrupt its ' .. role .. ' key holds a ' .. rcall('TYPE', key)['ok'] .. ', not a ' .. want
end

local function torn(what, recorded, found)
  return 'corrupt its header records ' .. recorded .. ' ' .. what .. ' but ' .. found ..
    ' are stored: a key was evicted or changed outside this library (see maxmemory-policy in the crate docs)'
end
"#
    };
}

/// Parses the header from `f`, the reply of `HMGET H version n …`: defines
/// `V` (the `version` field, nil when the session does not exist) and the
/// strings `s, nm, ns, nd, wk, wg` (schema, counts and ring sequences),
/// adopting them from an older layout (`stale`, and `old_fields` when its
/// fields must be deleted by the next write); returns an error reply for a
/// header that is not a hash, has no version, is of a newer schema or has
/// numbers out of range.
macro_rules! header {
    () => {
        r#"
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
"#
    };
}

/// Compares the length of one key (`$cmd` is `LLEN` or `HLEN`) with the
/// count `$count` (a string) the header records for it; returns the error
/// reply for a key of the wrong type or a torn session. Not needed after
/// the counts were adopted (`stale`): they are those lengths.
macro_rules! check_len {
    ($key:literal, $count:literal, $cmd:literal, $role:literal, $want:literal) => {
        concat!(
            "\ndo\n  local l = rpcall('",
            $cmd,
            "', ",
            $key,
            ")\n  if type(l) == 'table' then return wrong_type(",
            $key,
            ", '",
            $role,
            "', '",
            $want,
            "') end\n  if l ~= tonumber(",
            $count,
            ") then return torn('",
            $role,
            " entries', ",
            $count,
            ", l) end\nend\n"
        )
    };
}

/// The three length checks of a current header: each of the message list,
/// summary list and metadata hash that the header counts as non-empty must
/// hold exactly that many entries ([`check_len!`]).
macro_rules! check_lens {
    () => {
        concat!(
            "\nif nm ~= '0' then\n",
            check_len!("M", "nm", "LLEN", "message list", "list"),
            "end\nif ns ~= '0' then\n",
            check_len!("S", "ns", "LLEN", "summary list", "list"),
            "end\nif nd ~= '0' then\n",
            check_len!("D", "nd", "HLEN", "metadata hash", "hash"),
            "end\n"
        )
    };
}

/// For a session without a header: returns an error reply when a leftover
/// key holds a type this crate never writes there; sets `leftovers` (a
/// local the script declares) to whether any leftover exists (to be
/// deleted by a write).
macro_rules! leftovers {
    () => {
        r#"
leftovers = rcall('EXISTS', M, S, D, W) > 0
if leftovers then
  if type(rpcall('LLEN', M)) == 'table' then return wrong_type(M, 'message list', 'list') end
  if type(rpcall('LLEN', S)) == 'table' then return wrong_type(S, 'summary list', 'list') end
  if type(rpcall('HLEN', D)) == 'table' then return wrong_type(D, 'metadata hash', 'hash') end
  if type(rpcall('HLEN', W)) == 'table' then return wrong_type(W, 'remembered-writes', 'hash') end
end
"#
    };
}

/// Restarts the TTL of every key of the session that exists, by the
/// counts `nm`, `ns`, `nd`, `wk`, `wg` (strings) as the script leaves them.
macro_rules! expire_all {
    () => {
        r#"
if TTL ~= '0' then
  rcall(EXPIRE, H, TTL)
  if nm ~= '0' then rcall(EXPIRE, M, TTL) end
  if ns ~= '0' then rcall(EXPIRE, S, TTL) end
  if nd ~= '0' then rcall(EXPIRE, D, TTL) end
  if wk ~= '0' or wg ~= '0' then rcall(EXPIRE, W, TTL) end
end
"#
    };
}

/// Splits ARGV 3 of a writer into `want`, the expectation (`a` any, `n`
/// absent, else the exact version), and `wfield`: where the client may
/// re-send a call by itself (the cluster client), the expectation is
/// followed by a space and a key the store made for this call, as its
/// field in the remembered writes (`g:<key>`), else `''` (see
/// [`replayed_call!`]).
macro_rules! write_key {
    () => {
        r#"
local want, wfield = ARGV[3], ''
do
  local sp = string.find(want, ' ', 1, true)
  if sp then want, wfield = string.sub(want, 1, sp - 1), string.sub(want, sp + 1) end
end
"#
    };
}

/// The expectation `want` ([`write_key!`]) against `V`: returns `conflict`
/// when it fails.
macro_rules! expect {
    () => {
        r#"
if want == 'n' then
  if V then return 'conflict ' .. V end
elseif want ~= 'a' and V ~= want then
  return 'conflict ' .. (V or '-1')
end
"#
    };
}

/// For a call that carries a key of its own (`wfield`, [`write_key!`]):
/// when the session remembers it, the call ran before and this is the
/// client's re-send — returns that run's outcome, `ok <version>`, having
/// written nothing; else sets `wslot` (the store ring slot the call will
/// take) and `wevict` (the key that slot held). Runs after the header and
/// before the expectation, so a re-send is never a conflict.
macro_rules! replayed_call {
    () => {
        r#"
local wslot, wevict
if wfield ~= '' then
  wslot = 'G' .. (tonumber(wg) % 64)
  if V then
    local w = rpcall('HMGET', W, wfield, wslot)
    if w.err then return wrong_type(W, 'remembered-writes', 'hash') end
    if w[1] then return 'ok ' .. string.match(w[1], '^%d+') end
    wevict = w[2]
  end
end
"#
    };
}

/// The note the remembered-writes hash is created with (`keys.rs`): a Lua
/// string over 64 bytes (`hash-max-listpack-value`), so that Redis keeps
/// the hash as a hash table.
macro_rules! ring_note {
    () => {
        "'remembered writes of this session: k:<key> and g:<key> hold what the write did, K<n> and G<n> the key in ring slot n'"
    };
}

/// Remembers a call's own key (`wfield`, [`replayed_call!`]) with its
/// outcome, the new version `nv`: `"<version> 0 0"` in ring slot `wslot`
/// of the store keys, forgetting the key that slot held. Before the
/// header is written ([`bump!`] records `wg`).
macro_rules! remember_call {
    () => {
        concat!(
            r#"
if wfield ~= '' then
  if wevict then rcall('HDEL', W, 'g:' .. wevict) end
  if (wk == '0' and wg == '0') or stale then
    rcall('HSET', W, '~', "#,
            ring_note!(),
            r#")
  end
  rcall('HSET', W, wslot, string.sub(wfield, 3), wfield, nv .. ' 0 0')
  wg = tostring(tonumber(wg) + 1)
end
"#
        )
    };
}

/// Keeps the list indexes (`keys.rs`) where the scripts keep them, on a
/// standalone server (`IX`, the start of every index key, is `''` on a
/// cluster, whose client keeps them): the session whose header is `ixkey`
/// was written at `ixat` (ms, a string); `ixnew` when the write created
/// it; its owner was `ixwas` and is now `ixuser` (each a string, or
/// nil/false for none). The id is the header key's hash tag (the text
/// between its braces: neither prefix nor escaped id holds one), unescaped;
/// users are escaped as ids are. About 4k instructions per `ZADD`.
macro_rules! index {
    () => {
        r#"
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
"#
    };
}

/// Records a write in the header: the new version `nv` (a string), the
/// counts in `n`, the timestamps; creates the header when `V` is nil, and
/// deletes the fields of an older layout. Then moves the session to the
/// front of the list indexes ([`index!`]; its owner, `f[3]` — every script
/// that bumps reads `HMGET H version n user_id …` — does not change).
macro_rules! bump {
    () => {
        concat!(
            r#"
local packed = s .. ' ' .. nv .. ' ' .. nm .. ' ' .. ns .. ' ' .. nd .. ' ' .. wk .. ' ' .. wg
local ixkey, ixat, ixnew, ixwas, ixuser = H, NOW, not V, nil, nil
if V then
  rcall('HSET', H, 'version', nv, 'n', packed, 'updated_at', NOW, 'last_accessed_at', NOW)
  if old_fields then rcall('HDEL', H, 'cv', 'nm', 'ns', 'nd', 'wk', 'wg') end
  ixuser, ixwas = f[3], f[3]
else
  rcall('HSET', H, 'schema', SCHEMA, 'version', nv, 'n', packed, 'created_at', NOW,
    'updated_at', NOW, 'last_accessed_at', NOW)
end
"#,
            index!()
        )
    };
}

/// `$cmd $key $list[$first..$last]` (`RPUSH`, or `HSET`/`HDEL` with an
/// even range) in chunks of 1,000; adds the replies to `pushed`.
macro_rules! push {
    ($cmd:literal, $key:literal, $list:literal, $first:literal, $last:literal) => {
        concat!(
            "\ndo\n  local i, last = ",
            $first,
            ", ",
            $last,
            "\n  while i <= last do\n    local j = i + 999\n    if j > last then j = last end\n    pushed = pushed + rcall('",
            $cmd,
            "', ",
            $key,
            ", unpack(",
            $list,
            ", i, j))\n    i = j + 1\n  end\nend\n"
        )
    };
}

/// Merges a metadata patch into the metadata hash `D`, after every check
/// passed: `HSET` of the field, value pairs `ARGV[$set..$set_last]` (each
/// value JSON text) and `HDEL` of the fields `ARGV[$del..$last]` (the
/// patch's `null`s), both with [`push!`] (an empty range sends nothing);
/// adds the fields added to `nd` and subtracts the ones removed, so the
/// header's count stays right. The one merge of `MERGE_METADATA`, `APPEND`
/// and `ADD_SUMMARY`.
macro_rules! merge_patch {
    ($set:literal, $set_last:literal, $del:literal, $last:literal) => {
        concat!(
            "\ndo\n  local pushed = 0\n",
            push!("HSET", "D", "ARGV", $set, $set_last),
            "  local added = pushed\n  pushed = 0\n",
            push!("HDEL", "D", "ARGV", $del, $last),
            "  nd = tostring(tonumber(nd) + added - pushed)\nend\n"
        )
    };
}

/// Checks the remembered write `w1` (`"<version> <first> <count>"`, then
/// ` <token>` when the append carried one) and sets `rec` to it, preceded
/// by `1 ` when a `save` rewrote the history after it and `0 ` when not:
/// the header field `r` holds the version of the last save of a session
/// that had remembered writes, and every write older than it has lost its
/// positions (`Appended::rewritten`). Read only when a key was found.
macro_rules! remembered {
    () => {
        r#"
if not (string.find(w1, '^%d+ %d+ %d+$') or string.find(w1, '^%d+ %d+ %d+ %d+$')) then
  return 'corrupt a remembered write is malformed'
end
local rec = '0 ' .. w1
local rv = rcall('HGET', H, 'r')
if rv and tonumber(string.match(w1, '^%d+')) < tonumber(rv) then rec = '1 ' .. w1 end
"#
    };
}

/// `append_with(id, append)`.
/// ARGV 3: the expectation; 4: max messages per session (`-1`:
/// unlimited); 5: the key as its field in the remembered writes (`k:<key>`
/// the caller's, `g:<key>` one the store made, `''` none), preceded by a
/// decimal token and a space when the client may re-send the call (the
/// token is remembered with the write, so the re-send's replay is known
/// as the call's own); 6: the number of counters `C` — followed, only when
/// the append carries a metadata patch ([`Append::metadata`]), by a space,
/// the number `P` of metadata fields to set, a space and the number `Q` to
/// delete (`"C P Q"`; without a patch the argument list is as before, so
/// the hot path pays nothing); 7: the number of messages; 8..7+C: the
/// counters' header fields (`c:<name>`); 8+C..7+2C: their increments
/// (decimal, at most `i64::MAX`); 8+2C..7+2C+2P: the field, value pairs to
/// set in the metadata hash (values JSON text, as `MERGE_METADATA` takes
/// them); 8+2C+2P..7+2C+2P+Q: the fields to delete (the patch's `null`s);
/// then the messages. The patch is merged ([`merge_patch!`]) only after
/// every check passed — a replay, a conflict or `too_large` merges
/// nothing — and the metadata hash is length-checked first whenever a
/// patch writes it.
/// Returns `ok <version> <first position> <messages>` — or `replayed`,
/// `1` when a save rewrote the history since (else `0`, see
/// [`remembered!`]), the same three and the token, if any, for a key
/// already remembered, having written nothing but the access time. The key is looked up after the integrity checks and
/// before the expectation, so a repeat is a replay whatever it expects.
///
/// [`Append::metadata`]: statestore_core::Append::metadata
const APPEND: &str = concat!(
    prelude!(),
    write_key!(),
    "\nlocal RING_NOTE = ",
    ring_note!(),
    r#"
local nc, field, token, np, nq = tonumber(ARGV[6]), ARGV[5], '', 0, 0
if not nc then
  -- `<C> <P> <Q>`: the append carries a metadata patch (see ARGV 6).
  local c, p, q = string.match(ARGV[6], '^(%d+) (%d+) (%d+)$')
  if not c then return 'corrupt an append with malformed argument counts' end
  nc, np, nq = tonumber(c), tonumber(p), tonumber(q)
end
do
  -- `<token> <field>`: a token this call's client made (see ARGV 5).
  local b = string.byte(field)
  if b and b >= 48 and b <= 57 then
    local sp = string.find(field, ' ', 1, true)
    if not sp then return 'corrupt an append key without its field' end
    token, field = ' ' .. string.sub(field, 1, sp - 1), string.sub(field, sp + 1)
  end
end
local f
if nc == 0 then
  f = rpcall('HMGET', H, 'version', 'n', 'user_id')
else
  f = rpcall('HMGET', H, 'version', 'n', 'user_id', unpack(ARGV, 8, 7 + nc))
end
"#,
    header!(),
    r#"
local count = #ARGV - 7 - 2 * nc - 2 * np - nq
local first, evict, slot, leftovers = nil, nil, nil, false
if V then
  first = tonumber(nm)
  if not stale then
    local l = rpcall('LLEN', M)
    if type(l) == 'table' then return wrong_type(M, 'message list', 'list') end
    if l ~= first then return torn('message list entries', nm, l) end
    if ns ~= '0' then
"#,
    check_len!("S", "ns", "LLEN", "summary list", "list"),
    r#"
    end
    -- The metadata hash: checked when counted, or when a patch writes it.
    if nd ~= '0' or np + nq > 0 then
"#,
    check_len!("D", "nd", "HLEN", "metadata hash", "hash"),
    r#"
    end
  end
  if field ~= '' then
    -- Remembered writes: caller keys ('k', 64 deep = REMEMBERED_WRITES) and
    -- keys the store made for unkeyed appends ('g', 64 deep too). The key, the
    -- ring slot this write takes, and the newest slot (which must exist
    -- when the header records remembered writes).
    local qk, qg = tonumber(wk), tonumber(wg)
    local newest
    if qk > 0 then newest = 'K' .. ((qk - 1) % 64) elseif qg > 0 then newest = 'G' .. ((qg - 1) % 64) end
    if string.byte(field) == 107 then slot = 'K' .. (qk % 64) else slot = 'G' .. (qg % 64) end
    local w = rpcall('HMGET', W, field, slot, newest or slot)
    if w.err then return wrong_type(W, 'remembered-writes', 'hash') end
    if newest and not w[3] then
      return 'corrupt its header records remembered writes but they are gone: a key was ' ..
        'evicted or changed outside this library (see maxmemory-policy in the crate docs)'
    end
    if w[1] then
      local w1 = w[1]
"#,
    remembered!(),
    r#"
      rcall('HSET', H, 'last_accessed_at', NOW)
"#,
    expire_all!(),
    r#"
      return 'replayed ' .. rec
    end
    evict = w[2]
  end
"#,
    expect!(),
    r#"
else
"#,
    leftovers!(),
    expect!(),
    r#"
  s, nm, ns, nd, wk, wg, first = SCHEMA, '0', '0', '0', '0', '0', 0
  if field ~= '' then
    if string.byte(field) == 107 then slot = 'K0' else slot = 'G0' end
  end
end
if ARGV[4] ~= '-1' and first + count > tonumber(ARGV[4]) then return 'too_large ' .. (first + count) end
-- Counters: check every value before the first write.
local dec_le, dec_add
if nc > 0 then
  -- Decimal strings without leading zeros: a <= b.
  dec_le = function(a, b)
    if #a ~= #b then return #a < #b end
    return a <= b
  end
  -- a + b for decimal strings, exactly.
  dec_add = function(a, b)
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
  for i = 1, nc do
    local cur = f[3 + i]
    -- A value as HINCRBY keeps it: '0' or 1-19 digits up to i64::MAX.
    if cur and not (cur == '0' or (string.find(cur, '^[1-9]%d*$') and dec_le(cur, '9223372036854775807'))) then
      return 'corrupt its counter ' .. string.sub(ARGV[7 + i], 3) .. ' is not an integer from 0 to 2^63-1'
    end
  end
end
-- Every check passed: write.
if leftovers then rcall('DEL', M, S, D, W) end
local pushed = 0
"#,
    push!("RPUSH", "M", "ARGV", "8 + 2 * nc + 2 * np + nq", "#ARGV"),
    r#"
local old_nm = nm
if count > 0 then nm = tostring(first + count) end
for i = 1, nc do
  local cur, delta = f[3 + i] or '0', ARGV[7 + nc + i]
  if #cur < 18 and #delta < 18 then
    rcall('HINCRBY', H, ARGV[7 + i], delta)
  else
    local sum = dec_add(cur, delta)
    if not dec_le(sum, '9223372036854775807') then sum = '9223372036854775807' end
    rcall('HSET', H, ARGV[7 + i], sum)
  end
end
if np + nq > 0 then
  local mset, mdel = 8 + 2 * nc, 8 + 2 * nc + 2 * np
"#,
    merge_patch!("mset", "mdel - 1", "mdel", "mdel + nq - 1"),
    r#"
end
local nv = '1'
if V then nv = tostring(tonumber(V) + 1) end
local outcome = nv .. ' ' .. old_nm .. ' ' .. ARGV[7]
if field ~= '' then
  if evict then rcall('HDEL', W, string.sub(field, 1, 2) .. evict) end
  if (wk == '0' and wg == '0') or stale then
    -- A new hash (or one an older version made): with a value over 64
    -- bytes (hash-max-listpack-value) Redis keeps it as a hash table, so
    -- looking a key up costs O(1), not a scan of its 128 entries.
    rcall('HSET', W, '~', RING_NOTE, slot, string.sub(field, 3), field, outcome .. token)
  else
    rcall('HSET', W, slot, string.sub(field, 3), field, outcome .. token)
  end
  if string.byte(field) == 107 then wk = tostring(tonumber(wk) + 1) else wg = tostring(tonumber(wg) + 1) end
  -- The progress recorded under a caller's key is done with.
  if KEYS[6] then rcall('HDEL', KEYS[6], field) end
end
"#,
    bump!(),
    expire_all!(),
    r#"
return 'ok ' .. outcome
"#
);

/// The check a load runs first in its transaction (see the module docs):
/// the header, and — when the read counts as an access — that no key is
/// torn, then `last_accessed_at` and the TTL.
/// ARGV 2: the TTL as in every script, or `-` when the read is not an
/// access (the store's reads do not slide, or it is a maintenance read,
/// `Load::keep_clocks`: then `LOAD` writes nothing — no `last_accessed_at`,
/// no expiry); 3: a caller key to look up, as its field (`k:<key>`; `''`:
/// none).
/// Returns `ok <nm> <ns> <nd>`, the counts the transaction's reads must
/// match, followed by what the write under the key did (`<rewritten>
/// <version> <first> <count>` and its token, if any: [`remembered!`]) when
/// it is remembered.
const LOAD: &str = concat!(
    prelude!(),
    r#"
local f = rpcall('HMGET', H, 'version', 'n')
"#,
    header!(),
    r#"
if not V then
  local leftovers
"#,
    leftovers!(),
    r#"
  return 'missing'
end
local access = TTL ~= '-'
if access and not stale then
"#,
    check_lens!(),
    r#"
end
local reply = 'ok ' .. nm .. ' ' .. ns .. ' ' .. nd
if ARGV[3] ~= '' and wk ~= '0' then
  local w = rpcall('HMGET', W, ARGV[3], 'K' .. ((tonumber(wk) - 1) % 64))
  if w.err then return wrong_type(W, 'remembered-writes', 'hash') end
  if not w[2] then
    return 'corrupt its header records remembered writes but they are gone: a key was ' ..
      'evicted or changed outside this library (see maxmemory-policy in the crate docs)'
  end
  if w[1] then
    local w1 = w[1]
"#,
    remembered!(),
    r#"
    reply = reply .. ' ' .. rec
  end
end
if access then
  rcall('HSET', H, 'last_accessed_at', NOW)
"#,
    expire_all!(),
    r#"
end
return reply
"#
);

/// `save_with(state, options)` (ARGV 3: the expectation and maybe the
/// call's own key, [`write_key!`]): replaces everything but `created_at`
/// and the remembered writes, which lose their positions (header field
/// `r`, see [`remembered!`]). A maintenance save (`Save::keep_clocks`, the
/// last argument `k`) of an existing session also keeps `updated_at`,
/// `last_accessed_at` and the expiry: the header's expiry time
/// (`PEXPIRETIME`, on Redis 6.2 its remaining `PTTL`), read before the keys
/// are rewritten, is given to every key in place of ARGV 2 (none when the
/// header had none).
/// ARGV 3: the expectation; 4: created_at for a new session; 5/6: has
/// user id, user id; 7/8: has system prompt, prompt; 9/10/11/12: counts of
/// messages, summaries, metadata pairs and counters; then the messages,
/// the summaries, the metadata as field, value pairs and the counters as
/// name, value pairs; then the number of remembered writes the state
/// carries in, and each as field (`k:<key>`), message count — remembered
/// when the session does not remember the key yet, as `0 0 <count>`
/// (version 0: positions unknown, `RememberedWrite::carried`); last, `k`
/// for a maintenance save, else `-`.
/// Returns `ok <version>`.
const SAVE: &str = concat!(
    prelude!(),
    write_key!(),
    r#"
local f = rpcall('HMGET', H, 'version', 'n', 'created_at', 'user_id')
"#,
    header!(),
    r#"
local leftovers = false
if V then
  if not stale then
"#,
    check_lens!(),
    r#"
  end
else
"#,
    leftovers!(),
    r#"
  wk, wg = '0', '0'
end
"#,
    replayed_call!(),
    expect!(),
    r#"
nm, ns, nd = ARGV[9], ARGV[10], ARGV[11]
local nc = tonumber(ARGV[12])
local nv = '1'
if V then nv = tostring(tonumber(V) + 1) end
local i = 13 + tonumber(nm) + tonumber(ns) + 2 * tonumber(nd)
local cw = i + 2 * nc
local ncw = tonumber(ARGV[cw])
if ncw > 0 and V and type(rpcall('HLEN', W)) == 'table' then
  return wrong_type(W, 'remembered-writes', 'hash')
end
-- A maintenance save keeps the clocks of the session it replaces.
local up, acc = NOW, NOW
if V and ARGV[cw + 2 * ncw + 1] == 'k' then
  local c = rcall('HMGET', H, 'updated_at', 'last_accessed_at')
  up, acc = c[1] or NOW, c[2] or NOW
  -- The expiry as an absolute time where the server tells it (Redis 7:
  -- exact to the millisecond), else as the time left.
  local at = rpcall('PEXPIRETIME', H)
  if type(at) == 'number' then
    if at > 0 then TTL, EXPIRE = tostring(at), 'PEXPIREAT' else TTL = '0' end
  else
    local left = rcall('PTTL', H)
    if left > 0 then TTL = tostring(left) else TTL = '0' end
  end
end
-- Every check passed: write.
if leftovers then rcall('DEL', W) end
if ncw > 0 then
  -- Carried-in writes take the next caller-ring slots, as an append's do.
  if rcall('EXISTS', W) == 0 then
    rcall('HSET', W, '~', "#,
    ring_note!(),
    r#")
  end
  local q = tonumber(wk)
  for k = cw + 1, cw + 2 * ncw - 1, 2 do
    local field = ARGV[k]
    if rcall('HEXISTS', W, field) == 0 then
      local slot = 'K' .. (q % 64)
      local old = rcall('HGET', W, slot)
      if old then rcall('HDEL', W, 'k:' .. old) end
      rcall('HSET', W, slot, string.sub(field, 3), field, '0 0 ' .. ARGV[k + 1])
      q = q + 1
    end
  end
  wk = tostring(q)
end
"#,
    remember_call!(),
    r#"
local h = { 'schema', SCHEMA, 'version', nv, 'created_at', f[3] or ARGV[4], 'updated_at', up,
  'last_accessed_at', acc, 'n', SCHEMA .. ' ' .. nv .. ' ' .. nm .. ' ' .. ns .. ' ' .. nd .. ' ' .. wk .. ' ' .. wg }
-- Remembered writes keep their keys but lose their positions (`r`).
if wk ~= '0' or wg ~= '0' then h[#h + 1], h[#h + 2] = 'r', nv end
if ARGV[5] == '1' then h[#h + 1], h[#h + 2] = 'user_id', ARGV[6] end
if ARGV[7] == '1' then h[#h + 1], h[#h + 2] = 'system_prompt', ARGV[8] end
for k = i, i + 2 * nc - 1, 2 do
  h[#h + 1], h[#h + 2] = 'c:' .. ARGV[k], ARGV[k + 1]
end
rcall('DEL', H, M, S, D)
local pushed = 0
"#,
    push!("RPUSH", "M", "ARGV", "13", "12 + tonumber(nm)"),
    push!(
        "RPUSH",
        "S",
        "ARGV",
        "13 + tonumber(nm)",
        "12 + tonumber(nm) + tonumber(ns)"
    ),
    push!(
        "HSET",
        "D",
        "ARGV",
        "13 + tonumber(nm) + tonumber(ns)",
        "12 + tonumber(nm) + tonumber(ns) + 2 * tonumber(nd)"
    ),
    push!("HSET", "H", "h", "1", "#h"),
    r#"
local ixkey, ixat, ixnew, ixwas, ixuser = H, up, not V, f[4], nil
if ARGV[5] == '1' then ixuser = ARGV[6] end
"#,
    index!(),
    expire_all!(),
    r#"
return 'ok ' .. nv
"#
);

/// `merge_metadata(id, patch, expect)`.
/// ARGV 3: the expectation and maybe the call's own key ([`write_key!`]); 4: number of field, value pairs to set; then
/// the pairs; then the fields to delete.
/// Returns `ok <version>`.
const MERGE_METADATA: &str = concat!(
    prelude!(),
    write_key!(),
    r#"
local f = rpcall('HMGET', H, 'version', 'n', 'user_id')
"#,
    header!(),
    r#"
local leftovers = false
if V then
  if not stale then
    if nm ~= '0' then
"#,
    check_len!("M", "nm", "LLEN", "message list", "list"),
    r#"
    end
    if ns ~= '0' then
"#,
    check_len!("S", "ns", "LLEN", "summary list", "list"),
    r#"
    end
"#,
    check_len!("D", "nd", "HLEN", "metadata hash", "hash"),
    r#"
  end
else
"#,
    leftovers!(),
    r#"
  s, nm, ns, nd, wk, wg = SCHEMA, '0', '0', '0', '0', '0'
end
"#,
    replayed_call!(),
    expect!(),
    r#"
-- Every check passed: write.
if leftovers then rcall('DEL', M, S, D, W) end
local first_del = 5 + 2 * tonumber(ARGV[4])
"#,
    merge_patch!("5", "first_del - 1", "first_del", "#ARGV"),
    r#"
local nv = '1'
if V then nv = tostring(tonumber(V) + 1) end
"#,
    remember_call!(),
    bump!(),
    expire_all!(),
    r#"
return 'ok ' .. nv
"#
);

/// `add_summary_with(id, add)`.
/// ARGV 3: the expectation and maybe the call's own key ([`write_key!`]); 4/5: the covered range's start and end; 6:
/// the summary's JSON; 7: the number `P` of metadata fields to set
/// ([`AddSummary::metadata`]); 8..7+2P: the field, value pairs (values
/// JSON text, as `MERGE_METADATA` takes them); then the fields to delete
/// (the patch's `null`s). The patch is merged ([`merge_patch!`]) only
/// after every check passed — a conflict or `range` merges nothing — and
/// the metadata hash is length-checked first whenever a patch writes it.
/// Returns `ok <version>`, or `range <messages>`.
///
/// [`AddSummary::metadata`]: statestore_core::AddSummary::metadata
const ADD_SUMMARY: &str = concat!(
    prelude!(),
    write_key!(),
    r#"
local f = rpcall('HMGET', H, 'version', 'n', 'user_id')
"#,
    header!(),
    r#"
if not V then return 'missing' end
if not stale then
"#,
    check_len!("M", "nm", "LLEN", "message list", "list"),
    check_len!("S", "ns", "LLEN", "summary list", "list"),
    r#"
  if nd ~= '0' or #ARGV > 7 then
"#,
    check_len!("D", "nd", "HLEN", "metadata hash", "hash"),
    r#"
  end
end
"#,
    replayed_call!(),
    expect!(),
    r#"
local first, last, total = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(nm)
if first >= last or last > total then return 'range ' .. nm end
-- Every check passed: write.
rcall('RPUSH', S, ARGV[6])
ns = tostring(tonumber(ns) + 1)
if #ARGV > 7 then
  local first_del = 8 + 2 * tonumber(ARGV[7])
"#,
    merge_patch!("8", "first_del - 1", "first_del", "#ARGV"),
    r#"
end
local nv = tostring(tonumber(V) + 1)
"#,
    remember_call!(),
    bump!(),
    expire_all!(),
    r#"
return 'ok ' .. nv
"#
);

/// `touch(id)`: updates `last_accessed_at` and restarts the TTL.
/// Returns `ok` or `missing`.
const TOUCH: &str = concat!(
    prelude!(),
    r#"
local f = rpcall('HMGET', H, 'version', 'n')
"#,
    header!(),
    r#"
if not V then return 'missing' end
if not stale then
"#,
    check_lens!(),
    r#"
end
rcall('HSET', H, 'last_accessed_at', NOW)
"#,
    expire_all!(),
    r#"
return 'ok'
"#
);

/// `fork(source, target)` when both sessions' keys share a slot (always on
/// a standalone server): a server-side copy with `COPY` (Redis ≥ 6.2) in
/// one atomic step. KEYS 1–5: the source's five keys (its remembered
/// writes are not copied); 6–10: the target's. ARGV 3: `1` when the read
/// of the source counts as an access; 4: where the client may re-send a
/// call, a key the store made for this call as its field (`g:<key>`,
/// remembered by the target: a re-send of a fork that ran returns `ok 1`).
/// Returns `ok 1`; `missing` (no source); `target` and the reply the
/// target's state stands for (`conflict` when it exists, `corrupt`); or
/// `nocopy` (no `COPY` on this server) — having written nothing.
const FORK: &str = concat!(
    prelude!(),
    r#"
local TH, TM, TS, TD, TW = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local wfield = ARGV[4] or ''
local f = rpcall('HMGET', H, 'version', 'n')
"#,
    header!(),
    r#"
if not V then return 'missing' end
if not stale then
"#,
    check_lens!(),
    r#"
end
-- A call re-sent by the client after it ran: the target remembers it.
if wfield ~= '' and type(rpcall('HGET', TW, wfield)) == 'string' then return 'ok 1' end
-- The target: absent, leftovers checked. Problems of the target are
-- reported as `target` and the reply they would be for it.
local t = rpcall('HGET', TH, 'version')
if type(t) == 'table' then return 'target ' .. wrong_type(TH, 'header', 'hash') end
if t then return 'target conflict ' .. t end
if rcall('EXISTS', TH) == 1 then return 'target corrupt its header has no integer schema and version' end
local leftovers = rcall('EXISTS', TM, TS, TD, TW) > 0
if leftovers then
  if type(rpcall('LLEN', TM)) == 'table' then return 'target ' .. wrong_type(TM, 'message list', 'list') end
  if type(rpcall('LLEN', TS)) == 'table' then return 'target ' .. wrong_type(TS, 'summary list', 'list') end
  if type(rpcall('HLEN', TD)) == 'table' then return 'target ' .. wrong_type(TD, 'metadata hash', 'hash') end
  if type(rpcall('HLEN', TW)) == 'table' then
    return 'target ' .. wrong_type(TW, 'remembered-writes', 'hash')
  end
end
-- Every check passed. The first COPY also tells whether the server has it.
local c = rpcall('COPY', H, TH)
if type(c) == 'table' then
  if string.find(string.lower(c.err), 'unknown', 1, true) then return 'nocopy' end
  return c
end
if leftovers then rcall('DEL', TM, TS, TD, TW) end
if nm ~= '0' then rcall('COPY', M, TM) end
if ns ~= '0' then rcall('COPY', S, TS) end
if nd ~= '0' then rcall('COPY', D, TD) end
local twg = '0'
if wfield ~= '' then
  -- The call's own key, so that a re-send finds the fork made.
  rcall('HSET', TW, '~', "#,
    ring_note!(),
    r#", 'G0', string.sub(wfield, 3), wfield, '1 0 0')
  twg = '1'
end
rcall('HSET', TH, 'version', '1', 'n', s .. ' 1 ' .. nm .. ' ' .. ns .. ' ' .. nd .. ' 0 ' .. twg,
  'created_at', NOW, 'updated_at', NOW, 'last_accessed_at', NOW)
-- The target has no remembered writes, hence no rewrite mark (`r`).
if old_fields then
  rcall('HDEL', TH, 'r', 'cv', 'nm', 'ns', 'nd', 'wk', 'wg')
else
  rcall('HDEL', TH, 'r')
end
local ixkey, ixat, ixnew, ixwas, ixuser = TH, NOW, true, nil, nil
if IX ~= '' then ixuser = rcall('HGET', TH, 'user_id') end
"#,
    index!(),
    r#"
-- COPY copies each key's TTL: the target's restarts, or has none.
if TTL ~= '0' then
  rcall('PEXPIRE', TH, TTL)
  if nm ~= '0' then rcall('PEXPIRE', TM, TTL) end
  if ns ~= '0' then rcall('PEXPIRE', TS, TTL) end
  if nd ~= '0' then rcall('PEXPIRE', TD, TTL) end
  if twg ~= '0' then rcall('PEXPIRE', TW, TTL) end
else
  rcall('PERSIST', TH)
  if nm ~= '0' then rcall('PERSIST', TM) end
  if ns ~= '0' then rcall('PERSIST', TS) end
  if nd ~= '0' then rcall('PERSIST', TD) end
end
if ARGV[3] == '1' then
  rcall('HSET', H, 'last_accessed_at', NOW)
"#,
    expire_all!(),
    r#"
end
return 'ok 1'
"#
);

/// `delete_with(id, options)`: removes all five keys and the progress hash
/// (KEYS 6), freed in the background. ARGV 1: the expectation (`a` any,
/// `n` absent, else the exact version): a session it does not admit is
/// `conflict` and its version (`-1`: none), and nothing is removed.
/// Where the client may re-send a call (the cluster client), ARGV 2 is a
/// token the store made for this call and KEYS 7 the session's deletion
/// mark (`keys.rs`): a delete that finds the session leaves the token
/// there for 60 s, and a re-send that finds the session gone and its own
/// token there reports what the first run did.
/// Returns `ok 1` when the header existed, else `ok 0`.
const DELETE: &str = r#"
local existed = redis.call('EXISTS', KEYS[1])
local want, token = ARGV[1], ARGV[2]
if token and existed == 0 and redis.call('GET', KEYS[7]) == token then
  return 'ok 1'
end
if want ~= 'a' then
  local v = existed == 1 and redis.call('HGET', KEYS[1], 'version')
  if (want == 'n' and v) or (want ~= 'n' and v ~= want) then
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
  local u = existed == 1 and redis.call('HGET', KEYS[1], 'user_id')
  if u then
    local k = IX .. ':' .. (string.gsub(u, '[%%{}]', { ['%'] = '%25', ['{'] = '%7B', ['}'] = '%7D' }))
    redis.call('ZREM', k .. '}:recent', id)
    redis.call('ZREM', k .. '}:ids', id)
  end
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return 'ok ' .. existed
"#;

/// `put_pending(id, key, pending)`: KEYS 1: the remembered-writes hash; 2:
/// the progress hash. ARGV 1: the key's field (`k:<key>`); 2: the
/// progress as JSON; 3: the TTL in ms, `0` for none. Records the progress
/// unless the key's write is remembered; returns `ok`.
const PENDING: &str = r#"
local done = redis.pcall('HEXISTS', KEYS[1], ARGV[1])
if done == 1 then return 'ok' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 'ok'
"#;

/// Removes a stale entry from one list index (`list.rs`) on a standalone
/// server: KEYS 1: the session's header; 2, 3: the index's `recent` and
/// `ids` sets. ARGV 1: the id; 2: the index's user (`''`: every session's).
/// Removes the entry only if, now, the session does not exist or belongs
/// to another user — a session re-created since the listing read it keeps
/// its entries. Returns `ok 1` when it removed them, else `ok 0`.
const UNLIST: &str = r#"
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and (ARGV[2] == '' or redis.call('HGET', KEYS[1], 'user_id') == ARGV[2]) then
  return 'ok 0'
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 'ok 1'
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
    pub(crate) fork: Script,
    pub(crate) delete: Script,
    pub(crate) pending: Script,
    pub(crate) unlist: Script,
}

/// `text` as a Lua string literal: every byte a decimal escape, so any
/// prefix is safe in a script.
fn lua_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 4 + 2);
    out.push('"');
    for b in text.bytes() {
        out.push_str(&format!("\\{b:03}"));
    }
    out.push('"');
    out
}

impl Scripts {
    /// The scripts of a store whose list indexes start with `index_base`
    /// (`Keys::index_base`), kept by the scripts; `None` when the client
    /// keeps them (a cluster: see `keys.rs`).
    pub(crate) fn new(index_base: Option<&str>) -> Self {
        let ix = lua_literal(index_base.unwrap_or_default());
        let script = |text: &str| {
            Script::new(
                &text
                    .replace("@SCHEMA@", &SCHEMA_VERSION.to_string())
                    .replace("@IX@", &ix),
            )
        };
        Self {
            append: script(APPEND),
            load: script(LOAD),
            save: script(SAVE),
            merge_metadata: script(MERGE_METADATA),
            add_summary: script(ADD_SUMMARY),
            touch: script(TOUCH),
            fork: script(FORK),
            delete: script(DELETE),
            pending: script(PENDING),
            unlist: script(UNLIST),
        }
    }

    /// Every script, for preloading.
    pub(crate) fn all(&self) -> [&Script; 10] {
        [
            &self.append,
            &self.load,
            &self.save,
            &self.merge_metadata,
            &self.add_summary,
            &self.touch,
            &self.fork,
            &self.delete,
            &self.pending,
            &self.unlist,
        ]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_caller_ring_remembers_what_core_promises() {
        let deep = statestore_core::REMEMBERED_WRITES;
        for (script, needle) in [
            (super::APPEND, format!("slot = 'K' .. (qk % {deep})")),
            (super::APPEND, format!("'K' .. ((qk - 1) % {deep})")),
            (super::APPEND, format!("slot = 'G' .. (qg % {deep})")),
            (super::APPEND, format!("'G' .. ((qg - 1) % {deep})")),
            (super::LOAD, format!("'K' .. ((tonumber(wk) - 1) % {deep})")),
        ] {
            assert!(
                script.contains(&needle),
                "the caller ring must be {deep} deep ({needle:?})"
            );
        }
    }

    #[test]
    fn every_script_is_filled_in_and_replies_with_one_string() {
        let scripts = super::Scripts::new(Some("p:{ix"));
        assert_eq!(scripts.all().len(), 10);
        for text in [
            super::APPEND,
            super::LOAD,
            super::SAVE,
            super::MERGE_METADATA,
            super::ADD_SUMMARY,
            super::TOUCH,
            super::FORK,
        ] {
            assert!(text.contains("'@SCHEMA@'"));
            // A table reply costs the server ~7k instructions more than a
            // string: every `return` hands back a string (or, from FORK, a
            // pcall error as it came).
            assert!(!text.contains("return {"), "a table reply");
        }
    }

    /// The SHA1 of every script as sent to Redis (the `EVALSHA` digest),
    /// without and with list indexes kept by the scripts. These change only
    /// with an intended change of a script's text (or of `SCHEMA_VERSION`,
    /// which is part of it): update them in the same commit, saying why. A
    /// change of how the scripts are put together must leave them as they
    /// are — byte for byte the same scripts.
    #[test]
    fn every_script_is_the_text_it_was() {
        let names = [
            "append",
            "load",
            "save",
            "merge_metadata",
            "add_summary",
            "touch",
            "fork",
            "delete",
            "pending",
            "unlist",
        ];
        let expected: [(Option<&str>, [&str; 10]); 2] = [
            (
                None,
                [
                    "d881714fc720e29bcf21b09f667c9d6065f3cf9c",
                    "54dabcd629664059aba9d795b596aa9f92f611e4",
                    "0103414a664dbf18e54c2dde4bb24520891a190f",
                    "b37b155b396cbf22be53d95b4ab139951e09a1d2",
                    "b2be156272aa34b025987ae9ef00743ada3abb61",
                    "595e03494254702aa767944a62d92e37334bee2a",
                    "863b4f11ed247ffe1103d982f70b8deb1e93c0c5",
                    "de1a50c3f9f27f004137780a7ce812a5217b1638",
                    "71c62027ac1c03fb161c3abd6c745bca48a9115b",
                    "385eb9e8b7e8bf53cf3c367683549085f4b33933",
                ],
            ),
            (
                Some("p:{ix"),
                [
                    "7f054c560a47a7dbbdf3a501800449758d8486e8",
                    "b2d88e90ad91f635040dcb98622c3a4fb43c682a",
                    "ca8d99a2537d8d50c924e13d1f9b35b8c1974df3",
                    "d7ec5f8922d72246f42cc5574ac8aa085abcbbf9",
                    "9571a0c45b9936e76ff45a20287e4b289314f5b9",
                    "316abb15b95ed8d01f8a915ea9d31da2b355e833",
                    "d70ee36e66a0ab107cac75a166600cf6a9858019",
                    "c94f13f96c96da1734c0bd987df96a05ef828ee6",
                    "71c62027ac1c03fb161c3abd6c745bca48a9115b",
                    "385eb9e8b7e8bf53cf3c367683549085f4b33933",
                ],
            ),
        ];
        for (index_base, digests) in expected {
            let scripts = super::Scripts::new(index_base);
            for ((name, script), digest) in names.iter().zip(scripts.all()).zip(digests) {
                assert_eq!(
                    script.get_hash(),
                    digest,
                    "{name} (index base {index_base:?}) is not the script it was"
                );
            }
        }
    }
}
