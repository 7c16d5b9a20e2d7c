//! The shared backend suite against real redis-server processes: a
//! standalone server (ConnectionManager and deadpool pool), a 3-master
//! Redis Cluster, a server that requires an ACL user, and a TLS server.
//! Each case runs on a fresh key prefix.
#![cfg(all(feature = "cluster", feature = "tls", feature = "deadpool"))]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::atomic::{AtomicU32, Ordering};

use redis_test_server::{RedisCluster, RedisServer};
use statestore_core::conformance::run_all;
use statestore_redis::{RedisStore, RedisStoreBuilder};

fn fresh() -> RedisStoreBuilder {
    static N: AtomicU32 = AtomicU32::new(0);
    RedisStore::builder().prefix(format!("case{}:", N.fetch_add(1, Ordering::Relaxed)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    run_all(|| {
        let url = url.clone();
        async move { fresh().connect(&url).await.unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_deadpool_pool() {
    let server = RedisServer::start().unwrap();
    let pool = deadpool_redis::Config::from_url(server.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    run_all(|| {
        let pool = pool.clone();
        async move { fresh().build(pool).unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_three_masters() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let urls = cluster.urls();
    run_all(|| {
        let urls = urls.clone();
        async move {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            fresh().connect_cluster(&urls).await.unwrap()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_limited_to_its_prefix() {
    // The user may touch only keys under `case*`, the prefixes `fresh` makes.
    let server = RedisServer::builder()
        .acl_user("app", "s3cret-pw", "~case* +@all")
        .start()
        .unwrap();
    let url = server.url();
    assert!(
        url.contains("app:s3cret-pw@"),
        "the harness puts credentials in the URL"
    );
    run_all(|| {
        let url = url.clone();
        async move { fresh().connect(&url).await.unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls() {
    let server = RedisServer::builder().tls().start().unwrap();
    let url = server.url();
    assert!(url.starts_with("rediss://"));
    let ca = server.tls().unwrap().ca_cert_pem.clone();
    run_all(|| {
        let (url, ca) = (url.clone(), ca.clone());
        async move {
            fresh()
                .tls_root_certificate(ca)
                .connect(&url)
                .await
                .unwrap()
        }
    })
    .await;
}

/// The TTL's meaning, on stores with a short one (one server for both
/// cases, kept for the life of the test process; its watchdog stops it).
mod expiry {
    use super::{RedisServer, fresh};

    fn url() -> String {
        static SERVER: std::sync::OnceLock<RedisServer> = std::sync::OnceLock::new();
        SERVER.get_or_init(|| RedisServer::start().unwrap()).url()
    }

    statestore_core::expiry_suite!(
        |ttl| async move { fresh().ttl(ttl).connect(&url()).await.unwrap() }
    );
}
