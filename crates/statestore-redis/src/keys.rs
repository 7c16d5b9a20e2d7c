//! The Redis key layout — every key this crate reads or writes is built here.
//!
//! A session `id` under the store prefix `P` owns five keys, all sharing the
//! hash tag `{E}`, where `E` is the escaped id (below). Sharing the tag puts
//! every key of a session in one Redis Cluster slot, so each operation can be
//! one atomic Lua script without `CROSSSLOT` errors.
//!
//! | key        | type | holds |
//! |------------|------|-------|
//! | `P{E}:h`   | hash | header (below) |
//! | `P{E}:m`   | list | messages, oldest first, one JSON document each (`statestore_core::codec`) |
//! | `P{E}:s`   | list | summaries, oldest first, one JSON document each |
//! | `P{E}:d`   | hash | metadata: one field per key, the value as JSON text; written by `save`, `merge_metadata`, and by an append or `add_summary_with` whose metadata patch is not empty (`HSET` of its values, `HDEL` of its `null`s, in the write's own script, `nd` kept right) |
//! | `P{E}:w`   | hash | remembered writes (below) |
//!
//! One more key shares the tag without being part of the session: `P{E}:x`,
//! a string, the **deletion mark**. On the cluster client, which re-sends
//! requests by itself, a `delete` that finds the session sets it to a
//! token of the call, for 60 s, so that the client's re-send of that call
//! reports the deletion it made rather than "did not exist"
//! (`scripts/delete.lua`). Listing never sees it (only `:h` keys are listed).
//!
//! And `P{E}:p`, a hash, the **progress** of keyed writes still to be made
//! (`Store::put_pending`: a turn between its tool rounds): field `k:<key>`,
//! value one `statestore_core::Pending` as JSON. It may exist before the
//! session does, so it is not one of the session's keys and no script
//! counts it: `PENDING` writes a field unless the key's write is
//! remembered and gives the hash the store's TTL; `APPEND` deletes the
//! field of its key; `DELETE` removes the hash; loads asked about a key
//! read its field.
//!
//! A session exists exactly when its header exists; the other keys are
//! absent while empty (Redis deletes empty lists and hashes). Every key
//! carries the same TTL, moved together by every script.
//!
//! # The header
//!
//! | field | holds |
//! |-------|-------|
//! | `schema` | the storage schema (`statestore_core::codec::SCHEMA_VERSION`), written when the session is created |
//! | `version` | the session's version |
//! | `n` | `"<schema> <version> <nm> <ns> <nd> <wk> <wg>"`: the counts below, valid while its version is `version` |
//! | `created_at`, `updated_at`, `last_accessed_at` | ms since the epoch |
//! | `user_id`, `system_prompt` | absent when unset |
//! | `c:<name>` | counter `name`, a decimal integer (at most `i64::MAX`) |
//! | `r` | the version of the last `save` of the session while it had remembered writes; absent if none |
//!
//! `n` packs what every script needs besides `version` into one field, so
//! a script reads the header with one `HMGET` of two fields and records a
//! write with one `HSET` of four (each field a script sends or receives
//! costs Redis ~2k instructions; see `scripts.rs`): `nm`, `ns`, `nd` are
//! how many messages, summaries and metadata fields the other keys hold;
//! `wk`, `wg` how many caller-keyed / store-keyed appends were ever
//! remembered (ring sequence numbers, below). A later layout must keep
//! `n`'s first number its schema, or drop `n`.
//!
//! The counts make a **torn session** detectable: when eviction (or a hand
//! `DEL`) removed one key of a session and left the header, its length no
//! longer matches the header and every script refuses the session as
//! corrupt instead of serving or extending a partial history. The counts
//! are trusted only while `n`'s version is `version`: a session last
//! written by an older version of this crate (which bumps the version but
//! not `n`) has its current lengths adopted, and recorded by the next
//! write.
//!
//! The previous layout kept the counts in fields `nm`, `ns`, `nd`, `wk`,
//! `wg`, valid while `cv` was the version. A header with those is adopted
//! like a stale `n` — its counts compared with the keys' lengths when `cv`
//! says they are current — and the next write deletes the old fields. A
//! version of this crate from before `n` reading or writing a session this
//! one wrote finds no `cv` and adopts the lengths too; not seeing `n`'s
//! ring positions, it may reuse ring slots and so forget remembered keys
//! early (the ring position adopted afterwards is the larger of the two).
//!
//! # Remembered writes
//!
//! `P{E}:w` remembers what the last keyed appends did, so a repeat is a
//! replay (see `statestore_core::write`). It is a hash used as two rings:
//!
//! | field | holds |
//! |-------|-------|
//! | `k:<key>` | a caller-keyed append: `"<version> <first position> <messages>"` |
//! | `K<slot>` | the caller key in ring slot `slot` = `wk mod 64` |
//! | `g:<key>` | a write keyed by the store (on the cluster client: an unkeyed append, a `save`, `merge_metadata`, `add_summary`, or the `fork` that made the session), as `k:` (for writes other than appends: `"<version> 0 0"`) |
//! | `G<slot>` | the store key in ring slot `slot` = `wg mod 16` |
//! | `~` | a note on the above, longer than 64 bytes on purpose (below) |
//!
//! Recording a key takes the next slot and deletes the record of the key
//! that held it, so the hash stays bounded (at most 64 + 64 records) and
//! every operation on it is O(1): the note, written with the hash, is
//! longer than Redis's `hash-max-listpack-value` (64 bytes by default), so
//! Redis keeps the hash as a hash table rather than a listpack, which it
//! would scan entry by entry on every lookup (45k instructions of a keyed
//! append, measured, with the ring full). Caller keys are remembered
//! exactly 64 deep (`statestore_core::REMEMBERED_WRITES`); store keys
//! need to outlive a client library's own re-send of one request — which
//! only the cluster client does, so only there do writes get one — and
//! have their own ring, 64 deep too, so they never push a caller's key
//! out: a re-send is a replay unless more than 64 other writes of the
//! session landed between the call and its re-send.
//! Deleting or expiring the session removes the hash; `fork` does not
//! copy it; `save` keeps it, and records its own version in the header's
//! `r`: a remembered write whose version is lower was overtaken by a
//! rewrite of the history, and is returned without positions
//! (`Appended::rewritten`).

