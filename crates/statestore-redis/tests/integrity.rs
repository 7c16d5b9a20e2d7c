//! Torn sessions and eviction on real servers: a session one of whose keys
//! is gone (evicted, or deleted by hand) is refused as corrupt by every
//! operation that relies on that key, and nothing is written; sessions of
//! the previous storage layout are adopted; the connect-time check of
//! `maxmemory-policy`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use redis_test_server::RedisServer;
use statestore_core::{
    AddSummary, Append, ConversationState, Error, Expect, IdempotencyKey, Message, Metadata,
    SessionId, Store, Summary,
};
use statestore_redis::{EvictionPolicyCheck, RedisStore};

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).unwrap()
}

fn is_corrupt<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::Corrupt { id, detail, .. }) => {
            assert_eq!(id.as_str(), "torn", "{what}: names the session");
            assert!(!detail.is_empty(), "{what}");
        }
        other => panic!("{what}: {other:?}"),
    }
}

/// The header as a map, and which of the session's keys exist.
fn snapshot(server: &RedisServer) -> (String, String) {
    let header = server.cli(&["HGETALL", "{torn}:h"]).unwrap();
    let keys = server.cli(&["KEYS", "{torn}:*"]).unwrap();
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort_unstable();
    (header, keys.join(" "))
}

/// A session using every key: messages, a summary, metadata, counters and
/// a remembered write.
async fn full_session(store: &RedisStore, id: &SessionId) {
    store
        .append_with(
            id,
            Append::new([Message::user("q"), Message::assistant("a")])
                .key(key("turn-1"))
                .count("tokens", 7),
        )
        .await
        .unwrap();
    store
        .add_summary(id, Summary::new(0..1, "s"), Expect::Any)
        .await
        .unwrap();
    let mut patch = Metadata::new();
    patch.insert("k".into(), 1.into());
    store.merge_metadata(id, patch, Expect::Any).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_missing_a_key_is_corrupt_and_nothing_is_written() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder()
        .ttl(Duration::from_secs(600))
        .connect(&server.url())
        .await
        .unwrap();
    // Reads that are not accesses write nothing, so the script does not
    // check lengths first: the client compares what it read.
    let pure = RedisStore::builder()
        .sliding_ttl(false)
        .connect(&server.url())
        .await
        .unwrap();
    let id = sid("torn");
    for suffix in ["m", "s", "d", "w"] {
        server.cli(&["DEL", "{torn}:h"]).unwrap();
        store.delete(&id).await.unwrap();
        full_session(&store, &id).await;
        let gone = format!("{{torn}}:{suffix}");
        assert_eq!(server.cli(&["DEL", &gone]).unwrap(), "1");
        let before = snapshot(&server);

        let turn = || Append::new([Message::user("more")]).key(key("turn-2"));
        is_corrupt(
            &format!("append without :{suffix}"),
            store.append_with(&id, turn()).await,
        );
        is_corrupt(
            &format!("load_recent_with(lookup) without :{suffix}"),
            store.load_recent_with(&id, 5, Some(&key("turn-1"))).await,
        );
        if suffix != "w" {
            // Only appends and lookups read the remembered writes.
            is_corrupt(&format!("load without :{suffix}"), store.load(&id).await);
            is_corrupt(
                &format!("load_recent without :{suffix}"),
                store.load_recent(&id, 1).await,
            );
            is_corrupt(
                &format!("load_recent(0) without :{suffix}"),
                store.load_recent(&id, 0).await,
            );
            is_corrupt(
                &format!("a pure load without :{suffix}"),
                pure.load(&id).await,
            );
            is_corrupt(
                &format!("a pure load_recent(1) without :{suffix}"),
                pure.load_recent(&id, 1).await,
            );
            is_corrupt(
                &format!("a pure load_recent(0) without :{suffix}"),
                pure.load_recent(&id, 0).await,
            );
            is_corrupt(
                &format!("save without :{suffix}"),
                store
                    .save(&ConversationState::new(id.clone()), Expect::Any)
                    .await,
            );
            is_corrupt(
                &format!("merge_metadata without :{suffix}"),
                store
                    .merge_metadata(&id, Metadata::new(), Expect::Any)
                    .await,
            );
            is_corrupt(
                &format!("add_summary without :{suffix}"),
                store
                    .add_summary(&id, Summary::new(0..1, "s2"), Expect::Any)
                    .await,
            );
            is_corrupt(&format!("touch without :{suffix}"), store.touch(&id).await);
            is_corrupt(
                &format!("fork without :{suffix}"),
                store.fork(&id, &sid("torn-copy")).await,
            );
        }
        assert_eq!(
            snapshot(&server),
            before,
            "a refused operation changed the session (without :{suffix})"
        );
        assert_eq!(server.cli(&["EXISTS", &gone]).unwrap(), "0");
        assert!(!store.exists(&sid("torn-copy")).await.unwrap());
    }
    // Deleting a torn session works, and the id starts afresh.
    assert!(store.delete(&id).await.unwrap());
    store
        .append(&id, vec![Message::user("new")], Expect::Absent)
        .await
        .unwrap();
    assert_eq!(store.load(&id).await.unwrap().unwrap().messages.len(), 1);
}

