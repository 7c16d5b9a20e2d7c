//! Every Lua script this crate runs — one per multi-key operation, so each
//! is atomic and one round trip (`EVALSHA`, reloaded after `NOSCRIPT`).
//!
//! # Where the Lua lives
//!
//! Each script is one file under `src/scripts/`, named after its
//! operation; the comment at its top gives its KEYS, ARGV and reply:
//!
//! | file | the script of |
//! |------|---------------|
//! | `append.lua` | `append_with`: messages, counters, a metadata patch, a remembered key |
//! | `load.lua` | the check at the start of a load's transaction, for a header of an older layout (see below) |
//! | `save.lua` | `save_with`: replaces the whole state |
//! | `merge_metadata.lua` | `merge_metadata` |
//! | `add_summary.lua` | `add_summary_with` |
//! | `touch.lua` | `touch` |
//! | `fork.lua` | `fork` where both sessions share a slot (a server-side `COPY`) |
//! | `delete.lua` | `delete_with` |
//! | `pending.lua` | `put_pending`: the progress of an execute under a caller key |
//! | `unlist.lua` | removing a stale list index entry (`list.rs`) |
//!
//! The Lua they share — the prelude, reading and checking the header,
//! recording a write, keeping the list indexes, … — is in
//! `src/scripts/shared/`, one fragment per file, each documented at its
//! top with what it uses, defines and returns. A script includes a
//! fragment with a line `--#include shared/<name>.lua`, followed by
//! `name='value'` pairs for a fragment with parameters (`@name@`); the
//! rules that put the text sent together are in `scripts/compose.rs`.
//! The placeholders left, filled in by [`Scripts::new`], are `@SCHEMA@`
//! (the schema this build writes), `@IX@` (the start of the list index
//! keys, a Lua string; `''` where the client keeps them) and
//! `@RING_NOTE@` ([`RING_NOTE`]). Every script, so composed, has its SHA1
//! pinned in the tests below: a change to a `.lua` file that changes what
//! is sent shows there, and a change that should not (a comment, the
//! indentation of an include line) is proven not to.
//!
//! The scripts of a session (all but `pending.lua` and `unlist.lua`) take
//! its five keys first (`keys.rs`), always in the order header, messages,
//! summaries, metadata, remembered writes, so they all hash to one cluster
//! slot (`FORK` takes the source's five keys, then the target's, and runs
//! only where both share a slot). The schema version this build writes
//! (`statestore_core::codec::SCHEMA_VERSION`) is part of each script's
//! text. The first two arguments of all but `delete.lua`, `pending.lua`
//! and `unlist.lua` are:
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
//! field), `SAVE`, `MERGE_METADATA`, `ADD_SUMMARY` (`shared/write_key.lua`,
//! `replayed_call.lua`, `remember_call.lua`), `FORK` (the target remembers
//! the key) and `DELETE` (a deletion mark holds the call's token for 60 s).
//! `TOUCH` needs none: running it twice does what running it once does.
//!
//! # Metadata patches
//!
//! `MERGE_METADATA`, and an `APPEND` or `ADD_SUMMARY` that carries a
//! metadata patch (`Append::metadata`, `AddSummary::metadata`), merge it
//! with the one `shared/merge_patch.lua`: `HSET` of the values (JSON
//! text), `HDEL` of the `null`s on the metadata hash, `nd` adjusted — after
//! every check passed, so a replay, a conflict, `too_large` or `range`
//! merges nothing.
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
//! A load is one `MULTI … EXEC` transaction of plain commands, no script
//! (`read.rs`: the commands, the checks the client makes of what they
//! return, and when a read records its access with `TOUCH`). Atomic like a
//! script, one round trip like a script, but the bulk of a load — every
//! message — goes from Redis to the client without being converted into
//! Lua strings and back (which costs ~2.7k instructions per message in the
//! server, against ~0.3k for a plain `LRANGE`), and no script is started
//! (~12k, plus ~1.2k per key and argument). `LOAD` below opens the
//! transaction only for a header of an older layout, whose counts it
//! adopts from the keys' lengths.
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
//!   One check comes with a write and undoes it: an append learns the
//!   message list's type and length from its own `RPUSH` (the reply is the
//!   new length), and when the list is not as long as the header records,
//!   trims off what it pushed and answers `corrupt` before writing
//!   anything else — a script is atomic, so nobody sees the push, and an
//!   `LLEN` first (~3k instructions) is saved on every append.
//! - **A torn session is refused**: the header's `n` field records how many
//!   messages, summaries and metadata fields the other keys hold (valid
//!   while the version it records is the header's `version`, see
//!   `keys.rs`). Every script compares the lengths it reads with them —
//!   always for the keys it writes, and for every key whose count is not
//!   zero, since such a key must exist — and answers `corrupt` when
//!   eviction (or anything else) removed or changed a key behind the
//!   header's back. A key whose count is zero is not read unless the
//!   script writes it. Loads run no script: the client compares what it
//!   read with the counts (`read.rs`). Remembered writes are checked where
//!   they are read: by a keyed append (the newest ring slot the header
//!   records must exist), and by a load asked about a key (the hash's note
//!   field must exist). Counts of a header an
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
//! Lua text, the fragments of `shared/` included where needed — they read
//! the header with one `HMGET` of two fields (`version` and the packed
//! `n`), compare numbers as the strings Redis returns where they can,
//! convert each number at most once, and write the header with one `HSET`
//! of four fields. An append packs every argument but its messages into one
//! (`call.rs`'s `Packed`, a MessagePack stream the script reads with
//! `cmsgpack.unpack`: ~0.3k per string against ~1k per argument), and
//! formats integers with `string.format('%d')` (~1.75k against ~2.9k for
//! `tostring`'s `%.14g`). Redis Functions (`FCALL`) were measured too: ~4.7k instructions
//! less per call than `EVALSHA` for the same body, not worth a library
//! that must be versioned and loaded on every node by hand.

