//! PostgreSQL store costs on a throwaway local PostgreSQL 15
//! (`pg-test-server`: its own cluster in a temp dir, on loopback, with the
//! server's production defaults — `fsync` on, `synchronous_commit` on — so
//! every committed write waits for its WAL flush), the store with its
//! default pool (16 connections):
//!
//! - one turn (`load_recent(20)`, then `append` of 2 guarded by the version
//!   it returned) at 10 / 100 / 1,000 / 10,000 / 100,000 short messages,
//!   each beside the loopback round trip (`SELECT 1`) and the disk's
//!   `fdatasync` measured right after; and the same with
//!   `synchronous_commit=off`, the store's cost without the flush;
//! - the peer baseline on the same server: the whole history as one
//!   `jsonb` value per session (read it, parse, push the turn, serialize,
//!   write it back — what a blob-per-session checkpointer does), on the
//!   same short messages and, with our turn, on the realistic mix the Redis
//!   suite defines (the same file, included);
//! - 64 tasks, one per session, taking turns back to back with
//!   `synchronous_commit=on` and `=off` (set per connection through the
//!   URL's `options`), with the appends per WAL flush and the mean flush
//!   time (`pg_stat_wal`) as `bench-metric:` lines;
//! - N sessions (1 to 256) taking one turn each at once;
//! - `load` and `fork` (then delete) of 10 to 10,000 messages;
//! - a page of 50 of one user's sessions, newest first, in stores of
//!   1,000 and 100,000 sessions over 1,000 users (first page, and a page
//!   deep in a big user's listing; the `list` module the four stores'
//!   suites share).
//!
//! ```text
//! cargo bench -p statestore-postgres --bench postgres
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use pg_test_server::PgServer;
use statestore_core::{Expect, Message, SessionId, Store};
use statestore_postgres::PostgresStore;

/// The realistic conversation of the realistic-mix comparison, the one the
/// Redis suite defines.
#[path = "../../statestore-redis/benches/common/realistic_mix.rs"]
mod realistic_mix;

/// The sidebar benchmark every store's suite runs, the Redis suite's file.
#[path = "../../statestore-redis/benches/common/list.rs"]
mod list;

const LENGTHS: [usize; 4] = [10, 100, 1_000, 10_000];
/// The history lengths of the turn benchmarks (the page's chart runs from
/// 10 to 100,000).
const TURN_LENGTHS: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];
/// The lengths of the realistic-mix comparison.
const MIX_LENGTHS: [usize; 2] = [1_000, 10_000];
/// The session counts of the sessions benchmark, as in the other stores'
/// suites.
const SESSION_COUNTS: [usize; 5] = [1, 4, 16, 64, 256];
const SESSIONS: usize = 64;

const GROUP_TURN: &str = "postgres/turn(append 2 + load_recent 20)";
const GROUP_TURN_RELAXED: &str = "postgres/turn(append 2 + load_recent 20), synchronous_commit=off";
/// The URL suffix of connections with `synchronous_commit=off`.
const RELAXED: &str = "?options=-c%20synchronous_commit%3Doff";
const GROUP_BLOB: &str = "postgres/jsonb baseline turn(SELECT + parse + push 2 + UPDATE)";
const GROUP_TURN_MIX: &str = "postgres/turn, realistic mix(append 2 + load_recent 20)";
const GROUP_BLOB_MIX: &str =
    "postgres/jsonb baseline turn, realistic mix(SELECT + parse + push 2 + UPDATE)";
const GROUP_SESSIONS: &str = "postgres/sessions, one turn each at once";
const GROUP_CONCURRENT: &str = "postgres/64 sessions taking turns";
const SYNC_ON: &str = "synchronous_commit=on";
const SYNC_OFF: &str = "synchronous_commit=off";

/// Histories of at least this many bytes of JSON (100,000 short messages,
/// 10,000 of the realistic mix) are measured with [`few_samples`].
const HEAVY_BYTES: usize = 4 << 20;

