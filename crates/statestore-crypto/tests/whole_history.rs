//! The owner, the tenant and the whole history are bound: each attack is
//! done by hand — `redis-cli`-style commands on a real Redis, SQL on the
//! SQLite file — and refused with a typed error naming the session; the
//! same reads without the attack succeed.
//!
//! Attacks: re-owning a session (`user_id`), reading it under another
//! context (tenant), cutting messages off the end, putting back a value a
//! later `save` replaced, removing the system prompt, a summary or a
//! metadata key, putting back an older metadata value, changing a counter.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod support;

use std::sync::Arc;

use statestore_core::{
    Append, ConversationState, Error as StoreError, Expect, ListQuery, Message, Metadata, Save,
    SessionId, Store, Summary, WriteOutcome,
};
use statestore_crypto::{Encrypted, Error, Field};
use support::{refused, ring, sid};

/// A session with a prompt, three messages, a summary, two metadata values
/// and a counter, owned by alice, written through `layer`.
async fn seed(layer: &Encrypted, id: &SessionId) {
    let mut state = ConversationState::new(id.clone())
        .with_user_id("alice")
        .with_system_prompt("You are Alice's assistant.")
        .with_messages([
            Message::user("my account is 1234"),
            Message::assistant("noted"),
            Message::user("and my pin is 9876"),
        ]);
    state.metadata.insert("topic".into(), "banking".into());
    state.metadata.insert("tier".into(), "gold".into());
    layer.save(&state, Expect::Any).await.unwrap();
    layer
        .add_summary(id, Summary::new(0..2, "account given"), Expect::Any)
        .await
        .unwrap();
    layer
        .append_with(
            id,
            Append::new([Message::assistant("ok")]).count("tokens", 7),
        )
        .await
        .unwrap();
}

fn inconsistent(e: &Error, what: &str) {
    assert!(
        matches!(e, Error::Inconsistent { reason, .. } if reason.contains(what)),
        "expected Inconsistent about {what:?}: {e:?}"
    );
}

/// Both reads a turn uses are refused the same way.
async fn both_refused(layer: &Encrypted, id: &SessionId, check: impl Fn(&Error)) {
    check(&refused(layer.load(id).await, id));
    check(&refused(layer.load_recent(id, 2).await, id));
}

/// Both reads succeed (the control run).
async fn both_read(layer: &Encrypted, id: &SessionId) {
    let state = layer.load(id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 4);
    assert_eq!(state.user_id.as_deref(), Some("alice"));
    layer.load_recent(id, 2).await.unwrap().unwrap();
}

// ---- Redis, by hand ----

struct Redis {
    _server: support::RedisServer,
    con: redis::aio::MultiplexedConnection,
    layer: Encrypted,
}

impl Redis {
    async fn start() -> Self {
        let server = support::redis_server();
        let inner: Arc<dyn Store> = Arc::new(
            statestore_redis::RedisStore::builder()
                .prefix("app:")
                .connect(&server.url())
                .await
                .unwrap(),
        );
        let client = redis::Client::open(server.url().as_str()).unwrap();
        let con = client.get_multiplexed_async_connection().await.unwrap();
        Self {
            _server: server,
            con,
            layer: Encrypted::new(inner, ring("k1", 1)),
        }
    }

    async fn cmd<T: redis::FromRedisValue>(&mut self, args: &[&str]) -> T {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query_async(&mut self.con).await.unwrap()
    }