mod compose;

use redis::Script;
use statestore_core::codec::SCHEMA_VERSION;

/// `(path, text)` of Lua files under `src/scripts/`, each read into the
/// build with `include_str!`.
macro_rules! lua_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("scripts/", $path)))),*]
    };
}

/// Every Lua file under `src/scripts/`, by its path there: the scripts,
/// then the fragments they include.
const FILES: &[(&str, &str)] = lua_files![
    "append.lua",
    "load.lua",
    "save.lua",
    "merge_metadata.lua",
    "add_summary.lua",
    "touch.lua",
    "fork.lua",
    "delete.lua",
    "pending.lua",
    "unlist.lua",
    "shared/prelude.lua",
    "shared/header.lua",
    "shared/check_len.lua",
    "shared/check_lens.lua",
    "shared/leftovers.lua",
    "shared/expire_all.lua",
    "shared/write_key.lua",
    "shared/expect.lua",
    "shared/replayed_call.lua",
    "shared/remember_call.lua",
    "shared/index.lua",
    "shared/bump.lua",
    "shared/push.lua",
    "shared/merge_patch.lua",
    "shared/remembered.lua",
];

/// The note the remembered-writes hash is created with (`keys.rs`), in
/// place of `@RING_NOTE@`: a Lua string over 64 bytes
/// (`hash-max-listpack-value`), so that Redis keeps the hash as a hash
/// table.
const RING_NOTE: &str = "'remembered writes of this session: k:<key> and g:<key> hold what the write did, K<n> and G<n> the key in ring slot n'";

