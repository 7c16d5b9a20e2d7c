//! The conformance suite every [`Store`] backend runs (feature `conformance`).
//!
//! Each case is a public async function taking a fresh, empty store; the
//! [`conformance_suite!`](crate::conformance_suite) macro expands to one
//! `#[tokio::test]` per case, so a backend's test file is one line:
//!
//! ```text
//! // tests/conformance.rs of a backend crate
//! statestore_core::conformance_suite!(async { statestore_memory::MemoryStore::new() });
//! ```
//!
//! The expression is evaluated once per case and must yield a store that
//! sees no other test's sessions (a new store, or a new key prefix). The
//! calling crate needs `tokio` with the `macros` and `rt-multi-thread`
//! features as a dev-dependency.
//!
//! Cases panic with a description of the broken rule; they are test code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::json;

pub mod expiry;
mod listing;
pub use listing::*;

use crate::{
    AddSummary, Append, ContentPart, ConversationState, Counters, Error, Expect, IdempotencyKey,
    ListQuery, Load, Message, Metadata, REMEMBERED_WRITES, Role, Save, SessionId, Store, Summary,
    Timestamp, TokenCount, ToolCall,
};

/// Expands to one `#[tokio::test]` per conformance case. See the
/// [module docs](crate::conformance).
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::__conformance_with_cases!(__conformance_tests!($make));
    };
}

/// The one list of cases; calls `$callback!(args; case, case, …)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_with_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {
            $($args)*;
            missing_session_reads_as_absent,
            save_then_load_round_trips,
            save_replaces_everything_but_created_at,
            append_creates_then_extends,
            load_recent_is_defined_for_every_n,
            expectations_guard_every_write,
            failed_writes_change_nothing,
            fork_is_an_independent_snapshot,
            fork_refuses_missing_source_and_existing_target,
            delete_removes_everything,
            list_pages_cover_every_session_once,
            list_filters_by_user,
            merge_metadata_overwrites_and_removes,
            add_summary_validates_its_range,
            touch_keeps_the_version,
            hostile_ids_are_isolated,
            content_round_trips_exactly,
            concurrent_appends_lose_nothing,
            optimistic_writers_never_lose_updates,
            fork_during_appends_copies_a_prefix,
            mixed_load_matches_a_model,
            keyed_appends_apply_once,
            concurrent_repeats_of_a_key_apply_once,
            load_recent_finds_remembered_writes,
            replays_after_a_rewrite_are_never_another_writes,
            saves_carry_remembered_writes,
            pending_progress_is_seen_only_by_its_key_until_its_write,
            counters_add_up_atomically,
            writes_merge_metadata_in_their_atomic_step,
            maintenance_saves_keep_the_clocks,
            maintenance_reads_keep_the_clocks,
            list_orders_by_id_or_recent_activity,
            list_filters_by_metadata_and_time,
            list_cursors_survive_concurrent_writes,
            list_shows_titles_and_refuses_foreign_cursors,
            guarded_deletes_refuse_a_changed_session,
            prune_removes_idle_or_old_sessions_in_resumable_steps,
            rewind_and_branch_from_any_turn,
            rewind_races_writers_and_retries,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $make.await;
                $crate::conformance::$case(::std::sync::Arc::new(store)).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_table {
    ($($case:ident),* $(,)?) => {
        vec![$((
            stringify!($case),
            (|store| Box::pin($crate::conformance::$case(store))) as Case,
        )),*]
    };
    (; $($case:ident),* $(,)?) => {
        $crate::__conformance_table!($($case),*)
    };
}

type Case = fn(Arc<dyn Store>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Every case, by name.
fn cases() -> Vec<(&'static str, Case)> {
    crate::__conformance_with_cases!(__conformance_table!())
}

/// Runs every case in turn, each on a fresh store from `make`, inside one
/// test — for backends whose servers are expensive to start (a Redis
/// Cluster): start it once, run the whole suite, stop it.
///
/// # Panics
///
/// When a case fails, naming it.
pub async fn run_all<S, Fut>(make: impl Fn() -> Fut)
where
    S: Store + 'static,
    Fut: std::future::Future<Output = S>,
{
    for (name, case) in cases() {
        let store: Arc<dyn Store> = Arc::new(make().await);
        if let Err(e) = tokio::spawn(case(store)).await {
            let why = e
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                })
                .unwrap_or_default();
            panic!("conformance case `{name}` failed: {why}");
        }
    }
}

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn texts(messages: &[Arc<Message>]) -> Vec<String> {
    messages.iter().map(|m| m.text().into_owned()).collect()
}

fn user(text: &str) -> Message {
    Message::user(text)
}

