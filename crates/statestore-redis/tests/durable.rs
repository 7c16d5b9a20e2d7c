//! Durable writes (`wait_for_replicas`) on real servers: a lagging replica
//! delays only the writes waiting for it, and each `WAIT` runs on the
//! connection that made the write.
#![cfg(feature = "cluster")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis_test_server::{RedisCluster, RedisServer};
use statestore_core::{Error, Expect, Message, SessionId, Store};
use statestore_redis::RedisStore;

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

/// A primary with one replica that finished its first sync.
fn primary_with_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::builder()
        .config("repl-diskless-sync-delay", "0")
        .start()
        .unwrap();
    let replica = RedisServer::builder()
        .config("replicaof", &format!("127.0.0.1 {}", primary.port()))
        .start()
        .unwrap();
    for _ in 0..200 {
        let info = primary.cli(&["INFO", "replication"]).unwrap();
        if info.contains("connected_slaves:1") && info.contains("state=online") {
            return (primary, replica);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the replica never came online");
}

/// `CLIENT LIST` lines of clients blocked in `WAIT`.
fn clients_in_wait(server: &RedisServer) -> Vec<String> {
    server
        .cli(&["CLIENT", "LIST"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(" cmd=wait "))
        .map(str::to_owned)
        .collect()
}

/// The Redis client id of a `CLIENT LIST` line.
fn client_id(line: &str) -> &str {
    line.split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .expect("an id field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_delays_only_the_writes_that_wait_for_it() {
    const WRITES: usize = 32;
    const LOADS: usize = 200;
    let (primary, replica) = primary_with_replica();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_secs(1))
        .wait_for_replicas(1, Duration::from_secs(4))
        .durable_connections(WRITES)
        .connect(&primary.url())
        .await
        .unwrap();
    let ids: Vec<SessionId> = (0..WRITES).map(|i| sid(&format!("d{i}"))).collect();
    // The replica is up: a durable write succeeds.
    for id in &ids {
        store
            .append(id, vec![Message::user("before")], Expect::Any)
            .await
            .unwrap();
    }

    replica.pause().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut writes = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let (store, done) = (store.clone(), Arc::clone(&done));
        writes.spawn(async move {
            let result = store
                .append(&id, vec![Message::user("during")], Expect::Any)
                .await;
            (done.fetch_add(1, Ordering::SeqCst), result)
        });
    }
    // Every durable write is blocked in a WAIT of its own connection.
    let mut waiting = Vec::new();
    for _ in 0..200 {
        waiting = clients_in_wait(&primary);
        if waiting.len() == WRITES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        waiting.len(),
        WRITES,
        "each durable write waits on its own connection: {waiting:#?}"
    );

    let mut loads = tokio::task::JoinSet::new();
    for i in 0..LOADS {
        let (store, done, id) = (store.clone(), Arc::clone(&done), ids[i % WRITES].clone());
        loads.spawn(async move {
            let result = store.load_recent(&id, 5).await;
            (done.fetch_add(1, Ordering::SeqCst), result)
        });
    }
    let mut last_load = 0;
    while let Some(joined) = loads.join_next().await {
        let (order, result) = joined.unwrap();
        let recent = result.expect("a load failed while writes waited for a replica");
        assert!(recent.is_some());
        last_load = last_load.max(order);
    }
    let mut first_write = usize::MAX;
    let mut outcomes = Vec::new();
    while let Some(joined) = writes.join_next().await {
        let (order, result) = joined.unwrap();
        first_write = first_write.min(order);
        outcomes.push(result);
    }
    assert!(
        last_load < first_write,
        "a load finished after a durable write returned (last load #{last_load}, first write #{first_write})"
    );
    for result in outcomes {
        assert!(
            matches!(
                result,
                Err(Error::NotReplicated {
                    acknowledged: 0,
                    required: 1,
                    operation: "append",
                    ..
                })
            ),
            "{result:?}"
        );
    }
    // Applied on the primary, as NotReplicated says.
    for id in &ids {
        let state = store.load(id).await.unwrap().unwrap();
        assert_eq!(state.messages.len(), 2, "{id}");
    }
    replica.resume().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_runs_on_the_connection_that_wrote_not_the_shared_one() {
    let (primary, replica) = primary_with_replica();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_secs(2))
        .wait_for_replicas(1, Duration::from_secs(30))
        .durable_connections(1)
        .connect(&primary.url())
        .await
        .unwrap();
    let id = sid("killed-mid-write");
    store
        .append(&id, vec![Message::user("first")], Expect::Any)
        .await
        .unwrap();
    // Shared connection: the one that ran the last load.
    store.load(&id).await.unwrap();
    let shared: Vec<String> = primary
        .cli(&["CLIENT", "LIST"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(" cmd=exec "))
        .map(str::to_owned)
        .collect();
    assert_eq!(shared.len(), 1, "{shared:#?}");

    replica.pause().unwrap();
    let write = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            store
                .append(&id, vec![Message::user("second")], Expect::Any)
                .await
        })
    };
    let mut waiting = Vec::new();
    for _ in 0..200 {
        waiting = clients_in_wait(&primary);
        if !waiting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waiting.len(), 1, "{waiting:#?}");
    let writer = client_id(&waiting[0]).to_owned();
    assert_ne!(
        writer,
        client_id(&shared[0]),
        "WAIT ran on the shared connection"
    );
    // Cut the writing connection after its script ran, mid-WAIT: the write
    // must not be reported as replicated, and must not be silently redone
    // on another connection.
    primary.cli(&["CLIENT", "KILL", "ID", &writer]).unwrap();
    // Loads meanwhile are served (the shared connection was not cut).
    assert_eq!(store.load(&id).await.unwrap().unwrap().messages.len(), 2);
    let result = write.await.unwrap();
    assert!(
        matches!(
            result,
            Err(Error::NotReplicated {
                acknowledged: 0,
                ..
            })
        ),
        "{result:?}"
    );
    replica.resume().unwrap();
    // The pool replaces the dropped connection: the next durable write
    // (replica back; WAIT allows it 30 s to catch up) succeeds on top of
    // exactly the two earlier messages.
    let version = store
        .append(&id, vec![Message::user("third")], Expect::Version(2))
        .await
        .unwrap();
    assert_eq!(version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_replicas_is_refused_on_a_shared_connection() {
    let server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
    let err = RedisStore::builder()
        .wait_for_replicas(1, Duration::from_secs(1))
        .build(manager.clone())
        .unwrap_err();
    assert!(
        matches!(
            err,
            statestore_redis::Error::WaitNeedsOwnConnections {
                connection: "ConnectionManager"
            }
        ),
        "{err}"
    );
    // Without waiting, the same connection is fine.
    RedisStore::builder().build(manager).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_on_a_cluster_wait_on_the_slot_master() {
    let cluster = RedisCluster::start(3, 1).unwrap();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_secs(1))
        .wait_for_replicas(1, Duration::from_secs(2))
        .connect_cluster(&urls)
        .await
        .unwrap();
    let masters = &cluster.nodes()[..3];
    for m in masters {
        m.reset_stats().unwrap();
    }
    const IDS: usize = 30;
    for i in 0..IDS {
        store
            .append(
                &sid(&format!("c{i}")),
                vec![Message::user("x")],
                Expect::Any,
            )
            .await
            .unwrap();
    }
    // Every WAIT ran on a master, one per write, next to its script: each
    // master saw as many WAITs as write scripts, and some master saw each.
    let mut waits = 0;
    for m in masters {
        let stats = m.command_stats().unwrap();
        let w = stats.get("wait").copied().unwrap_or(0);
        let scripts = stats.get("evalsha").copied().unwrap_or(0);
        assert_eq!(w, scripts, "port {}: {stats:?}", m.port());
        waits += w;
    }
    assert_eq!(waits, IDS as u64);
}