/// 10 samples, flat, for the benchmarks of `group` added after it: a
/// history of [`HEAVY_BYTES`] or more, where a whole-blob turn takes tens
/// of milliseconds or more and a reset of our session forks it.
fn few_samples(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A server with the production defaults (`fsync` and `synchronous_commit`
/// on) and `track_wal_io_timing` (the mean WAL flush time the concurrent
/// benchmark prints).
fn server() -> PgServer {
    PgServer::builder()
        .fsync(true)
        .config("track_wal_io_timing", "on")
        .start()
        .unwrap()
}

/// The store at `url` with the default pool.
fn store(rt: &tokio::runtime::Runtime, url: &str) -> PostgresStore {
    rt.block_on(PostgresStore::connect(url)).unwrap()
}

/// A plain client of `url`, its connection driven by `rt`.
fn client(rt: &tokio::runtime::Runtime, url: &str) -> tokio_postgres::Client {
    let (client, connection) = rt
        .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
        .unwrap();
    // Ends with an error when the server stops first, at the end of a group.
    rt.spawn(async move { drop(connection.await) });
    client
}

/// The short messages (about 60 B) most benchmarks use.
fn short_history(len: usize) -> Vec<Message> {
    (0..len)
        .map(|i| {
            Message::user(format!(
                "message {i}: some ordinary chat text of moderate length"
            ))
        })
        .collect()
}

/// The short turn most benchmarks append.
fn short_turn() -> Vec<Message> {
    vec![
        Message::user("What's my name?"),
        Message::assistant("Your name is Alice."),
    ]
}

/// Stores `history` as the session `id`, 1,000 messages per append.
async fn fill_with(store: &dyn Store, id: &SessionId, history: Vec<Message>) {
    let _ = store.delete(id).await.unwrap();
    for chunk in history.chunks(1000) {
        store.append(id, chunk.to_vec(), Expect::Any).await.unwrap();
    }
}

async fn turn(store: &dyn Store, id: &SessionId) {
    turn_of(store, id, short_turn()).await;
}

/// `load_recent(20)`, then an append of `messages` guarded by its version.
async fn turn_of(store: &dyn Store, id: &SessionId, messages: Vec<Message>) {
    let recent = store.load_recent(id, 20).await.unwrap().unwrap();
    black_box(&recent);
    store
        .append(id, messages, Expect::Version(recent.version))
        .await
        .unwrap();
}

/// One turn at a fixed history length, short messages (10 to 100,000).
fn per_turn(c: &mut Criterion) {
    turns(c, GROUP_TURN, "", &TURN_LENGTHS, short_history, short_turn);
}

/// The same with `synchronous_commit=off` (relaxed: a commit does not wait
/// for its WAL flush), so that the store's own cost shows without the
/// disk's flush latency, as the SQLite suite's `synchronous=NORMAL` does.
fn per_turn_relaxed(c: &mut Criterion) {
    turns(
        c,
        GROUP_TURN_RELAXED,
        RELAXED,
        &TURN_LENGTHS,
        short_history,
        short_turn,
    );
}

/// One turn over the realistic mix, at 1,000 and 10,000 messages; the mix
/// is printed as a `bench-metric:` line so that the page states it.
fn per_turn_realistic(c: &mut Criterion) {
    println!(
        "bench-metric: {GROUP_TURN_MIX}/the mix = {}",
        realistic_mix::DEFINITION
    );
    turns(
        c,
        GROUP_TURN_MIX,
        "",
        &MIX_LENGTHS,
        realistic_mix::history,
        realistic_mix::turn,
    );
}

/// Timed turns between two resets of the sessions (at every length).
const TURNS_PER_RESET: u64 = 100;

/// One turn (`load_recent(20)`, then an append of `new_turn()` guarded by
/// its version) at each of `lengths` messages of `history`. As in the
/// other suites a session takes at most `len / 100` turns (at least 1)
/// before it is re-forked from a template outside the timed region, so it
/// grows by at most 2 % (20 % at length 10) while measured; as in the
/// SQLite suite the turns go round-robin over `100 / (len / 100)` forks of
/// the template, so that the reset comes once per 100 timed turns at every
/// length (1,000 at 100,000). The reset — deletes and forks of up to
/// 100,000 rows — is followed by an untimed `VACUUM (ANALYZE)` and
/// `CHECKPOINT`, or the timed turns after it would pay for its dead rows,
/// new statistics and dirty pages (autovacuum, autoanalyze, checkpoint
/// writes) rather than for their own history.
/// Then the loopback round trip and the disk's flush time, as
/// `bench-metric:` lines. `options` is appended to the store's URL.
fn turns(
    c: &mut Criterion,
    group_name: &str,
    options: &str,
    lengths: &[usize],
    history: fn(usize) -> Vec<Message>,
    new_turn: fn() -> Vec<Message>,
) {
    let rt = runtime();
    let server = server();
    let store = store(&rt, &format!("{}{options}", server.url()));
    let probe = client(&rt, &server.url());
    let mut group = c.benchmark_group(group_name);
    for &len in lengths {
        let template = SessionId::new(format!("template-{len}")).unwrap();
        let history = history(len);
        if serde_json::to_vec(&history).unwrap().len() >= HEAVY_BYTES {
            few_samples(&mut group);
        }
        rt.block_on(fill_with(&store, &template, history));
        let turns_per_fork = (len as u64 / 100).max(1);
        let forks = (TURNS_PER_RESET / turns_per_fork).max(1);
        let ids: Vec<SessionId> = (0..forks)
            .map(|j| SessionId::new(format!("turn-{len}-{j}")).unwrap())
            .collect();
        // Turns taken since the last reset; the first call resets.
        let used = std::cell::Cell::new(u64::MAX);
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, template, ids, used, probe) = (&store, &template, &ids, &used, &probe);
                async move {
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        if used.get() >= forks * turns_per_fork {
                            for id in ids {
                                store.delete(id).await.unwrap();
                                store.fork(template, id).await.unwrap();
                            }
                            probe.batch_execute("VACUUM (ANALYZE)").await.unwrap();
                            probe.batch_execute("CHECKPOINT").await.unwrap();
                            used.set(0);
                        }
                        let n = (forks * turns_per_fork - used.get()).min(iters - done);
                        let start = Instant::now();
                        for t in used.get()..used.get() + n {
                            let id = &ids[usize::try_from(t % forks).unwrap()];
                            turn_of(store, id, new_turn()).await;
                        }
                        total += start.elapsed();
                        used.set(used.get() + n);
                        done += n;
                    }
                    total
                }
            });
        });
        print_round_trip(&rt, &probe, &format!("{group_name}/{len}"));
        print_fsync(&server, &format!("{group_name}/{len}"));
    }
    group.finish();
}

