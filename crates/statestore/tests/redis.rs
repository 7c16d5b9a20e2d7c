//! `statestore::open` on Redis: each URL form against throwaway
//! `redis-server`s, every option observed on the server.
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_test_server::RedisServer;
use statestore::{Expect, Message, OpenError, SessionId, Store};

async fn round_trip(store: &Arc<dyn Store>, id: &str) {
    let id = SessionId::new(id).unwrap();
    store
        .append(&id, vec![Message::user("hello")], Expect::Absent)
        .await
        .unwrap();
    let state = store.load(&id).await.unwrap().expect("saved");
    assert_eq!(state.messages[0].text(), "hello");
}

fn keys(server: &RedisServer) -> Vec<String> {
    let out = server.cli(&["KEYS", "*"]).unwrap();
    out.lines().map(str::to_owned).collect()
}

/// The list indexes (`P{ix}:…`) hold no conversation and outlive each
/// session's TTL by design: listing removes expired sessions' entries.
fn is_list_index(key: &str) -> bool {
    key.contains("{ix")
}

#[tokio::test]
async fn redis_url_opens_with_prefix_and_ttl() {
    let server = RedisServer::start().unwrap();
    let url = format!("{}?prefix=tenant-a:&ttl=30m", server.url());
    let store = statestore::open(&url).await.unwrap();
    round_trip(&store, "s").await;

    let keys = keys(&server);
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(key.starts_with("tenant-a:"), "{key} lacks the prefix");
        if is_list_index(key) {
            continue;
        }
        let pttl: i64 = server.cli(&["PTTL", key]).unwrap().parse().unwrap();
        assert!(
            pttl > 29 * 60_000 && pttl <= 30 * 60_000,
            "{key}: PTTL {pttl}"
        );
    }
}

#[tokio::test]
async fn without_options_keys_have_no_prefix_and_no_ttl() {
    let server = RedisServer::start().unwrap();
    let store = statestore::open(&server.url()).await.unwrap();
    round_trip(&store, "s").await;
    for key in keys(&server) {
        assert!(!key.starts_with("tenant"), "{key}");
        assert_eq!(server.cli(&["PTTL", &key]).unwrap(), "-1", "{key}");
    }
}

#[tokio::test]
async fn options_apply_and_the_url_wins() {
    let server = RedisServer::start().unwrap();
    let options = statestore::Options::new()
        .prefix("from-options:")
        .ttl(Duration::from_secs(3600));
    let store = statestore::open_with(&format!("{}?ttl=60", server.url()), options)
        .await
        .unwrap();
    round_trip(&store, "s").await;
    for key in keys(&server) {
        assert!(key.starts_with("from-options:"), "{key}");
        if is_list_index(&key) {
            continue;
        }
        let pttl: i64 = server.cli(&["PTTL", &key]).unwrap().parse().unwrap();
        assert!(pttl > 0 && pttl <= 60_000, "{key}: PTTL {pttl}");
    }
}

#[tokio::test]
async fn the_database_number_selects_the_database() {
    let server = RedisServer::start().unwrap();
    let store = statestore::open(&format!("{}/3", server.url()))
        .await
        .unwrap();
    round_trip(&store, "s").await;
    assert_eq!(server.cli(&["-n", "0", "DBSIZE"]).unwrap(), "0");
    assert_ne!(server.cli(&["-n", "3", "DBSIZE"]).unwrap(), "0");
}

