//! The TTL's meaning (`docs/design.md`, "Retention"), held on every
//! backend by a second, smaller suite of stores built with a short TTL:
//! [`expiry_suite!`](crate::expiry_suite) expands to one test per case,
//! from an expression that builds a store with the TTL it is given:
//!
//! ```text
//! statestore_core::expiry_suite!(|ttl| async move { MemoryStore::builder().ttl(ttl).build() });
//! ```
//!
//! The cases sleep (the clock is the server's or the store's own); their
//! margins are wide (a TTL of 1.5 s, checks 0.5 s from either edge) so
//! that a loaded machine does not make them fail.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::listing::walk;
use super::{key, sid, user};
use crate::{Append, Expect, ListQuery, Load, Metadata, Pending, Store, Summary};

/// The TTL the expiry cases build their stores with.
pub const TTL: Duration = Duration::from_millis(1_500);

/// Expands to one `#[tokio::test]` per expiry case; `$make` is a closure
/// from a TTL to a future of a fresh store.
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
#[macro_export]
macro_rules! expiry_suite {
    ($make:expr) => {
        $crate::__expiry_tests!($make; expiry_removes_the_whole_session_at_once, only_accesses_extend_a_session, reads_extend_a_session);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __expiry_tests {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::expiry::$case($make).await;
            }
        )*
    };
}

async fn store<S: Store + 'static, F: Future<Output = S>>(
    make: impl Fn(Duration) -> F,
) -> Arc<dyn Store> {
    Arc::new(make(TTL).await)
}

/// At expiry the session is gone everywhere at once — reads, `exists`,
/// `list`, its recorded progress — and a write under the same id starts
/// from nothing: a keyed write the expired session remembered applies
/// again (its memory expired with it).
pub async fn expiry_removes_the_whole_session_at_once<S, F>(make: impl Fn(Duration) -> F)
where
    S: Store + 'static,
    F: Future<Output = S>,
{
    let store = store(make).await;
    let id = sid("short-lived");
    store
        .append_with(&id, Append::new([user("one")]).key(key("k1")))
        .await
        .unwrap();
    let mut patch = Metadata::new();
    patch.insert("plan".into(), "pro".into());
    store.merge_metadata(&id, patch, Expect::Any).await.unwrap();
    store
        .add_summary_with(&id, crate::AddSummary::new(Summary::new(0..1, "s")))
        .await
        .unwrap();
    let pending = Pending::new(vec![user("half")], crate::Counters::new());
    store.put_pending(&id, &key("k2"), &pending).await.unwrap();
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;

    assert!(
        store.load(&id).await.unwrap().is_none(),
        "load after expiry"
    );
    assert!(store.load_recent(&id, 5).await.unwrap().is_none());
    assert!(!store.exists(&id).await.unwrap(), "exists after expiry");
    assert!(
        walk(&*store, ListQuery::new().recent()).await.is_empty(),
        "listed after expiry"
    );
    assert!(walk(&*store, ListQuery::new()).await.is_empty());
    assert!(
        store.load_pending(&id, &key("k2")).await.unwrap().is_none(),
        "progress outlived it"
    );

    let again = store
        .append_with(&id, Append::new([user("one again")]).key(key("k1")))
        .await
        .unwrap();
    assert!(
        !again.replayed,
        "the remembered write expired with the session"
    );
    assert_eq!(again.version, 1, "a new session starts at version 1");
    let fresh = store.load(&id).await.unwrap().unwrap();
    assert_eq!(fresh.messages.len(), 1);
    assert!(fresh.summaries.is_empty() && fresh.metadata.is_empty() && fresh.counters.is_empty());
}

/// Only accesses restart the clock: `touch` and writes do; `list`,
/// `exists`, `load_pending` and maintenance reads (`Load::keep_clocks`,
/// `Recent::keep_clocks`) do not, so a session only looked at expires on
/// time.
pub async fn only_accesses_extend_a_session<S, F>(make: impl Fn(Duration) -> F)
where
    S: Store + 'static,
    F: Future<Output = S>,
{
    let store = store(make).await;
    let (touched, written, looked_at) = (sid("touched"), sid("written"), sid("looked-at"));
    for id in [&touched, &written, &looked_at] {
        store
            .append(id, vec![user("hi")], Expect::Any)
            .await
            .unwrap();
    }
    tokio::time::sleep(TTL - Duration::from_millis(500)).await;
    assert!(store.touch(&touched).await.unwrap());
    store
        .append(&written, vec![user("again")], Expect::Any)
        .await
        .unwrap();
    for _ in 0..3 {
        walk(&*store, ListQuery::new()).await;
        walk(&*store, ListQuery::new().recent()).await;
        assert!(store.exists(&looked_at).await.unwrap());
        store.load_pending(&looked_at, &key("k")).await.unwrap();
        let peeked = store
            .load_with(&looked_at, Load::new().keep_clocks())
            .await
            .unwrap();
        assert!(peeked.is_some());
        let recent = store
            .load_recent_as(&looked_at, crate::Recent::new(1).keep_clocks())
            .await
            .unwrap();
        assert!(recent.is_some());
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // 1.0 s after the accesses, 2.0 s after the first writes.
    assert!(
        store.exists(&touched).await.unwrap(),
        "touch restarts the clock"
    );
    assert!(
        store.exists(&written).await.unwrap(),
        "a write restarts the clock"
    );
    assert!(
        !store.exists(&looked_at).await.unwrap(),
        "looking is not an access"
    );
}

/// A read that loads a session for use (`load`, `load_recent`) is an
/// access: read when two thirds of its TTL have passed, a session lives
/// on. (A backend may record a read's access coarsely — Redis skips it
/// while more than 90 % of the TTL is left, `docs/design.md` — so the
/// reads come late enough that every backend records them.)
pub async fn reads_extend_a_session<S, F>(make: impl Fn(Duration) -> F)
where
    S: Store + 'static,
    F: Future<Output = S>,
{
    let store = store(make).await;
    let (loaded, recent, unread) = (sid("loaded"), sid("recent"), sid("unread"));
    for id in [&loaded, &recent, &unread] {
        store
            .append(id, vec![user("hi")], Expect::Any)
            .await
            .unwrap();
    }
    tokio::time::sleep(TTL - Duration::from_millis(500)).await;
    assert!(store.load(&loaded).await.unwrap().is_some());
    assert!(store.load_recent(&recent, 1).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // 1.0 s after the reads, 2.0 s after the writes.
    assert!(
        store.exists(&loaded).await.unwrap(),
        "load restarts the clock"
    );
    assert!(
        store.exists(&recent).await.unwrap(),
        "load_recent restarts the clock"
    );
    assert!(!store.exists(&unread).await.unwrap(), "it expired on time");
}
