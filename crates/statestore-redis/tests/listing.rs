//! `list` on a large keyspace, on a real server: every call does bounded
//! work and the listing ends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeSet;

use redis_test_server::RedisServer;
use statestore_core::{ConversationState, Expect, ListQuery, Message, SessionId, Store};
use statestore_redis::{LIST_MAX_SCAN_STEPS, RedisStore};

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

/// How many `SCAN`s the server ran (`INFO commandstats`, as
/// `RedisServer::command_stats` reads it, but over a connection of the test:
/// a redis-cli process per page would dominate the test's runtime).
async fn scans(stats: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(stats)
        .await
        .unwrap();
    redis_test_server::parse_command_stats(&info)
        .unwrap()
        .get("scan")
        .map_or(0, |scan| scan.calls)
}

/// Lists every page, checking that each call's SCAN work is bounded.
async fn list_to_the_end(
    store: &RedisStore,
    server: &RedisServer,
    mut query: ListQuery,
) -> (Vec<SessionId>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    let client = redis::Client::open(server.url()).unwrap();
    let mut stats = client.get_multiplexed_async_connection().await.unwrap();
    // Only listing SCANs on this server: the count after one page is the
    // count before the next.
    let mut before = scans(&mut stats).await;
    loop {
        let page = store.list(&query).await.unwrap();
        let after = scans(&mut stats).await;
        let steps = after - before;
        before = after;
        assert!(
            steps <= LIST_MAX_SCAN_STEPS as u64,
            "page {pages}: {steps} SCAN steps"
        );
        assert!(page.ids.len() <= query.limit);
        assert!(
            page.ids.is_sorted(),
            "page {pages} unsorted: {:?}",
            page.ids
        );
        all.extend(page.ids);
        pages += 1;
        assert!(pages < 100_000, "the listing does not end");
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => {
                // The counter is live: ~1 000 steps over 1 M keys were counted.
                assert!(before >= 1_000_000 / 1000 / 2, "{before} SCANs counted");
                return (all, pages);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_does_bounded_work_per_call_on_a_million_foreign_keys() {
    let server = RedisServer::builder()
        .config("enable-debug-command", "yes")
        .start()
        .unwrap();
    server
        .cli(&["DEBUG", "POPULATE", "1000000", "other:"])
        .unwrap();
    let store = RedisStore::builder()
        .prefix("app:")
        .connect(&server.url())
        .await
        .unwrap();
    let mut ours = BTreeSet::new();
    let mut alices = BTreeSet::new();
    for i in 0..10 {
        let id = sid(&format!("s{i}"));
        let mut state = ConversationState::new(id.clone());
        if i % 3 == 0 {
            state.user_id = Some("alice".into());
            alices.insert(id.clone());
        }
        state.messages.push(Message::user("hi").into());
        store.save(&state, Expect::Absent).await.unwrap();
        ours.insert(id);
    }

    for (query, want) in [
        (ListQuery::default().with_limit(3), &ours),
        (ListQuery::for_user("alice").with_limit(2), &alices),
    ] {
        let (listed, pages) = list_to_the_end(&store, &server, query.clone()).await;
        let unique: BTreeSet<SessionId> = listed.iter().cloned().collect();
        assert_eq!(unique.len(), listed.len(), "{query:?}: an id listed twice");
        assert_eq!(&unique, want, "{query:?}");
        // ~1 000 SCAN steps over 1 M keys need many calls; each did little.
        assert!(
            pages >= 1_000_000 / (1000 * LIST_MAX_SCAN_STEPS) / 2,
            "{pages} pages"
        );
    }
}
