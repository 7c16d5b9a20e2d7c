//! Conformance cases for [`Store::list`]: the orders, the filters, the
//! count, titles, and cursors that stay valid while sessions are written
//! (the rules are in [`crate::list`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{key, sid, user};
use crate::{
    AddSummary, ConversationState, Error, Expect, ListCursor, ListOrder, ListQuery, Load, Metadata,
    PruneQuery, Save, SessionId, SessionInfo, Store, Summary, TITLE_KEY, TimeRange, Timestamp,
};

/// Every page of a walk, asserting the page bounds and the count.
pub(super) async fn walk(store: &dyn Store, mut query: ListQuery) -> Vec<SessionInfo> {
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list(&query).await.unwrap();
        assert!(
            page.sessions.len() <= query.limit.max(1),
            "page larger than its limit"
        );
        assert_eq!(
            page.total.is_some(),
            query.count,
            "a count is returned exactly when asked for"
        );
        out.extend(page.sessions);
        pages += 1;
        assert!(pages < 10_000, "list never ends");
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return out,
        }
    }
}

fn ids(infos: &[SessionInfo]) -> Vec<SessionId> {
    infos.iter().map(|s| s.id.clone()).collect()
}

/// What the store says about `id` through a read that is not an access.
async fn info_of(store: &dyn Store, id: &SessionId) -> (SessionInfo, Metadata) {
    let state = store
        .load_with(id, Load::new().keep_clocks())
        .await
        .unwrap()
        .unwrap();
    let info = SessionInfo::new(state.id.clone(), state.updated_at)
        .with_user(state.user_id.clone())
        .with_title(SessionInfo::title_in(&state.metadata))
        .created_at(state.created_at)
        .with_version(state.version);
    (info, state.metadata)
}

/// The expected listing: every session the query admits, in its order,
/// from the stores' own clocks.
async fn model(store: &dyn Store, all: &[SessionId], query: &ListQuery) -> Vec<SessionInfo> {
    let mut want = Vec::new();
    for id in all {
        if !store.exists(id).await.unwrap() {
            continue;
        }
        let (info, metadata) = info_of(store, id).await;
        if query.admits(&info, &metadata) {
            want.push(info);
        }
    }
    want.sort_by(|a, b| query.order.compare(a, b));
    want
}

/// Sessions of three users, written by every kind of write in a shuffled
/// order, a millisecond or two apart (some in the same millisecond: ties
/// are ordered by id).
async fn populate(store: &Arc<dyn Store>) -> Vec<SessionId> {
    let users = ["alice", "bob", "carol"];
    let mut all = Vec::new();
    for i in 0..12 {
        let id = sid(&format!("s{i:02}"));
        let mut state = ConversationState::new(id.clone()).with_messages([user("hi")]);
        state.user_id = Some(users[i % 3].to_owned());
        state.metadata.insert(
            "project".into(),
            json!(if i % 2 == 0 { "apollo" } else { "gemini" }),
        );
        store.save(&state, Expect::Any).await.unwrap();
        all.push(id);
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Later writes of every kind move sessions to the front, in this order.
    for (n, i) in [7usize, 2, 9, 4, 0].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let id = &all[i];
        match n {
            0 => {
                store
                    .append(id, vec![user("again")], Expect::Any)
                    .await
                    .unwrap();
            }
            1 => {
                store
                    .merge_metadata(id, json_object(json!({"pinned": true})), Expect::Any)
                    .await
                    .unwrap();
            }
            2 => {
                store
                    .add_summary_with(id, AddSummary::new(Summary::new(0..1, "greeting")))
                    .await
                    .unwrap();
            }
            3 => {
                let mut state = store.load(id).await.unwrap().unwrap();
                state.push(user("saved"));
                store.save(&state, Expect::Any).await.unwrap();
            }
            _ => {
                let forked = sid("s00-fork");
                store.fork(id, &forked).await.unwrap();
                all.push(forked);
            }
        }
    }
    all
}

fn json_object(value: serde_json::Value) -> Metadata {
    value.as_object().unwrap().clone()
}