/// Prints the median of 50 4 KiB writes + `fdatasync` to a file beside the
/// server's data directory (the disk its WAL is flushed to) under `id`: a
/// durable commit waits for one such flush, and on a VM the disk's flush
/// latency moves by an order of magnitude within minutes. As a WAL flush,
/// the writes overwrite blocks of a file written and synced beforehand
/// (PostgreSQL's WAL segments are pre-allocated), so that the flush does
/// not also commit a new file size.
fn print_fsync(server: &PgServer, id: &str) {
    use std::os::unix::fs::FileExt;
    const SLOTS: usize = 50;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(server.dir().join("fsync-probe"))
        .unwrap();
    file.write_all_at(&vec![0_u8; 4096 * SLOTS], 0).unwrap();
    file.sync_all().unwrap();
    let mut times: Vec<Duration> = (0..SLOTS)
        .map(|i| {
            let start = Instant::now();
            file.write_all_at(&[0x5a_u8; 4096], i as u64 * 4096)
                .unwrap();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "bench-metric: {id}/fdatasync right after = {:.1} µs (median of 50 4 KiB overwrites + \
         fdatasync of a pre-allocated file, beside the data directory)",
        times[times.len() / 2].as_secs_f64() * 1e6
    );
}

/// The loopback round trip right now: the median of 1,000 `SELECT 1`s
/// (prepared) on one connection driven by `rt`, printed as a
/// `bench-metric:` line under `id`. A turn is two round trips, and on a VM
/// the round trip moves with the machine's load, so it is measured beside
/// each figure.
fn print_round_trip(rt: &tokio::runtime::Runtime, client: &tokio_postgres::Client, id: &str) {
    let mut times = rt.block_on(async {
        let select = client.prepare("SELECT 1").await.unwrap();
        let mut times = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let start = Instant::now();
            black_box(client.query_one(&select, &[]).await.unwrap());
            times.push(start.elapsed());
        }
        times
    });
    times.sort();
    println!(
        "bench-metric: {id}/SELECT 1 round trip = {:.1} µs (median of 1,000, measured right after)",
        times[times.len() / 2].as_secs_f64() * 1e6
    );
}

