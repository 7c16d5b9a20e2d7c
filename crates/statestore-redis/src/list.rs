//! `Store::list` without `KEYS` and without an index that grows forever:
//! `SCAN … MATCH <prefix>{*}:h TYPE hash` over every master, resumable.
//!
//! # Order: increasing, never an id twice
//!
//! A listing's ids come in increasing order (the byte order of the ids,
//! `SessionId`'s `Ord`): every page is sorted, and every id of a page is
//! greater than every id of the pages before it. So no id is listed twice —
//! whatever `SCAN` does: it returns a key again when a node's hash table
//! shrinks or rehashes between steps, and a key seen on one master can be
//! seen again on another when its slot migrates during the listing.
//!
//! `SCAN` visits keys in hash order, so the smallest id may be the last one
//! found, on the last master. A listing therefore goes in *passes*. A pass
//! scans every master once, from the start, and keeps the smallest ids
//! greater than the last id returned — at most a *window* of
//! `max(limit, `[`LIST_WINDOW`]`)` of them. An id not greater than the last
//! one returned is dropped; an id found twice is kept once; when the window
//! is full, a larger id is dropped and marks the window as overflowed. When
//! the pass has visited every master, its ids go out in pages of `limit`.
//! If the window overflowed, another pass follows for the ids after the
//! last one returned; otherwise the listing ends.
//!
//! The cursor is opaque JSON. It carries the last id returned, the pass's
//! position (a fingerprint of the master list, the master's index, its
//! `SCAN` cursor), the ids kept so far (at most the window) and whether the
//! window overflowed, and a fingerprint of the listing (key prefix and user
//! filter). Anything else is [`Error::InvalidCursor`], never a panic: a
//! cursor of another prefix, user filter or backend, an edited one whose
//! ids are not sorted above its last id, and a cursor of the first format
//! (before pages were ordered: it carried no last id, so the listing cannot
//! go on without listing ids again; start it again).
//!
//! # What holds
//!
//! - Each page is sorted and strictly above every earlier page of the
//!   listing: no id twice. This holds whatever `SCAN` returns, under any
//!   concurrent writes, rehashing, failover or resharding, on a standalone
//!   server and across the masters of a cluster.
//! - Every session that exists for the whole listing is returned (`SCAN`'s
//!   guarantee, for each pass), unless a slot migration moves it between
//!   masters during a pass. Sessions created or deleted during the listing
//!   may or may not be; one created with an id below the last id returned
//!   is not.
//! - When the set of masters changes during a pass (a failover, a master
//!   added or removed), the pass starts again from the first master,
//!   keeping the ids it found: nothing is missed or repeated, and the pass
//!   costs its `SCAN` steps again.
//!
//! # Cost model
//!
//! Every call does bounded work, however large the database and however
//! few keys match:
//!
//! - at most [`LIST_MAX_SCAN_STEPS`] `SCAN` steps, each with `COUNT`
//!   [`LIST_SCAN_COUNT`] (Redis visits about that many keys per step, of
//!   any prefix, and returns the matches);
//! - with a user filter, one pipelined `HGET … user_id` round trip per step
//!   that found ids that fit in the window (on a cluster, concurrent
//!   `HGET`s), so at most [`LIST_MAX_SCAN_STEPS`] lookup round trips;
//! - on a cluster, one `CLUSTER NODES` first (to find the masters);
//! - a call that only returns ids of a pass that has ended sends nothing.
//!
//! A page comes when a pass ends: until then calls return empty pages with
//! a `next_cursor`, so keep calling until `next_cursor` is `None`. A pass
//! over `N` keys (all prefixes, all masters) costs about `N /
//! LIST_SCAN_COUNT` `SCAN` steps, at most [`LIST_MAX_SCAN_STEPS`] per call:
//! 1 M keys are ~1 000 steps in ~100 calls. A listing of `S` matching
//! sessions takes `max(1, ⌈S / window⌉)` passes: up to 1 000 sessions (or
//! `limit`, when larger) one pass, as cheap as an unordered scan; beyond
//! that the total grows with `S × N` — 100 000 sessions in 300 000 keys are
//! 100 passes of 300 steps. That is the price of the order with a cursor of
//! bounded size (at most a window of ids); a larger `limit` buys fewer
//! passes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use statestore_core::{Error, ListPage, ListQuery, SessionId};

