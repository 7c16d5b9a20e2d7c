//! Faults on real PostgreSQL servers the tests start (pg-test-server): a
//! server crashed mid-workload and restarted, a backend terminated during
//! a write, a hung (SIGSTOPped) server, an exhausted pool, hostile ids, a
//! 1 MB message and rows planted by hand. Every call comes back with a
//! typed error whose write outcome is true, never hangs, and the same store
//! serves again afterwards; nothing acknowledged is lost, no keyed turn is
//! applied twice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pg_test_server::PgServer;
use statestore_core::codec::Limits;
use statestore_core::{
    Append, Appended, Error, Expect, IdempotencyKey, ListQuery, Message, SessionId, Store,
    WriteOutcome,
};
use statestore_postgres::PostgresStore;
use tokio_postgres::{Client, NoTls};

/// No call may take longer than this, whatever the fault.
const GUARD: Duration = Duration::from_secs(20);

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).unwrap()
}

fn server() -> PgServer {
    PgServer::builder().fsync(false).start().unwrap()
}

/// A plain connection of the test's own, beside the store's pool.
async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The message rows of session `id`, counted by the server.
async fn rows(c: &Client, id: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM statestore_messages WHERE session = $1",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

/// The pid of the backend running a statement containing `text` and
/// waiting on `wait` (a wait event type or wait event), polled for.
async fn waiting_backend(monitor: &Client, wait: &str, text: &str) -> i32 {
    let pattern = format!("%{text}%");
    for _ in 0..1000 {
        let found = monitor
            .query(
                "SELECT pid FROM pg_stat_activity
                  WHERE (wait_event_type = $1 OR wait_event = $1) AND query LIKE $2
                    AND pid <> pg_backend_pid()",
                &[&wait, &pattern],
            )
            .await
            .unwrap();
        if let Some(row) = found.first() {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no backend waited on {wait} running {text}");
}

/// Waits until the server's backends have reloaded
/// `synchronous_standby_names` as `value` (the postmaster signals them all
/// at once; the monitor's is one of them).
async fn synchronous_standby_names(monitor: &Client, value: &str) {
    guarded("the reload", async {
        loop {
            let row = monitor
                .query_one("SHOW synchronous_standby_names", &[])
                .await
                .unwrap();
            if row.get::<_, String>(0) == value {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The backend-specific error behind a store error, if there is one.
fn pg_error(e: &Error) -> Option<&statestore_postgres::Error> {
    e.source()?.downcast_ref::<statestore_postgres::Error>()
}

/// Guarded: a call that hangs fails the test instead of hanging it.
async fn guarded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// One keyed turn: the window and the key's lookup, then the append. A
/// turn already stored under `key` is not written again.
async fn turn(store: &PostgresStore, id: &SessionId, tag: &str) -> Result<Appended, Error> {
    let k = key(tag);
    let recent = store.load_recent_with(id, 4, Some(&k)).await?;
    if let Some(done) = recent.as_ref().and_then(|r| r.replay) {
        return Ok(done);
    }
    let expect = recent.map_or(Expect::Absent, |r| Expect::Version(r.version));
    let pair = [
        Message::user(format!("{tag}:q")),
        Message::assistant(format!("{tag}:a")),
    ];
    store
        .append_with(id, Append::new(pair).expect(expect).key(k))
        .await
}

/// Eight tasks do keyed turns, each on its own session, retrying a failed
/// turn with the same key until it succeeds. The server is crashed
/// (`pg_ctl stop -m immediate`: no checkpoint, crash recovery at the next
/// start) after 200 acknowledged turns, kept down for a while, and
/// restarted. During the outage every error is `Unavailable` or `Timeout`
/// (transient, outcome `Unknown`); afterwards the *same* store value
/// serves again (the pool replaces the broken connections by itself);
/// every session holds exactly its acknowledged turns, whole (question and
/// answer together), in order and once each — a turn committed just before
/// the crash and retried afterwards was a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crashed_mid_workload_loses_no_acknowledged_turn_and_the_store_recovers() {
    const WRITERS: usize = 8;
    let mut server = server();
    let store = Arc::new(
        PostgresStore::builder(&server.url())
            .unwrap()
            .pool_size(4)
            .statement_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap(),
    );
    let acked: Arc<Vec<AtomicUsize>> =
        Arc::new((0..WRITERS).map(|_| AtomicUsize::new(0)).collect());
    let errors = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (store, acked, errors, stop) = (
            Arc::clone(&store),
            Arc::clone(&acked),
            Arc::clone(&errors),
            Arc::clone(&stop),
        );
        tasks.spawn(async move {
            let id = sid(&format!("w{w}"));
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let tag = format!("w{w}:{n}");
                loop {
                    match guarded("a turn", turn(&store, &id, &tag)).await {
                        Ok(_) => break,
                        Err(e) => {
                            assert!(
                                matches!(e, Error::Unavailable { .. } | Error::Timeout { .. }),
                                "an untyped error during the outage: {e:?}"
                            );
                            assert!(e.is_transient(), "{e}");
                            assert_eq!(e.write_outcome(), WriteOutcome::Unknown, "{e}");
                            errors.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                n += 1;
                acked[w].store(n, Ordering::SeqCst);
            }
        });
    }
    let total = |acked: &[AtomicUsize]| {
        acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .sum::<usize>()
    };
    guarded("200 turns", async {
        while total(&acked) < 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::task::block_in_place(|| server.stop_immediate()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_restart: Vec<usize> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    // While the server is down, a write is refused with a typed, transient
    // error whose outcome is not claimed to be known.
    let e = guarded("an append to a dead server", async {
        store
            .append(&sid("outage"), vec![Message::user("lost?")], Expect::Any)
            .await
            .unwrap_err()
    })
    .await;
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_eq!(e.write_outcome(), WriteOutcome::Unknown);
    assert!(errors.load(Ordering::SeqCst) > 0, "no task saw the outage");
    tokio::task::block_in_place(|| server.restart()).unwrap();

    // The same store, not a new one: every writer gets going again.
    guarded("turns after the restart", async {
        while acked
            .iter()
            .zip(&before_restart)
            .any(|(a, before)| a.load(Ordering::SeqCst) < before + 5)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let c = connect(&server.url()).await;
    for w in 0..WRITERS {
        let name = format!("w{w}");
        let n = acked[w].load(Ordering::SeqCst);
        let state = store.load(&sid(&name)).await.unwrap().unwrap();
        let texts: Vec<String> = state
            .messages
            .iter()
            .map(|m| m.text().into_owned())
            .collect();
        let want: Vec<String> = (0..n)
            .flat_map(|i| [format!("w{w}:{i}:q"), format!("w{w}:{i}:a")])
            .collect();
        assert_eq!(
            texts, want,
            "{name}: exactly the acknowledged turns, whole, once each"
        );
        assert_eq!(state.version, n as u64, "{name}: one version per turn");
        assert_eq!(rows(&c, &name).await, 2 * n as i64, "{name}: rows");
    }
    assert!(!store.exists(&sid("outage")).await.unwrap());
}

/// A keyed append blocked on a row lock the test holds is terminated with
/// `pg_terminate_backend`: the server ended the connection before the
/// statement completed, so the backend's error says `NotWritten` (the
/// store-level error, `Unavailable`, never claims more than `Unknown`), no
/// row was written, and the keyed retry applies it once.
///
/// Then a keyed append that has committed but waits for a synchronous
/// standby that does not exist (`synchronous_standby_names = 'nobody'`)
/// is terminated: the client saw the statement complete but never its
/// commit acknowledged, so the outcome is `Unknown` at every level — and
/// it was in fact written: the keyed retry is a replay, and the rows are
/// there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_reports_its_outcome_truthfully_and_a_keyed_retry_applies_once() {
    let server = server();
    let store = PostgresStore::builder(&server.url())
        .unwrap()
        .pool_size(2)
        .statement_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let monitor = connect(&server.url()).await;
    let holder = connect(&server.url()).await;

    // 1. Terminated while blocked: provably not written.
    let id = sid("blocked");
    store
        .append(&id, vec![Message::user("first")], Expect::Any)
        .await
        .unwrap();
    holder
        .batch_execute("BEGIN; SELECT 1 FROM statestore_sessions WHERE id = 'blocked' FOR UPDATE")
        .await
        .unwrap();
    let write = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            let append = Append::new([Message::user("blocked turn")]).key(key("k-blocked"));
            store.append_with(&id, append).await
        })
    };
    let pid = waiting_backend(&monitor, "Lock", "fn_append").await;
    monitor
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let e = guarded("the terminated write", write)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(
        e.write_outcome(),
        WriteOutcome::Unknown,
        "the neutral error is conservative"
    );
    let pg = pg_error(&e).expect("the backend's error as the source");
    assert!(
        matches!(pg, statestore_postgres::Error::Aborted { sqlstate, .. } if sqlstate == "57P01"),
        "{pg:?}"
    );
    assert_eq!(pg.write_outcome(), WriteOutcome::NotWritten, "{pg}");
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(rows(&monitor, "blocked").await, 1, "nothing was written");
    let append = Append::new([Message::user("blocked turn")]).key(key("k-blocked"));
    let done = store.append_with(&id, append.clone()).await.unwrap();
    assert!(
        !done.replayed,
        "the first attempt wrote nothing: this is the first write"
    );
    assert!(store.append_with(&id, append).await.unwrap().replayed);
    assert_eq!(rows(&monitor, "blocked").await, 2, "applied once");

    // 2. Terminated after its commit, before the acknowledgement: unknown,
    // and in fact written.
    server
        .psql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        .unwrap();
    server.psql("SELECT pg_reload_conf()").unwrap();
    synchronous_standby_names(&monitor, "nobody").await;
    let id = sid("committed");
    let write = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            let append = Append::new([Message::user("committed turn")]).key(key("k-committed"));
            store.append_with(&id, append).await
        })
    };
    let pid = waiting_backend(&monitor, "SyncRep", "fn_append").await;
    monitor
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let e = guarded("the terminated write", write)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_eq!(e.write_outcome(), WriteOutcome::Unknown);
    let pg = pg_error(&e).expect("the backend's error as the source");
    assert!(
        matches!(pg, statestore_postgres::Error::Unavailable { .. }),
        "{pg:?}"
    );
    assert_eq!(pg.write_outcome(), WriteOutcome::Unknown, "{pg}");
    server
        .psql("ALTER SYSTEM RESET synchronous_standby_names")
        .unwrap();
    server.psql("SELECT pg_reload_conf()").unwrap();
    synchronous_standby_names(&monitor, "").await;
    // Visible once the terminated backend has left.
    guarded("the committed row", async {
        while rows(&monitor, "committed").await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(rows(&monitor, "committed").await, 1, "it had committed");
    let append = Append::new([Message::user("committed turn")]).key(key("k-committed"));
    let retry = store.append_with(&id, append).await.unwrap();
    assert!(
        retry.replayed,
        "the retry is a replay of the committed write"
    );
    assert_eq!(rows(&monitor, "committed").await, 1, "applied once");
}

/// A SIGSTOPped server accepts connections and requests but never answers,
/// so its own `statement_timeout` cannot fire: the client's deadline
/// (statement timeout + a margin) turns a write into `Timeout` (outcome
/// `Unknown`), and so are a read and an operation that needs a new
/// connection. The connection that timed out is closed, not pooled: after
/// SIGCONT its backend is gone. The same store then serves again, and the
/// keyed retry of the timed-out write leaves it applied exactly once
/// (the resumed server may well have committed the first attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_times_out_and_the_timed_out_connection_is_closed() {
    let server = server();
    let store = PostgresStore::builder(&server.url())
        .unwrap()
        .pool_size(1)
        .statement_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let id = sid("hung");
    store
        .append(&id, vec![Message::user("before")], Expect::Any)
        .await
        .unwrap();
    let monitor = connect(&server.url()).await;
    let pooled: i32 = monitor
        .query_one(
            "SELECT pid FROM pg_stat_activity
              WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    server.pause().unwrap();
    let append = Append::new([Message::user("during the hang")]).key(key("k-hung"));
    let e = guarded(
        "a write to a hung server",
        store.append_with(&id, append.clone()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                operation: "append",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.write_outcome(), WriteOutcome::Unknown, "it was sent");
    // The pool is empty now (its connection was closed): these must open a
    // new connection, which a hung server never completes.
    let e = guarded("a read from a hung server", store.load(&id))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                operation: "load",
                ..
            }
        ),
        "{e:?}"
    );
    let e = guarded("exists on a hung server", store.exists(&id))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    server.resume().unwrap();

    guarded("the timed-out connection's backend to end", async {
        loop {
            let left: i64 = monitor
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                    &[&pooled],
                )
                .await
                .unwrap()
                .get(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    store.append_with(&id, append).await.unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(texts, ["before", "during the hang"], "applied exactly once");
}

/// With one pooled connection held by a write blocked on a row lock, another
/// operation waits at most the pool timeout and fails with `Timeout` — it
/// does not queue behind the blocked write; once the lock goes, both
/// sessions are served by the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_times_out_instead_of_hanging() {
    let server = server();
    let wait = Duration::from_millis(300);
    let store = PostgresStore::builder(&server.url())
        .unwrap()
        .pool_size(1)
        .statement_timeout(Duration::from_secs(10))
        .pool_timeout(wait)
        .build()
        .await
        .unwrap();
    assert_eq!(store.pool_timeout(), wait);
    let (locked, free) = (sid("locked"), sid("free"));
    for id in [&locked, &free] {
        store
            .append(id, vec![Message::user("hi")], Expect::Any)
            .await
            .unwrap();
    }
    let monitor = connect(&server.url()).await;
    let holder = connect(&server.url()).await;
    holder
        .batch_execute("BEGIN; SELECT 1 FROM statestore_sessions WHERE id = 'locked' FOR UPDATE")
        .await
        .unwrap();
    let blocked = {
        let (store, id) = (store.clone(), locked.clone());
        tokio::spawn(async move {
            store
                .append(&id, vec![Message::user("blocked")], Expect::Any)
                .await
        })
    };
    waiting_backend(&monitor, "Lock", "fn_append").await;
    for _ in 0..2 {
        let e = guarded("a load with no free connection", store.load(&free))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Timeout { operation: "load", after } if after == wait),
            "{e:?}"
        );
        let e = guarded("an append with no free connection", async {
            store
                .append(&free, vec![Message::user("x")], Expect::Any)
                .await
        })
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    }
    assert!(
        !blocked.is_finished(),
        "the blocked write still holds the connection"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        guarded("the blocked write", blocked)
            .await
            .unwrap()
            .unwrap(),
        2
    );
    let state = store.load(&free).await.unwrap().unwrap();
    assert_eq!(
        state.messages.len(),
        1,
        "the timed-out appends wrote nothing"
    );
}

/// Ids that are SQL to a careless store — quotes, `'; DROP TABLE …; --`,
/// backslashes, dollar quotes, LIKE wildcards, unicode — are stored and
/// read back each in isolation, and the tables survive; a 1 MB message
/// (quotes, backslashes, unicode) round-trips; over a size limit it is
/// `TooLarge` and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_and_a_one_megabyte_message_are_stored_as_they_are() {
    let server = server();
    let store = PostgresStore::connect(&server.url()).await.unwrap();
    let ids = [
        "it's",
        "'; DROP TABLE statestore_sessions; --",
        "Robert'); DROP TABLE statestore_messages;--",
        "\"quoted\"",
        "back\\slash\\'",
        "$$dollar$$",
        "%_like_%",
        "ünïcödé 🦀 中文",
        "a\u{200b}b",
    ];
    for text in ids {
        let id = sid(text);
        store
            .append(&id, vec![Message::user(text)], Expect::Absent)
            .await
            .unwrap();
    }
    let listed = store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(listed.sessions.len(), ids.len());
    for text in ids {
        let state = store.load(&sid(text)).await.unwrap().unwrap();
        let texts: Vec<String> = state
            .messages
            .iter()
            .map(|m| m.text().into_owned())
            .collect();
        assert_eq!(texts, [text], "{text:?}");
        assert!(listed.ids().any(|i| *i == sid(text)), "{text:?}");
    }
    let tables = server
        .psql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'statestore%'")
        .unwrap();
    assert_eq!(tables, "6");

    let big: String = "a'\"\\ü🦀\n".chars().cycle().take(1 << 20).collect();
    let id = sid("big");
    store
        .append(&id, vec![Message::user(big.as_str())], Expect::Absent)
        .await
        .unwrap();
    let recent = store.load_recent(&id, 1).await.unwrap().unwrap();
    assert_eq!(recent.messages[0].text(), big.as_str());
    let limited = PostgresStore::builder(&server.url())
        .unwrap()
        .limits(Limits::none().with_max_message_bytes(512 * 1024))
        .build()
        .await
        .unwrap();
    let small = sid("limited");
    let e = limited
        .append(&small, vec![Message::user(big.as_str())], Expect::Any)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    assert_eq!(e.write_outcome(), WriteOutcome::NotWritten);
    assert!(!limited.exists(&small).await.unwrap(), "nothing written");
}

/// Rows changed by hand — a message that is not JSON, a message of an
/// unknown role or the wrong JSON type, metadata that is not an object,
/// counters that are not counters, a negative version, a missing message
/// row, a summary that is not JSON — make reads of that session fail with
/// `Corrupt` naming it; every other session still loads and lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_planted_by_hand_are_corrupt_for_that_session_only() {
    let server = server();
    let store = PostgresStore::connect(&server.url()).await.unwrap();
    let planted = [
        (
            "not-json",
            "UPDATE statestore_messages SET body = '{\"role\": \"user\", \"con' WHERE session = 'not-json' AND position = 0",
        ),
        (
            "bad-role",
            "UPDATE statestore_messages SET body = '{\"role\": \"wizard\", \"content\": \"x\"}' WHERE session = 'bad-role'",
        ),
        (
            "wrong-type",
            "UPDATE statestore_messages SET body = '42' WHERE session = 'wrong-type' AND position = 1",
        ),
        (
            "bad-metadata",
            "UPDATE statestore_sessions SET metadata = '[1, 2]' WHERE id = 'bad-metadata'",
        ),
        (
            "bad-counters",
            "UPDATE statestore_sessions SET counters = '\"many\"' WHERE id = 'bad-counters'",
        ),
        (
            "negative",
            "UPDATE statestore_sessions SET version = -1 WHERE id = 'negative'",
        ),
        (
            "missing-row",
            "DELETE FROM statestore_messages WHERE session = 'missing-row' AND position = 0",
        ),
        (
            "bad-summary",
            "INSERT INTO statestore_summaries VALUES ('bad-summary', 0, '{oops'); UPDATE statestore_sessions SET summary_count = 1 WHERE id = 'bad-summary'",
        ),
    ];
    let good = [sid("good-1"), sid("good-2")];
    for id in planted
        .iter()
        .map(|(name, _)| sid(name))
        .chain(good.clone())
    {
        store
            .append(
                &id,
                vec![Message::user("q"), Message::assistant("a")],
                Expect::Absent,
            )
            .await
            .unwrap();
    }
    for (_, sql) in planted {
        server.psql(sql).unwrap();
    }
    for (name, _) in planted {
        let id = sid(name);
        let e = store.load(&id).await.unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { id: bad, .. } if *bad == id),
            "{name}: {e:?}"
        );
        let e = store.load_recent(&id, 10).await.unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { id: bad, .. } if *bad == id),
            "{name}: {e:?}"
        );
    }
    for id in &good {
        assert_eq!(store.load(id).await.unwrap().unwrap().messages.len(), 2);
        assert_eq!(
            store
                .load_recent(id, 1)
                .await
                .unwrap()
                .unwrap()
                .messages
                .len(),
            1
        );
    }
    let listed = store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(listed.sessions.len(), planted.len() + good.len());
}
