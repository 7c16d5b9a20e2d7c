//! Exactly-once appends when a reply is lost: a [`FaultProxy`] between the
//! client and a real redis-server lets a request through and drops the
//! connection before its reply, so the client cannot know whether the
//! append landed. Retrying with the same key — by the caller, or by the
//! cluster client on its own — must be a replay, never a second append.
#![cfg(feature = "cluster")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::time::Duration;

use redis_test_server::{FaultProxy, RedisCluster, RedisServer};
use statestore_core::{
    Append, Appended, Error, Expect, IdempotencyKey, Message, SessionId, Store, WriteOutcome,
};
use statestore_redis::RedisStore;

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn turn(n: usize) -> Vec<Message> {
    vec![
        Message::user(format!("question {n}")),
        Message::assistant(format!("answer {n}")),
    ]
}

fn texts(store_state: &statestore_core::ConversationState) -> Vec<String> {
    store_state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect()
}

/// Retries `append` until the store answers (the connection is re-made
/// after the drop); every failure on the way must leave the outcome
/// unknown, never claim it was not written.
async fn retry(store: &RedisStore, id: &SessionId, append: &Append) -> Appended {
    for _ in 0..100 {
        match store.append_with(id, append.clone()).await {
            Ok(done) => return done,
            Err(e) => {
                assert_eq!(e.write_outcome(), WriteOutcome::Unknown, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("the store did not answer again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_retried_with_the_same_key_is_a_replay() {
    let server = RedisServer::start().unwrap();
    let proxy = FaultProxy::start(server.port()).await.unwrap();
    let through_proxy = RedisStore::builder()
        .response_timeout(Duration::from_secs(5))
        .connect(&proxy.url())
        .await
        .unwrap();
    let direct = RedisStore::builder().connect(&server.url()).await.unwrap();
    let id = sid("lost-reply");

    // One turn each with no expectation and with an exact version: the
    // retry's expectation no longer holds, and must not matter.
    for (n, expect) in [(0, Expect::Any), (1, Expect::Version(1))] {
        let append = Append::new(turn(n))
            .expect(expect)
            .key(IdempotencyKey::new(format!("turn-{n}")).unwrap())
            .count("turns", 1);
        proxy.drop_next_reply();
        let err: Error = through_proxy
            .append_with(&id, append.clone())
            .await
            .expect_err("the reply was dropped");
        assert_eq!(err.write_outcome(), WriteOutcome::Unknown, "{err}");
        assert_eq!(proxy.dropped_replies(), n as u64 + 1);

        // It landed: the server executed the request.
        let state = direct.load(&id).await.unwrap().unwrap();
        assert_eq!(state.version, n as u64 + 1, "{expect:?}");

        let again = retry(&through_proxy, &id, &append).await;
        assert!(again.replayed, "{expect:?}: the retry was applied again");
        assert_eq!(
            (again.version, again.first_position, again.messages),
            (n as u64 + 1, 2 * n as u64, 2),
            "{expect:?}: the replay reports the original outcome"
        );
    }
    let state = direct.load(&id).await.unwrap().unwrap();
    assert_eq!(
        texts(&state),
        ["question 0", "answer 0", "question 1", "answer 1"],
        "each turn exactly once"
    );
    assert_eq!(state.version, 2);
    assert_eq!(state.counters.get("turns"), Some(&2), "counted once each");
}

/// The ranges of slots a cluster node serves, from its `CLUSTER NODES`.
fn own_slots(node: &RedisServer) -> Vec<(u16, u16)> {
    let nodes = node.cli(&["CLUSTER", "NODES"]).unwrap();
    let myself = nodes
        .lines()
        .find(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("myself")))
        .unwrap()
        .to_owned();
    myself
        .split(' ')
        .skip(8)
        .filter_map(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// A session id whose keys live on `node`.
fn id_on(node: &RedisServer, prefix: &str) -> SessionId {
    let slots = own_slots(node);
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| {
            let slot: u16 = node
                .cli(&["CLUSTER", "KEYSLOT", &format!("{{{id}}}:h")])
                .unwrap()
                .parse()
                .unwrap();
            slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })
        .map(|id| sid(&id))
        .unwrap()
}

fn evalsha_calls(node: &RedisServer) -> u64 {
    node.command_stats()
        .unwrap()
        .get("evalsha")
        .copied()
        .unwrap_or(0)
}

/// A 3-master cluster whose first node announces a [`FaultProxy`]'s port,
/// so that every client reaches that node's slots through the proxy (the
/// cluster bus keeps its own port), and seeds of the other nodes.
async fn proxied_cluster() -> (RedisCluster, FaultProxy, Vec<String>) {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let node = &cluster.nodes()[0];
    let proxy = FaultProxy::start(node.port()).await.unwrap();
    node.cli(&[
        "CONFIG",
        "SET",
        "cluster-announce-port",
        &proxy.port().to_string(),
    ])
    .unwrap();
    let announced = format!("127.0.0.1:{}@", proxy.port());
    let mut seen = false;
    for _ in 0..100 {
        seen = cluster.nodes().iter().all(|n| {
            n.cli(&["CLUSTER", "NODES"])
                .is_ok_and(|out| out.contains(&announced))
        });
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the new address did not spread");
    let seeds: Vec<String> = cluster.nodes()[1..].iter().map(RedisServer::url).collect();
    (cluster, proxy, seeds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_clients_own_resend_is_a_replay() {
    let (cluster, proxy, seeds) = proxied_cluster().await;
    let node = &cluster.nodes()[0];
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();

    // The control: a plain INCR through the same client is applied twice,
    // because the cluster client re-sends it after the dropped connection.
    let mut raw = redis::cluster::ClusterClient::new(seeds.clone())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let counter = format!("{{{}}}:counter", id_on(node, "control").as_str());
    proxy.drop_next_reply();
    let _: i64 = redis::cmd("INCR")
        .arg(&counter)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(proxy.dropped_replies(), 1);
    assert_eq!(
        node.cli(&["GET", &counter]).unwrap(),
        "2",
        "the cluster client re-sent the request whose reply was lost"
    );
    let store = RedisStore::builder()
        .response_timeout(Duration::from_secs(5))
        .connect_cluster(&seeds)
        .await
        .unwrap();

    // An unkeyed append: the store's own key makes the client's re-send a replay.
    let id = id_on(node, "resend");
    store
        .append(&id, vec![Message::user("warm-up")], Expect::Any)
        .await
        .unwrap();
    node.reset_stats().unwrap();
    proxy.drop_next_reply();
    let version = store
        .append(&id, turn(1), Expect::Version(1))
        .await
        .expect("the cluster client re-sends after the dropped connection");
    assert_eq!(proxy.dropped_replies(), 2);
    assert_eq!(
        evalsha_calls(node),
        2,
        "the request ran twice on the node: once dropped, once re-sent"
    );
    assert_eq!(version, 2, "the re-send reports the first outcome");
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        texts(&state),
        ["warm-up", "question 1", "answer 1"],
        "applied once"
    );
    assert_eq!(state.version, 2);

    // A keyed append with counters: the same, and the re-send's replay is
    // known as this call's own write (its token came back with it): not
    // reported as an earlier call's.
    node.reset_stats().unwrap();
    proxy.drop_next_reply();
    let appended = store
        .append_with(
            &id,
            Append::new(turn(2))
                .expect(Expect::Version(2))
                .key(IdempotencyKey::new("turn-2").unwrap())
                .count("turns", 1),
        )
        .await
        .expect("the cluster client re-sends after the dropped connection");
    assert_eq!(proxy.dropped_replies(), 3);
    assert_eq!(evalsha_calls(node), 2);
    assert!(
        !appended.replayed,
        "the write is this call's, though what ran last was the re-send's replay"
    );
    assert_eq!((appended.version, appended.first_position), (3, 3));
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 5, "applied once");
    assert_eq!(state.counters.get("turns"), Some(&1), "counted once");

    // A second call with the key is a replay of the first call's write.
    let repeat = store
        .append_with(
            &id,
            Append::new(turn(2))
                .key(IdempotencyKey::new("turn-2").unwrap())
                .count("turns", 1),
        )
        .await
        .unwrap();
    assert!(repeat.replayed, "another call's write");
    assert_eq!((repeat.version, repeat.first_position), (3, 3));
    assert_eq!(
        store
            .load(&id)
            .await
            .unwrap()
            .unwrap()
            .counters
            .get("turns"),
        Some(&1)
    );
}

/// Every kind of write, its reply dropped and the request re-sent by the
/// cluster client: applied once, and the call reports what its first run
/// did — no `Conflict` for a save or metadata merge that happened, no
/// second summary, no `AlreadyExists` for the fork it made, no `false` from
/// the delete that deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_the_cluster_client_resends_applies_once() {
    let (cluster, proxy, seeds) = proxied_cluster().await;
    let node = &cluster.nodes()[0];
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_secs(5))
        .connect_cluster(&seeds)
        .await
        .unwrap();
    let id = id_on(node, "every");
    store.append(&id, turn(1), Expect::Any).await.unwrap();
    let mut dropped = 0;
    // Drops the reply of the next request to the node; checks that it ran
    // twice there (once dropped, once re-sent).
    let mut resent = async |what: &str| {
        node.reset_stats().unwrap();
        proxy.drop_next_reply();
        dropped += 1;
        (what.to_owned(), dropped)
    };
    let check = |what: &str, expected: u64| {
        assert_eq!(
            proxy.dropped_replies(),
            expected,
            "{what}: no reply was dropped"
        );
        assert_eq!(evalsha_calls(node), 2, "{what}: not re-sent");
    };

    let mut state = store.load(&id).await.unwrap().unwrap();
    state.keep_last(1);
    let (what, n) = resent("save").await;
    let version = store.save(&state, Expect::Version(1)).await.unwrap();
    check(&what, n);
    assert_eq!(version, 2);
    assert_eq!(store.load(&id).await.unwrap().unwrap().version, 2);

    let mut patch = statestore_core::Metadata::new();
    patch.insert("plan".into(), serde_json::json!("pro"));
    let (what, n) = resent("merge_metadata").await;
    let version = store
        .merge_metadata(&id, patch, Expect::Version(2))
        .await
        .unwrap();
    check(&what, n);
    assert_eq!(version, 3);

    store.append(&id, turn(2), Expect::Any).await.unwrap();
    let (what, n) = resent("add_summary").await;
    let version = store
        .add_summary(
            &id,
            statestore_core::Summary::new(0..1, "earlier"),
            Expect::Version(4),
        )
        .await
        .unwrap();
    check(&what, n);
    assert_eq!(version, 5);
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.summaries.len(), 1, "one summary");
    assert_eq!(loaded.version, 5);

    // The fork's target on the proxied node: its write is the one re-sent.
    let target = id_on(node, "every-fork");
    let (what, n) = resent("fork").await;
    // The source is read first (on its node, also behind the proxy): the
    // dropped reply may be that read's, re-sent as harmlessly.
    let forked = store.fork(&id, &target).await;
    assert_eq!(forked.unwrap(), 1, "{what}");
    assert_eq!(proxy.dropped_replies(), n, "{what}: no reply was dropped");
    let copy = store.load(&target).await.unwrap().unwrap();
    assert_eq!(copy.version, 1);
    assert_eq!(copy.messages.len(), loaded.messages.len());

    let (what, n) = resent("delete").await;
    assert!(store.delete(&target).await.unwrap(), "{what}: it deleted");
    check(&what, n);
    assert!(!store.exists(&target).await.unwrap());
    // A later delete, a new call, finds nothing.
    assert!(!store.delete(&target).await.unwrap());

    let (what, n) = resent("touch").await;
    assert!(store.touch(&id).await.unwrap());
    check(&what, n);
    assert_eq!(store.load(&id).await.unwrap().unwrap().version, 5);
}
