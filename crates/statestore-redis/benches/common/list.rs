//! The sidebar benchmark every store's suite runs (issue 23): one user's
//! sessions, newest first, a page of [`PAGE`] at a time, in a store of
//! [`SIZES`] sessions over [`USERS`] users. Included by the memory, SQLite,
//! Redis and PostgreSQL suites (`#[path]`), so all four measure the same
//! population and the same pages.
//!
//! # The population
//!
//! A store of `n` sessions (n = 1,000 and 100,000) over 1,000 users
//! (`user-0000` … `user-0999`), each session with a user message, an
//! assistant reply and a title ([`TITLE_KEY`]):
//!
//! - the **big user** `user-0000` holds n / 10 sessions (10,000 at
//!   100,000: the "10,000-session user"; 100 at 1,000, the same
//!   share);
//! - the **measured ordinary user** `user-0001` holds [`ORDINARY_SESSIONS`]
//!   at both sizes, so that its first page is a full page of 50 at both
//!   and the two figures compare the same work;
//! - the rest go round-robin to the other 998 users (about 90 each at
//!   100,000, like `user-0001`; 0 or 1 at 1,000).
//!
//! The owners are shuffled (a fixed seed), so every user's sessions are
//! spread over the whole write history, and written through the store's
//! own `save` (create-only) by [`WRITERS`]-many concurrent tasks: no
//! backend's tables or keys are written directly. Each size is a fresh,
//! empty store, populated once and used for all of its measurements.
//!
//! # The pages
//!
//! - `first page/{n}`: `ListQuery::for_user("user-0001").recent()
//!   .with_limit(50)`.
//! - `deep page/{n}`: the page of 50 after a cursor [`DEEP_SHARE`]
//!   into the big user's listing — 5,000 sessions deep of 10,000 at
//!   100,000, 50 deep of 100 at 1,000 (the deep page is measured at both
//!   sizes, the big user proportionally smaller at 1,000, so that its
//!   ratio is the flatness in n *and* depth). The cursor is found once, by
//!   walking pages of 500 (untimed).
//!
//! Each timed call returns exactly 50 sessions, checked once before timing.

use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use statestore_core::{ConversationState, Expect, ListQuery, Message, SessionId, Store, TITLE_KEY};

/// The store sizes, in sessions.
pub(crate) const SIZES: [usize; 2] = [1_000, 100_000];
/// The users the sessions are spread over.
pub(crate) const USERS: usize = 1_000;
/// The page size.
pub(crate) const PAGE: usize = 50;
/// The sessions of the measured ordinary user, at every size.
pub(crate) const ORDINARY_SESSIONS: usize = 100;
/// The big user holds `n / BIG_SHARE` sessions.
pub(crate) const BIG_SHARE: usize = 10;
/// The deep page starts `n / DEEP_SHARE` sessions into the big user's
/// listing (half of it).
pub(crate) const DEEP_SHARE: usize = 20;
/// Concurrent `save` tasks while populating.
pub(crate) const WRITERS: usize = 64;
/// The measured ordinary user.
pub(crate) const ORDINARY: &str = "user-0001";
/// The big user.
pub(crate) const BIG: &str = "user-0000";
/// The name of the first-page benchmarks (`first page/{n}`).
pub(crate) const FIRST_PAGE: &str = "first page";
/// The name of the deep-page benchmarks (`deep page/{n}`).
pub(crate) const DEEP_PAGE: &str = "deep page";

fn user(u: usize) -> String {
    format!("user-{u:04}")
}

/// The owner of each of `n` sessions: the big user's share, the ordinary
/// user's [`ORDINARY_SESSIONS`], the rest round-robin over the other
/// users, shuffled with a fixed seed.
fn owners(n: usize) -> Vec<String> {
    let big = n / BIG_SHARE;
    let mut owners: Vec<String> = Vec::with_capacity(n);
    owners.extend(std::iter::repeat_n(BIG.to_owned(), big));
    owners.extend(std::iter::repeat_n(ORDINARY.to_owned(), ORDINARY_SESSIONS));
    let rest = n - owners.len();
    owners.extend((0..rest).map(|i| user(2 + i % (USERS - 2))));
    // Fisher–Yates with xorshift64*: the same order every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..owners.len()).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let j = r % (u64::try_from(i).unwrap() + 1);
        owners.swap(i, usize::try_from(j).unwrap());
    }
    owners
}