use crate::conn::Connection;
use crate::decode;
use crate::error::ClientError;
use crate::keys::Keys;

/// `COUNT` of every `SCAN` step of [`Store::list`](statestore_core::Store::list).
pub const LIST_SCAN_COUNT: usize = 1000;

/// The most `SCAN` steps one [`Store::list`](statestore_core::Store::list)
/// call takes (per call, not per listing).
pub const LIST_MAX_SCAN_STEPS: usize = 10;

/// The fewest ids one pass of a [`Store::list`](statestore_core::Store::list)
/// listing keeps (it keeps `max(limit, LIST_WINDOW)`): a listing of `S`
/// sessions scans every master `max(1, ⌈S / window⌉)` times, and a cursor
/// carries at most a window of ids.
pub const LIST_WINDOW: usize = 1000;

/// The cursor format's version (the first format, pages in `SCAN` order,
/// had none).
const CURSOR_VERSION: u32 = 2;

/// The fields of the first cursor format, to recognize its cursors.
const FIRST_FORMAT_FIELDS: [&str; 5] = ["node", "addr", "scan", "done", "pending"];

#[derive(Debug)]
pub(crate) enum ListError {
    Client(ClientError),
    Store(Error),
}

impl From<ClientError> for ListError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl From<redis::RedisError> for ListError {
    fn from(e: redis::RedisError) -> Self {
        Self::Client(e.into())
    }
}

/// The cursor as it travels (JSON).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct Cursor {
    /// [`CURSOR_VERSION`].
    v: u32,
    /// [`listing_fingerprint`] of the listing it belongs to.
    of: u64,
    /// The last id returned; every later id is greater.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    /// The pass in progress; `None`: the pass has ended and `ids` are
    /// being returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pass: Option<Pass>,
    /// The window: sorted, distinct, all greater than `after`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ids: Vec<String>,
    /// The window overflowed: larger ids exist, another pass follows.
    #[serde(default, skip_serializing_if = "is_false")]
    more: bool,
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a pass is.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct Pass {
    /// [`masters_fingerprint`] of the master list the pass walks (`0`
    /// before it has started).
    masters: u64,
    /// Index into the sorted master list.
    node: usize,
    /// That master's next `SCAN` cursor.
    scan: u64,
}

impl Pass {
    const START: Self = Self {
        masters: 0,
        node: 0,
        scan: 0,
    };
}

/// A listing between two calls, validated.
#[derive(Debug, PartialEq)]
struct State {
    after: Option<SessionId>,
    pass: Option<Pass>,
    window: BTreeSet<SessionId>,
    more: bool,
}

impl State {
    fn start() -> Self {
        Self {
            after: None,
            pass: Some(Pass::START),
            window: BTreeSet::new(),
            more: false,
        }
    }