/// Both orders, for every user and for all, at several page sizes, list
/// exactly the sessions the store holds, in the order their own clocks
/// give; reads, `touch` and a maintenance save do not move a session.
pub async fn list_orders_by_id_or_recent_activity(store: Arc<dyn Store>) {
    let all = populate(&store).await;
    // Not activity: none of these may reorder the recent listing.
    let quiet = &all[11];
    tokio::time::sleep(Duration::from_millis(2)).await;
    store.load(quiet).await.unwrap();
    store.load_recent(quiet, 1).await.unwrap();
    store.touch(quiet).await.unwrap();
    let state = store.load(quiet).await.unwrap().unwrap();
    store
        .save_with(&state, Save::new().keep_clocks())
        .await
        .unwrap();
    for order in [ListOrder::Id, ListOrder::Recent] {
        for user in [None, Some("alice"), Some("bob"), Some("nobody")] {
            let query = ListQuery::new().order(order).user(user.map(str::to_owned));
            let want = model(&*store, &all, &query).await;
            for limit in [1, 3, 5, 100] {
                let got = walk(&*store, query.clone().with_limit(limit)).await;
                assert_eq!(
                    ids(&got),
                    ids(&want),
                    "{order:?} for {user:?}, {limit} per page"
                );
                assert_eq!(got, want, "what list says about each session");
            }
        }
    }
    let recent = walk(&*store, ListQuery::new().recent()).await;
    let front: Vec<&str> = recent.iter().take(5).map(|s| s.id.as_str()).collect();
    assert_eq!(
        front,
        ["s00-fork", "s04", "s09", "s02", "s07"],
        "the latest writes lead, newest first (the fork and its source share \
         a millisecond only if the store is that fast: then the id decides)"
    );
}

/// Metadata and time filters, alone and with a user, in both orders; the
/// count is every admitted session whatever the page.
pub async fn list_filters_by_metadata_and_time(store: Arc<dyn Store>) {
    let all = populate(&store).await;
    let mut clocks: Vec<Timestamp> = Vec::new();
    for id in &all {
        let (info, _) = info_of(&*store, id).await;
        clocks.push(info.updated_at);
        clocks.push(info.created_at);
    }
    clocks.sort_unstable();
    let mid = clocks[clocks.len() / 2];
    let late = clocks[clocks.len() * 3 / 4];
    let queries = [
        ListQuery::new().where_metadata("project", "apollo"),
        ListQuery::for_user("bob").where_metadata("project", "gemini"),
        ListQuery::new().where_metadata("pinned", true),
        ListQuery::new().where_metadata("project", 7),
        ListQuery::new().updated(TimeRange::since(mid)),
        ListQuery::new().updated(TimeRange::between(mid, late)),
        ListQuery::new().created(TimeRange::before(mid)),
        ListQuery::for_user("alice")
            .created(TimeRange::since(mid))
            .updated(TimeRange::before(late)),
    ];
    for query in queries {
        for order in [ListOrder::Id, ListOrder::Recent] {
            let query = query.clone().order(order);
            let want = model(&*store, &all, &query).await;
            for limit in [1, 4, 100] {
                let got = walk(&*store, query.clone().with_limit(limit).with_count()).await;
                assert_eq!(ids(&got), ids(&want), "{query:?}, {limit} per page");
                let page = store
                    .list(&query.clone().with_limit(limit).with_count())
                    .await
                    .unwrap();
                assert_eq!(page.total, Some(want.len() as u64), "count of {query:?}");
            }
        }
    }
    let total = store
        .list(&ListQuery::new().with_limit(1).with_count())
        .await
        .unwrap();
    assert_eq!(total.total, Some(all.len() as u64));
}