/// The peer baseline, short messages from 10 to 100,000.
fn blob_baseline_turn(c: &mut Criterion) {
    blob_turns(c, GROUP_BLOB, &TURN_LENGTHS, short_history, short_turn);
}

/// The peer baseline over the realistic mix, at the lengths of
/// [`per_turn_realistic`].
fn blob_baseline_turn_realistic(c: &mut Criterion) {
    blob_turns(
        c,
        GROUP_BLOB_MIX,
        &MIX_LENGTHS,
        realistic_mix::history,
        realistic_mix::turn,
    );
}

/// The design of a blob-per-session checkpointer, on the same server and
/// data: one row per session holding the whole history as one `jsonb`
/// value. A turn reads it (`SELECT history`), parses it, pushes the turn,
/// serializes it and writes it back (`UPDATE … SET history = $2`): two
/// round trips, as our turn, each statement its own durable commit. The
/// history's length is kept fixed. (The `jsonb` travels as text: its binary
/// wire format is the same text behind a version byte.)
fn blob_turns(
    c: &mut Criterion,
    group_name: &str,
    lengths: &[usize],
    history: fn(usize) -> Vec<Message>,
    new_turn: fn() -> Vec<Message>,
) {
    let rt = runtime();
    let server = server();
    let client = client(&rt, &server.url());
    let (select, update) = rt.block_on(async {
        client
            .batch_execute(
                "CREATE TABLE blob_sessions (id text PRIMARY KEY, history jsonb NOT NULL)",
            )
            .await
            .unwrap();
        let select = client
            .prepare("SELECT history::text FROM blob_sessions WHERE id = $1")
            .await
            .unwrap();
        let update = client
            .prepare("UPDATE blob_sessions SET history = $2::text::jsonb WHERE id = $1")
            .await
            .unwrap();
        (select, update)
    });
    let mut group = c.benchmark_group(group_name);
    for &len in lengths {
        let key = format!("blob-{len}");
        let text = serde_json::to_string(&history(len)).unwrap();
        if text.len() >= HEAVY_BYTES {
            few_samples(&mut group);
        }
        rt.block_on(client.execute(
            "INSERT INTO blob_sessions VALUES ($1, $2::text::jsonb)",
            &[&key, &text],
        ))
        .unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter(|| {
                let (client, select, update, key) = (&client, &select, &update, &key);
                async move {
                    let row = client.query_one(select, &[key]).await.unwrap();
                    let mut history: Vec<Message> = serde_json::from_str(row.get(0)).unwrap();
                    // Keep the length fixed so every iteration measures `len`.
                    let turn = new_turn();
                    history.truncate(len.saturating_sub(turn.len()));
                    history.extend(turn);
                    let out = serde_json::to_string(&history).unwrap();
                    client.execute(update, &[key, &out]).await.unwrap();
                }
            });
        });
        print_round_trip(&rt, &client, &format!("{group_name}/{len}"));
        print_fsync(&server, &format!("{group_name}/{len}"));
    }
    group.finish();
}

