//! SQLite store costs, files in a temp dir on the same disk throughout:
//!
//! - one turn (`load_recent(20)`, then `append` of 2 guarded by the version
//!   it returned) at 10 / 100 / 1,000 / 10,000 / 100,000 messages, with
//!   `synchronous=FULL` (durable: an fsync per commit) and `NORMAL`;
//! - 64 tasks, one per session, taking turns back to back, durable: with
//!   group commit (the default) and with `max_batch(1)` — one transaction,
//!   one fsync, per write, the same 64 concurrent tasks — plus the writer's
//!   writes per commit (`bench-metric:` lines);
//! - N sessions (1 to 256) taking one turn each at once, durable;
//! - `load` and `fork` (then delete) of 10 to 10,000 messages;
//! - a page of 50 of one user's sessions, newest first, in stores of
//!   1,000 and 100,000 sessions over 1,000 users (first page, and a page
//!   deep in a big user's listing; the `list` module the four stores'
//!   suites share);
//! - the floor under every durable commit: 4 KiB appended to a file in the
//!   same temp dir + `fdatasync` — as a benchmark, and as the median of
//!   50 measured right after each SQLite benchmark (`bench-metric:
//!   …/fdatasync right after`), because on a VM the disk's fsync latency
//!   moves by an order of magnitude within minutes.
//!
//! ```text
//! cargo bench -p statestore-sqlite --bench sqlite
//! ```
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use statestore_core::{Expect, Message, SessionId, Store};
use statestore_sqlite::{SqliteStore, Synchronous};

const LENGTHS: [usize; 4] = [10, 100, 1_000, 10_000];
/// The history lengths of the turn benchmarks (the page's chart runs from
/// 10 to 100,000).
const TURN_LENGTHS: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];
/// The session counts of the sessions benchmark, as in the other stores'
/// suites.
const SESSION_COUNTS: [usize; 5] = [1, 4, 16, 64, 256];
const SESSIONS_AT_ONCE: &str = "sqlite/sessions, one turn each at once, durable";
const TURN: &str = "sqlite/turn(append 2 + load_recent 20)";
const TURN_RELAXED: &str = "sqlite/turn(append 2 + load_recent 20), synchronous=NORMAL";
const CONCURRENT: &str = "sqlite/64 sessions taking turns, durable";
/// The one case of [`CONCURRENT`] that is not durable: the same 64 tasks
/// with `synchronous=NORMAL`, so that durability's cost is measured in the
/// same run.
const RELAXED_LABEL: &str = "synchronous=NORMAL (not durable), group commit";
const FLOOR: &str = "sqlite/fdatasync floor";
const SESSIONS: usize = 64;

/// The sidebar benchmark every store's suite runs (the Redis suite's file).
#[path = "../../statestore-redis/benches/common/list.rs"]
mod list;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn history(len: usize) -> Vec<Message> {
    (0..len)
        .map(|i| {
            Message::user(format!(
                "message {i}: some ordinary chat text of moderate length"
            ))
        })
        .collect()
}

/// An empty file for fsync probes, in the same directory as the stores.
fn probe_file(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("fsync-probe"))
        .unwrap()
}

/// Write `i`: 4 KiB appended, then `fdatasync` — which, the file having
/// grown, also commits its new size, as a WAL commit does. Every 1,000
/// writes (4 MiB, SQLite's automatic checkpoint) the file starts over.
fn write_and_sync(file: &std::fs::File, i: u64) {
    let slot = i % 1_000;
    if slot == 0 {
        file.set_len(0).unwrap();
    }
    file.write_all_at(&[0x5a_u8; 4096], slot * 4096).unwrap();
    file.sync_data().unwrap();
}