fn rich_state(id: &SessionId) -> ConversationState {
    let mut meta = Metadata::new();
    meta.insert("plan".into(), json!("pro"));
    meta.insert("nested".into(), json!({"a": [1, 2, {"b": null}]}));
    let mut state = ConversationState::new(id.clone())
        .with_user_id("alice")
        .with_system_prompt("You are helpful.")
        .with_messages([
            Message::user("What's the weather?").with_name("alice"),
            Message::assistant("").with_tool_calls(vec![
                ToolCall::new("call_1", "weather", r#"{"city":"Paris"}"#),
                ToolCall::new("call_2", "weather", r#"{"city":"Oslo"#),
            ]),
            Message::tool("call_1", r#"{"c":21}"#),
            Message::tool("call_2", r#"{"c":3}"#),
            Message::assistant(vec![
                ContentPart::text("Paris 21°, Oslo 3°"),
                ContentPart::image_url("data:image/png;base64,AAAA"),
            ])
            .with_metadata("model", "gpt-4o-mini"),
        ]);
    let mut counted = Message::user("thanks");
    counted.token_count = Some(TokenCount {
        encoding: "o200k_base".into(),
        tokens: 7,
    });
    state.push(counted);
    state.metadata = meta;
    state.counters.insert("prompt_tokens".into(), 1234);
    state.counters.insert("calls".into(), 3);
    state.created_at = Timestamp::from_unix_millis(1_700_000_000_000);
    state
        .summaries
        .push(Summary::new(0..2, "asked about weather"));
    state
}

/// Compares what a store must preserve, ignoring version and timestamps.
fn assert_same_content(got: &ConversationState, want: &ConversationState) {
    assert_eq!(got.id, want.id);
    assert_eq!(got.user_id, want.user_id);
    assert_eq!(got.system_prompt, want.system_prompt);
    assert_eq!(got.messages, want.messages, "messages differ");
    assert_eq!(got.summaries, want.summaries);
    assert_eq!(got.metadata, want.metadata);
    assert_eq!(got.counters, want.counters, "counters differ");
}

pub async fn missing_session_reads_as_absent(store: Arc<dyn Store>) {
    let id = sid("nobody");
    assert!(store.load(&id).await.unwrap().is_none());
    assert!(store.load_recent(&id, 5).await.unwrap().is_none());
    assert!(!store.exists(&id).await.unwrap());
    assert!(!store.delete(&id).await.unwrap());
    assert!(!store.touch(&id).await.unwrap());
    // None of these may have created it.
    assert!(!store.exists(&id).await.unwrap());
    assert!(
        store
            .list(&ListQuery::default())
            .await
            .unwrap()
            .sessions
            .is_empty()
    );
}

pub async fn save_then_load_round_trips(store: Arc<dyn Store>) {
    let id = sid("session-1");
    let state = rich_state(&id);
    assert_eq!(store.save(&state, Expect::Any).await.unwrap(), 1);
    let loaded = store.load(&id).await.unwrap().expect("saved session loads");
    assert_same_content(&loaded, &state);
    assert_eq!(loaded.version, 1);
    assert_eq!(
        loaded.created_at, state.created_at,
        "a created session keeps created_at"
    );
    assert!(loaded.updated_at >= loaded.created_at);
    assert!(store.exists(&id).await.unwrap());

    // The state's own version field is not an expectation.
    let mut stale = loaded.clone();
    stale.version = 999;
    assert_eq!(store.save(&stale, Expect::Any).await.unwrap(), 2);
    assert_eq!(store.load(&id).await.unwrap().unwrap().version, 2);
}

pub async fn save_replaces_everything_but_created_at(store: Arc<dyn Store>) {
    let id = sid("replace");
    store.save(&rich_state(&id), Expect::Any).await.unwrap();
    let first = store.load(&id).await.unwrap().unwrap();
    let replacement = ConversationState::new(id.clone()).with_messages([user("only")]);
    assert_eq!(store.save(&replacement, Expect::Any).await.unwrap(), 2);
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_same_content(&loaded, &replacement);
    assert_eq!(loaded.created_at, first.created_at, "save keeps created_at");
    let recent = store.load_recent(&id, 10).await.unwrap().unwrap();
    assert_eq!(recent.total_messages, 1);
    assert!(recent.summaries.is_empty());
}

pub async fn append_creates_then_extends(store: Arc<dyn Store>) {
    let id = sid("append");
    let v1 = store
        .append(&id, vec![user("a"), Message::assistant("b")], Expect::Any)
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let v2 = store
        .append(&id, vec![user("c")], Expect::Version(1))
        .await
        .unwrap();
    assert_eq!(v2, 2);
    let v3 = store.append(&id, vec![], Expect::Any).await.unwrap();
    assert_eq!(v3, 3, "an empty append is still a write");
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&loaded.messages), ["a", "b", "c"]);
    assert_eq!(loaded.messages[1].role, Role::Assistant);
    assert_eq!(loaded.version, 3);
    assert!(loaded.user_id.is_none() && loaded.system_prompt.is_none());
}

pub async fn load_recent_is_defined_for_every_n(store: Arc<dyn Store>) {
    let id = sid("recent");
    let all: Vec<Message> = (0..7).map(|i| user(&format!("m{i}"))).collect();
    let mut state = ConversationState::new(id.clone())
        .with_system_prompt("sys")
        .with_messages(all);
    state.summaries.push(Summary::new(0..3, "early"));
    state.metadata.insert("k".into(), json!(1));
    store.save(&state, Expect::Any).await.unwrap();
    let v = store
        .append(&id, vec![user("m7")], Expect::Any)
        .await
        .unwrap();

    let names =
        |range: std::ops::Range<usize>| -> Vec<String> { range.map(|i| format!("m{i}")).collect() };
    for (n, want) in [
        (0, names(0..0)),
        (1, names(7..8)),
        (3, names(5..8)),
        (8, names(0..8)),
        (1000, names(0..8)),
        (usize::MAX, names(0..8)),
    ] {
        let r = store.load_recent(&id, n).await.unwrap().unwrap();
        assert_eq!(texts(&r.messages), want, "load_recent(n = {n})");
        assert_eq!(r.total_messages, 8, "n = {n}");
        assert_eq!(r.first_position(), 8 - want.len() as u64);
        assert_eq!(r.version, v);
        assert_eq!(r.system_prompt.as_deref(), Some("sys"));
        assert_eq!(r.summaries, state.summaries);
        assert_eq!(r.metadata, state.metadata);
    }

    // A session with no messages at all.
    let empty = sid("recent-empty");
    store
        .merge_metadata(&empty, Metadata::new(), Expect::Any)
        .await
        .unwrap();
    let r = store.load_recent(&empty, 5).await.unwrap().unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(r.total_messages, 0);
}

fn assert_conflict<T: std::fmt::Debug>(
    result: crate::Result<T>,
    id: &SessionId,
    expected: Expect,
    actual: Option<u64>,
) {
    match result {
        Err(Error::Conflict {
            id: got_id,
            expected: got_expected,
            actual: got_actual,
        }) => {
            assert_eq!(&got_id, id);
            assert_eq!(got_expected, expected);
            assert_eq!(got_actual, actual, "Conflict reports the version found");
        }
        other => panic!("expected a conflict ({expected} vs {actual:?}), got {other:?}"),
    }
}

pub async fn expectations_guard_every_write(store: Arc<dyn Store>) {
    let id = sid("expect");
    let state = ConversationState::new(id.clone()).with_messages([user("x")]);

    // Missing session: Version(n) conflicts, Absent and Any create.
    assert_conflict(
        store.save(&state, Expect::Version(1)).await,
        &id,
        Expect::Version(1),
        None,
    );
    assert_conflict(
        store.append(&id, vec![user("y")], Expect::Version(3)).await,
        &id,
        Expect::Version(3),
        None,
    );
    assert_conflict(
        store
            .merge_metadata(&id, Metadata::new(), Expect::Version(1))
            .await,
        &id,
        Expect::Version(1),
        None,
    );
    assert!(
        !store.exists(&id).await.unwrap(),
        "a failed write created the session"
    );
    assert_eq!(store.save(&state, Expect::Absent).await.unwrap(), 1);

    // Existing session at version 1.
    assert_conflict(
        store.save(&state, Expect::Absent).await,
        &id,
        Expect::Absent,
        Some(1),
    );
    assert_conflict(
        store.append(&id, vec![user("y")], Expect::Absent).await,
        &id,
        Expect::Absent,
        Some(1),
    );
    assert_conflict(
        store.append(&id, vec![user("y")], Expect::Version(2)).await,
        &id,
        Expect::Version(2),
        Some(1),
    );
    assert_eq!(
        store
            .append(&id, vec![user("y")], Expect::Version(1))
            .await
            .unwrap(),
        2
    );
    assert_conflict(
        store
            .merge_metadata(&id, Metadata::new(), Expect::Version(1))
            .await,
        &id,
        Expect::Version(1),
        Some(2),
    );
    assert_eq!(
        store
            .merge_metadata(&id, Metadata::new(), Expect::Version(2))
            .await
            .unwrap(),
        3
    );
    assert_conflict(
        store
            .add_summary(&id, Summary::new(0..1, "s"), Expect::Version(2))
            .await,
        &id,
        Expect::Version(2),
        Some(3),
    );
    assert_eq!(
        store
            .add_summary(&id, Summary::new(0..1, "s"), Expect::Version(3))
            .await
            .unwrap(),
        4
    );
    assert_conflict(
        store.save(&state, Expect::Version(3)).await,
        &id,
        Expect::Version(3),
        Some(4),
    );
    assert_eq!(store.save(&state, Expect::Version(4)).await.unwrap(), 5);
}

pub async fn failed_writes_change_nothing(store: Arc<dyn Store>) {
    let id = sid("unchanged");
    store.save(&rich_state(&id), Expect::Any).await.unwrap();
    let before = store.load(&id).await.unwrap().unwrap();

    let _ = store
        .append(&id, vec![user("lost")], Expect::Version(7))
        .await
        .unwrap_err();
    let _ = store
        .save(&ConversationState::new(id.clone()), Expect::Absent)
        .await
        .unwrap_err();
    let mut patch = Metadata::new();
    patch.insert("plan".into(), json!("free"));
    let _ = store
        .merge_metadata(&id, patch, Expect::Version(0))
        .await
        .unwrap_err();
    let _ = store
        .add_summary(&id, Summary::new(3..99, "past the end"), Expect::Any)
        .await
        .unwrap_err();

    let after = store.load(&id).await.unwrap().unwrap();
    assert_same_content(&after, &before);
    assert_eq!(after.version, before.version);
}

pub async fn fork_is_an_independent_snapshot(store: Arc<dyn Store>) {
    let (src, dst) = (sid("user-123-original"), sid("user-123-new-topic"));
    let state = rich_state(&src);
    store.save(&state, Expect::Any).await.unwrap();
    store
        .append(&src, vec![user("more")], Expect::Any)
        .await
        .unwrap();
    let source = store.load(&src).await.unwrap().unwrap();

    assert_eq!(
        store.fork(&src, &dst).await.unwrap(),
        1,
        "a fork starts at version 1"
    );
    let forked = store.load(&dst).await.unwrap().unwrap();
    assert_eq!(forked.id, dst);
    assert_eq!(forked.version, 1);
    assert_eq!(forked.messages, source.messages);
    assert_eq!(forked.summaries, source.summaries);
    assert_eq!(forked.metadata, source.metadata);
    assert_eq!(forked.system_prompt, source.system_prompt);
    assert_eq!(forked.user_id, source.user_id);

    // Writes to either side stay on that side.
    store
        .append(&src, vec![user("src-only")], Expect::Any)
        .await
        .unwrap();
    store
        .append(&dst, vec![user("dst-only")], Expect::Any)
        .await
        .unwrap();
    let mut patch = Metadata::new();
    patch.insert("branch".into(), json!(true));
    store
        .merge_metadata(&dst, patch, Expect::Any)
        .await
        .unwrap();
    let src_after = store.load(&src).await.unwrap().unwrap();
    let dst_after = store.load(&dst).await.unwrap().unwrap();
    assert_eq!(texts(&src_after.messages).last().unwrap(), "src-only");
    assert_eq!(texts(&dst_after.messages).last().unwrap(), "dst-only");
    assert_eq!(src_after.messages.len(), dst_after.messages.len());
    assert!(!src_after.metadata.contains_key("branch"));
    assert_eq!(src_after.version, source.version + 1);
}

pub async fn fork_refuses_missing_source_and_existing_target(store: Arc<dyn Store>) {
    let (src, dst, missing) = (sid("src"), sid("dst"), sid("missing"));
    assert!(matches!(
        store.fork(&missing, &dst).await,
        Err(Error::NotFound { id }) if id == missing
    ));
    assert!(
        !store.exists(&dst).await.unwrap(),
        "a failed fork created its target"
    );

    store
        .append(&src, vec![user("source")], Expect::Any)
        .await
        .unwrap();
    store
        .append(&dst, vec![user("target")], Expect::Any)
        .await
        .unwrap();
    assert!(matches!(
        store.fork(&src, &dst).await,
        Err(Error::AlreadyExists { id }) if id == dst
    ));
    let target = store.load(&dst).await.unwrap().unwrap();
    assert_eq!(
        texts(&target.messages),
        ["target"],
        "fork overwrote or grafted onto its target"
    );
    assert_eq!(target.version, 1);

    assert!(matches!(
        store.fork(&src, &src).await,
        Err(Error::InvalidArgument { .. })
    ));
}

pub async fn delete_removes_everything(store: Arc<dyn Store>) {
    let id = sid("doomed");
    store.save(&rich_state(&id), Expect::Any).await.unwrap();
    assert!(store.delete(&id).await.unwrap());
    assert!(store.load(&id).await.unwrap().is_none());
    assert!(store.load_recent(&id, 3).await.unwrap().is_none());
    assert!(!store.exists(&id).await.unwrap());
    assert!(!store.delete(&id).await.unwrap());
    assert!(
        store
            .list(&ListQuery::default())
            .await
            .unwrap()
            .sessions
            .is_empty()
    );

    // A new session under the same id starts from nothing.
    assert_eq!(
        store
            .append(&id, vec![user("fresh")], Expect::Absent)
            .await
            .unwrap(),
        1
    );
    let fresh = store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&fresh.messages), ["fresh"]);
    assert!(fresh.summaries.is_empty() && fresh.metadata.is_empty() && fresh.user_id.is_none());
}