    /// The session's keys as `DUMP` gives them.
    async fn dump(&mut self, keys: &[&'static str]) -> Vec<(&'static str, Vec<u8>)> {
        let mut out = Vec::new();
        for k in keys {
            out.push((*k, self.cmd(&["DUMP", k]).await));
        }
        out
    }

    /// [`Redis::dump`] put back.
    async fn restore(&mut self, dumped: &[(&'static str, Vec<u8>)]) {
        for (k, v) in dumped {
            let mut c = redis::cmd("RESTORE");
            c.arg(*k).arg(0).arg(v).arg("REPLACE");
            let () = c.query_async(&mut self.con).await.unwrap();
        }
    }

    /// Changes count `i` of the header's `n` field (1: messages, 2:
    /// summaries, 3: metadata fields) by `delta`, as an attacker who
    /// knows the layout keeps the store's own torn-session check quiet.
    async fn recount(&mut self, h: &str, i: usize, delta: i64) {
        let n: String = self.cmd(&["HGET", h, "n"]).await;
        let mut parts: Vec<i64> = n.split(' ').map(|p| p.parse().unwrap()).collect();
        parts[i + 1] += delta;
        let n = parts
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let () = self.cmd(&["HSET", h, "n", &n]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hand_edit_of_redis_is_refused() {
    let mut r = Redis::start().await;
    let (h, m, s, d) = ("app:{s}:h", "app:{s}:m", "app:{s}:s", "app:{s}:d");
    let id = sid("s");
    seed(&r.layer, &id).await;
    both_read(&r.layer, &id).await;
    let good = r.dump(&[h, m, s, d]).await;

    // Re-owned: the session handed to another user.
    let () = r.cmd(&["HSET", h, "user_id", "mallory"]).await;
    both_refused(&r.layer, &id, |e| {
        assert!(
            matches!(
                e,
                Error::Integrity {
                    field: Field::Manifest,
                    ..
                }
            ),
            "{e:?}"
        );
    })
    .await;
    r.restore(&good).await;
    both_read(&r.layer, &id).await;

    // The last message cut off the end (the header's count adjusted).
    let _: String = r.cmd(&["RPOP", m]).await;
    r.recount(h, 1, -1).await;
    both_refused(&r.layer, &id, |e| inconsistent(e, "messages")).await;
    r.restore(&good).await;

    // The system prompt removed.
    let () = r.cmd(&["HDEL", h, "system_prompt"]).await;
    both_refused(&r.layer, &id, |e| inconsistent(e, "system prompt")).await;
    r.restore(&good).await;

    // The summary removed.
    let _: String = r.cmd(&["RPOP", s]).await;
    r.recount(h, 2, -1).await;
    both_refused(&r.layer, &id, |e| inconsistent(e, "summaries")).await;
    r.restore(&good).await;

    // A metadata key removed.
    let () = r.cmd(&["HDEL", d, "tier"]).await;
    r.recount(h, 3, -1).await;
    both_refused(&r.layer, &id, |e| inconsistent(e, "\"tier\"")).await;
    r.restore(&good).await;

    // A counter changed.
    let () = r.cmd(&["HSET", h, "c:tokens", "1"]).await;
    both_refused(&r.layer, &id, |e| inconsistent(e, "counters")).await;
    r.restore(&good).await;
    both_read(&r.layer, &id).await;

    // An older metadata value put back after a later write replaced it.
    let old_topic: String = r.cmd(&["HGET", d, "topic"]).await;
    let mut patch = Metadata::new();
    patch.insert("topic".into(), "travel".into());
    r.layer
        .merge_metadata(&id, patch, Expect::Any)
        .await
        .unwrap();
    let () = r.cmd(&["HSET", d, "topic", &old_topic]).await;
    both_refused(&r.layer, &id, |e| inconsistent(e, "\"topic\"")).await;

    // A message a later save replaced, put back at its old position.
    seed(&r.layer, &id).await;
    let old_first: String = r.cmd(&["LINDEX", m, "0"]).await;
    let state = r.layer.load(&id).await.unwrap().unwrap();
    r.layer
        .save(&state, Expect::Version(state.version))
        .await
        .unwrap();
    both_read(&r.layer, &id).await;
    let () = r.cmd(&["LSET", m, "0", &old_first]).await;
    let e = refused(r.layer.load(&id).await, &id);
    assert!(
        matches!(
            e,
            Error::Integrity {
                field: Field::Message(0),
                ..
            }
        ),
        "{e:?}"
    );
}

// ---- SQLite, by hand ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hand_edit_of_the_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let inner: Arc<dyn Store> = Arc::new(
        statestore_sqlite::SqliteStore::builder()
            .open(&path)
            .await
            .unwrap(),
    );
    let layer = Encrypted::new(inner, ring("k1", 1));
    let id = sid("s");
    let sql = rusqlite::Connection::open(&path).unwrap();
    let edit = |q: &str| {
        sql.execute_batch(&format!("BEGIN; {q}; COMMIT;")).unwrap();
    };
    type Check<'a> = &'a dyn Fn(&Error);
    let attacks: [(&str, Check<'_>); 6] = [
        ("UPDATE sessions SET user_id = 'mallory'", &|e| {
            assert!(
                matches!(
                    e,
                    Error::Integrity {
                        field: Field::Manifest,
                        ..
                    }
                ),
                "{e:?}"
            );
        }),
        (
            "DELETE FROM messages WHERE position = 3; \
             UPDATE sessions SET message_count = 3",
            &|e| inconsistent(e, "messages"),
        ),
        ("UPDATE sessions SET system_prompt = NULL", &|e| {
            inconsistent(e, "system prompt");
        }),
        (
            "DELETE FROM summaries; UPDATE sessions SET summary_count = 0",
            &|e| inconsistent(e, "summaries"),
        ),
        (
            "UPDATE sessions SET metadata = json_remove(metadata, '$.tier')",
            &|e| inconsistent(e, "\"tier\""),
        ),
        (
            "UPDATE sessions SET counters = json_set(counters, '$.tokens', 70)",
            &|e| inconsistent(e, "counters"),
        ),
    ];
    for (attack, check) in attacks {
        layer.delete(&id).await.unwrap();
        seed(&layer, &id).await;
        both_read(&layer, &id).await;
        edit(attack);
        both_refused(&layer, &id, check).await;
    }
}

// ---- The context (tenant) ----

#[tokio::test]
async fn a_session_read_under_another_context_is_refused() {
    let inner = support::memory();
    let tenant = |name: &str| {
        Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
            .context(name)
            .build()
    };
    let id = sid("s");
    seed(&tenant("tenant-a"), &id).await;
    both_read(&tenant("tenant-a"), &id).await;
    both_refused(&tenant("tenant-b"), &id, |e| {
        assert!(
            matches!(
                e,
                Error::Integrity {
                    field: Field::Manifest,
                    ..
                }
            ),
            "{e:?}"
        );
    })
    .await;
    // Writes are refused too: an append reads the manifest it extends.
    let e = tenant("tenant-b")
        .append(&id, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap_err();
    assert_eq!(e.write_outcome(), WriteOutcome::NotWritten);
    both_read(&tenant("tenant-a"), &id).await;
}

/// The manifest is the layer's own: a caller cannot write its key.
#[tokio::test]
async fn the_manifest_key_is_reserved() {
    let layer = Encrypted::new(support::memory(), ring("k1", 1));
    let id = sid("s");
    seed(&layer, &id).await;
    let mut patch = Metadata::new();
    patch.insert("statestore.manifest.00".into(), "mine".into());
    let e = layer
        .merge_metadata(&id, patch, Expect::Any)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::InvalidArgument { .. }), "{e:?}");
    let state = layer.load(&id).await.unwrap().unwrap();
    assert!(
        state.metadata.keys().all(|k| !k.starts_with("statestore.")),
        "{:?}",
        state.metadata
    );
}

/// Binding the history costs no round trip: a turn through the layer is
/// one transaction of plain reads (the window and the manifest: no script)
/// and one script call to write (the messages, counters and the new
/// manifest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_stays_one_read_and_one_write() {
    let mut r = Redis::start().await;
    let id = sid("s");
    seed(&r.layer, &id).await;
    let before = r.script_calls().await;
    let recent = r.layer.load_recent(&id, 20).await.unwrap().unwrap();
    r.layer
        .append_with(
            &id,
            Append::new([Message::user("hi"), Message::assistant("hello")])
                .expect(Expect::Version(recent.version))
                .count("tokens", 3),
        )
        .await
        .unwrap();
    assert_eq!(r.script_calls().await - before, 1);
    // And the session reads back whole.
    assert_eq!(r.layer.load(&id).await.unwrap().unwrap().messages.len(), 6);
}

impl Redis {
    /// Script calls (`EVAL`, `EVALSHA`) the server has run.
    async fn script_calls(&mut self) -> u64 {
        let info: String = self.cmd(&["INFO", "commandstats"]).await;
        info.lines()
            .filter(|l| l.starts_with("cmdstat_eval"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

/// Ciphertext copied as it is to another store (`statestore migrate` or an
/// encrypted export and import, without keys) reads there: the binding
/// holds the session's content, not the store's version numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciphertext_copied_to_another_store_reads_there() {
    let from = support::memory();
    let id = sid("s");
    seed(&Encrypted::new(Arc::clone(&from), ring("k1", 1)), &id).await;
    let to = support::Sqlite::open().await;
    let raw = from.load(&id).await.unwrap().unwrap();
    to.store.save(&raw, Expect::Absent).await.unwrap();
    let there = Encrypted::new(Arc::clone(&to.store), ring("k1", 1));
    both_read(&there, &id).await;
    // And it goes on there: a turn, then a read.
    there
        .append(&id, vec![Message::user("again")], Expect::Any)
        .await
        .unwrap();
    assert_eq!(there.load(&id).await.unwrap().unwrap().messages.len(), 5);
}

/// A title is sealed like any metadata value, and `list` opens it without
/// reading the history; a title moved onto another session, or read under
/// another owner, does not open there (it is left out, not shown).
#[tokio::test]
async fn titles_are_sealed_at_rest_and_listed_open() {
    let inner = support::memory();
    let layer = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    for (id, title) in [("a", "Trip to Oslo"), ("b", "Tax questions")] {
        let state = ConversationState::new(sid(id))
            .with_user_id("alice")
            .with_messages([Message::user("hi")]);
        layer.save(&state, Expect::Any).await.unwrap();
        let mut patch = Metadata::new();
        patch.insert(statestore_core::TITLE_KEY.into(), title.into());
        layer
            .merge_metadata(&sid(id), patch, Expect::Any)
            .await
            .unwrap();
    }
    let raw = inner.list(&ListQuery::for_user("alice")).await.unwrap();
    for info in &raw.sessions {
        let stored = info.title.as_deref().unwrap();
        assert!(
            stored.starts_with("sealed:") && !stored.contains("Oslo"),
            "{stored}"
        );
    }
    let listed = layer
        .list(&ListQuery::for_user("alice").recent())
        .await
        .unwrap();
    let titles: Vec<_> = listed.sessions.iter().map(|s| s.title.clone()).collect();
    assert_eq!(
        titles,
        [
            Some("Tax questions".to_owned()),
            Some("Trip to Oslo".to_owned())
        ]
    );

    // Session a's sealed title copied onto b by hand: b's title does not
    // open (left out of the listing), and a load of b is refused.
    let a = inner.load(&sid("a")).await.unwrap().unwrap();
    let mut b = inner.load(&sid("b")).await.unwrap().unwrap();
    let key = statestore_core::TITLE_KEY;
    b.metadata.insert(key.into(), a.metadata[key].clone());
    inner
        .save_with(&b, Save::new().keep_clocks())
        .await
        .unwrap();
    let listed = layer.list(&ListQuery::for_user("alice")).await.unwrap();
    let b_title = listed.sessions.iter().find(|s| s.id == sid("b")).unwrap();
    assert_eq!(b_title.title, None);
    assert!(layer.load(&sid("b")).await.is_err());
}