/// A session that counts no metadata does not read its metadata hash on
/// an append or a summary — unless the write carries a metadata patch,
/// which writes the hash: then the hash is checked first, and a foreign
/// one refused with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_patch_checks_the_metadata_hash_before_writing_it() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let id = sid("torn");
    for (planted, value) in [("SET", "a string"), ("HSET", "uncounted")] {
        server.cli(&["DEL", "{torn}:d"]).unwrap();
        store.delete(&id).await.unwrap();
        store
            .append(&id, vec![Message::user("q")], Expect::Any)
            .await
            .unwrap();
        let mut plant = vec![planted, "{torn}:d"];
        if planted == "HSET" {
            plant.push("field");
        }
        plant.push(value);
        server.cli(&plant).unwrap();
        let before = snapshot(&server);
        is_corrupt(
            &format!("append with a patch over a {planted}"),
            store
                .append_with(
                    &id,
                    Append::new([Message::user("more")]).merge_metadata("k", 1.into()),
                )
                .await,
        );
        is_corrupt(
            &format!("add_summary_with a patch over a {planted}"),
            store
                .add_summary_with(
                    &id,
                    AddSummary::new(Summary::new(0..1, "s")).merge_metadata("k", 1.into()),
                )
                .await,
        );
        assert_eq!(
            snapshot(&server),
            before,
            "a refused patch changed the session ({planted})"
        );
        // Without a patch the hash is not the write's business.
        store
            .append(&id, vec![Message::user("more")], Expect::Version(1))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_eviction_never_serves_a_partial_history() {
    // Every key has a TTL and volatile-random evicts any of them: sessions
    // lose single keys, as the warning at connect says.
    let server = RedisServer::builder()
        .config("maxmemory", "3mb")
        .config("maxmemory-policy", "volatile-random")
        .start()
        .unwrap();
    let store = RedisStore::builder()
        .ttl(Duration::from_secs(600))
        .on_unsafe_eviction(EvictionPolicyCheck::Ignore)
        .connect(&server.url())
        .await
        .unwrap();
    let ids: Vec<SessionId> = (0..200).map(|i| sid(&format!("e{i}"))).collect();
    let filler = "x".repeat(2_000);
    for turn in 0..8 {
        for id in &ids {
            let message = Message::user(format!("{turn} {filler}"));
            // Writes to a session that already lost a key are refused.
            match store.append(id, vec![message], Expect::Any).await {
                Ok(_) | Err(Error::Corrupt { .. }) => {}
                Err(e) => panic!("{id}: {e}"),
            }
        }
    }
    let stats = server.cli(&["INFO", "stats"]).unwrap();
    let evicted: u64 = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("evicted_keys:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(evicted > 0, "the test needs evictions");
    let (mut whole, mut corrupt, mut gone) = (0, 0, 0);
    for id in &ids {
        match store.load(id).await {
            Ok(Some(state)) => {
                // One message per append since the session was (re)created
                // — an evicted header loses the session, and a later
                // append starts a new one — with no hole between them.
                assert_eq!(state.messages.len() as u64, state.version, "{id}");
                let turns: Vec<u32> = state
                    .messages
                    .iter()
                    .map(|m| m.text().split(' ').next().unwrap().parse().unwrap())
                    .collect();
                assert!(
                    turns.windows(2).all(|w| w[1] == w[0] + 1),
                    "{id}: a hole in the history: {turns:?}"
                );
                whole += 1;
            }
            Ok(None) => gone += 1,
            Err(Error::Corrupt { .. }) => corrupt += 1,
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert!(
        corrupt > 0,
        "no torn session detected ({evicted} keys evicted)"
    );
    assert_eq!(whole + corrupt + gone, ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_the_previous_layout_are_adopted() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    // What the previous version wrote: no counts, no `cv`, no `:w`.
    for args in [
        vec![
            "HSET",
            "{old}:h",
            "schema",
            "1",
            "version",
            "3",
            "created_at",
            "1",
            "updated_at",
            "2",
            "last_accessed_at",
            "2",
        ],
        vec![
            "RPUSH",
            "{old}:m",
            r#"{"role":"user","content":"a"}"#,
            r#"{"role":"assistant","content":"b"}"#,
        ],
        vec!["HSET", "{old}:d", "k", "true"],
    ] {
        server.cli(&args).unwrap();
    }
    let id = sid("old");
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!((state.messages.len(), state.version), (2, 3));
    assert_eq!(state.metadata.len(), 1);
    let appended = store
        .append_with(&id, Append::new([Message::user("c")]).key(key("k1")))
        .await
        .unwrap();
    assert_eq!((appended.version, appended.first_position), (4, 2));
    // The write recorded the counts in `n` (schema, version, messages,
    // summaries, metadata fields, caller keys, store keys), now checked.
    let counts = server.cli(&["HGET", "{old}:h", "n"]).unwrap();
    assert_eq!(counts, "1 4 3 0 1 1 0");
    server.cli(&["DEL", "{old}:m"]).unwrap();
    assert!(matches!(store.load(&id).await, Err(Error::Corrupt { .. })));

    // The fields of the previous layout (counts valid while `cv` is the
    // version) are checked when current, and deleted by the next write.
    let id = sid("previous");
    for args in [
        vec![
            "HSET",
            "{previous}:h",
            "schema",
            "1",
            "version",
            "5",
            "cv",
            "5",
            "nm",
            "2",
            "ns",
            "0",
            "nd",
            "0",
            "wk",
            "0",
            "wg",
            "0",
        ],
        vec!["RPUSH", "{previous}:m", r#"{"role":"user","content":"a"}"#],
    ] {
        server.cli(&args).unwrap();
    }
    assert!(
        matches!(store.load(&id).await, Err(Error::Corrupt { .. })),
        "its current counts say 2 messages, 1 is stored"
    );
    server
        .cli(&["RPUSH", "{previous}:m", r#"{"role":"user","content":"b"}"#])
        .unwrap();
    assert_eq!(store.load(&id).await.unwrap().unwrap().messages.len(), 2);
    store
        .append(&id, vec![Message::user("c")], Expect::Version(5))
        .await
        .unwrap();
    assert_eq!(
        server.cli(&["HGET", "{previous}:h", "n"]).unwrap(),
        "1 6 3 0 0 0 0"
    );
    for old in ["cv", "nm", "ns", "nd", "wk", "wg"] {
        assert_eq!(
            server.cli(&["HEXISTS", "{previous}:h", old]).unwrap(),
            "0",
            "{old}"
        );
    }

    // An older writer appending to a session this version wrote bumps the
    // version but not the counts: they are stale, not a torn session.
    let id = sid("mixed");
    store
        .append(&id, vec![Message::user("new")], Expect::Any)
        .await
        .unwrap();
    server
        .cli(&["RPUSH", "{mixed}:m", r#"{"role":"user","content":"old"}"#])
        .unwrap();
    server
        .cli(&["HINCRBY", "{mixed}:h", "version", "1"])
        .unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!((state.messages.len(), state.version), (2, 2));
    store
        .append(&id, vec![Message::user("after")], Expect::Version(2))
        .await
        .unwrap();
}

/// An append checks the message list's length by the reply of its own
/// push, and undoes the push when the length is not the count recorded:
/// a list that lost entries, gained some, or is gone is refused with the
/// list exactly as it was (`scripts/append.lua`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_to_a_list_of_another_length_is_undone() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let id = sid("torn");
    let planted = r#"{"role":"user","content":"planted"}"#;
    let changes: [(&str, &[&str]); 3] = [
        ("gained one", &["RPUSH", "{torn}:m", planted]),
        ("lost one", &["RPOP", "{torn}:m"]),
        ("lost all", &["DEL", "{torn}:m"]),
    ];
    for (what, change) in changes {
        server.cli(&["DEL", "{torn}:h", "{torn}:m"]).unwrap();
        let history = vec![
            Message::user("a"),
            Message::assistant("b"),
            Message::user("c"),
        ];
        store.append(&id, history, Expect::Any).await.unwrap();
        server.cli(change).unwrap();
        let list = || server.cli(&["LRANGE", "{torn}:m", "0", "-1"]).unwrap();
        let before = (snapshot(&server), list());
        for messages in [1, 2_500] {
            let more = (0..messages)
                .map(|i| Message::user(format!("m{i}")))
                .collect();
            is_corrupt(
                &format!("append of {messages} to a list that {what}"),
                store.append(&id, more, Expect::Any).await,
            );
            assert_eq!(
                (snapshot(&server), list()),
                before,
                "{what}: something was written"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_numbers_are_checked_strictly_before_anything_is_written() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let cases: [(&str, &[&str]); 4] = [
        ("version", &["version", "1.5"]),
        ("version", &["version", "1e3"]),
        ("count", &["nm", "-1"]),
        ("counter", &["c:tokens", "12.5"]),
    ];
    for (i, (what, fields)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let header = format!("{{{name}}}:h");
        let messages = format!("{{{name}}}:m");
        let mut hset = vec!["HSET", header.as_str(), "schema", "1", "version", "1"];
        hset.extend_from_slice(fields);
        server.cli(&hset).unwrap();
        server
            .cli(&["RPUSH", &messages, r#"{"role":"user","content":"a"}"#])
            .unwrap();
        let before = (
            server.cli(&["HGETALL", &header]).unwrap(),
            server.cli(&["LLEN", &messages]).unwrap(),
        );
        let id = sid(&name);
        let result = store
            .append_with(&id, Append::new([Message::user("b")]).count("tokens", 1))
            .await;
        assert!(
            matches!(result, Err(Error::Corrupt { .. })),
            "{what} {fields:?}: {result:?}"
        );
        let after = (
            server.cli(&["HGETALL", &header]).unwrap(),
            server.cli(&["LLEN", &messages]).unwrap(),
        );
        assert_eq!(before, after, "{what} {fields:?}: something was written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_saturate_at_i64_max_exactly() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let id = sid("big-counters");
    let big = i64::MAX.unsigned_abs() - 10;
    store
        .append_with(
            &id,
            Append::new([])
                .count("near", big)
                .count("huge", u64::MAX)
                .count("small", 1),
        )
        .await
        .unwrap();
    store
        .append_with(
            &id,
            Append::new([])
                .count("near", 4)
                .count("huge", 1)
                .count("small", 2),
        )
        .await
        .unwrap();
    let counters = store.load(&id).await.unwrap().unwrap().counters;
    let max = i64::MAX.unsigned_abs();
    assert_eq!(
        counters,
        BTreeMap::from([
            ("huge".to_owned(), max),
            ("near".to_owned(), big + 4),
            ("small".to_owned(), 3),
        ])
    );
    store
        .append_with(&id, Append::new([]).count("near", 100))
        .await
        .unwrap();
    let counters = store.load(&id).await.unwrap().unwrap().counters;
    assert_eq!(counters["near"], max, "saturates instead of failing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_eviction_policies_are_reported_at_connect() {
    let hour = Duration::from_secs(3600);
    for (policy, ttl, refused) in [
        ("noeviction", true, false),
        ("volatile-lru", false, false),
        ("volatile-lru", true, true),
        ("volatile-ttl", true, true),
        ("allkeys-lru", false, true),
        ("allkeys-random", true, true),
    ] {
        let server = RedisServer::builder()
            .config("maxmemory-policy", policy)
            .start()
            .unwrap();
        let builder = RedisStore::builder().on_unsafe_eviction(EvictionPolicyCheck::Refuse);
        let builder = if ttl { builder.ttl(hour) } else { builder };
        let result = builder.connect(&server.url()).await;
        match result {
            Err(statestore_redis::Error::UnsafeEvictionPolicy { policy: found, .. }) if refused => {
                assert_eq!(found, policy);
            }
            Ok(store) if !refused => {
                assert_eq!(store.eviction_policy().await.as_deref(), Some(policy));
            }
            other => panic!("{policy} (ttl: {ttl}): {other:?}"),
        }
        // The default only warns.
        let builder = if ttl {
            RedisStore::builder().ttl(hour)
        } else {
            RedisStore::builder()
        };
        builder.connect(&server.url()).await.unwrap();
    }
    let err = RedisStore::builder()
        .on_unsafe_eviction(EvictionPolicyCheck::Refuse)
        .connect(
            &RedisServer::builder()
                .config("maxmemory-policy", "allkeys-lfu")
                .start()
                .unwrap()
                .url(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("allkeys-lfu") && err.contains("CONFIG SET maxmemory-policy noeviction"),
        "{err}"
    );

    // A user that may not read the config: the policy is unknown, not unsafe.
    let server = RedisServer::builder()
        .config("maxmemory-policy", "allkeys-lru")
        .acl_user("app", "pw", "~* +@all -config")
        .start()
        .unwrap();
    let store = RedisStore::builder()
        .on_unsafe_eviction(EvictionPolicyCheck::Refuse)
        .connect(&server.url())
        .await
        .unwrap();
    assert_eq!(store.eviction_policy().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_reports_the_settings_sessions_depend_on() {
    let server = RedisServer::builder()
        .config("maxmemory-policy", "allkeys-lru")
        .config("maxmemory", "100mb")
        .appendonly_always()
        .start()
        .unwrap();
    let store = RedisStore::builder()
        .prefix("app:")
        .ttl(Duration::from_secs(60))
        .connect(&server.url())
        .await
        .unwrap();
    let d = store.diagnose().await.unwrap();
    assert_eq!(d.prefix, "app:");
    assert_eq!(d.ttl, Some(Duration::from_secs(60)));
    assert!(!d.cluster);
    assert_eq!(d.nodes.len(), 1);
    let node = &d.nodes[0];
    assert!(node.errors.is_empty(), "{:?}", node.errors);
    assert!(
        node.redis_version
            .as_deref()
            .is_some_and(|v| v.contains('.'))
    );
    assert_eq!(node.mode.as_deref(), Some("standalone"));
    assert_eq!(node.role.as_deref(), Some("master"));
    assert_eq!(node.maxmemory, Some(100 * 1024 * 1024));
    assert_eq!(node.maxmemory_policy.as_deref(), Some("allkeys-lru"));
    assert!(node.eviction_risk.is_some());
    assert_eq!(node.appendonly, Some(true));
    assert_eq!(node.appendfsync.as_deref(), Some("always"));
    assert_eq!(node.save.as_deref(), Some(""));

    // A user refused CONFIG: those fields unknown, and why.
    let server = RedisServer::builder()
        .acl_user("app", "pw", "~* +@all -config")
        .start()
        .unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let d = store.diagnose().await.unwrap();
    let node = &d.nodes[0];
    assert!(node.redis_version.is_some());
    assert_eq!(node.maxmemory_policy, None);
    assert_eq!(node.eviction_risk, None);
    assert!(
        node.errors
            .iter()
            .any(|e| e.contains("CONFIG GET") && e.contains("no permissions")),
        "{:?}",
        node.errors
    );
}

/// A session whose header is not a hash at all (written by something
/// else) reads as corrupt, and can still be deleted: an unguarded delete
/// removes it (and its list entries); a guarded one is a conflict that
/// removes nothing. Other sessions are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_header_is_not_a_hash_can_be_deleted() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let (id, other) = (sid("torn"), sid("fine"));
    full_session(&store, &id).await;
    full_session(&store, &other).await;
    server.cli(&["DEL", "{torn}:h"]).unwrap();
    server.cli(&["SET", "{torn}:h", "not a hash"]).unwrap();
    is_corrupt("load", store.load(&id).await);

    let guarded = store
        .delete_with(
            &id,
            statestore_core::Delete::new().expect(Expect::Version(1)),
        )
        .await;
    assert!(
        matches!(guarded, Err(Error::Conflict { .. })),
        "{guarded:?}"
    );
    assert_eq!(server.cli(&["GET", "{torn}:h"]).unwrap(), "not a hash");

    assert!(store.delete(&id).await.unwrap(), "the header existed");
    assert_eq!(server.cli(&["KEYS", "{torn}:*"]).unwrap(), "");
    assert!(!store.exists(&id).await.unwrap());
    let listed = store
        .list(&statestore_core::ListQuery::new())
        .await
        .unwrap()
        .into_ids();
    assert_eq!(listed, std::slice::from_ref(&other));
    assert_eq!(store.load(&other).await.unwrap().unwrap().messages.len(), 2);
}
