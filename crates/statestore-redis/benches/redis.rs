//! Redis store costs on a throwaway local redis-server.
//!
//! ```text
//! cargo bench -p statestore-redis --all-features --bench redis
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
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use redis_test_server::RedisServer;
use statestore_core::codec;
use statestore_core::{Expect, Message, SessionId, Store};
use statestore_redis::RedisStore;

const LENGTHS: [usize; 4] = [10, 100, 1_000, 10_000];
/// The history lengths of the turn benchmarks (the page's chart runs from
/// 10 to 100,000).
const TURN_LENGTHS: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];
/// The lengths of the realistic-mix comparison (target 4).
const MIX_LENGTHS: [usize; 2] = [1_000, 10_000];
const GROUP_TURN: &str = "redis/turn(append 2 + load_recent 20)";
const GROUP_BLOB: &str = "redis/blob baseline turn(GET + parse + push 2 + SET)";
const GROUP_TURN_MIX: &str = "redis/turn, realistic mix(append 2 + load_recent 20)";
const GROUP_BLOB_MIX: &str = "redis/blob baseline turn, realistic mix(GET + parse + push 2 + SET)";
const GROUP_SESSIONS: &str = "redis/sessions, one turn each at once";
/// The session counts of [`GROUP_SESSIONS`].
const SESSION_COUNTS: [usize; 5] = [1, 4, 16, 64, 256];

/// Histories of at least this many bytes of JSON (100,000 short messages,
/// 10,000 of the realistic mix) are measured with [`few_samples`].
const HEAVY_BYTES: usize = 4 << 20;

/// For benchmarks over a history of [`HEAVY_BYTES`] or more, where a
/// whole-blob turn takes tens of milliseconds or more: 10 samples, flat, so
/// that the full run stays within minutes. Applies to the benchmarks of
/// `group` added after it.
fn few_samples(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
}

/// The realistic conversation of the realistic-mix comparison (target 4),
/// shared with the PostgreSQL suite, which includes the same file.
#[path = "common/realistic_mix.rs"]
mod realistic_mix;

/// The sidebar benchmark every store's suite runs.
#[path = "common/list.rs"]
mod list;

const GROUP_RAW: &str = "redis/LRANGE of the same messages, not decoded (load's floor)";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The short messages (about 60 B) most benchmarks use, and the short
/// turn they append; shared with the `server_work` example.
#[path = "common/short_messages.rs"]
mod short_messages;
use short_messages::{history as short_history, turn as short_turn};

async fn fill(store: &dyn Store, id: &SessionId, len: usize) {
    fill_with(store, id, short_history(len)).await;
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
    turns(c, GROUP_TURN, &TURN_LENGTHS, short_history, short_turn);
}

/// One turn over the realistic mix, at 1,000 and 10,000 messages; it is
/// printed as a `bench-metric:` line so that the page states it.
fn per_turn_realistic(c: &mut Criterion) {
    // Under the group's id, so that every run measuring it keeps it.
    println!(
        "bench-metric: {GROUP_TURN_MIX}/the mix = {}",
        realistic_mix::DEFINITION
    );
    turns(
        c,
        GROUP_TURN_MIX,
        &MIX_LENGTHS,
        realistic_mix::history,
        realistic_mix::turn,
    );
}