#[tokio::test]
async fn timeout_bounds_an_operation_on_a_hung_server() {
    let server = RedisServer::start().unwrap();
    let store = statestore::open(&format!("{}?timeout=300ms", server.url()))
        .await
        .unwrap();
    round_trip(&store, "s").await;
    server.pause().unwrap();
    let started = Instant::now();
    let err = store
        .load(&SessionId::new("s").unwrap())
        .await
        .expect_err("the server is paused");
    let took = started.elapsed();
    server.resume().unwrap();
    assert!(
        matches!(err, statestore::Error::Timeout { after, .. } if after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn connect_timeout_bounds_connecting_to_a_hung_server() {
    let server = RedisServer::start().unwrap();
    server.pause().unwrap();
    let started = Instant::now();
    let result = statestore::open(&format!("{}?connect_timeout=100ms", server.url())).await;
    let took = started.elapsed();
    server.resume().unwrap();
    let err = result.expect_err("the server is paused");
    assert!(matches!(err, OpenError::Redis { .. }), "{err:?}");
    // The default (1 s, and up to three times that in all) would take longer.
    assert!(took < Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn wait_for_replicas_fails_writes_no_replica_acknowledged() {
    let server = RedisServer::start().unwrap();
    let url = format!("{}?wait_for_replicas=1&wait_timeout=100ms", server.url());
    let store = statestore::open(&url).await.unwrap();
    let id = SessionId::new("s").unwrap();
    let err = store
        .append(&id, vec![Message::user("hello")], Expect::Absent)
        .await
        .expect_err("a standalone server has no replica");
    assert!(
        matches!(err, statestore::Error::NotReplicated { .. }),
        "{err:?}"
    );
    // Applied on the primary all the same.
    assert!(store.exists(&id).await.unwrap());

    let e = statestore::open(&format!("{}?wait_timeout=1s", server.url()))
        .await
        .expect_err("wait_timeout alone");
    assert!(e.to_string().contains("needs wait_for_replicas"), "{e}");
}

#[tokio::test]
async fn eviction_refuse_rejects_an_unsafe_policy() {
    let server = RedisServer::builder()
        .config("maxmemory-policy", "allkeys-lru")
        .start()
        .unwrap();
    let err = statestore::open(&format!("{}?eviction=refuse", server.url()))
        .await
        .expect_err("allkeys-lru is unsafe");
    assert!(
        matches!(
            err,
            OpenError::Redis {
                source: statestore::redis::Error::UnsafeEvictionPolicy { .. },
                ..
            }
        ),
        "{err:?}"
    );
    // The default warns and connects.
    let store = statestore::open(&server.url()).await.unwrap();
    round_trip(&store, "s").await;
}

#[tokio::test]
async fn unknown_and_malformed_options_are_named() {
    let server = RedisServer::start().unwrap();
    for (query, option, says) in [
        ("ttl=soon", "ttl", "not a duration"),
        ("timeout=1.5s", "timeout", "not a duration"),
        ("wait_for_replicas=-1", "wait_for_replicas", "whole number"),
        ("eviction=sometimes", "eviction", "warn, refuse, ignore"),
        ("sync=full", "sync", "unknown option for redis:// URLs"),
        ("tls_ca=/ca.pem", "tls_ca", "unknown option"),
    ] {
        let err = statestore::open(&format!("{}?{query}", server.url()))
            .await
            .expect_err(query);
        assert!(
            matches!(&err, OpenError::InvalidOption { option: o, .. } if o == option),
            "{query}: {err:?}"
        );
        assert!(err.to_string().contains(says), "{query}: {err}");
    }
    let port = server.port();
    let err = statestore::open(&format!("redis://127.0.0.1:{port},127.0.0.1:{port}"))
        .await
        .expect_err("two hosts");
    assert!(err.to_string().contains("redis+cluster://"), "{err}");
}

#[tokio::test]
async fn passwords_never_appear_in_errors_or_debug() {
    const PASSWORD: &str = "s3cret-pw";
    let server = RedisServer::builder()
        .acl_user("app", PASSWORD, "~* +@all")
        .start()
        .unwrap();
    assert!(server.url().contains(PASSWORD));

    // The right password: connects; the store's Debug does not show it.
    let store = statestore::open(&server.url()).await.unwrap();
    round_trip(&store, "s").await;
    assert!(!format!("{store:?}").contains(PASSWORD));

    let port = server.port();
    let wrong = "wr0ng-pw";
    let show = |e: &OpenError| {
        let mut all = format!("{e} | {e:?}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            all.push_str(&format!(" | {s} | {s:?}"));
            source = s.source();
        }
        all
    };
    for url in [
        // Refused credentials.
        format!("redis://app:{wrong}@127.0.0.1:{port}"),
        // Malformed in several ways, each with a password in it.
        format!("redis://app:{wrong}@127.0.0.1:notaport"),
        format!("redis://app:{wrong}@127.0.0.1:{port}/notadb"),
        format!("redis://app:{wrong}@127.0.0.1:{port}?ttl=never"),
        format!("redis://app:{wrong}@127.0.0.1:{port}?unknown={wrong}"),
        format!("redis://app:{wrong}@127.0.0.1:{port}#frag"),
        format!("redis://{wrong}@127.0.0.1:{port}"),
    ] {
        let err = statestore::open(&url).await.expect_err(&url);
        let text = show(&err);
        assert!(!text.contains(wrong), "{url}: {text}");
        assert!(err.url().contains("***"), "{url}: {}", err.url());
    }
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn rediss_with_tls_ca_opens_and_round_trips() {
    let server = RedisServer::builder().tls().start().unwrap();
    let tls = server.tls().unwrap();
    assert!(server.url().starts_with("rediss://"));
    let ca = tls.ca_cert.to_str().unwrap();
    let store = statestore::open(&format!("{}?tls_ca={ca}", server.url()))
        .await
        .unwrap();
    round_trip(&store, "s").await;

    // The CA in Options works too…
    let options = statestore::Options::new().tls_root_certificate(tls.ca_cert_pem.clone());
    let store = statestore::open_with(&server.url(), options).await.unwrap();
    round_trip(&store, "t").await;

    // …and without it the server's certificate is not trusted.
    let other = tls.other_ca_cert.to_str().unwrap();
    let err = statestore::open(&format!(
        "{}?tls_ca={other}&connect_timeout=500ms",
        server.url()
    ))
    .await
    .expect_err("untrusted certificate");
    assert!(matches!(err, OpenError::Redis { .. }), "{err:?}");
    let err = statestore::open(&format!("{}?tls_ca=/nonexistent/ca.pem", server.url()))
        .await
        .expect_err("no such file");
    assert!(
        err.to_string().contains("cannot read the CA certificate"),
        "{err}"
    );
}

#[cfg(feature = "redis-cluster")]
#[tokio::test]
async fn cluster_url_opens_through_seed_nodes() {
    use redis_test_server::RedisCluster;

    let cluster = RedisCluster::start(3, 0).unwrap();
    let seeds: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.trim_start_matches("redis://").to_owned())
        .collect();
    let url = format!("redis+cluster://{}?prefix=c:&ttl=1h", seeds.join(","));
    let store = statestore::open(&url).await.unwrap();
    for n in 0..10 {
        round_trip(&store, &format!("session-{n}")).await;
    }
    // Sessions spread over the masters; every key has the prefix and the TTL.
    let mut all = Vec::new();
    for node in cluster.nodes() {
        all.extend(keys(node).into_iter().map(|k| (node, k)));
    }
    assert!(all.len() >= 10, "{all:?}");
    for (node, key) in &all {
        assert!(key.starts_with("c:"), "{key}");
        if is_list_index(key) {
            continue;
        }
        let pttl: i64 = node.cli(&["PTTL", key]).unwrap().parse().unwrap();
        assert!(pttl > 0 && pttl <= 3_600_000, "{key}: {pttl}");
    }

    // One seed is enough.
    let store = statestore::open(&format!("redis+cluster://{}", seeds[1]))
        .await
        .unwrap();
    round_trip(&store, "one-seed").await;

    // Wrong credentials: the error names the nodes, not the password.
    let err = statestore::open(&format!(
        "redis+cluster://nouser:wr0ng-pw@{}?connect_timeout=500ms",
        seeds.join(",")
    ))
    .await
    .expect_err("wrong password");
    let text = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert!(!text.contains("wr0ng-pw"), "{text}");

    for bad in [
        format!("redis+cluster://{}/2", seeds[0]),
        format!("redis+cluster://{},", seeds[0]),
    ] {
        let err = statestore::open(&bad).await.expect_err(&bad);
        assert!(
            matches!(err, OpenError::InvalidUrl { .. }),
            "{bad}: {err:?}"
        );
    }
}
