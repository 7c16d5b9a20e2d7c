//! Real processes on one file: a writer SIGKILLed mid-run loses no
//! acknowledged write, and two processes appending to the same sessions
//! keep every message exactly once.
//!
//! The child processes are this test binary itself, re-run with
//! `STATESTORE_SQLITE_CHILD` set: the `child` test then runs the child's
//! loop instead of returning at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use statestore_core::{Append, Error, Expect, IdempotencyKey, Message, SessionId, Store};
use statestore_sqlite::{SqliteStore, Synchronous};

const CHILD: &str = "STATESTORE_SQLITE_CHILD";
const PATH: &str = "STATESTORE_SQLITE_PATH";
const TAG: &str = "STATESTORE_SQLITE_TAG";

/// Concurrent appenders in the crash child.
const CRASH_TASKS: usize = 32;
/// Sessions they share.
const CRASH_SESSIONS: usize = 8;
/// Appends per session by each writer in the multi-process test.
const TURNS: usize = 40;
const SHARED_SESSIONS: usize = 4;

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").unwrap();
    out.flush().unwrap();
}

/// A diagnostic for `--nocapture` runs.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The child side: does nothing unless this binary was started by a test below.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let path = std::env::var(PATH).unwrap();
    let tag = std::env::var(TAG).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "crash" => rt.block_on(crash_child(&path, &tag, Synchronous::Full)),
        "crash-normal" => rt.block_on(crash_child(&path, &tag, Synchronous::Normal)),
        "shared" => rt.block_on(shared_child(&path, &tag)),
        other => panic!("unknown child mode {other}"),
    }
}

