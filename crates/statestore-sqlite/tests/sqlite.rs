//! SQLite-specific behaviour: group commit, the lock timeout, schema
//! versions, corrupt rows, TTL and limits — on real files in temp dirs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TempStore, sid};
use statestore_core::codec::Limits;
use statestore_core::{ConversationState, Error, Expect, ListQuery, Message, Save, Store};
use statestore_sqlite::{SqliteStore, schema};

fn raw(store: &TempStore) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store.store.path()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn texts(messages: &[Arc<Message>]) -> Vec<String> {
    messages.iter().map(|m| m.text().into_owned()).collect()
}

/// 64 tasks append concurrently (synchronous=FULL), a third of them with an
/// expectation that cannot hold: the writer commits them in fewer
/// transactions than writes, each failing write is rolled back alone, and
/// after reopening the file exactly the acknowledged writes are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_writes_and_isolates_failures() {
    const TASKS: usize = 64;
    const EACH: usize = 10;
    let t = TempStore::open(SqliteStore::builder()).await;
    let store = Arc::new(t.store.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let id = sid(&format!("gc-{}", task % 8));
            let mut acked = Vec::new();
            for i in 0..EACH {
                let text = format!("{task}:{i}");
                let expect = if (task + i) % 3 == 0 {
                    Expect::Version(u64::MAX)
                } else {
                    Expect::Any
                };
                match store
                    .append(&id, vec![Message::user(text.clone())], expect)
                    .await
                {
                    Ok(_) => acked.push(text),
                    Err(Error::Conflict { .. }) => assert_eq!(expect, Expect::Version(u64::MAX)),
                    Err(e) => panic!("append {text}: {e}"),
                }
            }
            (task % 8, acked)
        });
    }
    let mut want: Vec<Vec<String>> = vec![Vec::new(); 8];
    let mut acked_total = 0u64;
    while let Some(r) = tasks.join_next().await {
        let (s, acked) = r.unwrap();
        acked_total += acked.len() as u64;
        want[s].extend(acked);
    }
    let stats = store.stats();
    assert_eq!(
        stats.writes, acked_total,
        "every acknowledged write counted once"
    );
    assert!(
        stats.commits < stats.writes,
        "no batching happened: {} commits for {} writes",
        stats.commits,
        stats.writes
    );
    assert_eq!(stats.failed_batches, 0);

    // Reopen the file: a restart sees exactly the acknowledged writes.
    drop(store);
    let path = t.store.path().to_path_buf();
    let reopened = SqliteStore::open(&path).await.unwrap();
    for (s, want) in want.iter_mut().enumerate() {
        let loaded = reopened
            .load(&sid(&format!("gc-{s}")))
            .await
            .unwrap()
            .unwrap();
        let mut got = texts(&loaded.messages);
        assert_eq!(
            loaded.version,
            got.len() as u64,
            "one version per acknowledged append"
        );
        got.sort();
        want.sort();
        assert_eq!(&got, want, "session gc-{s}");
    }
}

/// Another connection holds the write lock: writes fail with a typed
/// `Timeout` after the busy timeout (never a raw "database is locked"),
/// reads go on meanwhile, and writes work again once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_lock_is_a_typed_timeout_and_reads_go_on() {
    let t = TempStore::open(SqliteStore::builder().busy_timeout(Duration::from_millis(100))).await;
    let id = sid("locked");
    t.store
        .append(&id, vec![Message::user("before")], Expect::Any)
        .await
        .unwrap();

    let blocker = raw(&t);
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = t
        .store
        .append(&id, vec![Message::user("blocked")], Expect::Any)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { operation: "append", after } if after == Duration::from_millis(100)),
        "got {err:?}"
    );
    assert!(err.is_transient());
    assert!(!err.to_string().contains("locked"), "{err}");
    // Readers have their own connections: not blocked by the writer's lock.
    let recent = t.store.load_recent(&id, 5).await.unwrap().unwrap();
    assert_eq!(texts(&recent.messages), ["before"]);
    blocker.execute_batch("ROLLBACK").unwrap();

    let v = t
        .store
        .append(&id, vec![Message::user("after")], Expect::Any)
        .await
        .unwrap();
    assert_eq!(v, 2, "the timed-out write was not applied");
    let loaded = t.store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&loaded.messages), ["before", "after"]);
}

