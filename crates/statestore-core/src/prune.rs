//! [`Store::prune`]: retention by age, the same on
//! every backend because it is one general mechanism over two others —
//! a [`list`](crate::Store::list) walk of the sessions the criteria admit
//! (newest first, through the index of last writes) and a
//! [`delete_with`](crate::Store::delete_with) of each, guarded by the
//! version it was listed at.
//!
//! - **Idle** (`idle_for`): last written before `as_of − idle_for` — the
//!   same `updated_at` the sidebar sorts by. Reads, `touch` and maintenance
//!   writes are not activity, so they do not keep a session (see the TTL
//!   rules in `docs/design.md`).
//! - **Old** (`older_than`): created before `as_of − older_than`, whatever
//!   was written since.
//! - Both criteria given: a session must meet both. Neither: refused with
//!   [`Error::InvalidQuery`] (it would remove everything).
//! - **A session written between the walk and its delete is kept**: the
//!   guarded delete finds another version and removes nothing.
//! - **Bounded work per call**: at most `limit` sessions examined, then a
//!   cursor to resume from ([`Pruned::next_cursor`], `None` when done).
//!   Cursors stay valid across calls and writes (they are listing cursors).
//! - **Dry run**: the same walk, counting what would be removed, removing
//!   nothing.
//!
//! **Retries.** Pruning is idempotent: a session removed is not listed
//! again, so a retried call (after an error, or a lost reply) goes on from
//! the same cursor and removes only what is left. An error stops the call
//! where it happened: sessions removed before it stay removed (its
//! [`write_outcome`](crate::Error::write_outcome) is the failing delete's).

use std::time::Duration;

use crate::{Delete, Error, Expect, ListQuery, Result, Store, TimeRange, Timestamp};

/// Which sessions [`Store::prune`] removes (see the
/// [module docs](crate::prune)).
///
/// ```
/// use std::time::Duration;
/// use statestore_core::PruneQuery;
///
/// let week = Duration::from_secs(7 * 24 * 3600);
/// let query = PruneQuery::idle_for(week).user("alice").dry_run().with_limit(500);
/// assert!(query.dry_run);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneQuery {
    /// Sessions last written longer ago than this.
    pub idle_for: Option<Duration>,
    /// Sessions created longer ago than this.
    pub older_than: Option<Duration>,
    /// Only this user's sessions.
    pub user_id: Option<String>,
    /// Count, remove nothing.
    pub dry_run: bool,
    /// The time the ages are measured at (default: the call's own now).
    pub as_of: Option<Timestamp>,
    /// Resume after a previous call ([`Pruned::next_cursor`]).
    pub cursor: Option<String>,
    /// Sessions examined at most per call (at least 1 is used).
    pub limit: usize,
}

impl PruneQuery {
    /// Sessions idle (not written) for longer than `idle_for`.
    #[must_use]
    pub fn idle_for(idle_for: Duration) -> Self {
        Self {
            idle_for: Some(idle_for),
            older_than: None,
            user_id: None,
            dry_run: false,
            as_of: None,
            cursor: None,
            limit: 100,
        }
    }

    /// Sessions created longer ago than `older_than`.
    #[must_use]
    pub fn older_than(older_than: Duration) -> Self {
        Self {
            idle_for: None,
            older_than: Some(older_than),
            ..Self::idle_for(Duration::ZERO)
        }
    }

    /// Also requires sessions created longer ago than `older_than`.
    #[must_use]
    pub fn and_older_than(mut self, older_than: Duration) -> Self {
        self.older_than = Some(older_than);
        self
    }

    /// Only `user`'s sessions.
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user_id = Some(user.into());
        self
    }

    /// Counts what would be removed, removing nothing.
    #[must_use]
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Measures ages at `as_of` instead of now.
    #[must_use]
    pub fn as_of(mut self, as_of: Timestamp) -> Self {
        self.as_of = Some(as_of);
        self
    }

    /// Resumes after a previous call.
    #[must_use]
    pub fn after(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    /// Examines at most `limit` sessions per call.
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

impl PruneQuery {
    /// The listing of the sessions this query removes when measured at
    /// `as_of` (newest first, one page of `limit` from the cursor): what
    /// `prune` walks, and, with [`ListQuery::with_count`], how a tool
    /// counts them first.
    #[must_use]
    pub fn listing(&self, as_of: Timestamp) -> ListQuery {
        let before = |age: Option<Duration>| {
            age.map_or(TimeRange::any(), |age| {
                let age = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                TimeRange::before(Timestamp::from_unix_millis(
                    as_of.as_unix_millis().saturating_sub(age),
                ))
            })
        };
        ListQuery::new()
            .recent()
            .user(self.user_id.clone())
            .updated(before(self.idle_for))
            .created(before(self.older_than))
            .after(self.cursor.clone())
            .with_limit(self.limit.max(1))
    }
}

/// What one [`Store::prune`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pruned {
    /// Sessions removed (or, in a dry run, that would be).
    pub removed: u64,
    /// Sessions skipped because they were written (or deleted) since the
    /// walk found them.
    pub kept: u64,
    /// Pass to [`PruneQuery::after`] to go on; `None` when done.
    pub next_cursor: Option<String>,
}

/// The general implementation every backend uses (see the module docs).
pub(crate) async fn run<S: Store + ?Sized>(store: &S, query: &PruneQuery) -> Result<Pruned> {
    if query.idle_for.is_none() && query.older_than.is_none() {
        return Err(Error::InvalidQuery {
            reason: "prune needs idle_for or older_than: without either it would remove every \
                     session"
                .to_owned(),
        });
    }
    let as_of = query.as_of.unwrap_or_else(Timestamp::now);
    let page = store.list(&query.listing(as_of)).await?;
    let mut done = Pruned {
        next_cursor: page.next_cursor,
        ..Pruned::default()
    };
    for session in page.sessions {
        if query.dry_run {
            done.removed += 1;
            continue;
        }
        let guarded = Delete::new().expect(Expect::Version(session.version));
        match store.delete_with(&session.id, guarded).await {
            Ok(true) => done.removed += 1,
            Ok(false) | Err(Error::Conflict { .. }) => done.kept += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
