//! `Store::list` without `KEYS` and without an index that grows forever:
//! `SCAN … MATCH <prefix>{*}:h TYPE hash` over every master, resumable.
//!
//! The cursor is opaque JSON carrying the node being scanned, its `SCAN`
//! cursor, and the ids found but not yet returned (`SCAN` cannot stop
//! mid-batch; those ids go out first on the next page instead of being
//! skipped or refetched). The guarantees are `SCAN`'s: every session that
//! exists for the whole listing is returned; sessions created or deleted
//! meanwhile may or may not be. Ids within one page are sorted; across
//! pages they come in `SCAN` order.
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
//!   that found sessions (on a cluster, concurrent `HGET`s), so at most
//!   [`LIST_MAX_SCAN_STEPS`] lookup round trips, for no more keys than the
//!   steps returned;
//! - on a cluster, one `CLUSTER NODES` first (to find the masters).
//!
//! A call stops early once it has `limit` ids. It always returns a
//! `next_cursor` while any node is not fully scanned or found ids are
//! pending, so a page may hold fewer than `limit` ids — even none — without
//! being the last: keep calling until `next_cursor` is `None`. Listing a
//! node of `N` keys (all prefixes together) costs about
//! `N / LIST_SCAN_COUNT` `SCAN` steps in total, so at least
//! `N / (LIST_SCAN_COUNT × LIST_MAX_SCAN_STEPS)` calls: 1 M keys are ~1 000
//! steps in ~100 calls.

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

#[derive(Serialize, Deserialize, Default)]
struct Cursor {
    /// Index into the sorted node list, and its address to detect changes.
    #[serde(default)]
    node: usize,
    #[serde(default)]
    addr: String,
    /// The node's next `SCAN` cursor.
    #[serde(default)]
    scan: u64,
    /// All nodes scanned: only `pending` remains.
    #[serde(default)]
    done: bool,
    /// Ids found but not yet returned.
    #[serde(default)]
    pending: Vec<String>,
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
    let mut cursor = match &query.cursor {
        Some(c) => serde_json::from_str::<Cursor>(c)
            .map_err(|e| bad_cursor(format!("not a cursor of this store: {e}")))?,
        None => Cursor::default(),
    };
    let mut ids: Vec<SessionId> = std::mem::take(&mut cursor.pending)
        .into_iter()
        .map(|s| SessionId::new(s).map_err(|e| bad_cursor(e.to_string())))
        .collect::<Result<_, _>>()?;

    let nodes = if cursor.done {
        Vec::new()
    } else {
        conn.scan_nodes().await?
    };
    if !cursor.done && query.cursor.is_some() && nodes.get(cursor.node) != Some(&cursor.addr) {
        return Err(bad_cursor(
            "the cluster's masters changed since the listing started; start again",
        ));
    }
    let pattern = keys.scan_pattern();
    let mut steps = 0;
    while ids.len() < limit && !cursor.done && steps < LIST_MAX_SCAN_STEPS {
        let Some(node) = nodes.get(cursor.node) else {
            cursor.done = true;
            break;
        };
        steps += 1;
        let (next, found) = conn
            .scan(node, cursor.scan, &pattern, LIST_SCAN_COUNT)
            .await?;
        let mut batch: Vec<(SessionId, Vec<u8>)> = found
            .into_iter()
            .filter_map(|key| keys.id_from_header_key(&key).map(|id| (id, key)))
            .collect();
        if let Some(user) = &query.user_id {
            batch = owned_by(conn, batch, user).await?;
        }
        ids.extend(batch.into_iter().map(|(id, _)| id));
        if next == 0 {
            cursor.node += 1;
            cursor.scan = 0;
            match nodes.get(cursor.node) {
                Some(addr) => cursor.addr.clone_from(addr),
                None => cursor.done = true,
            }
        } else {
            cursor.scan = next;
            cursor.addr = node.clone();
        }
    }

    // The page is the smallest `limit` ids found; the rest wait, sorted,
    // for the next page. A key `SCAN` returned twice in one call is listed
    // once on its page.
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > limit {
        cursor.pending = ids
            .split_off(limit)
            .into_iter()
            .map(|id| id.as_str().to_owned())
            .collect();
    }
    let next_cursor = if cursor.done && cursor.pending.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&cursor).map_err(|e| bad_cursor(e.to_string()))?)
    };
    Ok(ListPage { ids, next_cursor })
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