#[tokio::test]
async fn new_files_are_stamped_and_reopen_with_their_data() {
    let t = TempStore::open(SqliteStore::builder()).await;
    let id = sid("kept");
    t.store
        .append(&id, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    let version: u32 = raw(&t)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::FILE_SCHEMA_VERSION);
    let mode: String = raw(&t)
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let again = SqliteStore::open(t.store.path()).await.unwrap();
    let loaded = again.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&loaded.messages), ["hi"]);
}

/// `create(false)` opens only a file that exists: a missing one is an
/// `Unavailable` naming it, its source `NotFound`, and nothing is created;
/// an existing one opens with its data.
#[tokio::test]
async fn an_existing_file_only_opens_without_creating() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let err = SqliteStore::builder()
        .create(false)
        .open(&missing)
        .await
        .unwrap_err();
    let Error::Unavailable { source, .. } = &err else {
        panic!("{err:?}");
    };
    let io = source.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("typo.db"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "it created something"
    );

    let t = TempStore::open(SqliteStore::builder()).await;
    t.store
        .append(&sid("kept"), vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    let again = SqliteStore::builder()
        .create(false)
        .open(t.store.path())
        .await
        .unwrap();
    assert_eq!(
        again
            .load(&sid("kept"))
            .await
            .unwrap()
            .unwrap()
            .messages
            .len(),
        1
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let t = TempStore::open(SqliteStore::builder()).await;
    t.store
        .append(&sid("s"), vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    raw(&t)
        .pragma_update(None, "user_version", schema::FILE_SCHEMA_VERSION + 1)
        .unwrap();
    let err = SqliteStore::open(t.store.path()).await.unwrap_err();
    match err {
        Error::UnsupportedSchema {
            found,
            supported,
            id,
        } => {
            assert_eq!(found, schema::FILE_SCHEMA_VERSION + 1);
            assert_eq!(supported, schema::FILE_SCHEMA_VERSION);
            assert_eq!(id.as_str(), schema::FILE_ID);
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
}

#[tokio::test]
async fn foreign_files_are_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    // A SQLite database of someone else's.
    let other = dir.path().join("other.sqlite3");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE sessions (x); INSERT INTO sessions VALUES (1);")
        .unwrap();
    let err = SqliteStore::open(&other).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "got {err:?}");
    assert!(
        err.to_string().contains(&other.display().to_string()),
        "{err}"
    );
    // Not a database at all.
    let junk = dir.path().join("junk.sqlite3");
    std::fs::write(
        &junk,
        b"this is not a database file, just text. ".repeat(200),
    )
    .unwrap();
    let err = SqliteStore::open(&junk).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "got {err:?}");
    assert!(
        err.to_string().contains(&junk.display().to_string()),
        "{err}"
    );
    // A path that cannot be a file.
    let missing = dir.path().join("missing-dir/x.sqlite3");
    let err = SqliteStore::open(&missing).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "got {err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

/// Rows damaged behind the store's back fail with `Corrupt` for their own
/// session only.
#[tokio::test]
async fn corrupt_rows_fail_only_their_session() {
    let t = TempStore::open(SqliteStore::builder()).await;
    for name in ["bad-body", "bad-meta", "bad-version", "gap", "fine"] {
        t.store
            .append(
                &sid(name),
                vec![Message::user("one"), Message::assistant("two")],
                Expect::Any,
            )
            .await
            .unwrap();
    }
    let conn = raw(&t);
    conn.execute_batch(
        "UPDATE messages SET body = 'not json' WHERE session = 'bad-body' AND position = 1;
         UPDATE sessions SET metadata = '[1,' WHERE id = 'bad-meta';
         UPDATE sessions SET version = 'x' WHERE id = 'bad-version';
         DELETE FROM messages WHERE session = 'gap' AND position = 0;",
    )
    .unwrap();
    for name in ["bad-body", "bad-meta", "bad-version", "gap"] {
        let id = sid(name);
        let err = t.store.load(&id).await.unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { id: got, .. } if *got == id),
            "load {name}: {err:?}"
        );
    }
    for name in ["bad-body", "bad-meta", "bad-version"] {
        let err = t.store.load_recent(&sid(name), 1).await.unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { .. }),
            "load_recent {name}: {err:?}"
        );
    }
    // A window that does not reach the damage reads fine.
    let r = t.store.load_recent(&sid("gap"), 1).await.unwrap().unwrap();
    assert_eq!(texts(&r.messages), ["two"]);
    // Writes to a session whose version is damaged fail the same way.
    assert!(matches!(
        t.store
            .append(&sid("bad-version"), vec![Message::user("x")], Expect::Any)
            .await,
        Err(Error::Corrupt { .. })
    ));

    // Everything else is untouched.
    let fine = t.store.load(&sid("fine")).await.unwrap().unwrap();
    assert_eq!(texts(&fine.messages), ["one", "two"]);
    assert_eq!(
        t.store
            .append(
                &sid("fine"),
                vec![Message::user("three")],
                Expect::Version(1)
            )
            .await
            .unwrap(),
        2
    );
    let listed = t.store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(listed.sessions.len(), 5);
}