/// 64 tasks, one per session, taking turns back to back, with
/// `synchronous_commit=on` (the server's default: a commit returns once
/// its WAL is flushed) and `=off` (it returns at once; the WAL writer
/// flushes within 3 × `wal_writer_delay`), set per connection through the
/// URL's `options`, the same server, sessions and tasks. One iteration is
/// 64 turns (one per session on average), as in the SQLite suite. With
/// `on`, the commits waiting at once share one flush (PostgreSQL's group
/// commit): after each benchmark the appends per WAL flush and the mean
/// flush time (`pg_stat_wal`, counted from store start to store close so
/// that every backend has reported) are printed as `bench-metric:` lines.
fn concurrent(c: &mut Criterion) {
    let rt = runtime();
    let server = server();
    let ids: Arc<Vec<SessionId>> = Arc::new(
        (0..SESSIONS)
            .map(|i| SessionId::new(format!("s{i}")).unwrap())
            .collect(),
    );
    let mut group = c.benchmark_group(GROUP_CONCURRENT);
    group.throughput(Throughput::Elements(SESSIONS as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for (label, options) in [(SYNC_ON, ""), (SYNC_OFF, RELAXED)] {
        let url = format!("{}{options}", server.url());
        let store = Arc::new(store(&rt, &url));
        rt.block_on(async {
            for id in ids.iter() {
                fill_with(&*store, id, short_history(20)).await;
            }
        });
        // What the store's connections run with, checked on one of the same URL.
        let probe = client(&rt, &url);
        let shown: String = rt
            .block_on(probe.query_one("SHOW synchronous_commit", &[]))
            .unwrap()
            .get(0);
        drop(probe);
        assert_eq!(format!("synchronous_commit={shown}"), label);
        let before = wal_stats(&server);
        let appends = Arc::new(AtomicU64::new(0));
        group.bench_function(label, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, ids, appends) =
                    (Arc::clone(&store), Arc::clone(&ids), Arc::clone(&appends));
                async move {
                    let start = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..SESSIONS {
                        let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
                        tasks.spawn(async move {
                            for _ in 0..iters {
                                turn(&*store, &ids[i]).await;
                            }
                        });
                    }
                    while let Some(r) = tasks.join_next().await {
                        r.unwrap();
                    }
                    appends.fetch_add(iters * SESSIONS as u64, Ordering::Relaxed);
                    start.elapsed()
                }
            });
        });
        // Closing the pool makes every backend report its WAL statistics.
        drop(store);
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
        let after = wal_stats(&server);
        let appends = appends.load(Ordering::Relaxed);
        let syncs = after.syncs.saturating_sub(before.syncs);
        println!(
            "bench-metric: {GROUP_CONCURRENT}/{label}/appends per WAL flush = {:.2} ({appends} \
             appends, {syncs} WAL flushes while measured; pg_stat_wal)",
            appends as f64 / syncs.max(1) as f64
        );
        println!(
            "bench-metric: {GROUP_CONCURRENT}/{label}/mean WAL flush = {:.1} µs ({syncs} \
             flushes; pg_stat_wal.wal_sync_time)",
            (after.sync_ms - before.sync_ms) * 1e3 / syncs.max(1) as f64
        );
        print_fsync(&server, &format!("{GROUP_CONCURRENT}/{label}"));
    }
    group.finish();
}

/// `pg_stat_wal`'s flush count and time so far.
struct WalStats {
    syncs: u64,
    sync_ms: f64,
}

fn wal_stats(server: &PgServer) -> WalStats {
    let out = server
        .psql("SELECT wal_sync || ' ' || wal_sync_time FROM pg_stat_wal")
        .unwrap();
    let (syncs, ms) = out.trim().split_once(' ').unwrap();
    WalStats {
        syncs: syncs.parse().unwrap(),
        sync_ms: ms.parse().unwrap(),
    }
}

