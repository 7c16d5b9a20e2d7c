//! The server's own cost per store call on the hot path: 10,000 appends of
//! two messages, then 10,000 `load_recent(20)` and 10,000 `load` of a short
//! session, with a TTL (so every write moves the expiry of every key).
//! Ignored by default: it measures, it does not judge (tests never assert
//! times); run it with `cargo test -p statestore-redis --all-features
//! --release --test server_time -- --ignored --nocapture`. It does assert
//! the call counts.
//!
//! Two figures per call: the server's time (`usec` of `INFO commandstats`
//! for the commands the client sent — an append's `EVALSHA`, a load's
//! `MULTI` and `EXEC`, which includes the script and reads it ran — which
//! is wall-clock time, so it grows when another process holds the CPU),
//! and the CPU time the server used (`INFO cpu`: request parsing and reply
//! writing included, steadier on a busy machine).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code"
)]

use std::time::Duration;

use redis_test_server::RedisServer;
use statestore_core::{Expect, Message, SessionId, Store};
use statestore_redis::RedisStore;

const CALLS: u64 = 10_000;

/// Runs `calls` store calls through `op` and returns (server time, CPU
/// time) per call in µs, asserting the commands the client sent: `sent`
/// (`evalsha`, or `exec` for a transaction) once per call.
async fn measure<F, Fut>(server: &RedisServer, sent: &str, mut op: F) -> (f64, f64)
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    server.reset_stats().unwrap();
    let cpu = server.cpu_seconds().unwrap();
    for i in 0..CALLS {
        op(i).await;
    }
    let cpu = server.cpu_seconds().unwrap() - cpu;
    let stats = server.command_stats_detailed().unwrap();
    assert_eq!(stats.get(sent).map(|s| s.calls), Some(CALLS), "{stats:?}");
    // A transaction's time includes the commands it ran.
    let top_level: &[&str] = if sent == "exec" {
        &["multi", "exec"]
    } else {
        &["evalsha"]
    };
    let usec: u64 = top_level
        .iter()
        .filter_map(|c| stats.get(*c))
        .map(|s| s.usec)
        .sum();
    let calls = CALLS as f64;
    (usec as f64 / calls, cpu * 1e6 / calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn server_time_per_store_call() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder()
        .ttl(Duration::from_secs(3600))
        .connect(&server.url())
        .await
        .unwrap();
    let ids: Vec<SessionId> = (0..100)
        .map(|i| SessionId::new(format!("s{i}")).unwrap())
        .collect();
    let id = |i: u64| &ids[usize::try_from(i).unwrap() % ids.len()];

    let append = measure(&server, "evalsha", |i| {
        let (store, id) = (&store, id(i));
        async move {
            let turn = vec![Message::user("question"), Message::assistant("answer")];
            store.append(id, turn, Expect::Any).await.unwrap();
        }
    })
    .await;
    let load_recent = measure(&server, "exec", |i| {
        let (store, id) = (&store, id(i));
        async move {
            store.load_recent(id, 20).await.unwrap().unwrap();
        }
    })
    .await;
    let short = SessionId::new("short").unwrap();
    store
        .append(&short, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    let load = measure(&server, "exec", |_| {
        let (store, short) = (&store, &short);
        async move {
            store.load(short).await.unwrap().unwrap();
        }
    })
    .await;
    for (what, (usec, cpu)) in [
        ("append(2 messages)", append),
        ("load_recent(20 of 200)", load_recent),
        ("load(1 message)", load),
    ] {
        eprintln!("{what}: server time {usec:.2} µs, server CPU {cpu:.2} µs per call");
    }
}