/// Limits refuse the whole write with `TooLarge` and write nothing.
#[tokio::test]
async fn limits_refuse_whole_writes() {
    let limits = Limits::none()
        .with_max_messages(3)
        .with_max_message_bytes(200);
    let t = TempStore::open(SqliteStore::builder().limits(limits)).await;
    let id = sid("limited");
    t.store
        .append(
            &id,
            vec![Message::user("a"), Message::user("b")],
            Expect::Any,
        )
        .await
        .unwrap();
    let too_many = t
        .store
        .append(
            &id,
            vec![Message::user("c"), Message::user("d")],
            Expect::Any,
        )
        .await;
    assert!(
        matches!(too_many, Err(Error::TooLarge { .. })),
        "{too_many:?}"
    );
    let too_big = t
        .store
        .append(&id, vec![Message::user("x".repeat(500))], Expect::Any)
        .await;
    assert!(
        matches!(too_big, Err(Error::TooLarge { .. })),
        "{too_big:?}"
    );
    let loaded = t.store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&loaded.messages), ["a", "b"]);
    assert_eq!(loaded.version, 1);
}

/// An expired session is invisible to every read and write at once, and a
/// new one can be created under its id.
#[tokio::test]
async fn expired_sessions_are_gone() {
    let ttl = Duration::from_millis(300);
    let t = TempStore::open(SqliteStore::builder().ttl(ttl)).await;
    let id = sid("short-lived");
    t.store
        .append(&id, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    assert!(t.store.exists(&id).await.unwrap());
    tokio::time::sleep(ttl * 2).await;
    assert!(t.store.load(&id).await.unwrap().is_none());
    assert!(t.store.load_recent(&id, 5).await.unwrap().is_none());
    assert!(!t.store.exists(&id).await.unwrap());
    assert!(!t.store.touch(&id).await.unwrap());
    assert!(
        t.store
            .list(&ListQuery::default())
            .await
            .unwrap()
            .sessions
            .is_empty()
    );
    let fresh = t
        .store
        .append(&id, vec![Message::user("again")], Expect::Absent)
        .await
        .unwrap();
    assert_eq!(fresh, 1, "a write after expiry starts a new session");
    let loaded = t.store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&loaded.messages), ["again"]);
}

