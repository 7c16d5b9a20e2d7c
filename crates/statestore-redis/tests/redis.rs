//! Redis-specific behaviour on real servers: round trips per operation,
//! tenant isolation by prefix, foreign data, TTL on every key, size limits,
//! connection failures and credentials.
#![cfg(feature = "tls")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis_test_server::RedisServer;
use serde_json::json;
use statestore_core::codec::Limits;
use statestore_core::{
    AddSummary, Append, ConversationState, Error, Expect, IdempotencyKey, ListQuery, Message,
    Metadata, Save, SessionId, Store, Summary,
};
use statestore_redis::{RedisStore, RedisStoreBuilder};

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

/// A raw connection for looking at and planting keys.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn store(server: &RedisServer, builder: RedisStoreBuilder) -> RedisStore {
    builder.connect(&server.url()).await.unwrap()
}

/// Commands a client can send that never run inside our scripts.
const TOP_LEVEL_ONLY: &[&str] = &[
    "evalsha",
    "eval",
    "script|load",
    "scan",
    "multi",
    "exec",
    "watch",
    "ping",
    "get",
    "set",
    "mget",
    "hello",
    "select",
    "auth",
    "client|setinfo",
];

/// Runs `op` on a warmed-up store and returns the commands the server
/// received from clients for it.
async fn commands_for<F, Fut>(server: &RedisServer, op: F) -> BTreeMap<String, u64>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    server.reset_stats().unwrap();
    op().await;
    let mut stats = server.command_stats().unwrap();
    // Our own measurement commands.
    stats.retain(|name, _| !matches!(name.as_str(), "info" | "config|resetstat" | "config"));
    stats
}