/// `delete_with` guarded by a version deletes only that version: a session
/// written since is a conflict that deletes nothing (its messages, listing
/// and remembered writes stay); a retry after the delete is a conflict
/// saying the session is gone; `Absent` deletes nothing.
pub async fn guarded_deletes_refuse_a_changed_session(store: Arc<dyn Store>) {
    let id = sid("guarded");
    store
        .append(&id, vec![user("one")], Expect::Any)
        .await
        .unwrap();
    store
        .append_with(&id, Append::new([user("two")]).key(key("k2")))
        .await
        .unwrap();
    let stale = crate::Delete::new().expect(Expect::Version(1));
    assert_conflict(
        store.delete_with(&id, stale).await,
        &id,
        Expect::Version(1),
        Some(2),
    );
    let absent = crate::Delete::new().expect(Expect::Absent);
    assert_conflict(
        store.delete_with(&id, absent).await,
        &id,
        Expect::Absent,
        Some(2),
    );
    let kept = store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&kept.messages), ["one", "two"]);
    assert_eq!(
        list_all(&*store, ListQuery::default()).await,
        std::slice::from_ref(&id)
    );
    let replay = store
        .append_with(&id, Append::new([user("two")]).key(key("k2")))
        .await
        .unwrap();
    assert!(
        replay.replayed,
        "a refused delete forgets no remembered write"
    );

    let current = crate::Delete::new().expect(Expect::Version(2));
    assert!(store.delete_with(&id, current).await.unwrap());
    assert!(store.load(&id).await.unwrap().is_none());
    assert!(list_all(&*store, ListQuery::default()).await.is_empty());
    assert_conflict(
        store.delete_with(&id, current).await,
        &id,
        Expect::Version(2),
        None,
    );
    assert!(!store.delete_with(&id, absent).await.unwrap());
    assert!(!store.delete_with(&id, crate::Delete::new()).await.unwrap());
}

async fn list_all(store: &dyn Store, query: ListQuery) -> Vec<SessionId> {
    listing::walk(store, query)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect()
}

pub async fn list_pages_cover_every_session_once(store: Arc<dyn Store>) {
    let mut want = BTreeSet::new();
    for i in 0..37 {
        let id = sid(&format!("conv-{i:02}"));
        store
            .append(&id, vec![user("hi")], Expect::Any)
            .await
            .unwrap();
        want.insert(id);
    }
    for limit in [1, 5, 10, 36, 37, 100] {
        let got = list_all(&*store, ListQuery::default().with_limit(limit)).await;
        let unique: BTreeSet<_> = got.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "limit {limit}: an id was listed twice"
        );
        assert_eq!(unique, want, "limit {limit}");
    }
}

pub async fn list_filters_by_user(store: Arc<dyn Store>) {
    for (id, user_id) in [("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("n1", "")] {
        let mut state = ConversationState::new(sid(id)).with_messages([user("hi")]);
        if !user_id.is_empty() {
            state.user_id = Some(user_id.into());
        }
        store.save(&state, Expect::Any).await.unwrap();
    }
    let alice: BTreeSet<_> = list_all(&*store, ListQuery::for_user("alice").with_limit(1))
        .await
        .into_iter()
        .collect();
    assert_eq!(alice, BTreeSet::from([sid("a1"), sid("a2")]));
    let bob = list_all(&*store, ListQuery::for_user("bob")).await;
    assert_eq!(bob, [sid("b1")]);
    assert!(
        list_all(&*store, ListQuery::for_user("carol"))
            .await
            .is_empty()
    );
    assert_eq!(list_all(&*store, ListQuery::default()).await.len(), 4);
}

pub async fn merge_metadata_overwrites_and_removes(store: Arc<dyn Store>) {
    let id = sid("meta");
    let patch = |pairs: serde_json::Value| -> Metadata { pairs.as_object().unwrap().clone() };
    assert_eq!(
        store
            .merge_metadata(
                &id,
                patch(json!({"a": 1, "b": {"x": 1}, "gone": null})),
                Expect::Absent
            )
            .await
            .unwrap(),
        1
    );
    store
        .merge_metadata(
            &id,
            patch(json!({"b": [2], "c": "new", "a": null})),
            Expect::Version(1),
        )
        .await
        .unwrap();
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::Value::Object(loaded.metadata),
        json!({"b": [2], "c": "new"})
    );
    assert!(loaded.messages.is_empty());
    assert_eq!(loaded.version, 2);
}