//! # Escaping ids
//!
//! `E` is the id with `%`, `{` and `}` replaced by `%25`, `%7B` and `%7D`.
//! The mapping is injective (so two ids never share keys), `E` never contains
//! a brace (so it cannot end the hash tag early or open another one) and
//! every other byte is kept, so keys stay readable in `redis-cli`. A
//! session id is at least one byte long, so the tag is never empty.
//!
//! # Listing
//!
//! [`Keys::scan_pattern`] matches every header key of one prefix: the prefix
//! is glob-escaped, and since prefixes may not contain braces, `P{*}:h` cannot
//! match another prefix's keys (the character after the prefix must be `{`).
//! Matches are decoded with [`Keys::id_from_header_key`], which rejects
//! anything this module would not have produced. [`Store::list`] does not
//! scan: it reads the list indexes below. Scanning builds them
//! (`RedisStore::rebuild_list_index`) for sessions written before they
//! existed.
//!
//! # The list indexes
//!
//! Four sorted sets per prefix, and four per user, hold every session by
//! last write and by id, so a page of `list` costs O(log n + page):
//!
//! | key | members | scores | order served |
//! |-----|---------|--------|--------------|
//! | `P{ix}:recent` | every session id (raw, not escaped) | `updated_at` (ms) | newest first: `ZRANGE … BYSCORE REV` |
//! | `P{ix}:ids` | every session id | `0` | by id: `ZRANGE … BYLEX` (bytewise, as `SessionId` orders) |
//! | `P{ix:U}:recent` | the ids of user `u`'s sessions (`U` is `u` escaped as ids are) | `updated_at` | one user's, newest first |
//! | `P{ix:U}:ids` | the ids of user `u`'s sessions | `0` | one user's, by id |
//!
//! Their names end in `:recent` or `:ids`, which no session key does, so
//! they never meet a session's keys even when a hash tag is the same.
//!
//! **On a standalone server the scripts keep them**, in the same atomic
//! step as the write that changes `updated_at`
//! (`scripts/shared/index.lua`: every write that bumps the version; `SAVE`
//! also moves a session between users; `FORK` indexes the target; `DELETE`
//! removes the session from all four).
//! A read, `TOUCH` or a maintenance save leaves them.
//!
//! **On a cluster they cannot be**: a script may only touch keys of one
//! slot, a session's keys are placed by its id alone (every operation is
//! addressed by id, without the user), and a user's sessions are spread
//! over all slots; no hash tag can put a session and every index it
//! belongs to in one slot. So the cluster client keeps them right after
//! each write, from the session's header as the write left it (its owner
//! and `updated_at`, one `HMGET`, then the `ZADD`s concurrently):
//! the global sets live in the slot of `{ix}`, each user's in the slot of
//! `{ix:U}` (spread over the cluster), and `ZADD … GT` never moves a score
//! back. Between the write and that update, and after a client that died
//! there, a session is listed at its previous place (or, new, not yet);
//! the next write of the session puts it right.
//!
//! **Entries outlive what they index** when a session expires (Redis
//! removes its keys, not its index entries), is evicted, or was re-owned
//! on a cluster. `list` checks each entry it returns against the
//! session's header — it exists, belongs to the user asked about, and was
//! last written at the entry's score — skips those that fail, and removes
//! the stale ones (on a standalone server in one script that checks the
//! header first, so a session re-created meanwhile keeps its entries).
//!
//! [`Store::list`]: statestore_core::Store::list

