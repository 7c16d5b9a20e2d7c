//! Two OS processes on the same sessions of one real PostgreSQL server:
//! every keyed turn lands exactly once.
//!
//! The child processes are this test binary itself, re-run with
//! `STATESTORE_PG_CHILD` set: the `child` test then runs the child's loop
//! instead of returning at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pg_test_server::PgServer;
use statestore_core::{Append, Error, Expect, IdempotencyKey, Message, SessionId, Store};
use statestore_postgres::PostgresStore;
use tokio_postgres::NoTls;

const CHILD: &str = "STATESTORE_PG_CHILD";
const URL: &str = "STATESTORE_PG_URL";
const WRITER: &str = "STATESTORE_PG_WRITER";
const START: &str = "STATESTORE_PG_START";

/// Turns per session by each writer.
const TURNS: usize = 30;
/// Sessions both writers share.
const SESSIONS: usize = 4;
/// Every this many turns a writer sends its acknowledged turn again.
const RESEND_EVERY: usize = 3;

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").unwrap();
    out.flush().unwrap();
}

/// The child side: does nothing unless this binary was started by the test
/// below.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    assert_eq!(mode, "shared", "unknown child mode");
    let url = std::env::var(URL).unwrap();
    let writer = std::env::var(WRITER).unwrap();
    let start: u64 = std::env::var(START).unwrap().parse().unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(shared_child(&url, &writer, start));
}

/// `TURNS` one-message turns to each shared session, each a window read
/// that looks the turn's key up, then an append guarded by the version
/// read and keyed; conflicts (the other process wrote in between) and
/// transient errors are retried with the same key. Every third
/// acknowledged turn is sent again, which must be a replay. Any other
/// error fails the child.
async fn shared_child(url: &str, writer: &str, start: u64) {
    let store = PostgresStore::builder(url)
        .unwrap()
        .pool_size(2)
        .statement_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    // Both children begin together, so that their turns interleave.
    let wait = start.saturating_sub(unix_millis());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let (mut conflicts, mut transient, mut replays) = (0u64, 0u64, 0u64);
    for i in 0..TURNS {
        for s in 0..SESSIONS {
            let id = sid(&format!("shared-{s}"));
            let key = IdempotencyKey::new(format!("{writer}-{s}-{i}")).unwrap();
            loop {
                assert!(transient < 100, "the server keeps failing");
                let expect = match store.load_recent_with(&id, 2, Some(&key)).await {
                    Ok(Some(r)) if r.replay.is_some() => break,
                    Ok(Some(r)) => Expect::Version(r.version),
                    Ok(None) => Expect::Absent,
                    Err(e) if e.is_transient() => {
                        transient += 1;
                        continue;
                    }
                    Err(e) => panic!("load_recent: {e:?}"),
                };
                let turn = Append::new([Message::user(format!("{writer}:{i}"))])
                    .expect(expect)
                    .key(key.clone());
                match store.append_with(&id, turn.clone()).await {
                    Ok(done) => {
                        assert!(!done.replayed, "a first write reported as a replay");
                        if i % RESEND_EVERY == 0 {
                            let again = store.append_with(&id, turn).await.unwrap();
                            assert!(again.replayed, "a repeated key was written again");
                            assert_eq!(again.version, done.version);
                            replays += 1;
                        }
                        break;
                    }
                    Err(Error::Conflict { .. } | Error::AlreadyExists { .. }) => conflicts += 1,
                    Err(e) if e.is_transient() => transient += 1,
                    Err(e) => panic!("append: an untyped or unexpected error: {e:?}"),
                }
            }
        }
    }
    line(&format!("DONE {conflicts} {transient} {replays}"));
}

fn unix_millis() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(now.unwrap().as_millis()).unwrap()
}

fn spawn_child(url: &str, writer: &str, start: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "shared")
        .env(URL, url)
        .env(WRITER, writer)
        .env(START, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two processes do keyed, version-guarded turns on the same four
/// sessions at once, each repeating some acknowledged turns: at the end the
/// server holds every turn exactly once (counted in SQL, by row and by
/// distinct body), each writer's turns in order, one version per turn, and
/// a remembered write per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_sessions_and_every_keyed_turn_lands_once() {
    let server = PgServer::builder().fsync(false).start().unwrap();
    let url = server.url();
    // Migrate first, so both children find the schema ready.
    let store = PostgresStore::connect(&url).await.unwrap();
    let start = unix_millis() + 1500;
    let children: Vec<Child> = ["w0", "w1"]
        .into_iter()
        .map(|w| spawn_child(&url, w, start))
        .collect();
    for child in children {
        let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("DONE "),
            "child failed ({}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let done: String = stdout
            .lines()
            .filter_map(|l| l.find("DONE").map(|at| &l[at..]))
            .collect();
        let _ = writeln!(std::io::stderr(), "{done} (conflicts, transient, replays)");
    }
    let (c, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    for s in 0..SESSIONS {
        let name = format!("shared-{s}");
        let row = c
            .query_one(
                "SELECT count(*), count(DISTINCT body),
                        (SELECT count(*) FROM statestore_writes WHERE session = $1)
                   FROM statestore_messages WHERE session = $1",
                &[&name],
            )
            .await
            .unwrap();
        let (total, distinct, keys): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let want = (2 * TURNS) as i64;
        assert_eq!((total, distinct), (want, want), "{name}: every turn once");
        assert_eq!(keys, want, "{name}: one remembered write per key");
        let state = store.load(&sid(&name)).await.unwrap().unwrap();
        assert_eq!(state.version, want as u64, "{name}: one version per turn");
        for writer in ["w0", "w1"] {
            let mine: Vec<String> = state
                .messages
                .iter()
                .map(|m| m.text().into_owned())
                .filter(|t| t.starts_with(&format!("{writer}:")))
                .collect();
            let want: Vec<String> = (0..TURNS).map(|i| format!("{writer}:{i}")).collect();
            assert_eq!(mine, want, "{name}: {writer}'s turns, once each, in order");
        }
    }
}