/// Prints the median of 50 write + `fdatasync`s now, under `id`.
fn print_fsync(dir: &Path, id: &str) {
    let file = probe_file(dir);
    let mut times: Vec<Duration> = (0..50)
        .map(|i| {
            let start = Instant::now();
            write_and_sync(&file, i);
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "bench-metric: {id}/fdatasync right after = {:.1} µs (median of 50 4 KiB appends + \
         fdatasync, same temp dir)",
        times[times.len() / 2].as_secs_f64() * 1e6
    );
}

async fn turn(store: &SqliteStore, id: &SessionId) {
    let recent = store.load_recent(id, 20).await.unwrap().unwrap();
    black_box(&recent);
    let turn = vec![
        Message::user("What's my name?"),
        Message::assistant("Your name is Alice."),
    ];
    store
        .append(id, turn, Expect::Version(recent.version))
        .await
        .unwrap();
}

/// Timed turns between two resets of the sessions (at every length).
const TURNS_PER_RESET: u64 = 100;

/// One turn at a fixed history length. As in the memory and Redis suites,
/// a session takes at most `len / 100` turns (at least 1) before it is
/// re-forked from a template outside the timed region, so it grows by at
/// most 2 % (20 % at length 10) while measured. Unlike them, the turns go
/// round-robin over `100 / (len / 100)` forks of the template, so that the
/// reset — deletes, forks, and their fsyncs — comes once per 100 timed
/// turns at every length: on this disk an fsync right after others is
/// slower, and resetting before every turn at length 10 would charge that
/// to the short history. The reset's pages are checkpointed (untimed), or
/// a timed commit would pay SQLite's automatic checkpoint of a whole
/// history; then one untimed write elsewhere takes the WAL restart, whose
/// first commit syncs the WAL header even with `synchronous=NORMAL`.
/// Flat sampling: a durable turn costs an fsync, and criterion's default
/// linear sampling would run thousands of them.
fn per_turn(c: &mut Criterion, group_name: &str, synchronous: Synchronous, dir: &Path) {
    let rt = runtime();
    let file = if synchronous == Synchronous::Full {
        "turn-full.sqlite3"
    } else {
        "turn-normal.sqlite3"
    };
    let store = rt
        .block_on(
            SqliteStore::builder()
                .synchronous(synchronous)
                .open(dir.join(file)),
        )
        .unwrap();
    let checkpointer = rusqlite::Connection::open(dir.join(file)).unwrap();
    checkpointer.busy_timeout(Duration::from_secs(5)).unwrap();
    let absorb = SessionId::new("wal-restart").unwrap();
    let mut group = c.benchmark_group(group_name);
    group.sampling_mode(SamplingMode::Flat);
    for len in TURN_LENGTHS {
        if len >= 100_000 {
            // A reset forks 100,000 messages: fewer samples keep the run
            // short.
            group.sample_size(10);
        }
        let template = SessionId::new(format!("template-{len}")).unwrap();
        rt.block_on(store.append(&template, history(len), Expect::Absent))
            .unwrap();
        let turns_per_fork = (len as u64 / 100).max(1);
        let forks = (TURNS_PER_RESET / turns_per_fork).max(1);
        let ids: Vec<SessionId> = (0..forks)
            .map(|j| SessionId::new(format!("turn-{len}-{j}")).unwrap())
            .collect();
        // Turns taken since the last reset; the first call resets.
        let used = std::cell::Cell::new(u64::MAX);
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, template, ids, used) = (&store, &template, &ids, &used);
                let (checkpointer, absorb) = (&checkpointer, &absorb);
                async move {
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        if used.get() >= forks * turns_per_fork {
                            for id in ids {
                                store.delete(id).await.unwrap();
                                store.fork(template, id).await.unwrap();
                            }
                            checkpointer
                                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                                .unwrap();
                            store
                                .append(absorb, vec![Message::user("restart")], Expect::Any)
                                .await
                                .unwrap();
                            used.set(0);
                        }
                        let n = (forks * turns_per_fork - used.get()).min(iters - done);
                        let start = Instant::now();
                        for t in used.get()..used.get() + n {
                            turn(store, &ids[usize::try_from(t % forks).unwrap()]).await;
                        }
                        total += start.elapsed();
                        used.set(used.get() + n);
                        done += n;
                    }
                    total
                }
            });
        });
        print_fsync(dir, &format!("{group_name}/{len}"));
    }
    group.finish();
}

fn per_turn_durable(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    per_turn(c, TURN, Synchronous::Full, dir.path());
}

fn per_turn_relaxed(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    per_turn(c, TURN_RELAXED, Synchronous::Normal, dir.path());
}

/// 64 tasks, one per session, each taking turns (`load_recent(20)`, then
/// a guarded `append` of 2) back to back; `synchronous=FULL`, and once
/// more with `synchronous=NORMAL` for comparison. One
/// iteration is 64 turns (one per session on average): the tasks run
/// `iters` turns each without waiting for one another, so this is the
/// steady state, with one ramp-up and drain per sample. With group commit
/// the writer commits whatever queued up together; with `max_batch(1)`
/// every append is its own transaction and fsync — the same tasks, so the
/// difference is the batching alone. Then the fsync floor, in the same
/// temp dir.
fn concurrent(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ids: Arc<Vec<SessionId>> = Arc::new(
        (0..SESSIONS)
            .map(|i| SessionId::new(format!("s{i}")).unwrap())
            .collect(),
    );
    let mut group = c.benchmark_group(CONCURRENT);
    group.throughput(Throughput::Elements(SESSIONS as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for (label, max_batch, synchronous, file) in [
        ("group commit", 512, Synchronous::Full, "group.sqlite3"),
        (
            "one commit per turn (max_batch 1)",
            1,
            Synchronous::Full,
            "single.sqlite3",
        ),
        // Not durable: what durability costs, measured in the same run.
        (RELAXED_LABEL, 512, Synchronous::Normal, "relaxed.sqlite3"),
    ] {
        let store = rt
            .block_on(
                SqliteStore::builder()
                    .max_batch(max_batch)
                    .synchronous(synchronous)
                    .open(dir.path().join(file)),
            )
            .unwrap();
        rt.block_on(async {
            for id in ids.iter() {
                store.append(id, history(20), Expect::Absent).await.unwrap();
            }
        });
        let before = store.stats();
        group.bench_function(label, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, ids) = (store.clone(), Arc::clone(&ids));
                async move {
                    let start = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..SESSIONS {
                        let (store, ids) = (store.clone(), Arc::clone(&ids));
                        tasks.spawn(async move {
                            for _ in 0..iters {
                                turn(&store, &ids[i]).await;
                            }
                        });
                    }
                    while let Some(r) = tasks.join_next().await {
                        r.unwrap();
                    }
                    start.elapsed()
                }
            });
        });
        let after = store.stats();
        let (commits, writes) = (after.commits - before.commits, after.writes - before.writes);
        println!(
            "bench-metric: {CONCURRENT}/{label}/writes per commit = {:.2} ({commits} commits, \
             {writes} writes while measured)",
            writes as f64 / commits.max(1) as f64
        );
        print_fsync(dir.path(), &format!("{CONCURRENT}/{label}"));
    }
    group.finish();

    // The floor: what one durable commit cannot beat on this disk.
    let mut group = c.benchmark_group(FLOOR);
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat);
    let file = probe_file(dir.path());
    let mut slot = 0u64;
    group.bench_function("append 4 KiB + fdatasync", |b| {
        b.iter(|| {
            write_and_sync(&file, slot);
            slot += 1;
        });
    });
    group.finish();
}

