//! `list` from the list indexes (`keys.rs`), on real servers: a page's
//! work does not grow with the keyspace, sessions written before the
//! indexes are found by the rebuild, stale entries (expired, re-owned) are
//! never listed and are removed, and a cluster keeps the indexes too.
#![cfg(feature = "cluster")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use redis_test_server::{RedisCluster, RedisServer};
use statestore_core::{ConversationState, Expect, ListQuery, Message, SessionId, Store};
use statestore_redis::RedisStore;

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

/// Calls per command since the last call (`INFO commandstats`, read over a
/// connection of the test).
struct Commands {
    conn: redis::aio::MultiplexedConnection,
    before: BTreeMap<String, u64>,
}

impl Commands {
    async fn new(url: &str) -> Self {
        let client = redis::Client::open(url).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut this = Self {
            conn,
            before: BTreeMap::new(),
        };
        this.since().await;
        this
    }

    async fn since(&mut self) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await
            .unwrap();
        let now: BTreeMap<String, u64> = redis_test_server::parse_command_stats(&info)
            .unwrap()
            .into_iter()
            .map(|(name, stats)| (name, stats.calls))
            .collect();
        let delta = now
            .iter()
            .map(|(name, calls)| {
                (
                    name.clone(),
                    calls - self.before.get(name).copied().unwrap_or(0),
                )
            })
            .filter(|(_, calls)| *calls > 0)
            .collect();
        self.before = now;
        delta
    }
}

async fn owned(store: &RedisStore, id: &str, user: &str) {
    let state = ConversationState::new(sid(id))
        .with_user_id(user)
        .with_messages([Message::user("hi")]);
    store.save(&state, Expect::Any).await.unwrap();
}

/// A page of a user's most recent sessions is one `ZRANGE` and one read of
/// each session on the page, whether the store holds 20 sessions or 2,000
/// beside 200,000 foreign keys: no `SCAN`, nothing per session stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_costs_the_same_at_any_size() {
    let server = RedisServer::builder()
        .config("enable-debug-command", "yes")
        .start()
        .unwrap();
    server
        .cli(&["DEBUG", "POPULATE", "200000", "other:"])
        .unwrap();
    let store = RedisStore::builder()
        .prefix("app:")
        .connect(&server.url())
        .await
        .unwrap();
    let mut stats = Commands::new(&server.url()).await;
    // The first listing of a store builds the indexes once (a scan).
    store.list(&ListQuery::new()).await.unwrap();
    assert!(stats.since().await.contains_key("scan"));
    for (total, users) in [(20usize, 2usize), (2_000, 2)] {
        for i in 0..total {
            owned(
                &store,
                &format!("s{total}-{i:05}"),
                &format!("user{}", i % users),
            )
            .await;
            // The sessions the two pages read, each in a millisecond of its
            // own (ties at a cursor's score cost a batch more: list.rs).
            if i + 12 >= total {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        stats.since().await;
        let page = store
            .list(&ListQuery::for_user("user1").recent().with_limit(5))
            .await
            .unwrap();
        assert_eq!(page.sessions.len(), 5);
        let newest = format!("s{total}-{:05}", total - 1);
        assert_eq!(page.sessions[0].id.as_str(), newest, "newest first");
        let calls = stats.since().await;
        assert_eq!(calls.get("zrange"), Some(&1), "{total}: {calls:?}");
        assert_eq!(
            calls.get("hmget"),
            Some(&6),
            "{total}: limit + 1 headers: {calls:?}"
        );
        assert!(!calls.contains_key("scan"), "{total}: {calls:?}");
        // The next page, from the cursor: the same work (user1's last 5 of
        // 10 at 20 sessions; 5 and a look-ahead at 2,000).
        let headers = if total == 20 { 5 } else { 6 };
        let next = ListQuery::for_user("user1")
            .recent()
            .with_limit(5)
            .after(page.next_cursor.clone());
        assert_eq!(store.list(&next).await.unwrap().sessions.len(), 5);
        let calls = stats.since().await;
        assert_eq!(
            calls.get("zrange"),
            Some(&1),
            "{total}, from a cursor: {calls:?}"
        );
        assert_eq!(
            calls.get("hmget"),
            Some(&headers),
            "{total}, from a cursor: {calls:?}"
        );
    }
}

/// Sessions written before the indexes existed (here: their index keys and
/// mark deleted by hand) are listed by a store that finds no mark: its
/// first listing rebuilds them from the headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_before_the_indexes_are_found_by_the_rebuild() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder()
        .prefix("old:")
        .connect(&server.url())
        .await
        .unwrap();
    for i in 0..30 {
        owned(
            &store,
            &format!("s{i:02}"),
            if i % 2 == 0 { "even" } else { "odd" },
        )
        .await;
    }
    let before = store
        .list(&ListQuery::new().recent().with_limit(100))
        .await
        .unwrap();
    let keys = server.cli(&["--scan", "--pattern", "old:{ix*"]).unwrap();
    for key in keys.lines() {
        server.cli(&["DEL", key]).unwrap();
    }
    let fresh = RedisStore::builder()
        .prefix("old:")
        .connect(&server.url())
        .await
        .unwrap();
    let after = fresh
        .list(&ListQuery::new().recent().with_limit(100))
        .await
        .unwrap();
    assert_eq!(after, before, "the rebuild restores the same listing");
    let evens = fresh
        .list(&ListQuery::for_user("even").with_limit(100))
        .await
        .unwrap();
    assert_eq!(evens.sessions.len(), 15);
    assert_eq!(server.cli(&["EXISTS", "old:{ix}:built"]).unwrap(), "1");
}

