//! Key rotation: 16 writers append while the key switches and every
//! session is re-encrypted; afterwards the new key alone reads everything,
//! nothing lost or duplicated, and a turn retried across the rotation is
//! still applied once (every backend's `save` keeps remembered writes).
//! Also: `rotate_all` resumes and reports failures; an append whose
//! planned positions went stale (the session re-created meanwhile) is
//! re-bound.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use statestore_core::{Append, Expect, IdempotencyKey, Load, Message, Store, Summary};
use statestore_crypto::{Encrypted, Error, KeyRing, RotateOptions};
use support::{key, ring, sid};

const WRITERS: usize = 16;
const TURNS: usize = 12;
const SESSIONS: usize = 6;

fn turn_key(w: usize, t: usize) -> IdempotencyKey {
    IdempotencyKey::new(format!("w{w}-t{t}")).unwrap()
}

async fn rotation_under_load(inner: Arc<dyn Store>) {
    let layer = Arc::new(Encrypted::new(Arc::clone(&inner), ring("k1", 1)));
    // Sessions with history, a prompt, summaries and metadata under k1.
    for s in 0..SESSIONS {
        let id = sid(&format!("conv-{s}"));
        let history: Vec<Message> = (0..10).map(|i| Message::user(format!("old {i}"))).collect();
        layer.append(&id, history, Expect::Any).await.unwrap();
        layer
            .add_summary(&id, Summary::new(0..5, "early"), Expect::Any)
            .await
            .unwrap();
        let mut patch = statestore_core::Metadata::new();
        patch.insert("topic".into(), format!("topic {s}").into());
        layer.merge_metadata(&id, patch, Expect::Any).await.unwrap();
    }

    // 16 writers, each appending keyed turns to the sessions in turn: half
    // unguarded, half read-decide-append like the pipeline.
    // Half of each writer's turns land under k1, half under k2 while the
    // re-encryption runs.
    let half = Arc::new(tokio::sync::Barrier::new(WRITERS + 1));
    let switched = Arc::new(tokio::sync::Barrier::new(WRITERS + 1));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let layer = Arc::clone(&layer);
        let (half, switched) = (Arc::clone(&half), Arc::clone(&switched));
        writers.spawn(async move {
            for t in 0..TURNS {
                if t == TURNS / 2 {
                    half.wait().await;
                    switched.wait().await;
                }
                let id = sid(&format!("conv-{}", (w + t) % SESSIONS));
                let turn = [
                    Message::user(format!("{w}:{t}:q")),
                    Message::assistant(format!("{w}:{t}:a")),
                ];
                if w % 2 == 0 {
                    layer
                        .append_with(&id, Append::new(turn).key(turn_key(w, t)))
                        .await
                        .unwrap();
                } else {
                    loop {
                        let read = layer
                            .load_recent_with(&id, 4, Some(&turn_key(w, t)))
                            .await
                            .unwrap()
                            .unwrap();
                        if read.replay.is_some() {
                            break;
                        }
                        let append = Append::new(turn.clone())
                            .key(turn_key(w, t))
                            .expect(Expect::Version(read.version));
                        match layer.append_with(&id, append).await {
                            Ok(_) => break,
                            Err(statestore_core::Error::Conflict { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
        });
    }

    // Mid-way: k2 becomes current (k1 still decrypts), then every session
    // is re-encrypted while the writers go on.
    half.wait().await;
    let rotated = KeyRing::new(key("k2", 2))
        .with_old_key(key("k1", 1))
        .unwrap();
    layer.set_keyring(rotated).await;
    switched.wait().await;
    let report = layer
        .rotate_all(RotateOptions::default().page_size(4), |_| {})
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.sessions, SESSIONS as u64);
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    // Everything written after the switch was under k2 already: a second
    // run has nothing to do.
    let again = layer
        .rotate_all(RotateOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.sessions, again.reencrypted, again.values),
        (SESSIONS as u64, 0, 0)
    );

    // k1 gone: k2 alone reads every session, every turn exactly once.
    let fresh = Encrypted::new(Arc::clone(&inner), ring("k2", 2));
    let mut seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut total = 0;
    for s in 0..SESSIONS {
        let state = fresh
            .load(&sid(&format!("conv-{s}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.metadata["topic"], format!("topic {s}"));
        assert_eq!(state.summaries[0].content, "early");
        let texts: Vec<String> = state
            .messages
            .iter()
            .map(|m| m.text().into_owned())
            .collect();
        assert_eq!(
            texts[..10],
            (0..10).map(|i| format!("old {i}")).collect::<Vec<_>>()[..]
        );
        for pair in texts[10..].chunks(2) {
            let q: Vec<usize> = pair[0]
                .trim_end_matches(":q")
                .split(':')
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(pair[1], format!("{}:{}:a", q[0], q[1]), "a turn was split");
            *seen.entry((q[0], q[1])).or_default() += 1;
        }
        total += texts.len();
    }
    assert_eq!(total, SESSIONS * 10 + WRITERS * TURNS * 2);
    assert_eq!(seen.len(), WRITERS * TURNS, "a turn was lost");
    assert!(seen.values().all(|n| *n == 1), "a turn was stored twice");

    // A turn retried after the rotation (its save) is still a replay.
    let id = sid("conv-0");
    let before = fresh.load_recent(&id, 0).await.unwrap().unwrap();
    let again = fresh
        .append_with(
            &id,
            Append::new([Message::user("retry")]).key(turn_key(0, 0)),
        )
        .await
        .unwrap();
    assert!(
        again.replayed,
        "the rotation's save forgot the remembered writes"
    );
    assert_eq!(
        fresh.load_recent(&id, 0).await.unwrap().unwrap().version,
        before.version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_16_writers_on_memory() {
    rotation_under_load(support::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_16_writers_on_sqlite() {
    rotation_under_load(Arc::new(support::Sqlite::open().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_16_writers_on_redis() {
    let server = support::redis_server();
    rotation_under_load(support::redis_store(&server.url()).await).await;
}

#[tokio::test]
async fn rotate_all_resumes_skips_current_sessions_and_reports_failures() {
    let inner = support::memory();
    let layer = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    for s in 0..10 {
        layer
            .append(
                &sid(&format!("s{s}")),
                vec![Message::user("hi")],
                Expect::Any,
            )
            .await
            .unwrap();
    }
    // One session written with a key no ring holds.
    inner.delete(&sid("s5")).await.unwrap();
    let stray = Encrypted::new(Arc::clone(&inner), ring("lost", 7));
    stray
        .append(&sid("s5"), vec![Message::user("x")], Expect::Any)
        .await
        .unwrap();

    layer
        .set_keyring(layer.keyring().with_current_key(key("k2", 2)).unwrap())
        .await;
    // Interrupted after the first page of 3: the callback records where to
    // resume.
    let mut resume = None;
    let mut pages_seen = 0;
    let first = layer
        .rotate_all(RotateOptions::default().page_size(3), |p| {
            if p.sessions % 3 == 0 {
                pages_seen += 1;
            }
            if p.sessions == 4 {
                resume = p.resume_from.map(str::to_owned);
            }
        })
        .await
        .unwrap();
    assert!(pages_seen >= 3);
    assert!(resume.is_some(), "the second page has a cursor");
    assert_eq!(first.sessions, 10);
    assert_eq!(first.reencrypted, 9);
    assert_eq!(first.failed.len(), 1);
    let (failed_id, e) = &first.failed[0];
    assert_eq!(failed_id, &sid("s5"));
    assert!(
        matches!(e, Error::UnknownKey { key_id, .. } if key_id == "lost"),
        "{e:?}"
    );

    // Resuming from the second page: nothing left to do but s5.
    let resumed = layer
        .rotate_all(
            RotateOptions::default().page_size(3).resume_from(resume),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(resumed.reencrypted, 0);
    assert!(resumed.sessions < 10);
    assert_eq!(resumed.failed.len(), 1);

    // A session already current is not written (its version stays).
    let v = inner.load(&sid("s0")).await.unwrap().unwrap().version;
    let done = layer.reencrypt(&sid("s0")).await.unwrap();
    assert_eq!((done.values, done.version), (0, Some(v)));
    assert_eq!(
        layer.reencrypt(&sid("missing")).await.unwrap().version,
        None
    );
}

#[tokio::test]
async fn plaintext_sessions_migrate_through_rotation() {
    let inner = support::memory();
    let id = sid("legacy");
    inner
        .append(
            &id,
            vec![Message::user("written before encryption")],
            Expect::Any,
        )
        .await
        .unwrap();
    let strict = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    assert!(strict.load(&id).await.is_err());
    let migrating = Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
        .accept_plaintext(true)
        .build();
    let report = migrating
        .rotate_all(RotateOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.values, 1);
    let raw = inner.load(&id).await.unwrap().unwrap();
    assert!(!format!("{raw:?}").contains("before encryption"));
    assert_eq!(
        strict.load(&id).await.unwrap().unwrap().messages[0].text(),
        "written before encryption"
    );
}

/// The layer planned an append at the positions it last saw, but the
/// session was deleted and re-created up to the same version by someone
/// else: the append lands elsewhere, and the layer re-binds its messages.
#[tokio::test]
async fn an_append_landing_elsewhere_than_planned_is_rebound() {
    let inner = support::memory();
    let layer = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    let other = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    let id = sid("aba");
    layer
        .append(&id, vec![Message::user("one")], Expect::Any)
        .await
        .unwrap();
    let seen = layer.load_recent(&id, 0).await.unwrap().unwrap();
    assert_eq!((seen.version, seen.total_messages), (1, 1));
    // Re-created elsewhere: version 1 again, two messages.
    other.delete(&id).await.unwrap();
    other
        .append(
            &id,
            vec![Message::user("x"), Message::user("y")],
            Expect::Any,
        )
        .await
        .unwrap();
    let done = layer
        .append(&id, vec![Message::user("mine")], Expect::Version(1))
        .await
        .unwrap();
    assert_eq!(done, 2);
    let texts: Vec<String> = layer
        .load(&id)
        .await
        .unwrap()
        .unwrap()
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(texts, ["x", "y", "mine"]);
}

/// Rotation is a maintenance read and write (`Load::keep_clocks`,
/// `Save::keep_clocks`): a re-encrypted session keeps `updated_at` and
/// `last_accessed_at` on every backend and, where sessions expire, its
/// expiry — also where reads count as accesses: memory with a TTL, SQLite
/// with a TTL, Redis with the default sliding TTL (and with non-sliding
/// reads). Rotating does not extend retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_sessions_clocks() {
    use std::time::Duration;
    let peek = Load::new().keep_clocks();
    let sqlite = support::Sqlite::open().await;
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite_file = sqlite_dir.path().join("ttl.sqlite3");
    let sqlite_ttl = Arc::new(
        statestore_sqlite::SqliteStore::builder()
            .ttl(Duration::from_secs(60))
            .open(&sqlite_file)
            .await
            .unwrap(),
    ) as Arc<dyn Store>;
    // Short enough to watch: created at 0, re-encrypted after 1.2 s,
    // checked after 2.3 s — gone unless the re-encryption restarted it.
    let memory_ttl = Duration::from_secs(2);
    let memory = Arc::new(
        statestore_memory::MemoryStore::builder()
            .ttl(memory_ttl)
            .build(),
    ) as Arc<dyn Store>;
    let server = support::redis_server();
    let redis_ttl = async |prefix: &str, sliding: bool| {
        Arc::new(
            statestore_redis::RedisStore::builder()
                .prefix(prefix)
                .ttl(Duration::from_secs(60))
                .sliding_ttl(sliding)
                .connect(&server.url())
                .await
                .unwrap(),
        ) as Arc<dyn Store>
    };
    enum Expiry {
        None,
        Memory,
        Sqlite,
        Redis(&'static str),
    }
    let stores = [
        (support::memory(), Expiry::None),
        (Arc::clone(&sqlite.store), Expiry::None),
        (support::redis_store(&server.url()).await, Expiry::None),
        (redis_ttl("ttl:", false).await, Expiry::Redis("ttl")),
        (redis_ttl("slide:", true).await, Expiry::Redis("slide")),
        (Arc::clone(&sqlite_ttl), Expiry::Sqlite),
        (memory, Expiry::Memory),
    ];
    let id = sid("clocks");
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let redis_expiry = async |conn: &mut redis::aio::MultiplexedConnection, prefix: &str| {
        let mut out = Vec::new();
        for suffix in ["h", "m", "d"] {
            let at: i64 = redis::cmd("PEXPIRETIME")
                .arg(format!("{prefix}:{{clocks}}:{suffix}"))
                .query_async(conn)
                .await
                .unwrap();
            out.push(at);
        }
        out
    };
    let sqlite_expiry = || -> (i64, i64) {
        rusqlite::Connection::open(&sqlite_file)
            .unwrap()
            .query_row(
                "SELECT last_accessed_at, expires_at FROM sessions WHERE id = 'clocks'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    for (n, (inner, expiry)) in stores.into_iter().enumerate() {
        let layer = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
        layer
            .append(&id, vec![Message::user("hi")], Expect::Any)
            .await
            .unwrap();
        // Looked at with maintenance reads: looking moves nothing.
        let before = inner.load_with(&id, peek).await.unwrap().unwrap();
        let first_redis = match expiry {
            Expiry::Redis(prefix) => redis_expiry(&mut conn, prefix).await,
            _ => Vec::new(),
        };
        let first_sqlite = matches!(expiry, Expiry::Sqlite).then(sqlite_expiry);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let ring = layer.keyring().with_current_key(key("k2", 2)).unwrap();
        layer.set_keyring(ring).await;
        let done = layer.reencrypt(&id).await.unwrap();
        assert!(done.values > 0, "store {n}: nothing re-encrypted");
        // SQLite applies recorded read accesses with the writer's next
        // batch: a write elsewhere flushes any the rotation made.
        inner
            .append(&sid("elsewhere"), vec![Message::user("x")], Expect::Any)
            .await
            .unwrap();
        let after = inner.load_with(&id, peek).await.unwrap().unwrap();
        assert_eq!(after.version, before.version + 1, "store {n}");
        assert_eq!(after.updated_at, before.updated_at, "store {n}");
        assert_eq!(
            after.last_accessed_at, before.last_accessed_at,
            "store {n}: rotation moved last_accessed_at"
        );
        // Through the layer, also without an access.
        let opened = layer.load_with(&id, peek).await.unwrap().unwrap();
        assert_eq!(opened.messages[0].text(), "hi");
        assert_eq!(opened.last_accessed_at, before.last_accessed_at);
        match expiry {
            Expiry::None => {}
            Expiry::Redis(prefix) => {
                let kept = redis_expiry(&mut conn, prefix).await;
                assert!(first_redis.iter().all(|&t| t > 0), "{first_redis:?}");
                assert!(
                    kept.iter().all(|&t| t > 0 && t <= first_redis[0]),
                    "store {n}: rotation extended the TTL: {first_redis:?} -> {kept:?}"
                );
            }
            Expiry::Sqlite => {
                assert_eq!(
                    Some(sqlite_expiry()),
                    first_sqlite,
                    "store {n}: rotation moved last_accessed_at or expires_at"
                );
            }
            Expiry::Memory => {
                // 1.2 s + 1.1 s since the last access: past the TTL.
                tokio::time::sleep(Duration::from_millis(1100)).await;
                assert!(
                    !inner.exists(&id).await.unwrap(),
                    "store {n}: rotation restarted the TTL"
                );
            }
        }
    }
}
