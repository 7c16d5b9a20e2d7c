//! The long soak behind `cargo xtask soak`: the model-checked mixed load
//! (64 tasks, 200 sessions, append / load_recent / fork / delete) repeated
//! on fresh prefixes for `SOAK_SECONDS` (default 60) on a standalone server
//! and on a 3-master cluster. Ignored in `cargo xtask ci`.
#![cfg(feature = "cluster")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_test_server::{RedisCluster, RedisServer};
use statestore_core::conformance::mixed_load_matches_a_model;
use statestore_redis::RedisStore;

fn budget() -> Duration {
    let secs = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run with cargo xtask soak"]
async fn soak_standalone_and_cluster() {
    let deadline = Instant::now() + budget();
    let server = RedisServer::start().unwrap();
    let cluster = RedisCluster::start(3, 0).unwrap();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut rounds = 0u32;
    while Instant::now() < deadline {
        let prefix = format!("soak{rounds}:");
        let standalone = RedisStore::builder()
            .prefix(&prefix)
            .connect(&server.url())
            .await
            .unwrap();
        mixed_load_matches_a_model(Arc::new(standalone)).await;
        let clustered = RedisStore::builder()
            .prefix(&prefix)
            .connect_cluster(&urls)
            .await
            .unwrap();
        mixed_load_matches_a_model(Arc::new(clustered)).await;
        rounds += 1;
    }
    assert!(rounds > 0);
}
