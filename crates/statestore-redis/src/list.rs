//! `Store::list` without `KEYS` and without an index that grows forever:
//! `SCAN … MATCH <prefix>{*}:h TYPE hash` over every master, resumable.
//!
//! The cursor is opaque JSON carrying the node being scanned, its `SCAN`
//! cursor, and the ids a `SCAN` step returned beyond the page's limit
//! (`SCAN` cannot stop mid-batch; those ids go out first on the next page
//! instead of being skipped or refetched). The guarantees are `SCAN`'s:
//! every session that exists for the whole listing is returned; sessions
//! created or deleted meanwhile may or may not be; within one page ids are
//! sorted.

use redis::RedisError;
use serde::{Deserialize, Serialize};
use statestore_core::{Error, ListPage, ListQuery, SessionId};

use crate::conn::Connection;
use crate::decode;
use crate::keys::Keys;

pub(crate) enum ListError {
    Client(RedisError),
    Store(Error),
}

impl From<RedisError> for ListError {
    fn from(e: RedisError) -> Self {
        Self::Client(e)
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
    let count = limit.clamp(10, 1000);

    while ids.len() < limit && !cursor.done {
        let Some(node) = nodes.get(cursor.node) else {
            cursor.done = true;
            break;
        };
        let (next, found) = conn.scan(node, cursor.scan, &pattern, count).await?;
        let mut batch: Vec<(SessionId, Vec<u8>)> = found
            .into_iter()
            .filter_map(|key| keys.id_from_header_key(&key).map(|id| (id, key)))
            .collect();
        if let Some(user) = &query.user_id {
            batch = owned_by(conn, batch, user).await?;
        }
        let mut batch: Vec<SessionId> = batch.into_iter().map(|(id, _)| id).collect();
        batch.sort_unstable();
        ids.extend(batch);
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