/// N sessions (N from [`SESSION_COUNTS`]) taking one turn each at once
/// through one store (the default pool of 16 connections): one iteration
/// is N turns, spawned together and awaited — the shape of the other
/// stores' sessions benchmarks. Each session holds 100 short messages (and
/// grows by 2 per iteration while measured).
fn sessions_at_once(c: &mut Criterion) {
    let rt = runtime();
    let server = server();
    let store: Arc<dyn Store> = Arc::new(store(&rt, &server.url()));
    let mut group = c.benchmark_group(GROUP_SESSIONS);
    for sessions in SESSION_COUNTS {
        let ids: Arc<Vec<SessionId>> = Arc::new(
            (0..sessions)
                .map(|i| SessionId::new(format!("s{sessions}-{i}")).unwrap())
                .collect(),
        );
        rt.block_on(async {
            for id in ids.iter() {
                fill_with(&*store, id, short_history(100)).await;
            }
        });
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(sessions),
            &sessions,
            |b, &sessions| {
                b.to_async(&rt).iter(|| {
                    let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
                    async move {
                        let mut tasks = tokio::task::JoinSet::new();
                        for i in 0..sessions {
                            let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
                            tasks.spawn(async move { turn(&*store, &ids[i]).await });
                        }
                        while let Some(r) = tasks.join_next().await {
                            r.unwrap();
                        }
                    }
                });
            },
        );
    }
    group.finish();
}

/// `load` of a whole session and a fork (then delete) of it, as in the
/// other stores' suites.
fn load_and_fork(c: &mut Criterion) {
    let rt = runtime();
    let server = server();
    let store = store(&rt, &server.url());
    let mut group = c.benchmark_group("postgres/load");
    for len in LENGTHS {
        let id = SessionId::new(format!("load-{len}")).unwrap();
        rt.block_on(fill_with(&store, &id, short_history(len)));
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(store.load(&id).await.unwrap()) });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("postgres/fork+delete");
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
/// and 100,000 sessions (see the `list` module): one server, a store
/// (table prefix) per size, its connections with `synchronous_commit=off`
/// so that populating 100,000 sessions does not wait for 100,000 WAL
/// flushes (a read's cost does not depend on it). After each benchmark,
/// the server's own time per list statement and its buffer pages per call
/// (`pg_stat_statements`, reset right before it) as a `bench-metric:`
/// line.
fn listing(c: &mut Criterion) {
    const GROUP: &str = "postgres/list(recent first, page of 50)";
    let rt = runtime();
    let server = PgServer::builder()
        .fsync(true)
        .config("shared_preload_libraries", "'pg_stat_statements'")
        .start()
        .unwrap();
    let url = format!("{}{RELAXED}", server.url());
    let stats = client(&rt, &server.url());
    rt.block_on(stats.batch_execute("CREATE EXTENSION pg_stat_statements"))
        .unwrap();
    let around = |id: &str, done: bool| {
        rt.block_on(async {
            if !done {
                stats
                    .batch_execute("SELECT pg_stat_statements_reset()")
                    .await
                    .unwrap();
                return;
            }
            let row = stats
                .query_opt(
                    "SELECT calls, mean_exec_time, max_exec_time, \
                         (shared_blks_hit + shared_blks_read)::float8 / calls \
                     FROM pg_stat_statements \
                     WHERE query LIKE '%ORDER BY s.updated_at DESC%' AND calls > 0 \
                     ORDER BY calls DESC LIMIT 1",
                    &[],
                )
                .await
                .unwrap();
            let Some(row) = row else { return };
            let (calls, ms, max, blocks): (i64, f64, f64, f64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            println!(
                "bench-metric: {GROUP}/{id}/server time per list statement = {:.1} µs \
                 (mean of {calls} calls, slowest {:.1} µs; {blocks:.0} buffer pages per \
                 call; pg_stat_statements)",
                ms * 1e3,
                max * 1e3
            );
        });
    };
    list::bench_list(
        c,
        GROUP,
        &rt,
        &|n| {
            let build = PostgresStore::builder(&url)
                .unwrap()
                .prefix(&format!("list{n}_"))
                .build();
            Arc::new(rt.block_on(build).unwrap())
        },
        &around,
    );
}

criterion_group!(
    benches,
    listing,
    per_turn,
    per_turn_relaxed,
    blob_baseline_turn,
    per_turn_realistic,
    blob_baseline_turn_realistic,
    concurrent,
    sessions_at_once,
    load_and_fork
);
criterion_main!(benches);