/// Reads restart the clock: a session read more often than its TTL outlives
/// several TTLs, and goes once the reads stop.
#[tokio::test]
async fn reads_slide_the_expiry() {
    let ttl = Duration::from_millis(1_000);
    let t = TempStore::open(SqliteStore::builder().ttl(ttl)).await;
    let id = sid("kept-alive");
    t.store
        .append(&id, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(ttl / 4).await;
        assert!(t.store.load_recent(&id, 1).await.unwrap().is_some());
    }
    // 2 s have passed, twice the TTL: only the reads kept it.
    tokio::time::sleep(ttl * 2).await;
    assert!(t.store.load(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn purge_expired_deletes_the_rows() {
    let ttl = Duration::from_millis(200);
    let t = TempStore::open(SqliteStore::builder().ttl(ttl)).await;
    for i in 0..5 {
        let id = sid(&format!("p{i}"));
        t.store
            .append(
                &id,
                vec![Message::user("m"), Message::user("n")],
                Expect::Any,
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(t.store.purge_expired().await.unwrap(), 5);
    let conn = raw(&t);
    for table in ["sessions", "messages", "summaries", "writes"] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{table} still holds rows");
    }
    assert_eq!(t.store.purge_expired().await.unwrap(), 0);
}

/// Without a TTL a read records nothing, so it costs the writer no commit
/// (with `synchronous=FULL`, no fsync): a turn's load and append make one
/// commit, not two.
#[tokio::test]
async fn reads_cost_no_commit_without_a_ttl() {
    let t = TempStore::open(SqliteStore::builder()).await;
    let id = sid("read-only-traffic");
    t.store
        .append(&id, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    let before = t.store.stats();
    for _ in 0..50 {
        assert!(t.store.load_recent(&id, 20).await.unwrap().is_some());
        assert!(t.store.load(&id).await.unwrap().is_some());
    }
    // A write queued behind any pending refresh batch flushes it out first.
    t.store
        .append(&id, vec![Message::user("again")], Expect::Version(1))
        .await
        .unwrap();
    let after = t.store.stats();
    assert_eq!(
        after.commits - before.commits,
        1,
        "only the append committed: {before:?} → {after:?}"
    );
}

/// Expired sessions' rows are deleted by the writer along with ordinary
/// writes (the indexed sweep, at most 16 sessions a batch), without
/// `purge_expired`.
#[tokio::test]
async fn writes_sweep_expired_sessions() {
    let ttl = Duration::from_millis(200);
    let t = TempStore::open(SqliteStore::builder().ttl(ttl)).await;
    for i in 0..20 {
        t.store
            .append(
                &sid(&format!("old-{i}")),
                vec![Message::user("m")],
                Expect::Any,
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(ttl * 2).await;
    let count = |table: &str| -> i64 {
        raw(&t)
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("sessions"), 20, "nothing deleted before a write");
    // One write batch: sweeps 16 of the 20 (the budget) and adds its own.
    t.store
        .append(&sid("new-0"), vec![Message::user("n")], Expect::Any)
        .await
        .unwrap();
    assert_eq!(count("sessions"), 20 - 16 + 1);
    // The next takes the rest.
    t.store
        .append(&sid("new-1"), vec![Message::user("n")], Expect::Any)
        .await
        .unwrap();
    assert_eq!(count("sessions"), 2);
    assert_eq!(
        count("messages"),
        2,
        "the expired sessions' messages went too"
    );
}

/// `close` checkpoints the WAL and truncates it: the `-wal` file is empty
/// afterwards (it held the writes before), the writes are in the database
/// file, and the store still works.
#[tokio::test]
async fn close_checkpoints_and_truncates_the_wal() {
    let t = TempStore::open(SqliteStore::builder()).await;
    let wal = t.dir.path().join("store.sqlite3-wal");
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let id = sid("s");
    for i in 0..20 {
        t.store
            .append(&id, vec![Message::user(format!("m{i}"))], Expect::Any)
            .await
            .unwrap();
    }
    assert!(wal_len() > 0, "the writes went to the WAL first");
    t.store.close().await.unwrap();
    assert_eq!(wal_len(), 0, "the WAL is truncated");
    // The database file alone holds every write.
    let conn = raw(&t);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20);
    drop(conn);
    // Still usable.
    t.store
        .append(&id, vec![Message::user("after")], Expect::Any)
        .await
        .unwrap();
    assert_eq!(t.store.load(&id).await.unwrap().unwrap().messages.len(), 21);
}

/// A maintenance save (`Save::keep_clocks`) keeps `updated_at`,
/// `last_accessed_at` and `expires_at`; a plain save moves them.
#[tokio::test]
async fn a_maintenance_save_keeps_the_expiry() {
    let t = TempStore::open(SqliteStore::builder().ttl(Duration::from_secs(60))).await;
    let id = sid("rekeyed");
    t.store
        .append(&id, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    let clocks = || -> (i64, i64, i64, i64) {
        raw(&t)
            .query_row(
                "SELECT version, updated_at, last_accessed_at, expires_at
                 FROM sessions WHERE id = 'rekeyed'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    };
    let first = clocks();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Built rather than loaded: a read with a TTL is an access.
    let state = ConversationState::new(id.clone()).with_messages([Message::user("re-sealed")]);
    let keep = Save::new().expect(Expect::Version(1)).keep_clocks();
    assert_eq!(t.store.save_with(&state, keep).await.unwrap(), 2);
    let kept = clocks();
    assert_eq!(kept.0, 2);
    assert_eq!((kept.1, kept.2), (first.1, first.2), "timestamps moved");
    assert!(kept.3 <= first.3, "expiry extended: {first:?} -> {kept:?}");
    // A retry guarded by the old version writes nothing.
    assert!(matches!(
        t.store.save_with(&state, keep).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(clocks(), kept);

    t.store.save(&state, Expect::Version(2)).await.unwrap();
    let plain = clocks();
    assert!(plain.1 > first.1 && plain.2 > first.2 && plain.3 > first.3);
}

/// A maintenance read (`Load::keep_clocks`) records no access: with a TTL,
/// `last_accessed_at` and `expires_at` stay (and it costs no commit), and
/// the state reports the stored `last_accessed_at`; a plain read moves both.
#[tokio::test]
async fn a_maintenance_read_keeps_the_expiry() {
    use statestore_core::Load;
    let t = TempStore::open(SqliteStore::builder().ttl(Duration::from_secs(60))).await;
    for id in ["peeked", "read"] {
        t.store
            .append(&sid(id), vec![Message::user("hi")], Expect::Any)
            .await
            .unwrap();
    }
    let clocks = |id: &str| -> (i64, i64, i64, i64) {
        raw(&t)
            .query_row(
                "SELECT version, updated_at, last_accessed_at, expires_at
                 FROM sessions WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    };
    let (peeked, read) = (clocks("peeked"), clocks("read"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let commits = t.store.stats().commits;
    for _ in 0..3 {
        let state = t
            .store
            .load_with(&sid("peeked"), Load::new().keep_clocks())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.messages.len(), 1);
        assert_eq!(
            state.last_accessed_at.as_unix_millis(),
            u64::try_from(peeked.2).unwrap(),
            "reports the stored last access"
        );
    }
    assert_eq!(t.store.stats().commits, commits, "no access was recorded");
    let plain = t.store.load(&sid("read")).await.unwrap().unwrap();
    assert!(plain.last_accessed_at.as_unix_millis() > u64::try_from(read.2).unwrap());
    // A write queued behind the pending refresh batch flushes it out first.
    t.store
        .append(&sid("other"), vec![Message::user("x")], Expect::Any)
        .await
        .unwrap();
    assert_eq!(
        clocks("peeked"),
        peeked,
        "a maintenance read moved the clocks"
    );
    let after = clocks("read");
    assert!(
        after.2 > read.2 && after.3 > read.3,
        "a plain read slides the expiry: {read:?} -> {after:?}"
    );
    assert_eq!((after.0, after.1), (read.0, read.1));
}
