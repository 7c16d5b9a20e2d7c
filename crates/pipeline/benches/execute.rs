//! What `Pipeline::execute` costs on top of the store: one execute with the
//! offline provider (no network, a few microseconds of "model") on the
//! memory store, on a throwaway local redis-server, on SQLite (durable, in a
//! temp dir) and on a throwaway local PostgreSQL (`fsync` and
//! `synchronous_commit` on), against a history of about 100 messages.
//! Compare with the stores' own per-turn benchmarks at length 100
//! (`memory/turn…/100`, `redis/turn…/100`, `sqlite/turn…/100`,
//! `postgres/turn…/100`): the difference is the pipeline's
//! overhead (id check, token annotation, window selection, request
//! building, per-session lock; usage rides on the turn's one write).
//!
//! ```text
//! cargo bench -p pipeline --bench execute
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

use context_window::{CharEstimate, WindowPolicy, annotate};
use criterion::{Criterion, criterion_group, criterion_main};
use pg_test_server::PgServer;
use pipeline::{OfflineProvider, Pipeline, counters};
use redis_test_server::RedisServer;
use statestore_core::{Append, Expect, IdempotencyKey, Message, Role, SessionId, Store};
use statestore_memory::MemoryStore;
use statestore_postgres::PostgresStore;
use statestore_redis::RedisStore;
use statestore_sqlite::SqliteStore;

/// Executes between re-forks of the session from its template (untimed):
/// the history grows from 100 to at most 100 + 2 × this while measured.
const EXECUTES_PER_FORK: u64 = 50;

const GROUP: &str = "pipeline/execute(offline provider, history 100)";
/// The two store calls an execute makes, made directly: what the pipeline
/// adds is `execute` less this, what the store adds for keys and counters
/// is this less the stores' own turn benchmark.
const STORE_CALLS: &str =
    "pipeline/an execute's store calls alone(load_recent_with 21 + keyed append 2, 4 counters)";

/// The time `step` takes run `iters` times, the session re-forked from its
/// template (untimed) every [`EXECUTES_PER_FORK`] steps.
async fn on_fresh_forks(
    iters: u64,
    store: &dyn Store,
    template: &SessionId,
    id: &SessionId,
    step: impl AsyncFn(),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        store.delete(id).await.unwrap();
        store.fork(template, id).await.unwrap();
        let n = EXECUTES_PER_FORK.min(iters - done);
        let start = Instant::now();
        for _ in 0..n {
            step().await;
        }
        total += start.elapsed();
        done += n;
    }
    total
}

/// `load_recent_with(21, key)`, then the keyed, counting append of a turn
/// guarded by the version it read: the calls `execute` makes, without it.
async fn store_calls(store: &dyn Store, id: &SessionId, user: &Message, reply: &Message) {
    let key = IdempotencyKey::random();
    let read = store
        .load_recent_with(id, 21, Some(&key))
        .await
        .unwrap()
        .unwrap();
    black_box(&read.messages);
    let append = Append::new([user.clone(), reply.clone()])
        .expect(Expect::Version(read.version))
        .key(key)
        .count(counters::PROMPT_TOKENS, 120)
        .count(counters::COMPLETION_TOKENS, 8)
        .count(counters::MODEL_CALLS, 1)
        .count(counters::TURNS, 1);
    black_box(store.append_with(id, append).await.unwrap());
}

async fn template(store: &dyn Store, id: &SessionId) {
    let _ = store.delete(id).await.unwrap();
    let history = (0..100)
        .map(|i| {
            let mut m = if i % 2 == 0 {
                Message::user(format!(
                    "message {i}: some ordinary chat text of moderate length"
                ))
            } else {
                Message::assistant(format!(
                    "message {i}: some ordinary chat text of moderate length"
                ))
            };
            annotate(&CharEstimate, &mut m);
            m
        })
        .collect();
    store.append(id, history, Expect::Any).await.unwrap();
}

fn execute(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start().unwrap();
    let redis = rt
        .block_on(RedisStore::builder().connect(&server.url()))
        .unwrap();
    // Durable (`synchronous=FULL`, the default), in a temp dir.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt
        .block_on(SqliteStore::builder().open(dir.path().join("execute.sqlite3")))
        .unwrap();
    // The server's defaults: `fsync` and `synchronous_commit` on.
    let pg_server = PgServer::start().unwrap();
    let postgres = rt
        .block_on(PostgresStore::connect(&pg_server.url()))
        .unwrap();
    let mut group = c.benchmark_group(GROUP);
    let stores: [(&str, Arc<dyn Store>); 4] = [
        ("memory", Arc::new(MemoryStore::new())),
        ("redis", Arc::new(redis)),
        ("sqlite", Arc::new(sqlite)),
        ("postgres", Arc::new(postgres)),
    ];
    let template_id = SessionId::new("template").unwrap();
    let session = "bench-session";
    let id = SessionId::new(session).unwrap();
    let stores_again: Vec<(&str, Arc<dyn Store>)> =
        stores.iter().map(|(n, s)| (*n, Arc::clone(s))).collect();
    for (name, store) in stores {
        rt.block_on(template(&*store, &template_id));
        let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
            .window(
                WindowPolicy::default()
                    .max_messages(20)
                    .token_budget(128_000, 4_000),
            )
            .build();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, pipe, template_id, id) = (&store, &pipe, &template_id, &id);
                on_fresh_forks(iters, &**store, template_id, id, async || {
                    let out = pipe
                        .execute(session, Role::User, "What's my name?")
                        .await
                        .unwrap();
                    black_box(out);
                })
            });
        });
        if name == "redis" {
            // Round trips per execute and the server's CPU time, from
            // 100 executes on a fresh fork.
            rt.block_on(async {
                store.delete(&id).await.unwrap();
                store.fork(&template_id, &id).await.unwrap();
            });
            server.reset_stats().unwrap();
            let cpu = server.cpu_seconds().unwrap();
            rt.block_on(async {
                for _ in 0..100 {
                    pipe.execute(session, Role::User, "What's my name?")
                        .await
                        .unwrap();
                }
            });
            let cpu = server.cpu_seconds().unwrap() - cpu;
            let stats = server.command_stats_detailed().unwrap();
            let calls = |c: &str| stats.get(c).map_or(0, |s| s.calls) as f64 / 100.0;
            // A load is a transaction holding one script; a write a script.
            let (transactions, scripts) = (calls("exec"), calls("evalsha"));
            println!(
                "bench-metric: {GROUP}/redis/round trips per execute = {:.2} ({transactions:.2} \
                 transactions, {:.2} scripts outside them; server CPU {:.1} µs per execute)",
                transactions + (scripts - transactions),
                scripts - transactions,
                cpu * 1e6 / 100.0
            );
        }
    }
    group.finish();

    let mut group = c.benchmark_group(STORE_CALLS);
    let user = Message::user("What's my name?");
    let reply = Message::assistant("I don't know your name yet.");
    for (name, store) in &stores_again {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, template_id, id, user, reply) =
                    (store, &template_id, &id, &user, &reply);
                on_fresh_forks(iters, &**store, template_id, id, async || {
                    store_calls(&**store, id, user, reply).await;
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, execute);
criterion_main!(benches);
