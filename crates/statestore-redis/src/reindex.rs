//! The list indexes kept from outside the scripts (`keys.rs`): on a cluster
//! after each write, and for sessions written before the indexes existed,
//! by a scan of every header.

use redis::Value;
use statestore_core::{ListOrder, Result, SessionId};
use tokio::sync::OnceCell;

use crate::RedisStore;
use crate::decode;

/// `SCAN … COUNT` of one step of [`RedisStore::rebuild_list_index`].
const SCAN_COUNT: usize = 1_000;

/// Whether this process already saw the indexes built (checked once per
/// store, before its first listing).
pub(crate) type Built = OnceCell<()>;

impl RedisStore {
    /// The `ZADD`/`ZREM`s that put session `id` where its header says: in
    /// every session's indexes and its owner's, at its `updated_at` (never
    /// moved back: `GT`); out of every session's when it is gone. `header`
    /// is its `user_id` and `updated_at` as `HMGET` returned them.
    fn placed(&self, id: &SessionId, header: &[Value]) -> Vec<redis::Cmd> {
        let text = |i: usize| header.get(i).and_then(decode::bytes);
        let keys = &self.inner.keys;
        let member = id.as_str();
        let Some(updated) = text(1).and_then(|t| std::str::from_utf8(t).ok()) else {
            return [ListOrder::Recent, ListOrder::Id]
                .map(|order| {
                    redis::cmd("ZREM")
                        .arg(keys.index(None, order))
                        .arg(member)
                        .clone()
                })
                .into();
        };
        let user = text(0).map(String::from_utf8_lossy);
        let mut cmds = Vec::with_capacity(4);
        for owner in std::iter::once(None).chain(user.as_deref().map(Some)) {
            let recent = keys.index(owner, ListOrder::Recent);
            cmds.push(
                redis::cmd("ZADD")
                    .arg(recent)
                    .arg("GT")
                    .arg(updated)
                    .arg(member)
                    .clone(),
            );
            let ids = keys.index(owner, ListOrder::Id);
            cmds.push(redis::cmd("ZADD").arg(ids).arg(0).arg(member).clone());
        }
        cmds
    }

    /// On a cluster, puts `id` in the list indexes as its header now says,
    /// right after a write (`keys.rs`): one `HMGET`, then the `ZADD`s. A
    /// failure is logged, not returned — the write itself succeeded, and
    /// the session's next write, or a listing that meets it, puts it right.
    pub(crate) async fn reindex(&self, id: &SessionId) {
        if !self.inner.client_index {
            return;
        }
        let header = self.inner.keys.session(id).header;
        let read = redis::cmd("HMGET")
            .arg(&header)
            .arg("user_id")
            .arg("updated_at")
            .clone();
        let result = async {
            let fields = match self.inner.conn.query(&read).await? {
                Value::Array(fields) => fields,
                _ => Vec::new(),
            };
            self.inner.conn.query_many(self.placed(id, &fields)).await
        };
        if let Err(e) = result.await {
            tracing::warn!(session = %id, error = %e, "could not update the list indexes after a write");
        }
    }

    /// Before the first listing of this store: builds the indexes unless
    /// the server says they were built ([`Self::rebuild_list_index`]).
    pub(crate) async fn ensure_list_index(&self) -> Result<()> {
        self.inner
            .index_built
            .get_or_try_init(|| async {
                let marker = redis::cmd("EXISTS")
                    .arg(self.inner.keys.index_built())
                    .clone();
                let built = self
                    .timed("list", None, self.inner.conn.query(&marker))
                    .await?;
                if decode::int(&built) != Some(1) {
                    self.rebuild_list_index().await?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Puts every session under this store's prefix in the list indexes
    /// (`keys.rs`) from its header, found by `SCAN` over every master:
    /// for sessions written by a version of this crate from before the
    /// indexes, or after index keys were lost. Idempotent, and safe beside
    /// writers: a score only moves forward (`ZADD … GT`). Then marks the
    /// indexes built, so no later store scans again. The first listing of
    /// a store that finds no mark runs it by itself; run it by hand after
    /// every writer of an older version is gone, if one wrote meanwhile.
    ///
    /// Cost: the whole keyspace is scanned once (all prefixes), 1,000 keys
    /// per step, with one pipelined `HMGET` per step and the `ZADD`s.
    ///
    /// # Errors
    ///
    /// When a server cannot be reached or does not answer in time.
    pub async fn rebuild_list_index(&self) -> Result<()> {
        let conn = &self.inner.conn;
        let keys = &self.inner.keys;
        let pattern = keys.scan_pattern();
        let nodes = self
            .timed("rebuild_list_index", None, conn.scan_nodes())
            .await?;
        let mut indexed = 0usize;
        for node in &nodes {
            let mut cursor = 0u64;
            loop {
                let step = conn.scan(node, cursor, &pattern, SCAN_COUNT);
                let (next, found) = self.timed("rebuild_list_index", None, step).await?;
                let ids: Vec<SessionId> = found
                    .iter()
                    .filter_map(|key| keys.id_from_header_key(key))
                    .collect();
                let reads = ids
                    .iter()
                    .map(|id| {
                        redis::cmd("HMGET")
                            .arg(keys.session(id).header)
                            .arg("user_id")
                            .arg("updated_at")
                            .clone()
                    })
                    .collect();
                let headers = self
                    .timed("rebuild_list_index", None, conn.query_many(reads))
                    .await?;
                let mut writes = Vec::new();
                for (id, header) in ids.iter().zip(headers) {
                    if let Value::Array(fields) = header
                        && fields.get(1).is_some_and(|f| decode::bytes(f).is_some())
                    {
                        writes.extend(self.placed(id, &fields));
                        indexed += 1;
                    }
                }
                self.timed("rebuild_list_index", None, conn.query_many(writes))
                    .await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let mark = redis::cmd("SET").arg(keys.index_built()).arg("1").clone();
        self.timed("rebuild_list_index", None, conn.query(&mark))
            .await?;
        tracing::info!(sessions = indexed, "built the list indexes");
        Ok(())
    }
}
