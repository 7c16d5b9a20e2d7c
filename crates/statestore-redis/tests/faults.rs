//! Faults on real servers the test controls: a killed server, a restart
//! with AOF, a failed-over cluster master. Every call must come back with
//! a typed error (never hang, never panic), the same store must recover by
//! itself, and nothing acknowledged may be lost.
#![cfg(feature = "cluster")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis_test_server::{RedisCluster, RedisServer};
use statestore_core::{Error, Expect, Message, SessionId, Store};
use statestore_redis::RedisStore;

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

/// Retries `load` until the server answers again.
async fn wait_until_served(
    store: &RedisStore,
    id: &SessionId,
) -> Option<statestore_core::ConversationState> {
    for _ in 0..200 {
        match store.load(id).await {
            Ok(state) => return state,
            Err(e) => assert!(
                e.is_transient(),
                "non-transient error while recovering: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the store did not recover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_gives_transient_errors_and_the_store_recovers() {
    let mut server = RedisServer::builder().appendonly_always().start().unwrap();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_millis(500))
        .connect(&server.url())
        .await
        .unwrap();
    let id = sid("durable");
    for i in 0..10 {
        store
            .append(
                &id,
                vec![
                    Message::user(format!("q{i}")),
                    Message::assistant(format!("a{i}")),
                ],
                Expect::Any,
            )
            .await
            .unwrap();
    }
    server.kill().unwrap();

    // Every operation fails fast with a transient error: no hang, no panic.
    for op in 0..5 {
        let call = async {
            match op {
                0 => store.load(&id).await.map(|_| ()),
                1 => store.load_recent(&id, 3).await.map(|_| ()),
                2 => store
                    .append(&id, vec![Message::user("lost?")], Expect::Any)
                    .await
                    .map(|_| ()),
                3 => store.exists(&id).await.map(|_| ()),
                _ => store.fork(&id, &sid("copy")).await.map(|_| ()),
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("a call hung on a dead server");
        let err = result.expect_err("a dead server answered");
        assert!(err.is_transient(), "op {op}: {err}");
        assert!(
            matches!(err, Error::Unavailable { .. } | Error::Timeout { .. }),
            "op {op}: {err}"
        );
    }

    server.restart().unwrap();
    // The same store, not a new one, serves again; the AOF kept every
    // acknowledged append.
    let state = wait_until_served(&store, &id)
        .await
        .expect("acknowledged data lost");
    assert_eq!(state.messages.len(), 20);
    assert_eq!(state.version, 10);
    store
        .append(&id, vec![Message::user("after")], Expect::Version(10))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_turns_survive_a_kill_mid_workload() {
    let mut server = RedisServer::builder().appendonly_always().start().unwrap();
    let store = Arc::new(
        RedisStore::builder()
            .response_timeout(Duration::from_millis(500))
            .connect(&server.url())
            .await
            .unwrap(),
    );
    const WRITERS: usize = 8;
    let acked: Arc<Vec<Mutex<Vec<usize>>>> =
        Arc::new((0..WRITERS).map(|_| Mutex::new(Vec::new())).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (store, acked) = (Arc::clone(&store), Arc::clone(&acked));
        tasks.spawn(async move {
            let id = sid(&format!("w{w}"));
            let mut failures = 0;
            for turn in 0.. {
                let pair = vec![
                    Message::user(format!("{turn}:q")),
                    Message::assistant(format!("{turn}:a")),
                ];
                match store.append(&id, pair, Expect::Any).await {
                    Ok(_) => acked[w].lock().unwrap().push(turn),
                    Err(e) => {
                        assert!(e.is_transient(), "{e}");
                        failures += 1;
                        if failures > 3 {
                            return;
                        }
                    }
                }
            }
        });
    }
    // Let some turns land, then pull the plug.
    while acked.iter().map(|a| a.lock().unwrap().len()).sum::<usize>() < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().unwrap();
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    server.restart().unwrap();

    for w in 0..WRITERS {
        let id = sid(&format!("w{w}"));
        let state = wait_until_served(&store, &id).await.expect("session lost");
        let texts: Vec<String> = state
            .messages
            .iter()
            .map(|m| m.text().into_owned())
            .collect();
        // Whole turns only, in order: q then a of the same turn, turns 0, 1, 2, …
        assert_eq!(texts.len() % 2, 0, "w{w}: half a turn is visible");
        let turns: Vec<usize> = texts
            .chunks(2)
            .map(|pair| {
                let q = pair[0].strip_suffix(":q").expect("a question");
                assert_eq!(pair[1].strip_suffix(":a"), Some(q), "w{w}: a split turn");
                q.parse().unwrap()
            })
            .collect();
        assert!(
            turns.iter().enumerate().all(|(i, t)| i == *t),
            "w{w}: {turns:?}"
        );
        // Every acknowledged turn is there; at most the one in flight beyond.
        let acked = acked[w].lock().unwrap().clone();
        assert!(turns.len() >= acked.len(), "w{w}: acknowledged turns lost");
        assert!(
            turns.len() <= acked.len() + 1,
            "w{w}: turns appeared from nowhere"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_serves_again_after_a_cluster_failover() {
    let mut cluster = RedisCluster::start(3, 1).unwrap();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_millis(1000))
        .connect_cluster(&urls)
        .await
        .unwrap();
    let ids: Vec<SessionId> = (0..30).map(|i| sid(&format!("fo-{i}"))).collect();
    for id in &ids {
        store
            .append(id, vec![Message::user("before")], Expect::Any)
            .await
            .unwrap();
    }
    // Kill the first master; its replica takes over.
    cluster.nodes_mut()[0].kill().unwrap();
    for id in &ids {
        let mut served = false;
        for _ in 0..300 {
            match store
                .append(id, vec![Message::user("after")], Expect::Any)
                .await
            {
                Ok(_) => {
                    served = true;
                    break;
                }
                Err(e) => assert!(e.is_transient(), "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served, "{id} was not served again after the failover");
    }
    for id in &ids {
        let state = store.load(id).await.unwrap().expect("session survived");
        let texts: Vec<String> = state
            .messages
            .iter()
            .map(|m| m.text().into_owned())
            .collect();
        assert_eq!(texts.last().map(String::as_str), Some("after"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_replicas_reports_writes_no_replica_acknowledged() {
    let primary = RedisServer::builder()
        .config("repl-diskless-sync-delay", "0")
        .start()
        .unwrap();
    let lonely = RedisStore::builder()
        .wait_for_replicas(1, Duration::from_millis(100))
        .connect(&primary.url())
        .await
        .unwrap();
    let id = sid("unreplicated");
    let err = lonely
        .append(&id, vec![Message::user("x")], Expect::Any)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotReplicated {
                acknowledged: 0,
                required: 1,
                operation: "append",
                ..
            }
        ),
        "{err}"
    );
    // Applied on the primary all the same, as the error says.
    assert_eq!(lonely.load(&id).await.unwrap().unwrap().messages.len(), 1);

    // With a replica attached, the same setting succeeds.
    let _replica = RedisServer::builder()
        .config("replicaof", &format!("127.0.0.1 {}", primary.port()))
        .start()
        .unwrap();
    let replicated = RedisStore::builder()
        .wait_for_replicas(1, Duration::from_millis(500))
        .connect(&primary.url())
        .await
        .unwrap();
    let mut ok = false;
    for _ in 0..50 {
        // The replica needs a moment for its first sync.
        match replicated
            .append(&sid("replicated"), vec![Message::user("y")], Expect::Any)
            .await
        {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(Error::NotReplicated { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(ok, "a replica never acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_by_a_replica_survive_a_failover() {
    let mut cluster = RedisCluster::start(3, 1).unwrap();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_millis(1000))
        .wait_for_replicas(1, Duration::from_secs(2))
        .connect_cluster(&urls)
        .await
        .unwrap();
    let ids: Vec<SessionId> = (0..30).map(|i| sid(&format!("durable-{i}"))).collect();
    for id in &ids {
        for turn in 0..3 {
            store
                .append(id, vec![Message::user(format!("turn {turn}"))], Expect::Any)
                .await
                .unwrap();
        }
    }
    cluster.nodes_mut()[0].kill().unwrap();
    for id in &ids {
        let mut state = None;
        for _ in 0..300 {
            match store.load(id).await {
                Ok(s) => {
                    state = s;
                    break;
                }
                Err(e) => assert!(e.is_transient(), "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let state =
            state.unwrap_or_else(|| panic!("{id}: acknowledged writes lost in the failover"));
        assert_eq!(state.messages.len(), 3, "{id}: acknowledged turns lost");
    }
}
