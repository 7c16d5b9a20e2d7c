//! Memory store costs that must not grow with the conversation, and a
//! page of one user's sessions that must not grow with the store (`list`).
//!
//! ```text
//! cargo bench -p statestore-memory --bench memory
//! ```
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use statestore_core::{Expect, Message, SessionId, Store};
use statestore_memory::MemoryStore;

const LENGTHS: [usize; 4] = [10, 100, 1_000, 10_000];
/// The history lengths of the turn benchmark (the page's chart runs from
/// 10 to 100,000).
const TURN_LENGTHS: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];
/// The session counts of the sessions benchmark, as in the other stores'
/// suites.
const SESSION_COUNTS: [usize; 5] = [1, 4, 16, 64, 256];

/// The sidebar benchmark every store's suite runs (the Redis suite's file).
#[path = "../../statestore-redis/benches/common/list.rs"]
mod list;

fn filled(len: usize) -> (MemoryStore, SessionId) {
    let store = MemoryStore::new();
    let id = SessionId::new("bench").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let history = (0..len)
            .map(|i| {
                Message::user(format!(
                    "message {i}: some ordinary chat text of moderate length"
                ))
            })
            .collect();
        store.append(&id, history, Expect::Any).await.unwrap();
    });
    (store, id)
}

/// One turn at a fixed history length: the history is re-forked from a
/// template every `len / 100` turns (outside the timed region), so it grows
/// by at most 2 % (20 % at length 10) while measured.
fn per_turn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("memory/turn(append 2 + load_recent 20)");
    for len in TURN_LENGTHS {
        let (store, template) = filled(len);
        if len >= 100_000 {
            // A fork of 100,000 messages every 1,000 turns, untimed: fewer
            // samples keep the run short.
            group.sample_size(10);
            group.sampling_mode(SamplingMode::Flat);
        }
        let id = SessionId::new("bench-turn").unwrap();
        let turns_per_fork = (len / 100).max(1) as u64;
        let user = Message::user("What's my name?");
        let reply = Message::assistant("Your name is Alice.");
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, template, id) = (&store, &template, &id);
                let (user, reply) = (&user, &reply);
                async move {
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        store.delete(id).await.unwrap();
                        store.fork(template, id).await.unwrap();
                        let n = turns_per_fork.min(iters - done);
                        let start = Instant::now();
                        for _ in 0..n {
                            let recent = store.load_recent(id, 20).await.unwrap().unwrap();
                            black_box(&recent);
                            let turn = vec![user.clone(), reply.clone()];
                            let v = Expect::Version(recent.version);
                            black_box(store.append(id, turn, v).await.unwrap());
                        }
                        total += start.elapsed();
                        done += n;
                    }
                    total
                }
            });
        });
    }
    group.finish();
}

fn load_and_fork(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("memory/load");
    for len in LENGTHS {
        let (store, id) = filled(len);
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(store.load(&id).await.unwrap()) });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("memory/fork+delete");
    for len in LENGTHS {
        let (store, id) = filled(len);
        let target = SessionId::new("bench-fork").unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter(|| async {
                store.fork(&id, &target).await.unwrap();
                store.delete(&target).await.unwrap()
            });
        });
    }
    group.finish();
}

/// Turns a thread takes before the sessions are reset (untimed), so that a
/// hot session grows by at most 2 × this many messages while measured.
const TURNS_PER_ROUND: u64 = 10_000;

/// Throughput of turns (append 2 + `load_recent(20)`, `Expect::Any` so that
/// two writers on one session never conflict) on one thread, on two threads
/// with a session each, and on two threads sharing one hot session. Each
/// session starts every round as a fork of a 100-message history. The time
/// reported is wall-clock time per turn over all threads: a store that
/// scales shows half the one-thread figure on two threads.
fn threads(c: &mut Criterion) {
    let mut group =
        c.benchmark_group("memory/turns on threads(append 2 + load_recent 20, history 100)");
    group.throughput(Throughput::Elements(1));
    for (name, threads, hot) in [
        ("1 thread", 1, false),
        ("2 threads, different sessions", 2, false),
        ("2 threads, one hot session", 2, true),
    ] {
        let (store, template) = filled(100);
        let ids: Vec<SessionId> = (0..threads)
            .map(|t| SessionId::new(format!("thread-{}", if hot { 0 } else { t })).unwrap())
            .collect();
        let runtimes: Vec<tokio::runtime::Runtime> = (0..threads)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
            })
            .collect();
        let reset = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let user = Message::user("What's my name?");
        let reply = Message::assistant("Your name is Alice.");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    reset.block_on(async {
                        for id in &ids {
                            store.delete(id).await.unwrap();
                            store.fork(&template, id).await.unwrap();
                        }
                    });
                    let n = (TURNS_PER_ROUND * threads as u64).min(iters - done);
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for (t, (id, rt)) in ids.iter().zip(&runtimes).enumerate() {
                            // Split n turns as evenly as possible.
                            let mine =
                                n / threads as u64 + u64::from((t as u64) < n % threads as u64);
                            let (store, user, reply) = (&store, &user, &reply);
                            scope.spawn(move || {
                                rt.block_on(async {
                                    for _ in 0..mine {
                                        let recent =
                                            store.load_recent(id, 20).await.unwrap().unwrap();
                                        black_box(&recent);
                                        let turn = vec![user.clone(), reply.clone()];
                                        black_box(
                                            store.append(id, turn, Expect::Any).await.unwrap(),
                                        );
                                    }
                                });
                            });
                        }
                    });
                    total += start.elapsed();
                    done += n;
                }
                total
            });
        });
    }
    group.finish();
}

/// N sessions (N from [`SESSION_COUNTS`]) taking one turn each at once on
/// a two-thread runtime, as in the SQLite and Redis suites: one iteration
/// is N turns, spawned together and awaited. Each session starts with 100
/// messages and grows by 2 per iteration while measured.
fn concurrent_sessions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("memory/sessions, one turn each at once");
    for sessions in SESSION_COUNTS {
        let (store, template) = filled(100);
        let store = Arc::new(store);
        let ids: Arc<Vec<SessionId>> = Arc::new(
            (0..sessions)
                .map(|i| SessionId::new(format!("s{i}")).unwrap())
                .collect(),
        );
        rt.block_on(async {
            for id in ids.iter() {
                store.fork(&template, id).await.unwrap();
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
                            tasks.spawn(async move {
                                let id = &ids[i];
                                let recent = store.load_recent(id, 20).await.unwrap().unwrap();
                                black_box(&recent);
                                let turn = vec![
                                    Message::user("What's my name?"),
                                    Message::assistant("Your name is Alice."),
                                ];
                                let v = Expect::Version(recent.version);
                                black_box(store.append(id, turn, v).await.unwrap());
                            });
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

/// One user's sessions, newest first, a page of 50, in stores of 1,000
/// and 100,000 sessions (see the `list` module): a fresh `MemoryStore` per
/// size.
fn listing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    list::bench_list(
        c,
        "memory/list(recent first, page of 50)",
        &rt,
        &|_| Arc::new(MemoryStore::new()),
        &|_, _| {},
    );
}

criterion_group!(
    benches,
    per_turn,
    load_and_fork,
    threads,
    concurrent_sessions,
    listing
);
criterion_main!(benches);
