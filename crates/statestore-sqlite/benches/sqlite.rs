//! SQLite store costs: one turn (append 2 + load_recent 20) at growing
//! history lengths, and group commit (64 concurrent appends) against one
//! commit per append. `synchronous=FULL`, files in a temp dir.
//!
//! ```text
//! cargo bench -p statestore-sqlite --bench sqlite
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
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use statestore_core::{Expect, Message, SessionId, Store};
use statestore_sqlite::SqliteStore;

const LENGTHS: [usize; 4] = [10, 100, 1_000, 10_000];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One turn against a session of `len` messages. The history grows while
/// measured (by 2 messages per iteration), which matters only at length 10.
fn per_turn(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open(dir.path().join("turn.sqlite3")))
        .unwrap();
    let mut group = c.benchmark_group("sqlite/turn(append 2 + load_recent 20)");
    group.measurement_time(Duration::from_secs(5));
    for len in LENGTHS {
        let id = SessionId::new(format!("bench-{len}")).unwrap();
        rt.block_on(async {
            let history: Vec<Message> = (0..len)
                .map(|i| {
                    Message::user(format!(
                        "message {i}: some ordinary chat text of moderate length"
                    ))
                })
                .collect();
            store.append(&id, history, Expect::Any).await.unwrap();
        });
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.to_async(&rt).iter(|| async {
                store
                    .append(
                        &id,
                        vec![
                            Message::user("What's my name?"),
                            Message::assistant("Alice."),
                        ],
                        Expect::Any,
                    )
                    .await
                    .unwrap();
                black_box(store.load_recent(&id, 20).await.unwrap());
            });
        });
    }
    group.finish();
}

/// 64 appends to 64 sessions: all at once (the writer batches them) or one
/// after another (one commit, one fsync each).
fn group_commit(c: &mut Criterion) {
    const WRITES: usize = 64;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        rt.block_on(SqliteStore::open(dir.path().join("gc.sqlite3")))
            .unwrap(),
    );
    let ids: Arc<Vec<SessionId>> = Arc::new(
        (0..WRITES)
            .map(|i| SessionId::new(format!("s{i}")).unwrap())
            .collect(),
    );
    let mut group = c.benchmark_group("sqlite/64 appends");
    group.throughput(Throughput::Elements(WRITES as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("concurrent (group commit)", |b| {
        b.to_async(&rt).iter(|| {
            let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
            async move {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..WRITES {
                    let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
                    tasks.spawn(async move {
                        store
                            .append(&ids[i], vec![Message::user("turn")], Expect::Any)
                            .await
                            .unwrap();
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.unwrap();
                }
            }
        });
    });
    group.bench_function("sequential (a commit each)", |b| {
        b.to_async(&rt).iter(|| async {
            for id in ids.iter() {
                store
                    .append(id, vec![Message::user("turn")], Expect::Any)
                    .await
                    .unwrap();
            }
        });
    });
    group.finish();
    let stats = store.stats();
    let mut out = std::io::stderr().lock();
    let _ = std::io::Write::write_fmt(
        &mut out,
        format_args!(
            "group commit: {} commits for {} writes in all\n",
            stats.commits, stats.writes
        ),
    );
}

criterion_group!(benches, per_turn, group_commit);
criterion_main!(benches);