use statestore_core::{ListOrder, SessionId};

/// The keys of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionKeys {
    /// The header hash.
    pub(crate) header: String,
    /// The message list.
    pub(crate) messages: String,
    /// The summary list.
    pub(crate) summaries: String,
    /// The metadata hash.
    pub(crate) metadata: String,
    /// The remembered-writes hash.
    pub(crate) writes: String,
    /// The deletion mark (not one of the session's keys: see the docs above).
    pub(crate) deleted: String,
    /// The progress of writes still to be made (see the docs above).
    pub(crate) pending: String,
}

impl SessionKeys {
    /// The keys in the order every script takes them (`KEYS[1..5]`).
    pub(crate) fn all(&self) -> [&str; 5] {
        [
            &self.header,
            &self.messages,
            &self.summaries,
            &self.metadata,
            &self.writes,
        ]
    }
}

/// Builds keys for one store prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadPrefix(pub(crate) String);

impl Keys {
    /// Keys under `prefix`, which may be empty but may not contain `{`, `}`
    /// or control characters (they would break hash tags or logs).
    pub(crate) fn new(prefix: &str) -> Result<Self, BadPrefix> {
        if let Some(c) = prefix
            .chars()
            .find(|c| matches!(c, '{' | '}') || c.is_control())
        {
            return Err(BadPrefix(format!(
                "key prefix {prefix:?} contains {c:?}; braces would break Redis Cluster hash tags"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix every key starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys of session `id`.
    pub(crate) fn session(&self, id: &SessionId) -> SessionKeys {
        let base = format!("{}{{{}}}", self.prefix, escape(id.as_str()));
        SessionKeys {
            header: format!("{base}:h"),
            messages: format!("{base}:m"),
            summaries: format!("{base}:s"),
            metadata: format!("{base}:d"),
            writes: format!("{base}:w"),
            deleted: format!("{base}:x"),
            pending: format!("{base}:p"),
        }
    }

    /// The list index of `user`'s sessions (every session's when `None`)
    /// in `order` (see the module docs).
    pub(crate) fn index(&self, user: Option<&str>, order: ListOrder) -> String {
        let name = match order {
            ListOrder::Recent => "recent",
            _ => "ids",
        };
        match user {
            Some(user) => format!("{}{{ix:{}}}:{name}", self.prefix, escape(user)),
            None => format!("{}{{ix}}:{name}", self.prefix),
        }
    }

    /// The first part of every index key (`P{ix`), which the scripts
    /// extend: `}:recent`, or `:` and an escaped user.
    pub(crate) fn index_base(&self) -> String {
        format!("{}{{ix", self.prefix)
    }

    /// The key marking that [`index`](Self::index) holds every session
    /// written before the indexes existed (see
    /// `RedisStore::rebuild_list_index`).
    pub(crate) fn index_built(&self) -> String {
        format!("{}{{ix}}:built", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every header key under this prefix.
    pub(crate) fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 6);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("{*}:h");
        pattern
    }

    /// The session id of a header key, or `None` when the key is not one
    /// this prefix's layout produces.
    pub(crate) fn id_from_header_key(&self, key: &[u8]) -> Option<SessionId> {
        let key = std::str::from_utf8(key).ok()?;
        let tagged = key.strip_prefix(self.prefix.as_str())?;
        let escaped = tagged.strip_prefix('{')?.strip_suffix("}:h")?;
        if escaped.contains(['{', '}']) {
            return None;
        }
        let id = unescape(escaped)?;
        // Only the canonical escaping of an id is ours.
        if escape(&id) != escaped {
            return None;
        }
        SessionId::new(id).ok()
    }
}

fn escape(id: &str) -> std::borrow::Cow<'_, str> {
    if !id.contains(['%', '{', '}']) {
        return id.into();
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out.into()
}

fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('%') {
        out.push_str(rest.get(..at)?);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        });
        rest = rest.get(at + 3..)?;
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SessionId {
        SessionId::new(s).unwrap()
    }

    #[test]
    fn layout_is_documented_shape() {
        let keys = Keys::new("myapp:").unwrap();
        let k = keys.session(&id("user-1"));
        assert_eq!(k.header, "myapp:{user-1}:h");
        assert_eq!(k.messages, "myapp:{user-1}:m");
        assert_eq!(k.summaries, "myapp:{user-1}:s");
        assert_eq!(k.metadata, "myapp:{user-1}:d");
        assert_eq!(k.writes, "myapp:{user-1}:w");
        let k = keys.session(&id("a}:b{%"));
        assert_eq!(k.header, "myapp:{a%7D:b%7B%25}:h");
    }

    #[test]
    fn escaping_is_injective_and_brace_free() {
        let ids = [
            "a", "%", "%25", "%7B", "{", "}", "{}", "a}:b", "{x}", "%7D%", "%%", "ü{ß}",
        ];
        let keys = Keys::new("").unwrap();
        let mut seen = std::collections::HashSet::new();
        for raw in ids {
            let k = keys.session(&id(raw));
            let tag = k
                .header
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix("}:h"))
                .unwrap();
            assert!(!tag.contains(['{', '}']), "{raw:?} -> {tag:?}");
            assert!(seen.insert(tag.to_owned()), "{raw:?} collides");
            assert_eq!(keys.id_from_header_key(k.header.as_bytes()), Some(id(raw)));
        }
    }

    #[test]
    fn foreign_keys_are_not_ids() {
        let keys = Keys::new("p:").unwrap();
        for foreign in [
            "p:{a}:m",
            "q:{a}:h",
            "p:{a}}:h",
            "p:{a{b}:h",
            "p:{}:h",
            "p:{%zz}:h",
            "p:{%7b}:h",
            "p:{a%}:h",
            "p:a:h",
        ] {
            assert_eq!(
                keys.id_from_header_key(foreign.as_bytes()),
                None,
                "{foreign}"
            );
        }
        assert_eq!(
            keys.id_from_header_key(&[b'p', b':', b'{', 0xff, b'}', b':', b'h']),
            None
        );
    }

    proptest::proptest! {
        /// Any legal id under any legal prefix: one non-empty hash tag per
        /// key, and the header key decodes back to exactly that id.
        #[test]
        fn every_id_round_trips_through_its_keys(prefix in "\\PC{0,12}", raw in "\\PC{1,40}") {
            let Ok(keys) = Keys::new(&prefix) else { return Ok(()) };
            let Ok(id) = SessionId::new(&raw) else { return Ok(()) };
            let k = keys.session(&id);
            for key in k.all() {
                proptest::prop_assert_eq!(key.matches('{').count(), 1);
                proptest::prop_assert_eq!(key.matches('}').count(), 1);
            }
            proptest::prop_assert_eq!(keys.id_from_header_key(k.header.as_bytes()), Some(id));
        }
    }

    #[test]
    fn index_keys_are_documented_shape_and_never_session_keys() {
        let keys = Keys::new("app:").unwrap();
        assert_eq!(keys.index(None, ListOrder::Recent), "app:{ix}:recent");
        assert_eq!(keys.index(None, ListOrder::Id), "app:{ix}:ids");
        assert_eq!(
            keys.index(Some("a{b}%"), ListOrder::Recent),
            "app:{ix:a%7Bb%7D%25}:recent"
        );
        assert_eq!(keys.index(Some("bob"), ListOrder::Id), "app:{ix:bob}:ids");
        assert!(
            keys.index(Some("bob"), ListOrder::Id)
                .starts_with(&keys.index_base())
        );
        for user in [None, Some("u")] {
            let key = keys.index(user, ListOrder::Recent);
            assert_eq!(keys.id_from_header_key(key.as_bytes()), None);
        }
    }

    #[test]
    fn prefixes_with_braces_are_refused_and_globs_escaped() {
        assert!(Keys::new("a{b").is_err());
        assert!(Keys::new("a}").is_err());
        assert!(Keys::new("tab\t").is_err());
        assert_eq!(
            Keys::new("x*?[]\\:").unwrap().scan_pattern(),
            "x\\*\\?\\[\\]\\\\:{*}:h"
        );
    }
}
