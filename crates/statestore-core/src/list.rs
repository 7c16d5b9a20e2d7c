//! [`ListQuery`] and [`ListPage`]: which sessions [`Store::list`] returns,
//! in which order, and how a listing is walked page by page.
//!
//! # Order
//!
//! - [`ListOrder::Id`] (the default): ascending by id, bytewise.
//! - [`ListOrder::Recent`], a chat product's sidebar: newest activity first,
//!   by `updated_at` descending and, between sessions written in the same
//!   millisecond, by id descending (bytewise). `updated_at` moves with every
//!   write that changes the session (append, save, metadata, summary, fork
//!   of a new session); reads, [`Store::touch`] and maintenance writes
//!   ([`Save::keep_clocks`](crate::Save::keep_clocks)) leave it.
//!
//! # Cursors
//!
//! A page's [`next_cursor`](ListPage::next_cursor) is the sort key of its
//! last session ([`ListCursor`]), so the next page starts strictly after it
//! (keyset pagination: no offsets, no server-side state). A cursor stays
//! valid however long the walk takes and whatever is written meanwhile:
//!
//! - **no session appears twice** in one walk;
//! - **every session not written during the walk appears exactly once**
//!   (if it matches the filters);
//! - a session written during a [`Recent`](ListOrder::Recent) walk moves
//!   ahead of the cursor, so it appears at most once (on a page read before
//!   the write, or not at all); one created or deleted during a walk may or
//!   may not appear.
//!
//! A page may hold fewer than `limit` sessions, even none, while
//! `next_cursor` is `Some`: a backend that filters as it walks stops after a
//! bounded amount of work. The walk ends only when `next_cursor` is `None`.
//! A cursor of one order given to a listing in the other is refused with
//! [`Error::InvalidCursor`].
//!
//! # Cost
//!
//! Every backend keeps an index per order, for all sessions and per user,
//! in the same atomic write that changes `updated_at`; a page costs
//! O(log n + page) in the number of sessions n. The `updated` range narrows
//! a [`Recent`](ListOrder::Recent) walk through the index; the `created`
//! range and the metadata filter are checked on the sessions the walk
//! meets, so they cost the sessions skipped. [`ListQuery::with_count`]
//! costs one count of the matching sessions.
//!
//! [`Store::list`]: crate::Store::list
//! [`Store::touch`]: crate::Store::touch

use std::cmp::Ordering;

use serde_json::Value;

use crate::{Error, Metadata, Result, SessionId, Timestamp, Version};

/// The metadata key holding a session's title: a JSON string, returned by
/// [`Store::list`](crate::Store::list) as [`SessionInfo::title`].
pub const TITLE_KEY: &str = "statestore.title";

/// The order of [`Store::list`](crate::Store::list) (see the
/// [module docs](crate::list)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListOrder {
    /// Ascending by id.
    #[default]
    Id,
    /// Newest activity (`updated_at`) first.
    Recent,
}

impl ListOrder {
    /// How two sessions compare in this order (`Less`: `a` is listed first).
    #[must_use]
    pub fn compare(self, a: &SessionInfo, b: &SessionInfo) -> Ordering {
        match self {
            Self::Id => a.id.cmp(&b.id),
            Self::Recent => (b.updated_at, &b.id).cmp(&(a.updated_at, &a.id)),
        }
    }

    fn tag(self) -> char {
        match self {
            Self::Id => 'i',
            Self::Recent => 'r',
        }
    }
}

/// A half-open range of times: `from` (inclusive) until `until`
/// (exclusive); either end may be open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TimeRange {
    /// The earliest time admitted, if any.
    pub from: Option<Timestamp>,
    /// The first time no longer admitted, if any.
    pub until: Option<Timestamp>,
}

impl TimeRange {
    /// Every time.
    #[must_use]
    pub const fn any() -> Self {
        Self {
            from: None,
            until: None,
        }
    }

    /// `from` and later.
    #[must_use]
    pub const fn since(from: Timestamp) -> Self {
        Self {
            from: Some(from),
            until: None,
        }
    }

    /// Before `until`.
    #[must_use]
    pub const fn before(until: Timestamp) -> Self {
        Self {
            from: None,
            until: Some(until),
        }
    }

    /// From `from` (inclusive) to `until` (exclusive).
    #[must_use]
    pub const fn between(from: Timestamp, until: Timestamp) -> Self {
        Self {
            from: Some(from),
            until: Some(until),
        }
    }

    /// Whether `t` is in the range.
    #[must_use]
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from.is_none_or(|f| t >= f) && self.until.is_none_or(|u| t < u)
    }

    /// Whether both ends are open.
    #[must_use]
    pub fn is_any(&self) -> bool {
        self.from.is_none() && self.until.is_none()
    }
}

