//! The server's own time per script call (`usec_per_call` from `INFO
//! commandstats`) for the hot path: 10,000 appends of two messages, then
//! 10,000 `load_recent(20)` and 10,000 `load` of a short session, with a
//! TTL (so every write moves the expiry of every key). Ignored by default:
//! it measures, it does not judge (tests never assert times); run it with
//! `cargo test -p statestore-redis --all-features --test server_time --
//! --ignored --nocapture`. It does assert the call counts.
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

/// `(calls, usec_per_call)` of EVALSHA since the last reset.
fn evalsha(server: &RedisServer) -> (u64, f64) {
    server
        .command_stats_detailed()
        .unwrap()
        .get("evalsha")
        .map_or((0, 0.0), |s| (s.calls, s.usec_per_call))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn server_time_per_script_call() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder()
        .ttl(Duration::from_secs(3600))
        .connect(&server.url())
        .await
        .unwrap();
    let ids: Vec<SessionId> = (0..100)
        .map(|i| SessionId::new(format!("s{i}")).unwrap())
        .collect();

    server.reset_stats().unwrap();
    for i in 0..CALLS {
        let id = &ids[usize::try_from(i).unwrap() % ids.len()];
        let turn = vec![Message::user("question"), Message::assistant("answer")];
        store.append(id, turn, Expect::Any).await.unwrap();
    }
    let (calls, append) = evalsha(&server);
    assert_eq!(calls, CALLS);

    server.reset_stats().unwrap();
    for i in 0..CALLS {
        let id = &ids[usize::try_from(i).unwrap() % ids.len()];
        store.load_recent(id, 20).await.unwrap().unwrap();
    }
    let (calls, load_recent) = evalsha(&server);
    assert_eq!(calls, CALLS);

    let short = SessionId::new("short").unwrap();
    store
        .append(&short, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    server.reset_stats().unwrap();
    for _ in 0..CALLS {
        store.load(&short).await.unwrap().unwrap();
    }
    let (calls, load) = evalsha(&server);
    assert_eq!(calls, CALLS);
    eprintln!(
        "server time per EVALSHA: append(2 messages) {append:.2} µs, \
         load_recent(20 of 200) {load_recent:.2} µs, load(1 message) {load:.2} µs"
    );
}