fn top_level(stats: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    stats
        .iter()
        .filter(|(name, _)| TOP_LEVEL_ONLY.contains(&name.as_str()))
        .map(|(n, c)| (n.clone(), *c))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_round_trip() {
    let server = RedisServer::start().unwrap();
    let s = store(&server, RedisStore::builder().ttl(Duration::from_secs(60))).await;
    let (id, other) = (sid("rt"), sid("rt-fork"));
    let history: Vec<Message> = (0..500).map(|i| Message::user(format!("m{i}"))).collect();
    s.append(&id, history, Expect::Any).await.unwrap();

    // A write is one script; a load is one transaction of plain reads
    // (`MULTI`, the reads, `EXEC`: one round trip, no script — `read.rs`;
    // a second only when an access is due, at most once per tenth of the
    // TTL, which a read right after a write never is).
    let one_script = BTreeMap::from([("evalsha".to_owned(), 1)]);
    let one_transaction = BTreeMap::from([("exec".to_owned(), 1), ("multi".to_owned(), 1)]);
    macro_rules! assert_one_script {
        ($what:literal, $op:expr) => {
            let stats = commands_for(&server, || async {
                $op;
            })
            .await;
            let expected = if $what.starts_with("load") {
                &one_transaction
            } else {
                &one_script
            };
            assert_eq!(&top_level(&stats), expected, "{}: {stats:?}", $what);
        };
    }
    assert_one_script!(
        "append",
        s.append(
            &id,
            vec![Message::user("q"), Message::assistant("a")],
            Expect::Any
        )
        .await
        .unwrap()
    );
    assert_one_script!(
        "append_with(key, counters)",
        s.append_with(
            &id,
            Append::new([Message::user("q"), Message::assistant("a")])
                .key(IdempotencyKey::new("turn-rt").unwrap())
                .count("prompt_tokens", 12)
                .count("completion_tokens", 3)
        )
        .await
        .unwrap()
    );
    assert_one_script!(
        "append_with(repeated key)",
        assert!(
            s.append_with(
                &id,
                Append::new([Message::user("q")]).key(IdempotencyKey::new("turn-rt").unwrap())
            )
            .await
            .unwrap()
            .replayed
        )
    );
    assert_one_script!("load", s.load(&id).await.unwrap().unwrap());
    assert_one_script!(
        "load_recent_with(lookup)",
        assert!(
            s.load_recent_with(&id, 20, Some(&IdempotencyKey::new("turn-rt").unwrap()))
                .await
                .unwrap()
                .unwrap()
                .replay
                .is_some()
        )
    );
    assert_one_script!(
        "load_recent",
        s.load_recent(&id, 20).await.unwrap().unwrap()
    );
    assert_one_script!(
        "save",
        s.save(&ConversationState::new(sid("rt-save")), Expect::Any)
            .await
            .unwrap()
    );
    let mut patch = Metadata::new();
    patch.insert("k".into(), 1.into());
    assert_one_script!(
        "merge_metadata",
        s.merge_metadata(&id, patch.clone(), Expect::Any)
            .await
            .unwrap()
    );
    assert_one_script!(
        "add_summary",
        s.add_summary(&id, Summary::new(0..10, "s"), Expect::Any)
            .await
            .unwrap()
    );
    assert_one_script!("touch", s.touch(&id).await.unwrap());
    assert_one_script!("delete", s.delete(&sid("rt-save")).await.unwrap());

    let stats = commands_for(&server, || async {
        assert!(s.exists(&id).await.unwrap());
    })
    .await;
    assert_eq!(stats, BTreeMap::from([("exists".to_owned(), 1)]), "exists");

    // fork: one script copying the keys on the server (a standalone server
    // has one slot; across cluster slots it is a snapshot, then a
    // create-only script on the target).
    let stats = commands_for(&server, || async {
        s.fork(&id, &other).await.unwrap();
    })
    .await;
    assert_eq!(top_level(&stats), one_script, "fork: {stats:?}");
    assert_eq!(stats.get("copy"), Some(&4), "fork: {stats:?}");
    let copy = s.load(&other).await.unwrap().unwrap();
    let original = s.load(&id).await.unwrap().unwrap();
    assert_eq!(copy.messages, original.messages);
    assert_eq!(copy.summaries, original.summaries);
    assert_eq!(copy.metadata, original.metadata);
    assert_eq!(copy.counters, original.counters);
    assert_eq!(copy.version, 1);

    // load_recent reads only the tail: one LRANGE of 20, whatever the length.
    let stats = commands_for(&server, || async {
        let r = s.load_recent(&id, 20).await.unwrap().unwrap();
        assert_eq!(r.messages.len(), 20);
        assert_eq!(r.total_messages, 504);
    })
    .await;
    assert_eq!(
        stats.get("lrange"),
        Some(&2),
        "messages tail + summaries: {stats:?}"
    );
}

/// The commands each hot-path script runs inside Redis, counted: what the
/// server's time per call is made of (see `scripts.rs`). A command added to
/// one of these is paid by every turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_path_runs_few_commands_inside_redis() {
    let server = RedisServer::start().unwrap();
    let inside = |stats: BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        stats
            .into_iter()
            .filter(|(name, _)| !TOP_LEVEL_ONLY.contains(&name.as_str()))
            .collect()
    };
    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    };
    for ttl in [None, Some(Duration::from_secs(60))] {
        let builder = RedisStore::builder().prefix(if ttl.is_some() { "t:" } else { "" });
        let s = store(&server, ttl.map_or(builder.clone(), |t| builder.ttl(t))).await;
        // One PEXPIRE per existing key with a TTL: header, messages (and,
        // once there are remembered writes, their hash).
        let expire = |keys: u64| if ttl.is_some() { keys } else { 0 };
        let id = sid("hot");
        let history: Vec<Message> = (0..30).map(|i| Message::user(format!("m{i}"))).collect();
        s.append(&id, history, Expect::Any).await.unwrap();
        let version = s.load_recent(&id, 0).await.unwrap().unwrap().version;

        // The benchmark's turn: load_recent(20), then an unkeyed append of
        // two guarded by the version. The load reads the header (HGETALL;
        // with a TTL its PTTL, to see whether an access is due: not right
        // after a write), the message count (LLEN), the tail, the
        // summaries (LRANGE) and the metadata (HGETALL); it writes nothing.
        let stats = commands_for(&server, || async {
            s.load_recent(&id, 20).await.unwrap().unwrap();
        })
        .await;
        let mut load = vec![("hgetall", 2), ("llen", 1), ("lrange", 2)];
        load.push(("pttl", expire(1)));
        load.retain(|(_, n)| *n > 0);
        assert_eq!(inside(stats), counts(&load), "load_recent, ttl {ttl:?}");
        let stats = commands_for(&server, || async {
            let turn = vec![Message::user("q"), Message::assistant("a")];
            s.append(&id, turn, Expect::Version(version)).await.unwrap();
        })
        .await;
        // …and moves the session to the front of the list index (ZADD).
        // The message list's length is checked by the push's own reply
        // (no LLEN).
        let mut append = vec![("hmget", 1), ("hset", 1), ("rpush", 1), ("zadd", 1)];
        append.push(("pexpire", expire(2)));
        append.retain(|(_, n)| *n > 0);
        assert_eq!(inside(stats), counts(&append), "append, ttl {ttl:?}");

        // The pipeline's turn: a keyed append with four counters adds the
        // remembered-writes ring (HMGET, HSET) and one HINCRBY a counter…
        let stats = commands_for(&server, || async {
            let turn = Append::new([Message::user("q"), Message::assistant("a")])
                .key(IdempotencyKey::new("turn-1").unwrap())
                .count("prompt_tokens", 10)
                .count("completion_tokens", 3)
                .count("model_calls", 1)
                .count("turns", 1);
            s.append_with(&id, turn).await.unwrap();
        })
        .await;
        // (and one HDEL ends the turn's recorded progress, if any).
        let mut keyed = vec![("hincrby", 4), ("hmget", 2), ("hset", 2)];
        keyed.extend([
            ("rpush", 1),
            ("hdel", 1),
            ("zadd", 1),
            ("pexpire", expire(3)),
        ]);
        keyed.retain(|(_, n)| *n > 0);
        assert_eq!(inside(stats), counts(&keyed), "keyed append, ttl {ttl:?}");
        // The remembered writes are a hash table: finding a key is O(1),
        // not a scan of 128 listpack entries.
        let writes = format!("{}{{hot}}:w", if ttl.is_some() { "t:" } else { "" });
        assert_eq!(
            server.cli(&["OBJECT", "ENCODING", &writes]).unwrap(),
            "hashtable"
        );
        // …and a load asked about a key one HMGET of the ring, and one
        // HGET of the progress recorded under it.
        let stats = commands_for(&server, || async {
            let key = IdempotencyKey::new("turn-2").unwrap();
            s.load_recent_with(&id, 21, Some(&key))
                .await
                .unwrap()
                .unwrap();
        })
        .await;
        let mut lookup = vec![("hgetall", 2), ("hmget", 1), ("llen", 1), ("lrange", 2)];
        lookup.extend([("hget", 1), ("pttl", expire(1))]);
        lookup.retain(|(_, n)| *n > 0);
        assert_eq!(inside(stats), counts(&lookup), "lookup, ttl {ttl:?}");
    }
}