    /// Reads a cursor of the listing `of`.
    fn parse(text: &str, of: u64) -> Result<Self, ListError> {
        let cursor: Cursor = serde_json::from_str(text).map_err(|e| {
            if is_first_format(text) {
                bad_cursor(
                    "a cursor of an earlier version of this store, whose pages were in SCAN \
                     order: the listing cannot go on without repeating ids; start it again",
                )
            } else {
                bad_cursor(format!("not a cursor of this store: {e}"))
            }
        })?;
        if cursor.v != CURSOR_VERSION {
            return Err(bad_cursor(format!(
                "a cursor of format version {}, not {CURSOR_VERSION}; start the listing again",
                cursor.v
            )));
        }
        if cursor.of != of {
            return Err(bad_cursor(
                "a cursor of another listing (another key prefix or user filter); \
                 start the listing again",
            ));
        }
        let id = |s: String| SessionId::new(s).map_err(|e| bad_cursor(e.to_string()));
        let after = cursor.after.map(id).transpose()?;
        let ids: Vec<SessionId> = cursor.ids.into_iter().map(id).collect::<Result<_, _>>()?;
        let above_after = match (&after, ids.first()) {
            (Some(after), Some(first)) => first > after,
            _ => true,
        };
        if !above_after || !ids.windows(2).all(|w| matches!(w, [a, b] if a < b)) {
            return Err(bad_cursor(
                "not a cursor of this store: its ids are not sorted above its last id",
            ));
        }
        Ok(Self {
            after,
            pass: cursor.pass,
            window: ids.into_iter().collect(),
            more: cursor.more,
        })
    }

    fn to_cursor(&self, of: u64) -> Cursor {
        Cursor {
            v: CURSOR_VERSION,
            of,
            after: self.after.as_ref().map(|id| id.as_str().to_owned()),
            pass: self.pass,
            ids: self
                .window
                .iter()
                .map(|id| id.as_str().to_owned())
                .collect(),
            more: self.more,
        }
    }

    /// Cuts the window to `size` ids (a cursor of a call with a larger
    /// `limit`).
    fn fit(&mut self, size: usize) {
        while self.window.len() > size {
            self.window.pop_last();
            self.more = true;
        }
    }

    /// Whether `id` could enter a window of `size`: above the last id
    /// returned and, when the window is full, below its largest id (an id
    /// above it marks the overflow).
    fn admits(&mut self, id: &SessionId, size: usize) -> bool {
        if self.after.as_ref().is_some_and(|after| id <= after) {
            return false;
        }
        if self.window.len() >= size && self.window.last().is_some_and(|last| id > last) {
            self.more = true;
            return false;
        }
        true
    }

    /// Puts `id` in a window of `size` (an id found twice is kept once).
    fn keep(&mut self, id: SessionId, size: usize) {
        if self.admits(&id, size) {
            self.window.insert(id);
            self.fit(size);
        }
    }

    /// Takes the next page of at most `limit` ids off an ended pass's
    /// window; `true` while the listing goes on.
    fn take_page(&mut self, limit: usize, page: &mut Vec<SessionId>) -> bool {
        while page.len() < limit {
            match self.window.pop_first() {
                Some(id) => page.push(id),
                None => break,
            }
        }
        if let Some(last) = page.last() {
            self.after = Some(last.clone());
        }
        if !self.window.is_empty() {
            return true;
        }
        if self.more {
            self.more = false;
            self.pass = Some(Pass::START);
            return true;
        }
        false
    }
}

/// Whether `text` is a cursor of the first format (an object of its fields
/// only).
fn is_first_format(text: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok_and(|map| {
        map.keys()
            .all(|k| FIRST_FORMAT_FIELDS.contains(&k.as_str()))
    })
}

/// FNV-1a over length-prefixed parts: stable across builds and versions,
/// unlike `std`'s hasher.
fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for part in parts {
        eat(&(part.len() as u64).to_le_bytes());
        eat(part);
    }
    hash
}

/// Binds a cursor to its listing: the key prefix and the user filter.
fn listing_fingerprint(prefix: &str, user: Option<&str>) -> u64 {
    let (filtered, user): (&[u8], &[u8]) = match user {
        Some(user) => (b"user", user.as_bytes()),
        None => (b"all", b""),
    };
    fingerprint([
        b"statestore-redis list".as_slice(),
        prefix.as_bytes(),
        filtered,
        user,
    ])
}

/// Identifies a master list, to notice that it changed during a pass.
fn masters_fingerprint(nodes: &[String]) -> u64 {
    fingerprint(nodes.iter().map(String::as_bytes))
}