/// N sessions (N from [`SESSION_COUNTS`]) taking one turn each at once,
/// durable, group commit (the default): one iteration is N turns, spawned
/// together on a two-thread runtime and awaited — the same shape as the
/// memory and Redis suites' sessions benchmarks. Each session starts with
/// 100 messages and grows by 2 per iteration while measured.
fn sessions_at_once(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::builder().open(dir.path().join("sessions.sqlite3")))
        .unwrap();
    let mut group = c.benchmark_group(SESSIONS_AT_ONCE);
    group.sampling_mode(SamplingMode::Flat);
    for sessions in SESSION_COUNTS {
        let ids: Arc<Vec<SessionId>> = Arc::new(
            (0..sessions)
                .map(|i| SessionId::new(format!("s{sessions}-{i}")).unwrap())
                .collect(),
        );
        rt.block_on(async {
            for id in ids.iter() {
                store
                    .append(id, history(100), Expect::Absent)
                    .await
                    .unwrap();
            }
        });
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(sessions),
            &sessions,
            |b, &sessions| {
                b.to_async(&rt).iter(|| {
                    let (store, ids) = (store.clone(), Arc::clone(&ids));
                    async move {
                        let mut tasks = tokio::task::JoinSet::new();
                        for i in 0..sessions {
                            let (store, ids) = (store.clone(), Arc::clone(&ids));
                            tasks.spawn(async move { turn(&store, &ids[i]).await });
                        }
                        while let Some(r) = tasks.join_next().await {
                            r.unwrap();
                        }
                    }
                });
            },
        );
        print_fsync(dir.path(), &format!("{SESSIONS_AT_ONCE}/{sessions}"));
    }
    group.finish();
}

/// `load` of a whole session and a fork (then delete) of it, as in the
/// memory and Redis suites; `synchronous=FULL`.
fn load_and_fork(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::builder().open(dir.path().join("load.sqlite3")))
        .unwrap();
    let mut group = c.benchmark_group("sqlite/load");
    for len in LENGTHS {
        let id = SessionId::new(format!("load-{len}")).unwrap();
        rt.block_on(store.append(&id, history(len), Expect::Absent))
            .unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(store.load(&id).await.unwrap()) });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("sqlite/fork+delete");
    group.sampling_mode(SamplingMode::Flat);
    let target = SessionId::new("fork-target").unwrap();
    for len in LENGTHS {
        let id = SessionId::new(format!("load-{len}")).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter(|| async {
                store.fork(&id, &target).await.unwrap();
                store.delete(&target).await.unwrap()
            });
        });
    }
    group.finish();
}

/// One user's sessions, newest first, a page of 50, in stores of 1,000
/// and 100,000 sessions (see the `list` module): a fresh file per size,
/// `synchronous=NORMAL` so that populating 100,000 sessions takes seconds
/// rather than 100,000 fsyncs (a read's cost does not depend on it).
fn listing(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    list::bench_list(
        c,
        "sqlite/list(recent first, page of 50)",
        &rt,
        &|n| {
            let open = SqliteStore::builder()
                .synchronous(Synchronous::Normal)
                .open(dir.path().join(format!("list-{n}.sqlite3")));
            Arc::new(rt.block_on(open).unwrap())
        },
        &|_, _| {},
    );
}

criterion_group!(
    benches,
    listing,
    per_turn_durable,
    per_turn_relaxed,
    concurrent,
    sessions_at_once,
    load_and_fork
);
criterion_main!(benches);
