//! `list` on a large keyspace, on a real server: every call does bounded
//! work and the listing ends; ids come in increasing order, none twice,
//! even when `SCAN` returns keys again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeSet;

use redis_test_server::RedisServer;
use statestore_core::{ConversationState, Expect, ListQuery, Message, SessionId, Store};
use statestore_redis::{LIST_MAX_SCAN_STEPS, LIST_WINDOW, RedisStore};

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
        if let (Some(last), Some(first)) = (all.last(), page.ids.first()) {
            assert!(last < first, "page {pages}: {first} after {last}");
        }
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

/// Lists to the end, editing each cursor with `edit` before it is used, and
/// checks the order promise: every id is greater than every id before it,
/// within a page and across pages, so none comes twice.
async fn list_in_order(
    store: &RedisStore,
    mut query: ListQuery,
    mut edit: impl FnMut(&str) -> Option<String>,
) -> Vec<SessionId> {
    let mut all: Vec<SessionId> = Vec::new();
    let mut calls = 0;
    loop {
        let page = store.list(&query).await.unwrap();
        calls += 1;
        assert!(calls < 10_000, "the listing does not end");
        assert!(page.ids.len() <= query.limit);
        for id in page.ids {
            if let Some(last) = all.last() {
                assert!(
                    &id > last,
                    "call {calls}: {id} after {last} (listed twice: {})",
                    all.contains(&id)
                );
            }
            all.push(id);
        }
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(edit(&cursor).unwrap_or(cursor)),
            None => return all,
        }
    }
}

/// How a test disturbs a pass, once per pass (a pass is known by the last
/// id returned before it), when the cursor is inside one.
#[derive(Clone, Copy, Debug)]
enum Disturb {
    /// Back to the pass's first `SCAN` step: the pass's `SCAN`s return
    /// every key they returned before again — what `SCAN` does to some keys
    /// when a hash table shrinks between steps, made certain.
    Rewind,
    /// As if the set of masters had changed (a failover): the pass starts
    /// again from the first master, keeping what it found.
    MastersChanged,
}

/// Applies `how` to a cursor inside a pass not disturbed yet. Knows the
/// cursor's layout (`after`, `pass.masters`, `pass.node`, `pass.scan`).
fn disturb(cursor: &str, how: Disturb, disturbed: &mut BTreeSet<String>) -> Option<String> {
    let mut json: serde_json::Value = serde_json::from_str(cursor).unwrap();
    let pass_of = json
        .get("after")
        .map(ToString::to_string)
        .unwrap_or_default();
    let pass = json.get_mut("pass")?.as_object_mut().unwrap();
    let at_start = pass.get("node") == Some(&0.into()) && pass.get("scan") == Some(&0.into());
    if at_start || disturbed.contains(&pass_of) {
        return None;
    }
    match how {
        Disturb::Rewind => {
            pass.insert("node".into(), 0.into());
            pass.insert("scan".into(), 0.into());
        }
        Disturb::MastersChanged => {
            let masters = pass.get("masters").and_then(serde_json::Value::as_u64);
            pass.insert("masters".into(), (masters.unwrap() ^ 1).into());
        }
    }
    disturbed.insert(pass_of);
    Some(json.to_string())
}

/// 2 500 sessions, every other one alice's: more than one window
/// (`LIST_WINDOW`) of each, so listings take several passes.
async fn save_sessions(store: &RedisStore) -> (BTreeSet<SessionId>, BTreeSet<SessionId>) {
    let mut all = BTreeSet::new();
    let mut alices = BTreeSet::new();
    for i in 0..2500 {
        let id = sid(&format!("conv-{i:04}"));
        let mut state = ConversationState::new(id.clone());
        if i % 2 == 0 {
            state.user_id = Some("alice".into());
            alices.insert(id.clone());
        }
        state.messages.push(Message::user("hi").into());
        store.save(&state, Expect::Absent).await.unwrap();
        all.insert(id);
    }
    assert!(alices.len() > LIST_WINDOW);
    (all, alices)
}

/// Lists `all` and `alices` with every pass disturbed once, at several page
/// sizes: each listing is in strictly increasing order and complete.
async fn list_with_keys_returned_again(
    store: &RedisStore,
    all: &BTreeSet<SessionId>,
    alices: &BTreeSet<SessionId>,
) {
    for (how, query, want) in [
        (Disturb::Rewind, ListQuery::default().with_limit(700), all),
        (Disturb::Rewind, ListQuery::default().with_limit(1000), all),
        (Disturb::Rewind, ListQuery::default().with_limit(3000), all),
        (
            Disturb::Rewind,
            ListQuery::for_user("alice").with_limit(300),
            alices,
        ),
        (
            Disturb::MastersChanged,
            ListQuery::default().with_limit(700),
            all,
        ),
    ] {
        let mut disturbed = BTreeSet::new();
        let listed = list_in_order(store, query.clone(), |c| disturb(c, how, &mut disturbed)).await;
        let passes = want.len().div_ceil(query.limit.max(LIST_WINDOW));
        assert_eq!(
            disturbed.len(),
            passes,
            "{how:?} {query:?}: every pass once"
        );
        assert_eq!(listed.len(), want.len(), "{how:?} {query:?}");
        assert!(listed.iter().eq(want.iter()), "{how:?} {query:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_strictly_increase_when_scan_returns_keys_again() {
    let server = RedisServer::builder()
        .config("enable-debug-command", "yes")
        .start()
        .unwrap();
    // Passes of several calls each, so a cursor can be inside one.
    server
        .cli(&["DEBUG", "POPULATE", "30000", "other:"])
        .unwrap();
    let store = RedisStore::builder()
        .prefix("app:")
        .connect(&server.url())
        .await
        .unwrap();
    let (all, alices) = save_sessions(&store).await;
    list_with_keys_returned_again(&store, &all, &alices).await;
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_strictly_increase_across_masters_when_scan_returns_keys_again() {
    let cluster = redis_test_server::RedisCluster::start(3, 0).unwrap();
    let urls = cluster.urls();
    // Passes of several calls each: 30 000 keys, in 30 slots (a pipeline
    // goes to one slot) spread over the masters.
    let mut raw = redis::cluster::ClusterClient::new(urls.clone())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    for chunk in 0..30 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.set(format!("other:{{{chunk}}}:{i}"), i).ignore();
        }
        let () = pipe.query_async(&mut raw).await.unwrap();
    }
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::builder()
        .prefix("app:")
        .connect_cluster(&urls)
        .await
        .unwrap();
    let (all, alices) = save_sessions(&store).await;
    list_with_keys_returned_again(&store, &all, &alices).await;
}