/// A cursor stays valid while sessions are written: no session twice, and
/// every session not written during the walk exactly once — in both orders.
pub async fn list_cursors_survive_concurrent_writes(store: Arc<dyn Store>) {
    let all = populate(&store).await;
    for order in [ListOrder::Recent, ListOrder::Id] {
        let mut query = ListQuery::new().order(order).with_limit(3);
        let mut seen: Vec<SessionId> = Vec::new();
        let mut written: BTreeSet<SessionId> = BTreeSet::new();
        let mut step = 0usize;
        loop {
            let page = store.list(&query).await.unwrap();
            seen.extend(page.ids().cloned());
            // Write one session already listed and one not yet listed.
            for id in [&all[step % all.len()], &all[(step * 5 + 3) % all.len()]] {
                tokio::time::sleep(Duration::from_millis(1)).await;
                store
                    .append(id, vec![user("during")], Expect::Any)
                    .await
                    .unwrap();
                written.insert(id.clone());
            }
            step += 1;
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{order:?}: a session listed twice"
        );
        for id in &all {
            assert!(
                unique.contains(id) || written.contains(id),
                "{order:?}: {id} was not written during the walk but was skipped"
            );
        }
    }
}

/// The title is metadata under `TITLE_KEY`, listed without the history;
/// cursors of the other order, or not of this store, are refused; deleted
/// sessions leave the listing.
pub async fn list_shows_titles_and_refuses_foreign_cursors(store: Arc<dyn Store>) {
    let titled = sid("titled");
    let odd = sid("odd-title");
    let gone = sid("gone");
    for id in [&titled, &odd, &gone] {
        store
            .append(id, vec![user("hi")], Expect::Any)
            .await
            .unwrap();
    }
    store
        .merge_metadata(
            &titled,
            json_object(json!({TITLE_KEY: "Trip to Oslo"})),
            Expect::Any,
        )
        .await
        .unwrap();
    store
        .merge_metadata(
            &odd,
            json_object(json!({TITLE_KEY: {"not": "a string"}})),
            Expect::Any,
        )
        .await
        .unwrap();
    assert!(store.delete(&gone).await.unwrap());
    for order in [ListOrder::Id, ListOrder::Recent] {
        let got = walk(&*store, ListQuery::new().order(order).with_limit(1)).await;
        let titles: BTreeSet<(String, Option<String>)> = got
            .iter()
            .map(|s| (s.id.as_str().to_owned(), s.title.clone()))
            .collect();
        assert_eq!(
            titles,
            BTreeSet::from([
                ("titled".to_owned(), Some("Trip to Oslo".to_owned())),
                ("odd-title".to_owned(), None),
            ]),
            "{order:?}"
        );
    }
    let first = store
        .list(&ListQuery::new().recent().with_limit(1))
        .await
        .unwrap();
    let cursor = first.next_cursor.clone().unwrap();
    let wrong_order = store
        .list(&ListQuery::new().with_limit(1).after(Some(cursor)))
        .await;
    assert!(
        matches!(wrong_order, Err(Error::InvalidCursor { .. })),
        "a recent cursor in an id listing: {wrong_order:?}"
    );
    for garbage in ["", "zz", "r:notanumber:x", "i:"] {
        let got = store
            .list(&ListQuery::new().after(Some(garbage.to_owned())))
            .await;
        assert!(
            matches!(got, Err(Error::InvalidCursor { .. })),
            "{garbage:?}: {got:?}"
        );
    }
    // A cursor naming a session that no longer exists still positions.
    let past_gone = ListCursor::decode("i:gone", ListOrder::Id)
        .unwrap()
        .encode();
    let rest = walk(&*store, ListQuery::new().after(Some(past_gone))).await;
    assert_eq!(ids(&rest), [odd, titled]);
}