/// One turn (`load_recent(20)`, then an append of `new_turn()` guarded by
/// its version) at each of `lengths` messages of `history`: the session is
/// re-forked from a template every `len / 100` turns (outside the timed
/// region), so it grows by at most 2 % (20 % at length 10) while measured.
/// Then the server's time per call and the loopback round trip, as
/// `bench-metric:` lines.
fn turns(
    c: &mut Criterion,
    group_name: &str,
    lengths: &[usize],
    history: fn(usize) -> Vec<Message>,
    new_turn: fn() -> Vec<Message>,
) {
    let rt = runtime();
    let server = RedisServer::start().unwrap();
    let store = rt
        .block_on(RedisStore::builder().connect(&server.url()))
        .unwrap();
    let mut group = c.benchmark_group(group_name);
    let id = SessionId::new("turn").unwrap();
    for &len in lengths {
        let template = SessionId::new(format!("template-{len}")).unwrap();
        let history = history(len);
        if serde_json::to_vec(&history).unwrap().len() >= HEAVY_BYTES {
            few_samples(&mut group);
        }
        rt.block_on(fill_with(&store, &template, history));
        let turns_per_fork = (len / 100).max(1) as u64;
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, template, id) = (&store, &template, &id);
                async move {
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        store.delete(id).await.unwrap();
                        store.fork(template, id).await.unwrap();
                        let n = turns_per_fork.min(iters - done);
                        let start = Instant::now();
                        for _ in 0..n {
                            turn_of(store, id, new_turn()).await;
                        }
                        total += start.elapsed();
                        done += n;
                    }
                    total
                }
            });
        });
        // The server's own cost per store call at this length, from 100
        // turns' calls on a fresh fork (the timed loop's forks would skew
        // it): the loads, then the appends.
        rt.block_on(async {
            store.delete(&id).await.unwrap();
            store.fork(&template, &id).await.unwrap();
        });
        let (store_ref, id_ref) = (&store, &id);
        let (load, version) = server_cost(&rt, &server, 100, || async {
            store_ref
                .load_recent(id_ref, 20)
                .await
                .unwrap()
                .unwrap()
                .version
        });
        let mut next = version;
        let (append, _) = server_cost(&rt, &server, 100, || {
            let expect = Expect::Version(next);
            next += 1;
            async move { store_ref.append(id_ref, new_turn(), expect).await.unwrap() }
        });
        println!(
            "bench-metric: {group_name}/{len}/server time per store call = {:.2} µs \
             (load_recent {:.2} µs, append {:.2} µs; server CPU per call {:.1} µs; 200 calls)",
            (load.usec + append.usec) / 2.0,
            load.usec,
            append.usec,
            (load.cpu + append.cpu) / 2.0,
        );
        print_round_trip(&rt, &server, &format!("{group_name}/{len}"));
    }
    group.finish();
}

/// The server's cost per call of `calls` sequential store calls.
struct ServerCost {
    /// Time in the commands the client sent (`INFO commandstats`): an
    /// `EVALSHA`, or a transaction's `MULTI` and `EXEC` (whose time
    /// includes the script and reads it ran), in µs per call.
    usec: f64,
    /// The server's CPU time per call (`INFO cpu`), in µs: parsing requests
    /// and writing replies included.
    cpu: f64,
}

/// Runs `calls` calls of `op` one after the other and returns the server's
/// cost per call, and the last call's output.
fn server_cost<T, F, Fut>(
    rt: &tokio::runtime::Runtime,
    server: &RedisServer,
    calls: u32,
    mut op: F,
) -> (ServerCost, T)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    server.reset_stats().unwrap();
    let cpu = server.cpu_seconds().unwrap();
    let mut last = None;
    rt.block_on(async {
        for _ in 0..calls {
            last = Some(op().await);
        }
    });
    let cpu = server.cpu_seconds().unwrap() - cpu;
    let stats = server.command_stats_detailed().unwrap();
    let transactions = stats.get("exec").map_or(0, |s| s.calls);
    // A transaction's time includes the scripts it ran.
    let sent: &[&str] = if transactions > 0 {
        &["multi", "exec"]
    } else {
        &["evalsha"]
    };
    let usec: u64 = sent
        .iter()
        .filter_map(|c| stats.get(*c))
        .map(|s| s.usec)
        .sum();
    let cost = ServerCost {
        usec: usec as f64 / f64::from(calls),
        cpu: cpu * 1e6 / f64::from(calls),
    };
    (cost, last.unwrap())
}

/// The loopback round trip right now: the median of 1,000 PINGs on a
/// multiplexed connection driven by `rt`, printed as a `bench-metric:` line
/// under `id`. Every single-connection figure is a multiple of it, and on a
/// VM it moves with the machine's load (an idle vCPU is slow to wake), so
/// it is measured beside each figure.
fn print_round_trip(rt: &tokio::runtime::Runtime, server: &RedisServer, id: &str) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut times = rt.block_on(async {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut times = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let start = Instant::now();
            let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
            times.push(start.elapsed());
        }
        times
    });
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "bench-metric: {id}/PING round trip = {:.1} µs (median of 1,000, measured right after)",
        median.as_secs_f64() * 1e6
    );
}