/// Writes the population of `n` sessions into the empty `store`.
pub(crate) async fn populate(store: Arc<dyn Store>, n: usize) {
    let owners = Arc::new(owners(n));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (store, owners, next) = (Arc::clone(&store), Arc::clone(&owners), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(owner) = owners.get(i) else { break };
                let id = SessionId::new(format!("list-{i:06}")).unwrap();
                let mut state = ConversationState::new(id)
                    .with_user_id(owner.clone())
                    .with_messages([
                        Message::user(format!("Question {i}: what should I cook tonight?")),
                        Message::assistant("Something quick: a vegetable stir-fry with rice."),
                    ]);
                state.metadata.insert(
                    TITLE_KEY.to_owned(),
                    serde_json::Value::String(format!("Dinner ideas #{i}")),
                );
                store.save(&state, Expect::Absent).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// The cursor `depth` sessions into `user`'s recent-first listing, found by
/// walking pages of 500.
async fn cursor_at(store: &dyn Store, user: &str, depth: usize) -> String {
    let mut cursor = None;
    let mut walked = 0;
    while walked < depth {
        let limit = (depth - walked).min(500);
        let page = store
            .list(
                &ListQuery::for_user(user)
                    .recent()
                    .with_limit(limit)
                    .after(cursor),
            )
            .await
            .unwrap();
        walked += page.sessions.len();
        cursor = page.next_cursor;
        assert!(cursor.is_some(), "{user} holds fewer than {depth} sessions");
    }
    cursor.unwrap()
}

/// A populated store and the two queries measured on it.
struct Prepared {
    store: Arc<dyn Store>,
    first: ListQuery,
    deep: ListQuery,
}

/// A fresh store of `n` sessions from `store_for`, populated (the time it
/// took printed, not recorded), and its queries, each checked to return a
/// full page of titled sessions.
#[allow(
    clippy::print_stderr,
    reason = "the fill's time, for whoever runs the suite"
)]
fn prepare(
    group_name: &str,
    rt: &tokio::runtime::Runtime,
    store_for: &dyn Fn(usize) -> Arc<dyn Store>,
    n: usize,
) -> Prepared {
    let store = store_for(n);
    let start = Instant::now();
    rt.block_on(populate(Arc::clone(&store), n));
    eprintln!(
        "{group_name}: populated {n} sessions in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let first = ListQuery::for_user(ORDINARY).recent().with_limit(PAGE);
    let cursor = rt.block_on(cursor_at(&*store, BIG, n / DEEP_SHARE));
    let deep = ListQuery::for_user(BIG)
        .recent()
        .with_limit(PAGE)
        .after(Some(cursor));
    for (name, query) in [(FIRST_PAGE, &first), (DEEP_PAGE, &deep)] {
        let page = rt.block_on(store.list(query)).unwrap();
        assert_eq!(page.sessions.len(), PAGE, "{name} at {n}");
        assert!(page.sessions.iter().all(|s| s.title.is_some()));
    }
    Prepared { store, first, deep }
}

/// Runs the group `group_name`: for each of [`SIZES`], a fresh store from
/// `store_for(n)`, populated, then its first page and deep page timed.
/// The store is populated when the first of its benchmarks runs, so a run
/// whose criterion filter leaves them out spends nothing on it; it is
/// dropped before the next size. `around(id, done)` is called right before
/// (`done` false) and right after (`done` true) each benchmark that runs,
/// with its id (`first page/1000`): a suite reads the server's own figures
/// there.
pub(crate) fn bench_list(
    c: &mut Criterion,
    group_name: &str,
    rt: &tokio::runtime::Runtime,
    store_for: &dyn Fn(usize) -> Arc<dyn Store>,
    around: &dyn Fn(&str, bool),
) {
    let mut group = c.benchmark_group(group_name);
    for n in SIZES {
        let prepared = OnceCell::new();
        let get = || prepared.get_or_init(|| prepare(group_name, rt, store_for, n));
        for name in [FIRST_PAGE, DEEP_PAGE] {
            let id = format!("{name}/{n}");
            // Criterion calls the routine once per sample: `around` goes
            // before its first call and after the benchmark.
            let started = Cell::new(false);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                let p = get();
                let query = if name == FIRST_PAGE {
                    &p.first
                } else {
                    &p.deep
                };
                if !started.replace(true) {
                    around(&id, false);
                }
                b.to_async(rt)
                    .iter(|| async { std::hint::black_box(p.store.list(query).await.unwrap()) });
            });
            if started.get() {
                around(&id, true);
            }
        }
    }
    group.finish();
}