fn bad_cursor(reason: impl Into<String>) -> ListError {
    ListError::Store(Error::InvalidCursor {
        reason: reason.into(),
    })
}

pub(crate) async fn page(
    conn: &Connection,
    keys: &Keys,
    query: &ListQuery,
) -> Result<ListPage, ListError> {
    let limit = query.limit.max(1);
    let size = limit.max(LIST_WINDOW);
    let of = listing_fingerprint(keys.prefix(), query.user_id.as_deref());
    let mut state = match &query.cursor {
        Some(text) => State::parse(text, of)?,
        None => State::start(),
    };
    state.fit(size);
    if let Some(pass) = state.pass {
        state.pass = scan(conn, keys, query.user_id.as_deref(), &mut state, pass, size).await?;
    }
    let mut ids = Vec::new();
    if state.pass.is_none() && !state.take_page(limit, &mut ids) {
        return Ok(ListPage {
            ids,
            next_cursor: None,
        });
    }
    let next_cursor = serde_json::to_string(&state.to_cursor(of))
        .map_err(|e| bad_cursor(format!("the next cursor: {e}")))?;
    Ok(ListPage {
        ids,
        next_cursor: Some(next_cursor),
    })
}

/// Takes up to [`LIST_MAX_SCAN_STEPS`] steps of the pass at `pass`, keeping
/// what they find in `state`'s window; the pass's next position, or `None`
/// when it has visited every master.
async fn scan(
    conn: &Connection,
    keys: &Keys,
    user: Option<&str>,
    state: &mut State,
    mut pass: Pass,
    size: usize,
) -> Result<Option<Pass>, ListError> {
    let nodes = conn.scan_nodes().await?;
    if nodes.is_empty() {
        return Ok(None);
    }
    let masters = masters_fingerprint(&nodes);
    if pass.masters != masters {
        if pass != Pass::START {
            tracing::debug!(
                "the masters changed during a listing pass; the pass starts again from the first"
            );
        }
        pass = Pass {
            masters,
            node: 0,
            scan: 0,
        };
    }
    let pattern = keys.scan_pattern();
    for _ in 0..LIST_MAX_SCAN_STEPS {
        let Some(node) = nodes.get(pass.node) else {
            return Err(bad_cursor(
                "not a cursor of this store: its master index is out of range",
            ));
        };
        let (next, found) = conn
            .scan(node, pass.scan, &pattern, LIST_SCAN_COUNT)
            .await?;
        let mut batch: Vec<(SessionId, Vec<u8>)> = found
            .into_iter()
            .filter_map(|key| keys.id_from_header_key(&key).map(|id| (id, key)))
            .filter(|(id, _)| state.admits(id, size))
            .collect();
        if let Some(user) = user {
            batch = owned_by(conn, batch, user).await?;
        }
        for (id, _) in batch {
            state.keep(id, size);
        }
        if next != 0 {
            pass.scan = next;
        } else if pass.node + 1 < nodes.len() {
            pass.node += 1;
            pass.scan = 0;
        } else {
            return Ok(None);
        }
    }
    Ok(Some(pass))
}

/// Keeps the sessions whose header's `user_id` is `user` (one pipelined
/// round trip).
async fn owned_by(
    conn: &Connection,
    batch: Vec<(SessionId, Vec<u8>)>,
    user: &str,
) -> Result<Vec<(SessionId, Vec<u8>)>, ListError> {
    if batch.is_empty() {
        return Ok(batch);
    }
    let keys: Vec<Vec<u8>> = batch.iter().map(|(_, key)| key.clone()).collect();
    let owners = conn.hget_many(&keys, "user_id").await?;
    Ok(batch
        .into_iter()
        .zip(owners)
        .filter(|(_, owner)| decode::bytes(owner) == Some(user.as_bytes()))
        .map(|(entry, _)| entry)
        .collect())
}

#[cfg(test)]
mod tests;