/// `prune` removes what its criteria admit and nothing else, in bounded
/// steps that resume from a cursor: idle sessions by last write, old ones
/// by creation, one user's only, a dry run that removes nothing; no
/// criterion is refused.
pub async fn prune_removes_idle_or_old_sessions_in_resumable_steps(store: Arc<dyn Store>) {
    let hour = Duration::from_secs(3600);
    for (i, id) in ["old0", "old1", "old2", "old3", "old4"].iter().enumerate() {
        let mut state = ConversationState::new(sid(id)).with_messages([user("hi")]);
        state.user_id = Some(if i % 2 == 0 { "alice" } else { "bob" }.to_owned());
        store.save(&state, Expect::Any).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(3)).await;
    let mut newest_old = Timestamp::default();
    for info in walk(&*store, ListQuery::new()).await {
        newest_old = newest_old.max(info.updated_at);
    }
    // Measured an hour after the old sessions: they are an hour idle.
    let as_of = Timestamp::from_unix_millis(newest_old.as_unix_millis() + 3_600_001);
    tokio::time::sleep(Duration::from_millis(3)).await;
    for id in ["new0", "new1"] {
        store
            .append(&sid(id), vec![user("hi")], Expect::Any)
            .await
            .unwrap();
    }
    // old0 is written again: no longer idle, though still old.
    store
        .append(&sid("old0"), vec![user("again")], Expect::Any)
        .await
        .unwrap();
    let remaining = |store: Arc<dyn Store>| async move {
        let mut ids: Vec<String> = walk(&*store, ListQuery::new())
            .await
            .into_iter()
            .map(|s| s.id.as_str().to_owned())
            .collect();
        ids.sort();
        ids
    };

    let everything = PruneQuery::idle_for(hour).as_of(as_of).dry_run();
    let counted = store
        .prune(&everything.clone().with_limit(100))
        .await
        .unwrap();
    assert_eq!((counted.removed, counted.next_cursor), (4, None), "dry run");
    assert_eq!(
        remaining(Arc::clone(&store)).await.len(),
        7,
        "a dry run removes nothing"
    );

    let bobs = PruneQuery::idle_for(hour).as_of(as_of).user("bob");
    let done = store.prune(&bobs).await.unwrap();
    assert_eq!(done.removed, 2);
    assert_eq!(
        remaining(Arc::clone(&store)).await,
        ["new0", "new1", "old0", "old2", "old4"]
    );

    // In steps of one, resumed from each cursor, until done.
    let mut query = PruneQuery::idle_for(hour).as_of(as_of).with_limit(1);
    let (mut removed, mut calls) = (0, 0);
    loop {
        let step = store.prune(&query).await.unwrap();
        removed += step.removed;
        calls += 1;
        assert!(step.removed <= 1, "one session examined per call");
        match step.next_cursor {
            Some(cursor) => query = query.after(Some(cursor)),
            None => break,
        }
        assert!(calls < 20, "prune never ends");
    }
    assert_eq!(removed, 2, "old2 and old4; old0 was written again");
    assert_eq!(
        remaining(Arc::clone(&store)).await,
        ["new0", "new1", "old0"]
    );

    // By age, old0 goes too; nothing is refused a second time.
    let old = PruneQuery::older_than(hour).as_of(as_of);
    assert_eq!(store.prune(&old).await.unwrap().removed, 1);
    assert_eq!(store.prune(&old).await.unwrap().removed, 0);
    assert_eq!(remaining(Arc::clone(&store)).await, ["new0", "new1"]);

    let mut nothing = PruneQuery::idle_for(hour);
    nothing.idle_for = None;
    let refused = store.prune(&nothing).await;
    assert!(
        matches!(refused, Err(Error::InvalidQuery { .. })),
        "{refused:?}"
    );
    assert_eq!(remaining(store).await.len(), 2);
}