/// The text of the script in `src/scripts/<path>`, its includes expanded
/// (`scripts/compose.rs`) and `@RING_NOTE@` filled in; `@SCHEMA@` and
/// `@IX@` are left to [`Scripts::new`]. Problems are added to `problems`.
fn text(path: &str, problems: &mut Vec<String>) -> String {
    compose::compose(FILES, path, problems).replace("@RING_NOTE@", RING_NOTE)
}

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
        let schema = SCHEMA_VERSION.to_string();
        // The files are part of the build and the tests compose every
        // script without problems, so there are none to report here.
        let mut problems = Vec::new();
        let mut script = |path: &str| {
            Script::new(
                &text(path, &mut problems)
                    .replace("@SCHEMA@", &schema)
                    .replace("@IX@", &ix),
            )
        };
        let scripts = Self {
            append: script("append.lua"),
            load: script("load.lua"),
            save: script("save.lua"),
            merge_metadata: script("merge_metadata.lua"),
            add_summary: script("add_summary.lua"),
            touch: script("touch.lua"),
            fork: script("fork.lua"),
            delete: script("delete.lua"),
            pending: script("pending.lua"),
            unlist: script("unlist.lua"),
        };
        debug_assert!(problems.is_empty(), "{problems:?}");
        scripts
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
    use super::FILES;

    /// The scripts' files, in the order of [`super::Scripts::all`].
    const SCRIPTS: [&str; 10] = [
        "append.lua",
        "load.lua",
        "save.lua",
        "merge_metadata.lua",
        "add_summary.lua",
        "touch.lua",
        "fork.lua",
        "delete.lua",
        "pending.lua",
        "unlist.lua",
    ];

    /// The text of a script, composed without problems.
    fn text(path: &str) -> String {
        let mut problems = Vec::new();
        let text = super::text(path, &mut problems);
        assert_eq!(problems, Vec::<String>::new(), "{path}");
        text
    }

    #[test]
    fn every_lua_file_is_in_the_build_and_used() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scripts");
        let mut on_disk = Vec::new();
        for sub in ["", "shared/"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if name.ends_with(".lua") {
                    on_disk.push(format!("{sub}{name}"));
                }
            }
        }
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "FILES lists every .lua file, once");
        for (path, _) in FILES {
            let included = FILES
                .iter()
                .any(|(_, t)| t.contains(&format!("--#include {path}")));
            assert_eq!(
                SCRIPTS.contains(path),
                !included,
                "{path}: a script is sent (and included nowhere), a fragment is included"
            );
        }
        for path in SCRIPTS {
            let text = text(path);
            assert!(!text.contains("--#include"), "{path}");
            assert!(!text.contains("@RING_NOTE@"), "{path}");
        }
    }

    #[test]
    fn the_caller_ring_remembers_what_core_promises() {
        let deep = statestore_core::REMEMBERED_WRITES;
        let (append, load) = (text("append.lua"), text("load.lua"));
        for (script, needle) in [
            (&append, format!("slot = string.format('K%d', qk % {deep})")),
            (&append, format!("string.format('K%d', (qk - 1) % {deep})")),
            (&append, format!("slot = string.format('G%d', qg % {deep})")),
            (&append, format!("string.format('G%d', (qg - 1) % {deep})")),
            (&load, format!("'K' .. ((tonumber(wk) - 1) % {deep})")),
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
        for path in [
            "append.lua",
            "load.lua",
            "save.lua",
            "merge_metadata.lua",
            "add_summary.lua",
            "touch.lua",
            "fork.lua",
        ] {
            let text = text(path);
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
        let expected: [(Option<&str>, [&str; 10]); 2] = [
            (
                None,
                [
                    "1ecd484169dbd8cc7afef112cc1ad8199a69b6b1",
                    "54dabcd629664059aba9d795b596aa9f92f611e4",
                    "0103414a664dbf18e54c2dde4bb24520891a190f",
                    "b37b155b396cbf22be53d95b4ab139951e09a1d2",
                    "b2be156272aa34b025987ae9ef00743ada3abb61",
                    "595e03494254702aa767944a62d92e37334bee2a",
                    "863b4f11ed247ffe1103d982f70b8deb1e93c0c5",
                    "d10918617ed47fdea5f7caed2ce3254d043014b6",
                    "71c62027ac1c03fb161c3abd6c745bca48a9115b",
                    "630afd768c893be09e11295f475c9582ec68f9da",
                ],
            ),
            (
                Some("p:{ix"),
                [
                    "28b97599d0187f1abf2923774a4336e8494abd2a",
                    "b2d88e90ad91f635040dcb98622c3a4fb43c682a",
                    "ca8d99a2537d8d50c924e13d1f9b35b8c1974df3",
                    "d7ec5f8922d72246f42cc5574ac8aa085abcbbf9",
                    "9571a0c45b9936e76ff45a20287e4b289314f5b9",
                    "316abb15b95ed8d01f8a915ea9d31da2b355e833",
                    "d70ee36e66a0ab107cac75a166600cf6a9858019",
                    "92e0e498aa2b5566cdc57180e102c88fe4f922aa",
                    "71c62027ac1c03fb161c3abd6c745bca48a9115b",
                    "630afd768c893be09e11295f475c9582ec68f9da",
                ],
            ),
        ];
        for (index_base, digests) in expected {
            let scripts = super::Scripts::new(index_base);
            for ((name, script), digest) in SCRIPTS.iter().zip(scripts.all()).zip(digests) {
                assert_eq!(
                    script.get_hash(),
                    digest,
                    "{name} (index base {index_base:?}) is not the script it was"
                );
            }
        }
    }
}