/// Which sessions [`Store::list`](crate::Store::list) returns, in which
/// order (see the [module docs](crate::list)).
///
/// ```
/// use statestore_core::{ListOrder, ListQuery, TimeRange, Timestamp};
///
/// // The sidebar: alice's 50 most recent sessions tagged project=apollo.
/// let query = ListQuery::for_user("alice")
///     .recent()
///     .with_limit(50)
///     .where_metadata("project", "apollo")
///     .updated(TimeRange::since(Timestamp::from_unix_millis(1_700_000_000_000)))
///     .with_count();
/// assert_eq!(query.order, ListOrder::Recent);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only sessions of this user.
    pub user_id: Option<String>,
    /// The order (default: by id).
    pub order: ListOrder,
    /// Only sessions whose metadata holds every one of these keys with an
    /// equal value (empty: no filter).
    pub metadata: Metadata,
    /// Only sessions created in this range.
    pub created: TimeRange,
    /// Only sessions last written in this range.
    pub updated: TimeRange,
    /// Continue after a previous page ([`ListPage::next_cursor`]).
    pub cursor: Option<String>,
    /// At most this many sessions per page (at least 1 is used).
    pub limit: usize,
    /// Also count every session the filters admit ([`ListPage::total`]).
    pub count: bool,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            user_id: None,
            order: ListOrder::Id,
            metadata: Metadata::new(),
            created: TimeRange::any(),
            updated: TimeRange::any(),
            cursor: None,
            limit: 100,
            count: false,
        }
    }
}

impl ListQuery {
    /// Every session, by id, 100 per page.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions of one user.
    #[must_use]
    pub fn for_user(user_id: impl Into<String>) -> Self {
        Self::new().user(Some(user_id.into()))
    }

    /// Only sessions of `user_id` (`None`: every user's).
    #[must_use]
    pub fn user(mut self, user_id: Option<String>) -> Self {
        self.user_id = user_id;
        self
    }

    /// Newest activity first ([`ListOrder::Recent`]).
    #[must_use]
    pub fn recent(self) -> Self {
        self.order(ListOrder::Recent)
    }

    /// Sets the order.
    #[must_use]
    pub fn order(mut self, order: ListOrder) -> Self {
        self.order = order;
        self
    }

    /// Sets the page size.
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Only sessions whose metadata `key` equals `value` (adds to the
    /// filters already set).
    #[must_use]
    pub fn where_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Only sessions created in `range`.
    #[must_use]
    pub fn created(mut self, range: TimeRange) -> Self {
        self.created = range;
        self
    }

    /// Only sessions last written in `range`.
    #[must_use]
    pub fn updated(mut self, range: TimeRange) -> Self {
        self.updated = range;
        self
    }

    /// Also counts the matching sessions ([`ListPage::total`]).
    #[must_use]
    pub fn with_count(mut self) -> Self {
        self.count = true;
        self
    }

    /// Continues after a previous page.
    #[must_use]
    pub fn after(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    /// The decoded [`cursor`](Self::cursor), if any.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCursor`] when it is not a cursor of this query's
    /// order.
    pub fn position(&self) -> Result<Option<ListCursor>> {
        self.cursor
            .as_deref()
            .map(|c| ListCursor::decode(c, self.order))
            .transpose()
    }

    /// Whether a session passes the user, time and metadata filters (not the
    /// cursor). `metadata` is the session's metadata; it is looked at only
    /// when the query filters on metadata.
    #[must_use]
    pub fn admits(&self, info: &SessionInfo, metadata: &Metadata) -> bool {
        self.user_id
            .as_ref()
            .is_none_or(|u| info.user_id.as_ref() == Some(u))
            && self.created.contains(info.created_at)
            && self.updated.contains(info.updated_at)
            && self
                .metadata
                .iter()
                .all(|(k, v)| metadata.get(k) == Some(v))
    }

    /// Whether the query filters beyond user and order (time ranges or
    /// metadata), so that a walk of an index may skip sessions.
    #[must_use]
    pub fn filters(&self) -> bool {
        !self.metadata.is_empty() || !self.created.is_any() || !self.updated.is_any()
    }
}

/// What [`Store::list`](crate::Store::list) returns about a session, read
/// without loading its history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session.
    pub id: SessionId,
    /// Its owner, if any.
    pub user_id: Option<String>,
    /// Its title: the metadata value under [`TITLE_KEY`], when a string.
    pub title: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last written (the [`Recent`](ListOrder::Recent) order).
    pub updated_at: Timestamp,
    /// Its version when it was listed: an [`Expect::Version`](crate::Expect)
    /// for a write (or a [`Store::delete_with`](crate::Store::delete_with))
    /// that must not apply if the session changed since.
    pub version: Version,
}

impl SessionInfo {
    /// A session with no owner, no title and both clocks at `updated_at`.
    #[must_use]
    pub fn new(id: SessionId, updated_at: Timestamp) -> Self {
        Self {
            id,
            user_id: None,
            title: None,
            created_at: updated_at,
            updated_at,
            version: 0,
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// Sets the owner.
    #[must_use]
    pub fn with_user(mut self, user_id: Option<String>) -> Self {
        self.user_id = user_id;
        self
    }

    /// Sets the title.
    #[must_use]
    pub fn with_title(mut self, title: Option<String>) -> Self {
        self.title = title;
        self
    }

    /// Sets the creation time.
    #[must_use]
    pub fn created_at(mut self, created_at: Timestamp) -> Self {
        self.created_at = created_at;
        self
    }

    /// The title held by `metadata` (a string under [`TITLE_KEY`]).
    #[must_use]
    pub fn title_in(metadata: &Metadata) -> Option<String> {
        metadata.get(TITLE_KEY)?.as_str().map(str::to_owned)
    }
}

/// One page of [`Store::list`](crate::Store::list).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ListPage {
    /// The sessions on this page, in the query's order.
    pub sessions: Vec<SessionInfo>,
    /// Pass to [`ListQuery::after`] for the next page; `None` on the last.
    pub next_cursor: Option<String>,
    /// How many sessions the filters admit in all (without the cursor),
    /// when the query asked ([`ListQuery::with_count`]).
    pub total: Option<u64>,
}

impl ListPage {
    /// A page of `sessions`, continued by `next_cursor`.
    #[must_use]
    pub fn new(sessions: Vec<SessionInfo>, next_cursor: Option<String>) -> Self {
        Self {
            sessions,
            next_cursor,
            total: None,
        }
    }