/// `rewind` takes the history back to a position: later messages and the
/// summaries over them go, a keyed write taken away stays remembered (a
/// retry replays) and is listed under `REWOUND_KEY`; a stale expectation
/// or a position past the end change nothing; a repeat writes nothing.
/// `fork_at` branches from any position without touching its source.
pub async fn rewind_and_branch_from_any_turn(store: Arc<dyn Store>) {
    use crate::rewind::{REWOUND_KEY, was_rewound};
    let id = sid("rewound");
    let turn = |k: &str, q: &str, a: &str| {
        crate::Append::new([user(q), crate::Message::assistant(a)]).key(key(k))
    };
    store
        .append_with(&id, turn("t1", "q1", "a1"))
        .await
        .unwrap();
    store
        .append_with(&id, turn("t2", "q2", "a2"))
        .await
        .unwrap();
    let v = store
        .append_with(&id, turn("t3", "q3", "a3"))
        .await
        .unwrap()
        .version;
    store
        .add_summary_with(&id, AddSummary::new(Summary::new(0..2, "turn one")))
        .await
        .unwrap();
    store
        .add_summary_with(
            &id,
            AddSummary::new(Summary::new(0..4, "turns one and two")),
        )
        .await
        .unwrap();
    let v = v + 2;

    // A branch from after the first turn; the source is untouched.
    let branch = sid("branch");
    assert_eq!(store.fork_at(&id, &branch, 2).await.unwrap(), 1);
    let b = store.load(&branch).await.unwrap().unwrap();
    assert_eq!(super::texts(&b.messages), ["q1", "a1"]);
    assert_eq!(b.summaries.len(), 1, "only the summary within the branch");
    assert!(b.writes.is_empty(), "a branch remembers no writes");
    assert!(matches!(
        store.fork_at(&id, &branch, 2).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.fork_at(&id, &sid("too-far"), 7).await,
        Err(Error::InvalidArgument { .. })
    ));

    // Refusals change nothing.
    let stale = store.rewind(&id, 2, Expect::Version(v - 1)).await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    assert!(matches!(
        store.rewind(&id, 9, Expect::Any).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(store.load(&id).await.unwrap().unwrap().messages.len(), 6);

    // Back to before turn two's reply: turns two and three are rewound.
    let after = store.rewind(&id, 3, Expect::Version(v)).await.unwrap();
    assert_eq!(after, v + 1);
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(super::texts(&state.messages), ["q1", "a1", "q2"]);
    assert_eq!(
        state.summaries.len(),
        1,
        "the summary over a rewound message went"
    );
    assert!(was_rewound(&state.metadata, &key("t2")) && was_rewound(&state.metadata, &key("t3")));
    assert!(!was_rewound(&state.metadata, &key("t1")));
    assert!(state.metadata.contains_key(REWOUND_KEY));
    // A retry of a rewound turn replays; it never applies again.
    let retried = store
        .append_with(&id, turn("t3", "q3", "a3"))
        .await
        .unwrap();
    assert!(retried.replayed);
    assert_eq!(store.load(&id).await.unwrap().unwrap().messages.len(), 3);
    // A repeat of the rewind writes nothing.
    assert_eq!(store.rewind(&id, 3, Expect::Any).await.unwrap(), v + 1);
    assert!(matches!(
        store.rewind(&sid("nobody"), 1, Expect::Any).await,
        Err(Error::NotFound { .. })
    ));
}

/// A rewind racing writers and a retry of a turn it takes away: the
/// rewind lands whole (a conflict, retried, when a write slips in), the
/// history is the kept prefix followed only by writes that landed after
/// it, each once, and the rewound turn is never applied again.
pub async fn rewind_races_writers_and_retries(store: Arc<dyn Store>) {
    let id = sid("raced");
    for i in 1..=4 {
        let turn = crate::Append::new([user(&format!("q{i}")), crate::Message::assistant("a")])
            .key(key(&format!("t{i}")));
        store.append_with(&id, turn).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.spawn(async move {
            for n in 0..5 {
                let text = format!("x{w}-{n}");
                store
                    .append(&id, vec![user(&text)], Expect::Any)
                    .await
                    .unwrap();
            }
        });
    }
    {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.spawn(async move {
            for _ in 0..10 {
                let retry =
                    crate::Append::new([user("q3"), crate::Message::assistant("a")]).key(key("t3"));
                let done = store.append_with(&id, retry).await.unwrap();
                assert!(done.replayed, "a retry of t3 applied again");
            }
        });
    }
    let rewinder = {
        let store = Arc::clone(&store);
        let id = id.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                match store.rewind(&id, 2, Expect::Any).await {
                    Ok(_) => return,
                    Err(Error::Conflict { .. }) => tokio::task::yield_now().await,
                    Err(e) => panic!("rewind: {e}"),
                }
            }
            panic!("the rewind never landed");
        })
    };
    rewinder.await.unwrap();
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let state = store.load(&id).await.unwrap().unwrap();
    let texts = super::texts(&state.messages);
    assert_eq!(texts[..2], ["q1", "a"], "the kept prefix");
    let rest = &texts[2..];
    assert!(
        rest.iter().all(|t| t.starts_with('x')),
        "only later writes follow: {texts:?}"
    );
    let unique: BTreeSet<&String> = rest.iter().collect();
    assert_eq!(unique.len(), rest.len(), "a write twice: {texts:?}");
    assert!(crate::rewind::was_rewound(&state.metadata, &key("t3")));
}