/// [`Append::metadata`] and [`AddSummary::metadata`] land with their write
/// or not at all: not on a conflict, a replay or a refused range.
pub async fn writes_merge_metadata_in_their_atomic_step(store: Arc<dyn Store>) {
    let id = sid("meta-with-writes");
    let meta = |s: &ConversationState| serde_json::Value::Object(s.metadata.clone());
    let key = IdempotencyKey::new("turn-1").unwrap();
    let first = store
        .append_with(
            &id,
            Append::new([user("hi")])
                .key(key.clone())
                .merge_metadata("title", json!("Hi"))
                .merge_metadata("never-set", serde_json::Value::Null),
        )
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(meta(&loaded), json!({"title": "Hi"}));
    // A replay merges nothing.
    let replay = store
        .append_with(
            &id,
            Append::new([user("hi")])
                .key(key)
                .merge_metadata("title", json!("Replayed")),
        )
        .await
        .unwrap();
    assert!(replay.replayed);
    // A conflict merges nothing.
    assert!(matches!(
        store
            .append_with(
                &id,
                Append::new([user("late")])
                    .expect(Expect::Version(7))
                    .merge_metadata("title", json!("Conflict")),
            )
            .await,
        Err(Error::Conflict { .. })
    ));
    let v = store
        .append_with(
            &id,
            Append::new([Message::assistant("hello")])
                .expect(Expect::Version(1))
                .merge_metadata("title", serde_json::Value::Null)
                .merge_metadata("turns", json!(2)),
        )
        .await
        .unwrap()
        .version;
    assert_eq!(v, 2);
    let recent = store.load_recent(&id, 1).await.unwrap().unwrap();
    assert_eq!(
        serde_json::Value::Object(recent.metadata.clone()),
        json!({"turns": 2})
    );
    // Summaries: refused ranges and conflicts merge nothing.
    for refused in [
        AddSummary::new(Summary::new(0..9, "past the end")).merge_metadata("s", json!(1)),
        AddSummary::new(Summary::new(0..1, "stale"))
            .expect(Expect::Version(1))
            .merge_metadata("s", json!(1)),
    ] {
        assert!(store.add_summary_with(&id, refused).await.is_err());
    }
    let v = store
        .add_summary_with(
            &id,
            AddSummary::new(Summary::new(0..2, "greetings"))
                .expect(Expect::Version(2))
                .merge_metadata("s", json!(1))
                .merge_metadata("turns", serde_json::Value::Null),
        )
        .await
        .unwrap();
    assert_eq!(v, 3);
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(meta(&loaded), json!({"s": 1}));
    assert_eq!(loaded.summaries.len(), 1);
    assert_eq!(loaded.messages.len(), 2);
}

pub async fn add_summary_validates_its_range(store: Arc<dyn Store>) {
    let id = sid("summaries");
    assert!(matches!(
        store
            .add_summary(&id, Summary::new(0..1, "s"), Expect::Any)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(!store.exists(&id).await.unwrap());
    store
        .append(
            &id,
            (0..4).map(|i| user(&i.to_string())).collect(),
            Expect::Any,
        )
        .await
        .unwrap();
    #[allow(clippy::reversed_empty_ranges)]
    let bad_ranges = [0..0, 2..1, 0..5, 4..6];
    for bad in bad_ranges {
        assert!(
            matches!(
                store
                    .add_summary(&id, Summary::new(bad.clone(), "s"), Expect::Any)
                    .await,
                Err(Error::InvalidArgument { .. })
            ),
            "range {bad:?} over 4 messages"
        );
    }
    let first = Summary::new(0..2, "first two");
    let second = Summary {
        token_count: Some(12),
        ..Summary::new(0..4, "all four")
    };
    store
        .add_summary(&id, first.clone(), Expect::Any)
        .await
        .unwrap();
    let v = store
        .add_summary(&id, second.clone(), Expect::Any)
        .await
        .unwrap();
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.summaries, [first.clone(), second.clone()]);
    assert_eq!(
        loaded.messages.len(),
        4,
        "adding a summary keeps the messages"
    );
    let recent = store.load_recent(&id, 1).await.unwrap().unwrap();
    assert_eq!(recent.summaries, [first, second]);
    assert_eq!(recent.version, v);
}

pub async fn touch_keeps_the_version(store: Arc<dyn Store>) {
    let id = sid("touched");
    store
        .append(&id, vec![user("hi")], Expect::Any)
        .await
        .unwrap();
    let before = store.load(&id).await.unwrap().unwrap();
    assert!(store.touch(&id).await.unwrap());
    let after = store.load(&id).await.unwrap().unwrap();
    assert_eq!(after.version, before.version);
    assert!(after.last_accessed_at >= before.last_accessed_at);
    assert_eq!(after.updated_at, before.updated_at);
}

/// A maintenance save ([`Save::keep_clocks`](crate::Save#structfield.keep_clocks))
/// replaces the content as `save` does — version, `created_at` and
/// remembered writes included — but keeps `updated_at`, which a plain save
/// moves; a repeat guarded by the old version is a conflict that writes
/// nothing, one with `Expect::Any` applies the same content again; on a
/// missing session it creates it as `save` does. (`last_accessed_at` and the
/// expiry are checked by each backend's own tests, on a store with a TTL:
/// here every read is an access that moves them.)
pub async fn maintenance_saves_keep_the_clocks(store: Arc<dyn Store>) {
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(5));
    let id = sid("rekeyed");
    let key = IdempotencyKey::new("turn-1").unwrap();
    store
        .append_with(
            &id,
            Append::new([user("one"), user("two")]).key(key.clone()),
        )
        .await
        .unwrap();
    let before = store.load(&id).await.unwrap().unwrap();
    pause().await;

    let mut state = rich_state(&id);
    state.created_at = Timestamp::from_unix_millis(1);
    let keep = Save::new().expect(Expect::Version(1)).keep_clocks();
    assert_eq!(store.save_with(&state, keep).await.unwrap(), 2);
    let kept = store.load(&id).await.unwrap().unwrap();
    assert_same_content(&kept, &state);
    assert_eq!(kept.version, 2);
    assert_eq!(kept.created_at, before.created_at, "keeps created_at");
    assert_eq!(
        kept.updated_at, before.updated_at,
        "a maintenance save must keep updated_at"
    );
    // Remembered writes follow the rules of `save`: still a replay, its
    // positions gone with the old history.
    let again = store
        .append_with(
            &id,
            Append::new([user("one"), user("two")]).key(key.clone()),
        )
        .await
        .unwrap();
    assert!(again.replayed && again.rewritten, "{again:?}");
    assert_eq!(store.load(&id).await.unwrap().unwrap().version, 2);

    // A retry: guarded by the old version, a conflict that writes nothing;
    // unguarded, the same content once more, clocks still kept.
    pause().await;
    match store.save_with(&state, keep).await {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(2)),
        other => panic!("a repeated guarded maintenance save: {other:?}"),
    }
    assert_eq!(
        store
            .save_with(&state, Save::new().keep_clocks())
            .await
            .unwrap(),
        3
    );
    let kept = store.load(&id).await.unwrap().unwrap();
    assert_same_content(&kept, &state);
    assert_eq!(kept.updated_at, before.updated_at);

    // A plain save moves updated_at.
    pause().await;
    assert_eq!(
        store
            .save_with(&state, Save::new().expect(Expect::Version(3)))
            .await
            .unwrap(),
        4
    );
    let plain = store.load(&id).await.unwrap().unwrap();
    assert!(
        plain.updated_at > before.updated_at,
        "a plain save must move updated_at"
    );

    // No session, no clocks to keep: created as by `save`.
    let fresh = sid("rekeyed-new");
    let mut new_state = rich_state(&fresh);
    new_state.created_at = Timestamp::from_unix_millis(1_700_000_000_000);
    let created = Save::new().expect(Expect::Absent).keep_clocks();
    assert_eq!(store.save_with(&new_state, created).await.unwrap(), 1);
    let loaded = store.load(&fresh).await.unwrap().unwrap();
    assert_same_content(&loaded, &new_state);
    assert_eq!(loaded.created_at, new_state.created_at);
    assert!(loaded.updated_at >= plain.updated_at);
}