/// Prints a `bench-metric:` line with the server's time per call of each
/// command starting with `prefix` since the last stats reset.
fn print_server_costs(server: &RedisServer, id: &str, prefix: &str) {
    for (command, stat) in server.command_stats_detailed().unwrap() {
        let (calls, usec) = (stat.calls, stat.usec_per_call);
        if command.starts_with(prefix) && calls > 0 {
            println!("bench-metric: {id}/server time per {command} = {usec:.2} µs ({calls} calls)");
        }
    }
}

/// N sessions (N from [`SESSION_COUNTS`]) taking one turn each at once
/// through one `ConnectionManager` (one multiplexed connection): one
/// iteration is N turns, spawned together and awaited. Each session holds
/// 100 short messages (and grows by 2 per iteration while measured).
fn concurrent_sessions(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        rt.block_on(RedisStore::builder().connect(&server.url()))
            .unwrap(),
    );
    let mut group = c.benchmark_group(GROUP_SESSIONS);
    for sessions in SESSION_COUNTS {
        let ids: Arc<Vec<SessionId>> = Arc::new(
            (0..sessions)
                .map(|i| SessionId::new(format!("s{sessions}-{i}")).unwrap())
                .collect(),
        );
        rt.block_on(async {
            for id in ids.iter() {
                fill(&*store, id, 100).await;
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

/// Continuous load from 64 sessions at once — each of 64 tasks issues its
/// next call as soon as the last one returns, as `redis-benchmark -c 64`
/// does — so the figure compares with `redis-benchmark -c 64 -t
/// rpush,lrange_100` (`cargo xtask bench` runs both). One iteration is one
/// call; the time reported is wall-clock time per call over all 64 tasks.
/// After each benchmark, the server's own time per script call (`INFO
/// commandstats`) is printed as a `bench-metric:` line.
fn throughput(c: &mut Criterion) {
    const SESSIONS: usize = 64;
    let rt = runtime();
    let server = RedisServer::start().unwrap();
    let manager = rt
        .block_on(RedisStore::builder().prefix("m:").connect(&server.url()))
        .unwrap();
    let pool = deadpool_redis::Config::from_url(server.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let pooled = RedisStore::builder().prefix("p:").build(pool).unwrap();
    let ids: Arc<Vec<SessionId>> = Arc::new(
        (0..SESSIONS)
            .map(|i| SessionId::new(format!("t{i}")).unwrap())
            .collect(),
    );
    let group_name = "redis/64 sessions, continuous calls";
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    for (connection, store) in [("ConnectionManager", manager), ("deadpool Pool", pooled)] {
        let store: Arc<dyn Store> = Arc::new(store);
        rt.block_on(async {
            for id in ids.iter() {
                fill(&*store, id, 100).await;
            }
        });
        for append in [true, false] {
            let op = if append {
                "append 1 message"
            } else {
                "load_recent 20"
            };
            let name = format!("{op}, {connection}");
            server.reset_stats().unwrap();
            group.bench_function(&name, |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
                    async move {
                        let start = Instant::now();
                        let mut tasks = tokio::task::JoinSet::new();
                        for i in 0..SESSIONS {
                            let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
                            let mine = iters / SESSIONS as u64
                                + u64::from((i as u64) < iters % SESSIONS as u64);
                            tasks.spawn(async move {
                                let id = &ids[i];
                                for _ in 0..mine {
                                    if append {
                                        let m = vec![Message::user("What's my name?")];
                                        black_box(store.append(id, m, Expect::Any).await.unwrap());
                                    } else {
                                        black_box(store.load_recent(id, 20).await.unwrap());
                                    }
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
            for command in ["evalsha", "exec"] {
                print_server_costs(&server, &format!("{group_name}/{name}"), command);
            }
        }
    }
    group.finish();
}

/// `load` of a whole session, beside its floor — a plain `LRANGE` of the
/// same messages' bytes, received as byte strings and not decoded — and a
/// fork (then delete) of the same session.
fn load_and_fork(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start().unwrap();
    let store = rt
        .block_on(RedisStore::builder().connect(&server.url()))
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = rt
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let mut group = c.benchmark_group("redis/load");
    for len in LENGTHS {
        let id = SessionId::new(format!("load-{len}")).unwrap();
        rt.block_on(fill(&store, &id, len));
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(store.load(&id).await.unwrap()) });
        });
    }
    group.finish();
    let mut group = c.benchmark_group(GROUP_RAW);
    for len in LENGTHS {
        // The bytes `fill` stored: the same messages, encoded the same way.
        let id = SessionId::new(format!("load-{len}")).unwrap();
        let stored = rt.block_on(store.load(&id)).unwrap().unwrap();
        let key = format!("raw-{len}");
        rt.block_on(async {
            let _: () = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            for chunk in stored.messages.chunks(1000) {
                let mut push = redis::cmd("RPUSH");
                push.arg(&key);
                for m in chunk {
                    push.arg(codec::encode_message(&id, m).unwrap());
                }
                let _: () = push.query_async(&mut conn).await.unwrap();
            }
        });
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter(|| {
                let (mut conn, key) = (conn.clone(), &key);
                async move {
                    let bytes: Vec<Vec<u8>> = redis::cmd("LRANGE")
                        .arg(key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    assert_eq!(bytes.len(), len);
                    black_box(bytes)
                }
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("redis/fork+delete");
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

/// The design most systems use, as a baseline on the same server and
/// data: the whole conversation as one JSON value — GET, parse, push the
/// turn, serialize, SET. Short messages from 10 to 100,000.
fn blob_baseline_turn(c: &mut Criterion) {
    blob_turns(c, GROUP_BLOB, &TURN_LENGTHS, short_history, short_turn);
}

/// The baseline over the realistic mix, at the lengths of
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

/// One whole-blob turn at each of `lengths` messages of `history`, the
/// turn `new_turn()`; the history's length is kept fixed.
fn blob_turns(
    c: &mut Criterion,
    group_name: &str,
    lengths: &[usize],
    history: fn(usize) -> Vec<Message>,
    new_turn: fn() -> Vec<Message>,
) {
    let rt = runtime();
    let server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = rt
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let mut group = c.benchmark_group(group_name);
    for &len in lengths {
        let key = format!("blob-{len}");
        let bytes = serde_json::to_vec(&history(len)).unwrap();
        if bytes.len() >= HEAVY_BYTES {
            few_samples(&mut group);
        }
        rt.block_on(async {
            let _: () = redis::AsyncCommands::set(&mut conn, &key, bytes)
                .await
                .unwrap();
        });
        server.reset_stats().unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter(|| {
                let mut conn = conn.clone();
                let key = key.clone();
                async move {
                    let raw: Vec<u8> = redis::AsyncCommands::get(&mut conn, &key).await.unwrap();
                    let mut history: Vec<Message> = serde_json::from_slice(&raw).unwrap();
                    // Keep the length fixed so every iteration measures `len`.
                    let turn = new_turn();
                    history.truncate(len.saturating_sub(turn.len()));
                    history.extend(turn);
                    let out = serde_json::to_vec(&history).unwrap();
                    let _: () = redis::AsyncCommands::set(&mut conn, &key, out)
                        .await
                        .unwrap();
                }
            });
        });
        for command in ["get", "set"] {
            print_server_costs(&server, &format!("{group_name}/{len}"), command);
        }
        print_round_trip(&rt, &server, &format!("{group_name}/{len}"));
    }
    group.finish();
}

/// One user's sessions, newest first, a page of 50, in stores of 1,000
/// and 100,000 sessions (see the `list` module): one server, a store (key
/// prefix) per size.
fn listing(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start().unwrap();
    let url = server.url();
    list::bench_list(
        c,
        "redis/list(recent first, page of 50)",
        &rt,
        &|n| {
            let connect = RedisStore::builder()
                .prefix(format!("list{n}:"))
                .connect(&url);
            Arc::new(rt.block_on(connect).unwrap())
        },
        &|_, _| {},
    );
}

criterion_group!(
    benches,
    listing,
    per_turn,
    blob_baseline_turn,
    per_turn_realistic,
    blob_baseline_turn_realistic,
    concurrent_sessions,
    throughput,
    load_and_fork
);
criterion_main!(benches);