    /// A page whose next page starts after its last session when `more`,
    /// and which is the last otherwise.
    #[must_use]
    pub fn of(sessions: Vec<SessionInfo>, more: bool, order: ListOrder) -> Self {
        let next_cursor = more
            .then(|| sessions.last().map(|s| ListCursor::of(s, order).encode()))
            .flatten();
        Self::new(sessions, next_cursor)
    }

    /// Sets [`total`](Self::total).
    #[must_use]
    pub fn with_total(mut self, total: Option<u64>) -> Self {
        self.total = total;
        self
    }

    /// The ids on this page, in order.
    pub fn ids(&self) -> impl Iterator<Item = &SessionId> {
        self.sessions.iter().map(|s| &s.id)
    }

    /// The ids on this page, in order.
    #[must_use]
    pub fn into_ids(self) -> Vec<SessionId> {
        self.sessions.into_iter().map(|s| s.id).collect()
    }
}

/// A position in a listing: the sort key of the last session of a page.
/// Encoded as `i:<id>` ([`ListOrder::Id`]) or `r:<ms>:<id>`
/// ([`ListOrder::Recent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCursor {
    /// The order it belongs to.
    pub order: ListOrder,
    /// The last session's `updated_at` (zero in [`ListOrder::Id`]).
    pub updated_at: Timestamp,
    /// The last session's id.
    pub id: String,
}

impl ListCursor {
    /// The position of `session` in `order`.
    #[must_use]
    pub fn of(session: &SessionInfo, order: ListOrder) -> Self {
        Self {
            order,
            updated_at: match order {
                ListOrder::Id => Timestamp::default(),
                ListOrder::Recent => session.updated_at,
            },
            id: session.id.as_str().to_owned(),
        }
    }

    /// The opaque text form.
    #[must_use]
    pub fn encode(&self) -> String {
        match self.order {
            ListOrder::Id => format!("i:{}", self.id),
            ListOrder::Recent => {
                format!("r:{}:{}", self.updated_at.as_unix_millis(), self.id)
            }
        }
    }

    /// Parses `text` as a cursor of `order`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCursor`] when it is not one.
    pub fn decode(text: &str, order: ListOrder) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidCursor {
            reason: reason.to_owned(),
        };
        let (tag, rest) = text
            .split_once(':')
            .ok_or_else(|| invalid("not a cursor of this store"))?;
        if tag.chars().ne([order.tag()]) {
            return Err(invalid(match tag {
                "i" | "r" => "a cursor of a listing in another order",
                _ => "not a cursor of this store",
            }));
        }
        let (updated_at, id) = match order {
            ListOrder::Id => (Timestamp::default(), rest),
            ListOrder::Recent => {
                let (ms, id) = rest
                    .split_once(':')
                    .ok_or_else(|| invalid("not a cursor of this store"))?;
                let ms = ms
                    .parse()
                    .map_err(|_| invalid("not a cursor of this store"))?;
                (Timestamp::from_unix_millis(ms), id)
            }
        };
        if id.is_empty() {
            return Err(invalid("not a cursor of this store"));
        }
        Ok(Self {
            order,
            updated_at,
            id: id.to_owned(),
        })
    }

    /// Whether `session` comes after this position (so belongs on a later
    /// page).
    #[must_use]
    pub fn precedes(&self, session: &SessionInfo) -> bool {
        match self.order {
            ListOrder::Id => session.id.as_str() > self.id.as_str(),
            ListOrder::Recent => {
                (session.updated_at, session.id.as_str()) < (self.updated_at, self.id.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests;