/// A maintenance read ([`Load::keep_clocks`](crate::Load#structfield.keep_clocks))
/// returns what `load` returns — content, version, `created_at`,
/// `updated_at`, remembered writes — but does not move `last_accessed_at`:
/// it reports the last access before it (not the time of the read), and a
/// second one reports the same. Repeating it changes nothing. A plain load
/// afterwards reports an access no earlier; a maintenance read after that
/// one reports no later than it (a store that records plain reads lazily —
/// SQLite with a TTL — or not at all — SQLite without one, Redis with
/// non-sliding reads — may still report the earlier access). (The expiry is
/// checked by each backend's own tests, on a store with a TTL.)
pub async fn maintenance_reads_keep_the_clocks(store: Arc<dyn Store>) {
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(5));
    let peek = Load::new().keep_clocks();
    let id = sid("inspected");
    assert!(
        store.load_with(&id, peek).await.unwrap().is_none(),
        "a missing session reads as absent"
    );
    assert!(
        !store.exists(&id).await.unwrap(),
        "a maintenance read created it"
    );
    let key = IdempotencyKey::new("turn-1").unwrap();
    let state = rich_state(&id);
    store.save(&state, Expect::Absent).await.unwrap();
    let more = user("more");
    let appended = store
        .append_with(&id, Append::new([more.clone()]).key(key.clone()))
        .await
        .unwrap();
    pause().await;

    let read_at = Timestamp::now();
    let first = store.load_with(&id, peek).await.unwrap().unwrap();
    let mut want = state.clone();
    want.messages.push(Arc::new(more));
    assert_same_content(&first, &want);
    assert_eq!(first.version, appended.version);
    assert_eq!(first.writes.len(), 1, "lists the remembered writes");
    assert_eq!(first.writes[0].key, key);
    assert!(
        first.last_accessed_at < read_at,
        "a maintenance read must report the last access before it, not its own time \
         ({:?} at {read_at:?})",
        first.last_accessed_at
    );
    assert!(first.last_accessed_at >= first.updated_at);

    // A repeat: the same answer, nothing moved.
    pause().await;
    let second = store.load_with(&id, peek).await.unwrap().unwrap();
    assert_same_content(&second, &want);
    assert_eq!(second.version, first.version);
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.updated_at, first.updated_at);
    assert_eq!(
        second.last_accessed_at, first.last_accessed_at,
        "a maintenance read moved last_accessed_at"
    );
    // A peek at the newest messages (`Recent::keep_clocks`) reads what
    // `load_recent` reads, the remembered write included, and moves nothing.
    let recent = crate::Recent::new(2).lookup(Some(key.clone()));
    let peeked = store
        .load_recent_as(&id, recent.clone().keep_clocks())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(texts(&peeked.messages), ["thanks", "more"]);
    assert_eq!(peeked.replay.map(|r| r.version), Some(appended.version));
    let third = store.load_with(&id, peek).await.unwrap().unwrap();
    assert_eq!(
        third.last_accessed_at, first.last_accessed_at,
        "a peek at the newest messages moved last_accessed_at"
    );
    let as_access = store.load_recent_as(&id, recent).await.unwrap().unwrap();
    assert_eq!(as_access.messages, peeked.messages);

    // A plain load reads the same session, as an access.
    pause().await;
    let plain = store.load(&id).await.unwrap().unwrap();
    assert_same_content(&plain, &first);
    assert_eq!(plain.version, first.version);
    assert_eq!(plain.created_at, first.created_at);
    assert_eq!(plain.updated_at, first.updated_at);
    assert_eq!(plain.writes, first.writes);
    assert!(plain.last_accessed_at >= first.last_accessed_at);
    let after = store.load_with(&id, peek).await.unwrap().unwrap();
    assert!(after.last_accessed_at >= first.last_accessed_at);
    assert!(
        after.last_accessed_at <= plain.last_accessed_at,
        "a maintenance read reported an access after the last one"
    );
    assert_eq!(after.version, first.version, "reads change no version");
}

/// Ids that collide with key separators, hash tags, glob patterns and paths
/// in naive key schemes.
pub const HOSTILE_IDS: &[&str] = &[
    "victim",
    "victim:messages",
    "victim:meta",
    "victim}",
    "{victim}",
    "{victim}:messages",
    "a}:b",
    "{x}",
    "*",
    "?",
    "[a-z]",
    "vic*",
    "vic?im",
    "..",
    "../victim",
    "victim/..",
    "a:msgs",
    "a",
    "a:",
    ":a",
    "%7Bvictim%7D",
    "\\{victim\\}",
    "victim ",
    " victim",
    "VICTIM",
    "víctim",
    "会话",
    "🦀",
];

pub async fn hostile_ids_are_isolated(store: Arc<dyn Store>) {
    let long = "k".repeat(SessionId::MAX_LEN);
    let mut ids: Vec<String> = HOSTILE_IDS.iter().map(|s| (*s).to_owned()).collect();
    ids.push(long);
    for (i, raw) in ids.iter().enumerate() {
        let id = sid(raw);
        let state = ConversationState::new(id.clone())
            .with_user_id(format!("owner-{i}"))
            .with_messages([user(raw)]);
        store
            .save(&state, Expect::Absent)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{raw:?} could not be created as a new session (it reached another one?): {e}"
                )
            });
    }
    // Every session holds exactly its own data.
    for (i, raw) in ids.iter().enumerate() {
        let loaded = store.load(&sid(raw)).await.unwrap().unwrap();
        assert_eq!(
            texts(&loaded.messages),
            std::slice::from_ref(raw),
            "{raw:?}"
        );
        assert_eq!(loaded.user_id, Some(format!("owner-{i}")));
        assert_eq!(
            loaded.version, 1,
            "{raw:?} was written by another id's save"
        );
    }
    let listed: BTreeSet<String> = list_all(&*store, ListQuery::default().with_limit(7))
        .await
        .into_iter()
        .map(|id| id.as_str().to_owned())
        .collect();
    assert_eq!(listed, ids.iter().cloned().collect::<BTreeSet<_>>());

    // Attacks on the victim through every other id change nothing of it.
    let victim = sid("victim");
    for raw in ids.iter().filter(|r| *r != "victim") {
        let id = sid(raw);
        store
            .append(&id, vec![user("attack")], Expect::Any)
            .await
            .unwrap();
        assert!(store.delete(&id).await.unwrap());
    }
    let v = store.load(&victim).await.unwrap().unwrap();
    assert_eq!(texts(&v.messages), ["victim"]);
    assert_eq!(v.version, 1);
    assert_eq!(list_all(&*store, ListQuery::default()).await, [victim]);
}

pub async fn content_round_trips_exactly(store: Arc<dyn Store>) {
    let id = sid("content");
    let big = "長い".repeat(50_000);
    let messages = vec![
        user(""),
        user("line1\nline2\r\n\ttabbed \u{0} nul \u{feff} bom"),
        user(&big),
        Message::assistant("").with_tool_calls(vec![ToolCall::new("c", "f", "not json {")]),
        Message::tool("c", "").with_metadata("ok", false),
        Message::system("quoted \"json\" \\ backslash"),
    ];
    store
        .append(&id, messages.clone(), Expect::Any)
        .await
        .unwrap();
    let loaded = store.load(&id).await.unwrap().unwrap();
    let got: Vec<Message> = loaded.messages.iter().map(|m| (**m).clone()).collect();
    assert_eq!(got, messages);
}

pub async fn concurrent_appends_lose_nothing(store: Arc<dyn Store>) {
    const WRITERS: usize = 32;
    const APPENDS: usize = 50;
    let id = sid("hot");
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.spawn(async move {
            let mut versions = Vec::with_capacity(APPENDS);
            for i in 0..APPENDS {
                let m = user(&format!("{w}:{i}"))
                    .with_metadata("w", w)
                    .with_metadata("i", i);
                versions.push(store.append(&id, vec![m], Expect::Any).await.unwrap());
            }
            versions
        });
    }
    let mut all_versions = Vec::new();
    while let Some(versions) = tasks.join_next().await {
        let versions = versions.unwrap();
        assert!(
            versions.windows(2).all(|p| p[0] < p[1]),
            "one writer's versions went backwards"
        );
        all_versions.extend(versions);
    }
    all_versions.sort_unstable();
    let expected: Vec<u64> = (1..=(WRITERS * APPENDS) as u64).collect();
    assert_eq!(all_versions, expected, "every append got its own version");

    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.messages.len(), WRITERS * APPENDS);
    assert_eq!(loaded.version, (WRITERS * APPENDS) as u64);
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut seen = BTreeSet::new();
    for m in &loaded.messages {
        let w = m.metadata()["w"].as_u64().unwrap();
        let i = m.metadata()["i"].as_u64().unwrap();
        assert!(seen.insert((w, i)), "message {w}:{i} stored twice");
        let want = next.entry(w).or_insert(0);
        assert_eq!(i, *want, "writer {w}'s messages out of order");
        *want += 1;
    }
}