/// An append's and a summary's metadata patch is merged by their own
/// script: the metadata hash checked (HLEN), then one HSET of the values
/// and one HDEL of the `null`s, and the header's count of metadata fields
/// (`n`) kept equal to the hash's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_patch_is_merged_by_the_writes_own_script() {
    let server = RedisServer::start().unwrap();
    let s = store(&server, RedisStore::builder()).await;
    let id = sid("patched");
    // The header's `n`: schema, version, nm, ns, nd, wk, wg.
    let nd = || {
        let n = server.cli(&["HGET", "{patched}:h", "n"]).unwrap();
        n.split(' ').nth(4).unwrap().to_owned()
    };
    let hlen = || server.cli(&["HLEN", "{patched}:d"]).unwrap();
    let first = Append::new([Message::user("q")])
        .merge_metadata("title", "Hi".into())
        .merge_metadata("gone", serde_json::Value::Null);
    s.append_with(&id, first).await.unwrap();
    assert_eq!((nd(), hlen()), ("1".to_owned(), "1".to_owned()));
    let stats = commands_for(&server, || async {
        let turn = Append::new([Message::assistant("a")])
            .expect(Expect::Version(1))
            .merge_metadata("title", serde_json::Value::Null)
            .merge_metadata("turns", 1.into())
            .merge_metadata("model", "m".into());
        s.append_with(&id, turn).await.unwrap();
    })
    .await;
    let mut expected: BTreeMap<String, u64> = [("hmget", 1), ("hlen", 1)]
        .into_iter()
        .chain([
            ("hset", 2),
            ("hdel", 1),
            ("rpush", 1),
            ("zadd", 1),
            ("evalsha", 1),
        ])
        .map(|(n, c)| (n.to_owned(), c))
        .collect();
    assert_eq!(stats, expected, "append with a patch");
    assert_eq!((nd(), hlen()), ("2".to_owned(), "2".to_owned()));
    let stats = commands_for(&server, || async {
        let add = AddSummary::new(Summary::new(0..2, "s"))
            .expect(Expect::Version(2))
            .merge_metadata("turns", serde_json::Value::Null)
            .merge_metadata("model", serde_json::Value::Null)
            .merge_metadata("topic", json!({"a": [1, null]}));
        s.add_summary_with(&id, add).await.unwrap();
    })
    .await;
    expected.insert("llen".into(), 2);
    assert_eq!(stats, expected, "add_summary_with a patch");
    assert_eq!((nd(), hlen()), ("1".to_owned(), "1".to_owned()));
    let state = s.load(&id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::Value::Object(state.metadata),
        json!({"topic": {"a": [1, null]}})
    );
    assert_eq!(state.version, 3);
    // The last field removed: the hash is gone, and so is its count.
    let last = Append::new([Message::user("q2")]).merge_metadata("topic", serde_json::Value::Null);
    s.append_with(&id, last).await.unwrap();
    assert_eq!((nd(), hlen()), ("0".to_owned(), "0".to_owned()));
    assert!(s.load(&id).await.unwrap().unwrap().metadata.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_tenants_on_one_server() {
    let server = RedisServer::start().unwrap();
    let a = store(&server, RedisStore::builder().prefix("a")).await;
    let b = store(&server, RedisStore::builder().prefix("a:")).await;
    let c = store(&server, RedisStore::builder()).await; // empty prefix
    let id = sid("shared-name");
    for (s, who) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        s.append(&id, vec![Message::user(who)], Expect::Absent)
            .await
            .unwrap_or_else(|e| panic!("{who} saw another tenant's session: {e}"));
    }
    for (s, who) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let state = s.load(&id).await.unwrap().unwrap();
        assert_eq!(state.messages.len(), 1);
        assert_eq!(state.messages[0].text(), who);
        let listed = s.list(&ListQuery::default()).await.unwrap();
        assert_eq!(
            listed.into_ids(),
            std::slice::from_ref(&id),
            "{who} lists only its own sessions"
        );
    }
    assert!(b.delete(&id).await.unwrap());
    assert!(a.exists(&id).await.unwrap() && c.exists(&id).await.unwrap());
    assert!(matches!(
        RedisStore::builder()
            .prefix("bad{")
            .connect(&server.url())
            .await,
        Err(statestore_redis::Error::InvalidPrefix(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_is_corrupt_for_that_session_only() {
    let server = RedisServer::start().unwrap();
    let s = store(&server, RedisStore::builder().prefix("p:")).await;
    let mut conn = raw(&server).await;
    let healthy = sid("healthy");
    s.append(&healthy, vec![Message::user("fine")], Expect::Any)
        .await
        .unwrap();

    // Each case plants bytes under one session's keys.
    type Plant = (&'static str, &'static str, &'static str);
    let cases: Vec<(&str, Vec<Plant>)> = vec![
        ("header is a string", vec![("SET", "p:{s1}:h", "garbage")]),
        ("messages is a hash", vec![("HSET", "p:{s2}:m", "x")]),
        (
            "header without version",
            vec![("HSET", "p:{s3}:h", "schema")],
        ),
        (
            "non-JSON message",
            vec![
                ("HSET", "p:{s4}:h", "ok"),
                ("RPUSH", "p:{s4}:m", "not json"),
            ],
        ),
        (
            "truncated message",
            vec![
                ("HSET", "p:{s5}:h", "ok"),
                ("RPUSH", "p:{s5}:m", r#"{"role":"user","content":"#),
            ],
        ),
        (
            "message of unknown role",
            vec![
                ("HSET", "p:{s6}:h", "ok"),
                ("RPUSH", "p:{s6}:m", r#"{"role":"wizard"}"#),
            ],
        ),
        (
            "metadata not JSON",
            vec![("HSET", "p:{s7}:h", "ok"), ("HSET", "p:{s7}:d", "k")],
        ),
    ];
    for (i, (what, plants)) in cases.iter().enumerate() {
        let id = sid(&format!("s{}", i + 1));
        for (cmd, key, value) in plants {
            let mut c = redis::cmd(cmd);
            c.arg(*key);
            match *cmd {
                "HSET" if *value == "ok" => c.arg("schema").arg(1).arg("version").arg(3),
                "HSET" if *value == "schema" => c.arg("schema").arg(1),
                "HSET" if key.ends_with(":d") => c.arg(*value).arg("{not json"),
                "HSET" => c.arg(*value).arg("1"),
                _ => c.arg(*value),
            };
            let _: () = c.query_async(&mut conn).await.unwrap();
        }
        let load = s.load(&id).await;
        assert!(
            matches!(load, Err(Error::Corrupt { .. })),
            "{what}: load gave {load:?}"
        );
        let before: Vec<String> = conn
            .keys(format!("p:{{{id}}}:*", id = id.as_str()))
            .await
            .unwrap();
        let append = s.append(&id, vec![Message::user("x")], Expect::Any).await;
        let is_type_error = i < 3;
        if is_type_error {
            assert!(
                matches!(append, Err(Error::Corrupt { .. })),
                "{what}: append gave {append:?}"
            );
        }
        let after: Vec<String> = conn
            .keys(format!("p:{{{id}}}:*", id = id.as_str()))
            .await
            .unwrap();
        if is_type_error {
            assert_eq!(
                before.len(),
                after.len(),
                "{what}: a refused write changed keys"
            );
        }
        let msg = load.unwrap_err().to_string();
        assert!(
            msg.contains(&format!("\"{}\"", id.as_str())),
            "{what}: {msg}"
        );
    }

    // A newer schema is a version error, not corruption.
    let _: () = redis::cmd("HSET")
        .arg("p:{future}:h")
        .arg("schema")
        .arg(99)
        .arg("version")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        s.load(&sid("future")).await,
        Err(Error::UnsupportedSchema {
            found: 99,
            supported: 1,
            ..
        })
    ));
    assert!(matches!(
        s.append(&sid("future"), vec![Message::user("x")], Expect::Any)
            .await,
        Err(Error::UnsupportedSchema { .. })
    ));

    // Nobody else noticed.
    let fine = s.load(&healthy).await.unwrap().unwrap();
    assert_eq!(fine.messages.len(), 1);
    assert_eq!(fine.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_set_on_every_key_at_once_and_slides() {
    let server = RedisServer::start().unwrap();
    let ttl = Duration::from_secs(100);
    let s = store(&server, RedisStore::builder().prefix("t:").ttl(ttl)).await;
    let mut conn = raw(&server).await;
    let id = sid("ttl");
    s.append(
        &id,
        vec![Message::user("a"), Message::user("b")],
        Expect::Any,
    )
    .await
    .unwrap();
    s.add_summary(&id, Summary::new(0..1, "s"), Expect::Any)
        .await
        .unwrap();
    let mut patch = Metadata::new();
    patch.insert("k".into(), true.into());
    s.merge_metadata(&id, patch, Expect::Any).await.unwrap();

    let expiry = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let mut out = Vec::new();
            for suffix in ["h", "m", "s", "d"] {
                let at: i64 = redis::cmd("PEXPIRETIME")
                    .arg(format!("t:{{ttl}}:{suffix}"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                out.push(at);
            }
            out
        }
    };
    let first = expiry(&mut conn).await;
    assert!(first[0] > 0, "no TTL set: {first:?}");
    assert!(
        first.iter().all(|&t| t == first[0]),
        "keys expire at different times: {first:?}"
    );

    // A read within the first tenth of the TTL records no access
    // (`read.rs`): every expiry stays where the write put it…
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.load_recent(&id, 1).await.unwrap().unwrap();
    assert_eq!(expiry(&mut conn).await, first, "a read rewrote a fresh TTL");
    // …and one after it restarts the TTL of every key. (Less than 90 % of
    // the TTL left, as if 11 s had passed: the header's expiry moved
    // closer by hand.)
    let _: () = redis::cmd("PEXPIRE")
        .arg("t:{ttl}:h")
        .arg(89_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    s.load_recent(&id, 1).await.unwrap().unwrap();
    let second = expiry(&mut conn).await;
    assert!(second.iter().all(|&t| t == second[0]), "{second:?}");
    assert!(second[0] > first[0], "a read did not restart the TTL");
    // Just over 90 % left: not yet due, nothing written.
    let _: () = redis::cmd("PEXPIRE")
        .arg("t:{ttl}:h")
        .arg(90_500)
        .query_async(&mut conn)
        .await
        .unwrap();
    let header = expiry(&mut conn).await[0];
    s.load(&id).await.unwrap().unwrap();
    assert_eq!(
        expiry(&mut conn).await[0],
        header,
        "a read refreshed a TTL above 90 %"
    );
    s.touch(&id).await.unwrap();
    let second = expiry(&mut conn).await;

    // With sliding off, reads leave the TTL alone.
    let fixed = store(
        &server,
        RedisStore::builder()
            .prefix("t:")
            .ttl(ttl)
            .sliding_ttl(false),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    fixed.load(&id).await.unwrap().unwrap();
    assert_eq!(
        expiry(&mut conn).await,
        second,
        "a non-sliding read changed the TTL"
    );
    fixed.touch(&id).await.unwrap();
    assert!(
        expiry(&mut conn).await[0] > second[0],
        "touch must restart the TTL"
    );

    // And sessions really expire, all keys together.
    let short = store(
        &server,
        RedisStore::builder()
            .prefix("short:")
            .ttl(Duration::from_millis(150)),
    )
    .await;
    let gone = sid("gone");
    short
        .append(&gone, vec![Message::user("x")], Expect::Any)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(short.load(&gone).await.unwrap().is_none());
    // Only the list indexes outlive it (keys.rs): listing removes its entry.
    let left: Vec<String> = conn.keys("short:*").await.unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().all(|k| k.starts_with("short:{ix}:")),
        "{left:?}"
    );
    assert!(
        short
            .list(&ListQuery::new())
            .await
            .unwrap()
            .sessions
            .is_empty()
    );
    let left: Vec<String> = conn.keys("short:*").await.unwrap();
    assert_eq!(left, ["short:{ix}:built"]);
}

/// A maintenance save (`Save::keep_clocks`) keeps the remaining TTL of
/// every key of the session, `updated_at` and `last_accessed_at`; a plain
/// save restarts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_save_keeps_the_ttl_of_every_key() {
    let server = RedisServer::start().unwrap();
    // Reads that are no accesses, so that looking does not move the clocks.
    let s = store(
        &server,
        RedisStore::builder()
            .prefix("k:")
            .ttl(Duration::from_secs(60))
            .sliding_ttl(false),
    )
    .await;
    let mut conn = raw(&server).await;
    let id = sid("kept");
    s.append_with(
        &id,
        Append::new([Message::user("a"), Message::user("b")])
            .key(IdempotencyKey::new("turn").unwrap())
            .merge_metadata("m", true.into()),
    )
    .await
    .unwrap();
    s.add_summary(&id, Summary::new(0..1, "s"), Expect::Any)
        .await
        .unwrap();
    let expiry = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let mut out = Vec::new();
            for suffix in ["h", "m", "s", "d", "w"] {
                let at: i64 = redis::cmd("PEXPIRETIME")
                    .arg(format!("k:{{kept}}:{suffix}"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                out.push(at);
            }
            out
        }
    };
    let first = expiry(&mut conn).await;
    assert!(first.iter().all(|&t| t > 0), "{first:?}");
    let before = s.load(&id).await.unwrap().unwrap();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut state = before.clone();
    state.messages.truncate(1);
    state.metadata.insert("format".into(), 2.into());
    let keep = Save::new()
        .expect(Expect::Version(before.version))
        .keep_clocks();
    s.save_with(&state, keep).await.unwrap();
    let kept = expiry(&mut conn).await;
    assert!(kept.iter().all(|&t| t > 0), "a key lost its TTL: {kept:?}");
    assert!(
        kept.iter().all(|&t| t <= first[0]),
        "a maintenance save extended the TTL: {first:?} -> {kept:?}"
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg("k:{kept}:h")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 58_600, "remaining TTL {pttl} ms");
    let after = s.load(&id).await.unwrap().unwrap();
    assert_eq!(after.messages.len(), 1);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.updated_at, before.updated_at);
    assert_eq!(after.last_accessed_at, before.last_accessed_at);

    // A plain save restarts every clock.
    s.save(&state, Expect::Any).await.unwrap();
    let restarted = expiry(&mut conn).await;
    assert!(restarted.iter().all(|&t| t > first[0]), "{restarted:?}");
    let plain = s.load(&id).await.unwrap().unwrap();
    assert!(plain.updated_at > before.updated_at);
    assert!(plain.last_accessed_at > before.last_accessed_at);

    // A session without expiry stays without.
    let forever = store(&server, RedisStore::builder().prefix("k:")).await;
    let id = sid("forever");
    forever
        .append(&id, vec![Message::user("x")], Expect::Any)
        .await
        .unwrap();
    let state = forever.load(&id).await.unwrap().unwrap();
    s.save_with(&state, Save::new().keep_clocks())
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("k:{forever}:h")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        ttl, -1,
        "a maintenance save gave a TTL to a session without"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_writes_are_refused_and_write_nothing() {
    let server = RedisServer::start().unwrap();
    let s = store(
        &server,
        RedisStore::builder().limits(
            Limits::none()
                .with_max_message_bytes(1024)
                .with_max_messages(3),
        ),
    )
    .await;
    let id = sid("big");
    s.append(&id, vec![Message::user("ok")], Expect::Any)
        .await
        .unwrap();
    let err = s
        .append(&id, vec![Message::user("x".repeat(5000))], Expect::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1024, .. }), "{err}");
    let err = s
        .append(
            &id,
            (0..3).map(|_| Message::user("y")).collect(),
            Expect::Any,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 3, .. }), "{err}");
    let state = s.load(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 1);
    assert_eq!(state.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_are_clear_and_never_echo_the_password() {
    // Nothing listens on this port once the server is gone.
    let mut server = RedisServer::start().unwrap();
    let port = server.port();
    server.kill().unwrap();
    let err = RedisStore::builder()
        .connect_timeout(Duration::from_millis(500))
        .connect(&format!("redis://user:hunter2@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    let acl = RedisServer::builder()
        .acl_user("app", "right-password", "~* +@all")
        .start()
        .unwrap();
    let err = RedisStore::builder()
        .connect(&format!(
            "redis://app:wrong-password@127.0.0.1:{}",
            acl.port()
        ))
        .await
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(
        !msg.contains("wrong-password") && !msg.contains("right-password"),
        "{msg}"
    );
    assert!(
        matches!(err, statestore_redis::Error::Connect { .. }),
        "{msg}"
    );
    let ok = store(&acl, RedisStore::builder()).await;
    assert!(!format!("{ok:?}").contains("right-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_an_untrusted_server() {
    let server = RedisServer::builder().tls().start().unwrap();
    let other_ca = server.tls().unwrap().other_ca_cert_pem.clone();
    let err = RedisStore::builder()
        .tls_root_certificate(other_ca)
        .connect(&server.url())
        .await;
    assert!(
        matches!(err, Err(statestore_redis::Error::Connect { .. })),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_times_out_and_service_resumes() {
    let server = RedisServer::start().unwrap();
    let s = store(
        &server,
        RedisStore::builder().response_timeout(Duration::from_millis(300)),
    )
    .await;
    let id = sid("hang");
    s.append(&id, vec![Message::user("before")], Expect::Any)
        .await
        .unwrap();
    server.pause().unwrap();
    let err = s.load(&id).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                operation: "load",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    server.resume().unwrap();
    // The same store serves again, without being rebuilt.
    let mut recovered = None;
    for _ in 0..50 {
        if let Ok(Some(state)) = s.load(&id).await {
            recovered = Some(state);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recovered.expect("service resumed").messages.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_redis_cannot_apply_are_refused_when_building() {
    let server = RedisServer::start().unwrap();
    for ttl in [
        Duration::MAX,
        statestore_redis::MAX_TTL + Duration::from_millis(1),
    ] {
        let err = RedisStore::builder()
            .ttl(ttl)
            .connect(&server.url())
            .await
            .unwrap_err();
        assert!(
            matches!(err, statestore_redis::Error::InvalidTtl { .. }),
            "{ttl:?}: {err}"
        );
    }
    // The longest accepted TTL works for every write: none fails after
    // applying its change.
    let s = store(
        &server,
        RedisStore::builder().ttl(statestore_redis::MAX_TTL),
    )
    .await;
    let id = sid("long-lived");
    s.append(&id, vec![Message::user("a")], Expect::Any)
        .await
        .unwrap();
    s.merge_metadata(&id, Metadata::new(), Expect::Any)
        .await
        .unwrap();
    s.add_summary(&id, Summary::new(0..1, "s"), Expect::Any)
        .await
        .unwrap();
    s.save(&s.load(&id).await.unwrap().unwrap(), Expect::Any)
        .await
        .unwrap();
    assert!(s.touch(&id).await.unwrap());
    let ttl: i64 = server
        .cli(&["PTTL", "{long-lived}:h"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 3_000_000_000_000, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_message_limit_means_what_it_means_on_memory() {
    let server = RedisServer::start().unwrap();
    let limits = Limits::none().with_max_messages(0);
    let redis = store(&server, RedisStore::builder().limits(limits)).await;
    let memory = statestore_memory::MemoryStore::builder()
        .limits(limits)
        .build();
    for (name, s) in [("redis", &redis as &dyn Store), ("memory", &memory)] {
        let id = sid("zero");
        let err = s
            .append(&id, vec![Message::user("x")], Expect::Any)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { limit: 0, .. }),
            "{name}: {err}"
        );
        assert!(!s.exists(&id).await.unwrap(), "{name}");
        // An empty history is within the limit.
        assert_eq!(
            s.append(&id, vec![], Expect::Any).await.unwrap(),
            1,
            "{name}"
        );
        let err = s
            .save(
                &ConversationState::new(id.clone()).with_messages([Message::user("x")]),
                Expect::Any,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{name}: {err}");
    }
}

/// A maintenance read (`Load::keep_clocks`) is no access even where reads
/// slide the TTL (the default): every key keeps its expiry time and the
/// header its `last_accessed_at`, which the read reports; a plain read on
/// the same store restarts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_read_keeps_the_ttl_of_every_key() {
    use statestore_core::Load;
    let server = RedisServer::start().unwrap();
    let s = store(
        &server,
        RedisStore::builder()
            .prefix("p:")
            .ttl(Duration::from_secs(60)),
    )
    .await;
    let conn = raw(&server).await;
    for id in ["peeked", "read"] {
        let id = sid(id);
        s.append_with(
            &id,
            Append::new([Message::user("a"), Message::user("b")])
                .key(IdempotencyKey::new("turn").unwrap())
                .merge_metadata("m", true.into()),
        )
        .await
        .unwrap();
        s.add_summary(&id, Summary::new(0..1, "s"), Expect::Any)
            .await
            .unwrap();
    }
    // Every key's expiry time, and the header's last_accessed_at.
    let clocks = |id: &'static str| {
        let mut conn = conn.clone();
        async move {
            let mut at = Vec::new();
            for suffix in ["h", "m", "s", "d", "w"] {
                let t: i64 = redis::cmd("PEXPIRETIME")
                    .arg(format!("p:{{{id}}}:{suffix}"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                at.push(t);
            }
            let accessed: u64 = conn
                .hget(format!("p:{{{id}}}:h"), "last_accessed_at")
                .await
                .unwrap();
            (at, accessed)
        }
    };
    let (peeked, read) = (clocks("peeked").await, clocks("read").await);
    assert!(peeked.0.iter().all(|&t| t > 0), "{peeked:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;

    for _ in 0..3 {
        let state = s
            .load_with(&sid("peeked"), Load::new().keep_clocks())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.messages.len(), 2);
        assert_eq!(state.last_accessed_at.as_unix_millis(), peeked.1);
    }
    assert_eq!(
        clocks("peeked").await,
        peeked,
        "a maintenance read moved an expiry or last_accessed_at"
    );

    // A plain read is an access; one is due when less than 90 % of the
    // TTL is left (`read.rs`): as if 7 s had passed.
    let _: () = redis::cmd("PEXPIRE")
        .arg("p:{read}:h")
        .arg(53_000)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    let plain = s.load(&sid("read")).await.unwrap().unwrap();
    let after = clocks("read").await;
    assert!(
        after.0.iter().zip(&read.0).all(|(a, b)| a > b),
        "a plain read slides every key's TTL: {read:?} -> {after:?}"
    );
    assert!(after.1 > read.1);
    assert_eq!(plain.last_accessed_at.as_unix_millis(), after.1);
}