/// Appends two-message turns from many tasks until killed, reporting each
/// acknowledged one as `ACK <session> <tag> <version> <first_position>` and
/// the store's counters as `STATS <commits> <writes>`.
async fn crash_child(path: &str, round: &str, synchronous: Synchronous) {
    let store = Arc::new(
        SqliteStore::builder()
            .synchronous(synchronous)
            .open(path)
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..CRASH_TASKS {
        let store = Arc::clone(&store);
        let round = round.to_owned();
        tasks.spawn(async move {
            let session = format!("crash-{}", t % CRASH_SESSIONS);
            let id = sid(&session);
            for i in 0..100_000 {
                let tag = format!("{round}:{t}:{i}");
                let appended = store
                    .append_with(
                        &id,
                        Append::new([
                            Message::user(format!("{tag}:q")),
                            Message::assistant(format!("{tag}:a")),
                        ])
                        .key(IdempotencyKey::new(&tag).unwrap()),
                    )
                    .await
                    .unwrap();
                line(&format!(
                    "ACK {session} {tag} {} {}",
                    appended.version, appended.first_position
                ));
                if i % 8 == 0 {
                    let s = store.stats();
                    line(&format!("STATS {} {}", s.commits, s.writes));
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// Appends `TURNS` one-message turns to each shared session with
/// read-then-write optimistic concurrency, retrying conflicts and lock
/// timeouts with the same idempotency key; any other error fails the child.
async fn shared_child(path: &str, writer: &str) {
    let store = SqliteStore::builder()
        .busy_timeout(Duration::from_millis(100))
        .open(path)
        .await
        .unwrap();
    let (mut conflicts, mut timeouts) = (0u64, 0u64);
    for i in 0..TURNS {
        for s in 0..SHARED_SESSIONS {
            let id = sid(&format!("shared-{s}"));
            let key = IdempotencyKey::new(format!("{writer}-{s}-{i}")).unwrap();
            loop {
                let expect = match store.load_recent(&id, 0).await {
                    Ok(Some(r)) => Expect::Version(r.version),
                    Ok(None) => Expect::Absent,
                    Err(Error::Timeout { .. }) => {
                        timeouts += 1;
                        continue;
                    }
                    Err(e) => panic!("load_recent: {e}"),
                };
                let turn = Append::new([Message::user(format!("{writer}:{i}"))])
                    .expect(expect)
                    .key(key.clone());
                match store.append_with(&id, turn).await {
                    Ok(_) => break,
                    Err(Error::Conflict { .. }) => conflicts += 1,
                    Err(Error::Timeout { .. } | Error::Unavailable { .. }) => timeouts += 1,
                    Err(e) => panic!("append: an untyped or unexpected error: {e:?}"),
                }
            }
        }
    }
    line(&format!("DONE {conflicts} {timeouts}"));
}

fn spawn_child(mode: &str, path: &Path, tag: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env(PATH, path)
        .env(TAG, tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// One acknowledged turn, as the child reported it.
#[derive(Debug)]
struct Ack {
    session: String,
    tag: String,
    version: u64,
    first_position: usize,
}

/// A child appending from 32 tasks is SIGKILLed after a different number of
/// acknowledged turns in each of 4 rounds on the same file, the last with
/// `synchronous=NORMAL`. After each kill
/// the reopened file holds every acknowledged turn at the position it was
/// acknowledged at, no turn is partial, versions count the turns, each
/// task's turns are in order, and the child had group-committed (fewer
/// commits than writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.sqlite3");
    // The last round relaxes durability: `synchronous=NORMAL` skips the
    // fsync, but a killed process (not a lost machine) still loses nothing
    // acknowledged — the WAL is in the OS's page cache.
    for (round, kill_after, mode) in [
        (0, 150usize, "crash"),
        (1, 400, "crash"),
        (2, 900, "crash"),
        (3, 400, "crash-normal"),
    ] {
        let mut child = spawn_child(mode, &path, &format!("r{round}"));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acks = Vec::new();
        let mut last_stats = None;
        for text in stdout.lines() {
            let text = text.unwrap();
            let parts: Vec<&str> = text.split(' ').collect();
            match parts[..] {
                ["ACK", session, tag, version, first] => acks.push(Ack {
                    session: session.to_owned(),
                    tag: tag.to_owned(),
                    version: version.parse().unwrap(),
                    first_position: first.parse().unwrap(),
                }),
                ["STATS", commits, writes] => {
                    last_stats = Some((
                        commits.parse::<u64>().unwrap(),
                        writes.parse::<u64>().unwrap(),
                    ));
                }
                _ => continue, // the test harness's own lines
            }
            if acks.len() >= kill_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL, mid-run
        let status = child.wait().unwrap();
        assert!(
            acks.len() >= kill_after,
            "round {round}: the child stopped early ({status}): {}",
            std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default()
        );
        let (commits, writes) = last_stats.expect("the child reported its stats");
        assert!(
            commits < writes,
            "round {round}: {commits} commits for {writes} writes: no group commit"
        );

        note(&format!(
            "round {round}: killed after {} acknowledged turns; child stats {commits} commits / {writes} writes",
            acks.len()
        ));
        let store = SqliteStore::open(&path).await.unwrap();
        let mut sessions = HashMap::new();
        for s in 0..CRASH_SESSIONS {
            let name = format!("crash-{s}");
            let state = store.load(&sid(&name)).await.unwrap().unwrap();
            let texts: Vec<String> = state
                .messages
                .iter()
                .map(|m| m.text().into_owned())
                .collect();
            assert_eq!(texts.len() % 2, 0, "{name}: a partial turn");
            let mut last_i: BTreeMap<String, i64> = BTreeMap::new();
            for pair in texts.chunks(2) {
                let tag = pair[0].strip_suffix(":q").expect("a question first");
                assert_eq!(pair[1], format!("{tag}:a"), "{name}: a turn was split");
                // Each task's turns in its own order.
                let (writer, i) = tag.rsplit_once(':').unwrap();
                let i: i64 = i.parse().unwrap();
                let prev = last_i.insert(writer.to_owned(), i).unwrap_or(-1);
                assert!(i > prev, "{name}: {writer}'s turn {i} after {prev}");
            }
            assert_eq!(
                state.version,
                (texts.len() / 2) as u64,
                "{name}: one version per turn"
            );
            sessions.insert(name, texts);
        }
        for ack in &acks {
            let texts = &sessions[&ack.session];
            assert_eq!(
                texts.get(ack.first_position),
                Some(&format!("{}:q", ack.tag)),
                "round {round}: acknowledged turn {} lost or moved",
                ack.tag
            );
            assert_eq!(ack.version, (ack.first_position / 2 + 1) as u64);
        }
        drop(store);
    }
}

/// Two processes append to the same four sessions at once, each turn
/// guarded by the version it read and keyed: every turn lands exactly once,
/// each writer's turns in order, versions count the turns; conflicts and
/// lock waits surface only as typed errors (the children fail otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite3");
    // Create the file first so both children find it ready.
    drop(SqliteStore::open(&path).await.unwrap());
    let children: Vec<Child> = ["w0", "w1"]
        .into_iter()
        .map(|w| spawn_child("shared", &path, w))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        note(
            &stdout
                .lines()
                .filter(|l| l.contains("DONE"))
                .collect::<String>(),
        );
        assert!(
            out.status.success() && stdout.contains("DONE "),
            "child failed ({}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = SqliteStore::open(&path).await.unwrap();
    for s in 0..SHARED_SESSIONS {
        let state = store
            .load(&sid(&format!("shared-{s}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.messages.len(), 2 * TURNS, "shared-{s}");
        assert_eq!(
            state.version,
            (2 * TURNS) as u64,
            "shared-{s}: one version per turn"
        );
        for writer in ["w0", "w1"] {
            let mine: Vec<String> = state
                .messages
                .iter()
                .map(|m| m.text().into_owned())
                .filter(|t| t.starts_with(&format!("{writer}:")))
                .collect();
            let want: Vec<String> = (0..TURNS).map(|i| format!("{writer}:{i}")).collect();
            assert_eq!(
                mine, want,
                "shared-{s}: {writer}'s turns, once each, in order"
            );
        }
    }
}