pub async fn optimistic_writers_never_lose_updates(store: Arc<dyn Store>) {
    // Each writer does read-decide-append with the version it read, and
    // retries on conflict; every decision must land exactly once.
    const WRITERS: usize = 8;
    const TURNS: usize = 15;
    let id = sid("optimistic");
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.spawn(async move {
            let mut conflicts = 0u32;
            for t in 0..TURNS {
                loop {
                    let read = store.load_recent(&id, 1).await.unwrap();
                    let (expect, seen) = match &read {
                        Some(r) => (Expect::Version(r.version), r.total_messages),
                        None => (Expect::Absent, 0),
                    };
                    let turn = vec![
                        user(&format!("{w}:{t}:q")).with_metadata("after", seen),
                        Message::assistant(format!("{w}:{t}:a")),
                    ];
                    match store.append(&id, turn, expect).await {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
            conflicts
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.messages.len(), WRITERS * TURNS * 2);
    for (pos, pair) in loaded.messages.chunks(2).enumerate() {
        let q = pair[0].text();
        let a = pair[1].text();
        assert_eq!(
            q.trim_end_matches(":q"),
            a.trim_end_matches(":a"),
            "a turn was split"
        );
        // Each turn was decided on exactly the history before it.
        assert_eq!(
            pair[0].metadata()["after"].as_u64().unwrap(),
            (pos * 2) as u64
        );
    }
}

pub async fn fork_during_appends_copies_a_prefix(store: Arc<dyn Store>) {
    let src = sid("busy");
    store
        .append(&src, vec![user("0")], Expect::Any)
        .await
        .unwrap();
    let writer = {
        let store = Arc::clone(&store);
        let src = src.clone();
        tokio::spawn(async move {
            for i in 1..200 {
                store
                    .append(
                        &src,
                        vec![user(&format!("{i}a")), user(&format!("{i}b"))],
                        Expect::Any,
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let mut forks = Vec::new();
    for f in 0..20 {
        let dst = sid(&format!("busy-fork-{f}"));
        store.fork(&src, &dst).await.unwrap();
        forks.push(dst);
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let full = texts(&store.load(&src).await.unwrap().unwrap().messages);
    for dst in forks {
        let copy = texts(&store.load(&dst).await.unwrap().unwrap().messages);
        assert_eq!(copy.len() % 2, 1, "fork {dst} split an append");
        assert_eq!(
            copy[..],
            full[..copy.len()],
            "fork {dst} is not a snapshot of its source"
        );
    }
}

/// 64 tasks over 200 sessions doing appends, windowed reads, forks and
/// deletes; a model kept by the test (operations on one session are
/// serialized by the test, different sessions run concurrently) must match
/// every session's content exactly afterwards: nothing lost, duplicated,
/// reordered or crossing sessions.
pub async fn mixed_load_matches_a_model(store: Arc<dyn Store>) {
    use tokio::sync::Mutex;
    const TASKS: usize = 64;
    const OPS: usize = 40;
    const SESSIONS: usize = 200;
    type Model = Arc<Vec<Mutex<Option<Vec<String>>>>>;
    let model: Model = Arc::new((0..SESSIONS).map(|_| Mutex::new(None)).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (store, model) = (Arc::clone(&store), Arc::clone(&model));
        tasks.spawn(async move {
            // A cheap deterministic generator per task.
            let mut x = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for op in 0..OPS {
                let s = (next() % SESSIONS as u64) as usize;
                let id = sid(&format!("load-{s}"));
                let mut entry = model[s].lock().await;
                match next() % 10 {
                    0..=4 => {
                        let turn = vec![format!("{t}:{op}:q"), format!("{t}:{op}:a")];
                        store
                            .append(&id, turn.iter().map(|m| user(m)).collect(), Expect::Any)
                            .await
                            .unwrap();
                        entry.get_or_insert_with(Vec::new).extend(turn);
                    }
                    5..=6 => {
                        let got = store.load_recent(&id, 4).await.unwrap();
                        let want = entry
                            .as_ref()
                            .map(|m| m[m.len().saturating_sub(4)..].to_vec());
                        assert_eq!(got.map(|r| texts(&r.messages)), want, "load_recent of {id}");
                    }
                    7 => {
                        // Fork into a session this task locks too (lower index first).
                        let d = (next() % SESSIONS as u64) as usize;
                        if d == s {
                            continue;
                        }
                        drop(entry);
                        let (first, second) = if s < d { (s, d) } else { (d, s) };
                        let mut a = model[first].lock().await;
                        let mut b = model[second].lock().await;
                        let (src, dst) = if s < d {
                            (&mut a, &mut b)
                        } else {
                            (&mut b, &mut a)
                        };
                        let result = store.fork(&id, &sid(&format!("load-{d}"))).await;
                        match (src.as_ref(), dst.as_ref(), result) {
                            (None, _, Err(Error::NotFound { .. })) => {}
                            (Some(_), Some(_), Err(Error::AlreadyExists { .. })) => {}
                            (Some(history), None, Ok(1)) => **dst = Some(history.clone()),
                            (src, dst, result) => panic!(
                                "fork {s}->{d}: source {:?}, target {:?}, result {result:?}",
                                src.map(Vec::len),
                                dst.map(Vec::len)
                            ),
                        }
                    }
                    _ => {
                        let existed = store.delete(&id).await.unwrap();
                        assert_eq!(existed, entry.is_some(), "delete of {id}");
                        *entry = None;
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for s in 0..SESSIONS {
        let id = sid(&format!("load-{s}"));
        let want = model[s].lock().await.clone();
        let got = store.load(&id).await.unwrap().map(|st| texts(&st.messages));
        assert_eq!(got, want, "{id} differs from the model");
    }
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).unwrap()
}

pub async fn keyed_appends_apply_once(store: Arc<dyn Store>) {
    let id = sid("keyed");
    let first = store
        .append_with(
            &id,
            Append::new([user("a"), Message::assistant("b")])
                .key(key("turn-1"))
                .count("calls", 1),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            first.version,
            first.first_position,
            first.messages,
            first.replayed
        ),
        (1, 0, 2, false)
    );
    // The same key again — other messages, a stale expectation — is a
    // replay of the first outcome and writes nothing.
    for expect in [
        Expect::Any,
        Expect::Version(1),
        Expect::Version(77),
        Expect::Absent,
    ] {
        let again = store
            .append_with(
                &id,
                Append::new([user("other")])
                    .expect(expect)
                    .key(key("turn-1"))
                    .count("calls", 1),
            )
            .await
            .unwrap();
        assert_eq!(again, first.replay(), "repeat with {expect:?}");
    }
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(texts(&loaded.messages), ["a", "b"]);
    assert_eq!(loaded.version, 1, "a replay is not a write");
    assert_eq!(loaded.counters.get("calls"), Some(&1));

    // A new key applies; keys are per session.
    let second = store
        .append_with(
            &id,
            Append::new([user("c")])
                .key(key("turn-2"))
                .expect(Expect::Version(1)),
        )
        .await
        .unwrap();
    assert_eq!(
        (second.version, second.first_position, second.replayed),
        (2, 2, false)
    );
    let other = sid("keyed-other");
    let there = store
        .append_with(&other, Append::new([user("x")]).key(key("turn-1")))
        .await
        .unwrap();
    assert!(!there.replayed, "another session's key does not apply here");

    // At least REMEMBERED_WRITES keys are remembered.
    for i in 0..REMEMBERED_WRITES - 2 {
        store
            .append_with(
                &id,
                Append::new([user("n")]).key(key(&format!("filler-{i}"))),
            )
            .await
            .unwrap();
    }
    let before = store.load_recent(&id, 0).await.unwrap().unwrap();
    let replay = store
        .append_with(&id, Append::new([user("late")]).key(key("turn-1")))
        .await
        .unwrap();
    assert_eq!(
        replay,
        first.replay(),
        "the oldest of the last {REMEMBERED_WRITES} keys"
    );
    let after = store.load_recent(&id, 0).await.unwrap().unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.total_messages, before.total_messages);

    // A failed write remembers nothing: the key applies later.
    assert!(matches!(
        store
            .append_with(
                &id,
                Append::new([user("x")])
                    .key(key("late"))
                    .expect(Expect::Version(1))
            )
            .await,
        Err(Error::Conflict { .. })
    ));
    let late = store
        .append_with(&id, Append::new([user("x")]).key(key("late")))
        .await
        .unwrap();
    assert!(!late.replayed, "a refused write must not remember its key");

    // Deleting the session forgets its keys.
    assert!(store.delete(&id).await.unwrap());
    let fresh = store
        .append_with(&id, Append::new([user("again")]).key(key("turn-1")))
        .await
        .unwrap();
    assert_eq!((fresh.version, fresh.replayed), (1, false));
}

pub async fn concurrent_repeats_of_a_key_apply_once(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    let id = sid("repeats");
    store
        .append(&id, vec![user("start")], Expect::Any)
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.spawn(async move {
            // Half the repeats also race against unkeyed appends.
            if t % 2 == 0 {
                store
                    .append(&id, vec![user("noise")], Expect::Any)
                    .await
                    .unwrap();
            }
            store
                .append_with(
                    &id,
                    Append::new([user("once"), Message::assistant("reply")])
                        .key(key("the-turn"))
                        .count("calls", 1),
                )
                .await
                .unwrap()
        });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        outcomes.push(r.unwrap());
    }
    let applied: Vec<_> = outcomes.iter().filter(|a| !a.replayed).collect();
    assert_eq!(applied.len(), 1, "exactly one repeat applies: {outcomes:?}");
    let applied = *applied[0];
    assert!(outcomes.iter().all(|a| a.version == applied.version
        && a.first_position == applied.first_position
        && a.messages == 2));
    let loaded = store.load(&id).await.unwrap().unwrap();
    let once = texts(&loaded.messages)
        .iter()
        .filter(|t| *t == "once")
        .count();
    assert_eq!(once, 1);
    let at = applied.first_position as usize;
    assert_eq!(texts(&loaded.messages[at..at + 2]), ["once", "reply"]);
    assert_eq!(loaded.counters.get("calls"), Some(&1));
}

pub async fn load_recent_finds_remembered_writes(store: Arc<dyn Store>) {
    let id = sid("lookup");
    assert!(
        store
            .load_recent_with(&id, 5, Some(&key("k1")))
            .await
            .unwrap()
            .is_none()
    );
    let written = store
        .append_with(
            &id,
            Append::new([user("q"), Message::assistant("a")]).key(key("k1")),
        )
        .await
        .unwrap();
    store
        .append(&id, vec![user("later")], Expect::Any)
        .await
        .unwrap();

    let r = store
        .load_recent_with(&id, 1, Some(&key("k1")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.replay, Some(written.replay()));
    assert_eq!(
        texts(&r.messages),
        ["later"],
        "the window is still the newest n"
    );
    assert_eq!(r.version, 2);

    let r = store
        .load_recent_with(&id, 1, Some(&key("unknown")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.replay, None);
    let r = store.load_recent(&id, 1).await.unwrap().unwrap();
    assert_eq!(r.replay, None, "no key asked, none reported");
}

/// Checks that `key`'s write on `id` is remembered, as a replay that
/// writes nothing, and that wherever its positions point (when it still
/// has them) are exactly the messages it wrote (`want`).
async fn assert_replays_its_own(store: &Arc<dyn Store>, id: &SessionId, k: &str, want: &[&str]) {
    let before = store.load(id).await.unwrap().unwrap();
    let looked = store
        .load_recent_with(id, usize::MAX, Some(&key(k)))
        .await
        .unwrap()
        .unwrap();
    let record = looked.replay.unwrap_or_else(|| panic!("{k} is forgotten"));
    assert!(record.replayed, "{k}: {record:?}");
    let repeat = store
        .append_with(
            id,
            Append::new([user("repeat")]).key(key(k)).count("calls", 1),
        )
        .await
        .unwrap();
    assert_eq!(repeat, record, "{k}: the repeat and the lookup disagree");
    let after = store.load(id).await.unwrap().unwrap();
    assert_eq!(
        (
            after.version,
            texts(&after.messages),
            after.counters.get("calls")
        ),
        (
            before.version,
            texts(&before.messages),
            before.counters.get("calls")
        ),
        "{k}: a repeat wrote"
    );
    if let Some(at) = record.positions() {
        let got = after
            .messages
            .get(at.start as usize..at.end as usize)
            .map(texts);
        assert_eq!(
            got.as_deref(),
            Some(&want.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>()[..]),
            "{k}: its positions {at:?} locate other messages: {:?}",
            texts(&after.messages)
        );
    }
}

pub async fn replays_after_a_rewrite_are_never_another_writes(store: Arc<dyn Store>) {
    let id = sid("rewritten");
    for t in 0..3 {
        let (q, a) = (format!("q{t}"), format!("a{t}"));
        store
            .append_with(
                &id,
                Append::new([user(&q), Message::assistant(a.as_str())])
                    .key(key(&format!("t{t}")))
                    .count("calls", 1),
            )
            .await
            .unwrap();
    }
    for t in 0..3 {
        let r = store
            .load_recent_with(&id, 0, Some(&key(&format!("t{t}"))))
            .await
            .unwrap()
            .unwrap()
            .replay
            .unwrap();
        assert!(r.positions().is_some(), "nothing was rewritten yet: {r:?}");
    }
    assert_replays_its_own(&store, &id, "t1", &["q1", "a1"]).await;

    // The seed's trim: load, keep the newest messages, save.
    let mut state = store.load(&id).await.unwrap().unwrap();
    state.keep_last(3);
    store
        .save(&state, Expect::Version(state.version))
        .await
        .unwrap();
    for (k, want) in [
        ("t0", ["q0", "a0"]),
        ("t1", ["q1", "a1"]),
        ("t2", ["q2", "a2"]),
    ] {
        assert_replays_its_own(&store, &id, k, &want).await;
    }

    // A write after the rewrite is located again; a summary moves nothing.
    store
        .append_with(
            &id,
            Append::new([user("q3"), Message::assistant("a3")]).key(key("t3")),
        )
        .await
        .unwrap();
    let now = store.load_recent(&id, 0).await.unwrap().unwrap();
    store
        .add_summary(
            &id,
            Summary::new(0..2, "earlier"),
            Expect::Version(now.version),
        )
        .await
        .unwrap();
    let r = store
        .load_recent_with(&id, 0, Some(&key("t3")))
        .await
        .unwrap()
        .unwrap()
        .replay
        .unwrap();
    assert_eq!(r.positions(), Some(3..5), "{r:?}");
    assert_replays_its_own(&store, &id, "t3", &["q3", "a3"]).await;

    // A compaction: a save with a fresh state of fewer messages.
    let state = ConversationState::new(id.clone()).with_messages([Message::assistant("a2")]);
    store.save(&state, Expect::Any).await.unwrap();
    for (k, want) in [
        ("t0", ["q0", "a0"]),
        ("t1", ["q1", "a1"]),
        ("t2", ["q2", "a2"]),
        ("t3", ["q3", "a3"]),
    ] {
        assert_replays_its_own(&store, &id, k, &want).await;
    }

    // A fork starts with no remembered writes, or with ones that are its own.
    let fork = sid("rewritten-fork");
    store.fork(&id, &fork).await.unwrap();
    let there = store
        .append_with(&fork, Append::new([user("on the fork")]).key(key("t3")))
        .await
        .unwrap();
    if there.replayed {
        assert_replays_its_own(&store, &fork, "t3", &["q3", "a3"]).await;
    } else {
        let loaded = store.load(&fork).await.unwrap().unwrap();
        assert_eq!(texts(&loaded.messages), ["a2", "on the fork"]);
    }
}

pub async fn saves_carry_remembered_writes(store: Arc<dyn Store>) {
    let source = sid("carry-source");
    for (k, n) in [("k1", 2), ("k2", 1)] {
        let messages = (0..n).map(|i| user(&format!("{k}-{i}")));
        store
            .append_with(&source, Append::new(messages).key(key(k)))
            .await
            .unwrap();
    }
    let mut state = store.load(&source).await.unwrap().unwrap();
    let listed: Vec<(&str, u64, bool)> = state
        .writes
        .iter()
        .map(|w| (w.key.as_str(), w.outcome.messages, w.outcome.rewritten))
        .collect();
    assert_eq!(
        listed,
        [("k1", 2, false), ("k2", 1, false)],
        "load lists them"
    );
    assert_eq!(state.writes[1].outcome.positions(), Some(2..3));

    // Copied to another session (an import, a migration): its keys come along.
    let copy = sid("carry-copy");
    state.id = copy.clone();
    store.save(&state, Expect::Absent).await.unwrap();
    for (k, n) in [("k1", 2), ("k2", 1)] {
        let repeat = store
            .append_with(&copy, Append::new([user("again")]).key(key(k)))
            .await
            .unwrap();
        assert!(repeat.replayed, "{k} was not carried: {repeat:?}");
        assert_eq!(repeat.messages, n, "{k}");
        assert!(repeat.positions().is_none(), "{k}: {repeat:?}");
    }
    let loaded = store.load(&copy).await.unwrap().unwrap();
    assert_eq!(loaded.messages.len(), 3, "a carried key wrote");
    assert_eq!(loaded.version, 1);
    let keys: BTreeSet<&str> = loaded.writes.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["k1", "k2"]));

    // Saving the loaded state back (the seed's load → trim → save) keeps
    // them; a save adds keys it carries that are new, and keeps the rest.
    let mut again = store.load(&source).await.unwrap().unwrap();
    again.keep_last(1);
    again.writes.push(crate::RememberedWrite::new(
        key("k9"),
        crate::Appended::new(7, 0, 4),
    ));
    store
        .save(&again, Expect::Version(again.version))
        .await
        .unwrap();
    let loaded = store.load(&source).await.unwrap().unwrap();
    let listed: BTreeSet<(&str, u64, bool)> = loaded
        .writes
        .iter()
        .map(|w| (w.key.as_str(), w.outcome.messages, w.outcome.rewritten))
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([("k1", 2, true), ("k2", 1, true), ("k9", 4, true)])
    );

    // Bounded: of many carried in, the newest REMEMBERED_WRITES are kept.
    let many = sid("carry-many");
    let mut state = ConversationState::new(many.clone()).with_messages([user("x")]);
    state.writes = (0..REMEMBERED_WRITES + 6)
        .map(|i| {
            crate::RememberedWrite::new(
                key(&format!("w{i}")),
                crate::Appended::new(i as u64 + 1, 0, 1),
            )
        })
        .collect();
    store.save(&state, Expect::Absent).await.unwrap();
    let newest = format!("w{}", REMEMBERED_WRITES + 5);
    let repeat = store
        .append_with(&many, Append::new([user("y")]).key(key(&newest)))
        .await
        .unwrap();
    assert!(repeat.replayed, "the newest carried key");
    let kept = store.load(&many).await.unwrap().unwrap().writes.len();
    assert!(
        (REMEMBERED_WRITES..=REMEMBERED_WRITES + 6).contains(&kept),
        "{kept} kept"
    );
}

pub async fn pending_progress_is_seen_only_by_its_key_until_its_write(store: Arc<dyn Store>) {
    let id = sid("pending");
    // Made once each: messages carry their creation time.
    let made: Vec<crate::Pending> = (0..4)
        .map(|n| {
            crate::Pending::new(
                (0..n).map(|i| user(&format!("round {i}"))).collect(),
                [("calls".to_owned(), n as u64)].into(),
            )
        })
        .collect();
    let progress = |n: usize| made[n].clone();
    // Before the session exists: recorded, but no session appears.
    store
        .put_pending(&id, &key("t1"), &progress(1))
        .await
        .unwrap();
    assert!(!store.exists(&id).await.unwrap());
    assert!(store.load(&id).await.unwrap().is_none());
    assert!(
        store
            .list(&ListQuery::default())
            .await
            .unwrap()
            .sessions
            .is_empty()
    );
    assert_eq!(
        store.load_pending(&id, &key("t1")).await.unwrap(),
        Some(progress(1))
    );
    assert!(store.load_pending(&id, &key("t2")).await.unwrap().is_none());

    // With the session: the window read asked about the key carries it,
    // nothing else shows it, and recording it changes no version.
    store
        .append(&id, vec![user("hi")], Expect::Any)
        .await
        .unwrap();
    store
        .put_pending(&id, &key("t1"), &progress(2))
        .await
        .unwrap();
    let r = store
        .load_recent_with(&id, 10, Some(&key("t1")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.pending, Some(progress(2)), "replaced");
    assert_eq!((r.version, r.replay), (1, None));
    assert_eq!(texts(&r.messages), ["hi"]);
    let plain = store.load_recent(&id, 10).await.unwrap().unwrap();
    assert_eq!(plain.pending, None);
    let whole = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        (whole.version, texts(&whole.messages)),
        (1, vec!["hi".to_owned()])
    );
    assert!(whole.writes.is_empty());

    // The write under the key ends it; recording it afterwards is ignored.
    store
        .append_with(
            &id,
            Append::new([user("q"), Message::assistant("a")]).key(key("t1")),
        )
        .await
        .unwrap();
    let r = store
        .load_recent_with(&id, 10, Some(&key("t1")))
        .await
        .unwrap()
        .unwrap();
    assert!(r.replay.is_some());
    assert_eq!(r.pending, None);
    store
        .put_pending(&id, &key("t1"), &progress(3))
        .await
        .unwrap();
    assert!(store.load_pending(&id, &key("t1")).await.unwrap().is_none());

    // A fork does not copy progress; deleting the session removes it.
    store
        .put_pending(&id, &key("t2"), &progress(1))
        .await
        .unwrap();
    let fork = sid("pending-fork");
    store.fork(&id, &fork).await.unwrap();
    assert!(
        store
            .load_pending(&fork, &key("t2"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.delete(&id).await.unwrap());
    assert!(store.load_pending(&id, &key("t2")).await.unwrap().is_none());
}

pub async fn counters_add_up_atomically(store: Arc<dyn Store>) {
    const TASKS: u64 = 16;
    const EACH: u64 = 10;
    let id = sid("counters");
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.spawn(async move {
            for _ in 0..EACH {
                store
                    .append_with(
                        &id,
                        Append::new([user("m")])
                            .count("calls", 1)
                            .count("tokens", t + 1)
                            .count("calls", 1),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let mut want = Counters::new();
    want.insert("calls".into(), 2 * TASKS * EACH);
    want.insert("tokens".into(), EACH * TASKS * (TASKS + 1) / 2);
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.counters, want);
    assert_eq!(loaded.messages.len() as u64, TASKS * EACH);
    assert_eq!(
        store.load_recent(&id, 0).await.unwrap().unwrap().counters,
        want
    );

    // Fork copies them; save replaces them; other writes keep them.
    let copy = sid("counters-copy");
    store.fork(&id, &copy).await.unwrap();
    assert_eq!(store.load(&copy).await.unwrap().unwrap().counters, want);
    store
        .merge_metadata(&copy, Metadata::new(), Expect::Any)
        .await
        .unwrap();
    assert_eq!(store.load(&copy).await.unwrap().unwrap().counters, want);
    let mut replaced = store.load(&copy).await.unwrap().unwrap();
    replaced.counters = Counters::from([("other".to_owned(), 5)]);
    store.save(&replaced, Expect::Any).await.unwrap();
    assert_eq!(
        store.load(&copy).await.unwrap().unwrap().counters,
        replaced.counters
    );
    assert_eq!(
        store.load(&id).await.unwrap().unwrap().counters,
        want,
        "the source is untouched"
    );
}