/// Expired sessions leave their index entries behind (Redis removes only
/// their keys): a listing never returns them and removes the entries it
/// met; a session moved to another user by `save` leaves the first user's
/// list in the same step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_never_listed_and_are_removed() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let store = RedisStore::builder()
        .prefix("t:")
        .ttl(Duration::from_millis(300))
        .connect(&url)
        .await
        .unwrap();
    for i in 0..5 {
        owned(&store, &format!("gone{i}"), "alice").await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    owned(&store, "kept", "alice").await;
    assert_eq!(server.cli(&["ZCARD", "t:{ix:alice}:recent"]).unwrap(), "6");
    let page = store
        .list(&ListQuery::for_user("alice").recent().with_count())
        .await
        .unwrap();
    assert_eq!(page.into_ids(), [sid("kept")]);
    assert_eq!(server.cli(&["ZCARD", "t:{ix:alice}:recent"]).unwrap(), "1");
    assert_eq!(server.cli(&["ZCARD", "t:{ix:alice}:ids"]).unwrap(), "1");

    owned(&store, "kept", "bob").await;
    assert_eq!(server.cli(&["ZCARD", "t:{ix:alice}:recent"]).unwrap(), "0");
    let bob = store.list(&ListQuery::for_user("bob")).await.unwrap();
    assert_eq!(bob.into_ids(), [sid("kept")]);
    assert!(store.delete(&sid("kept")).await.unwrap());
    // The expired sessions' entries in every session's indexes go when a
    // listing of those meets them.
    assert_eq!(server.cli(&["ZCARD", "t:{ix}:recent"]).unwrap(), "5");
    for query in [ListQuery::new(), ListQuery::new().recent()] {
        assert!(store.list(&query).await.unwrap().sessions.is_empty());
    }
    for key in [
        "t:{ix}:recent",
        "t:{ix}:ids",
        "t:{ix:bob}:recent",
        "t:{ix:bob}:ids",
    ] {
        assert_eq!(server.cli(&["ZCARD", key]).unwrap(), "0", "{key}");
    }
}

/// On a cluster the client keeps the indexes after each write; a lost
/// update (the index keys deleted by hand) is put right by the session's
/// next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_the_indexes_from_the_client() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::builder()
        .prefix("c:")
        .connect_cluster(&urls)
        .await
        .unwrap();
    for i in 0..12 {
        owned(&store, &format!("s{i:02}"), "carol").await;
    }
    let page = store
        .list(&ListQuery::for_user("carol").recent().with_limit(3))
        .await
        .unwrap();
    let ids: Vec<&str> = page.ids().map(SessionId::as_str).collect();
    assert_eq!(ids, ["s11", "s10", "s09"]);
    // `-c`: redis-cli follows the slot's MOVED to its master.
    let deleted = cluster.nodes()[0]
        .cli(&["-c", "DEL", "c:{ix:carol}:recent"])
        .unwrap();
    assert_eq!(deleted, "1");
    store
        .append(&sid("s03"), vec![Message::user("again")], Expect::Any)
        .await
        .unwrap();
    let page = store
        .list(&ListQuery::for_user("carol").recent())
        .await
        .unwrap();
    assert_eq!(
        page.into_ids(),
        [sid("s03")],
        "only the session written since"
    );
}
