//! The reads: each one `SELECT` (one snapshot) of live sessions only. With
//! a TTL, a read that counts as an access sends the access's `UPDATE` on
//! the same connection in the same round trip (pipelined), after the read.

use std::sync::Arc;

use statestore_core::codec;
use statestore_core::{
    ConversationState, Counters, Error, IdempotencyKey, Message, Metadata, Pending, RecentState,
    RememberedWrite, Result, SessionId, Summary,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{now_ms, outcome, to_i64, to_u64, ts};
use crate::PostgresStore;

/// The columns every whole or recent read starts with.
struct Header {
    user_id: Option<String>,
    version: u64,
    message_count: u64,
    summary_count: u64,
    system_prompt: Option<String>,
    metadata: Metadata,
    counters: Counters,
    created_at: u64,
    updated_at: u64,
    last_accessed_at: u64,
    messages: Vec<Arc<Message>>,
    summaries: Vec<Summary>,
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    id: &SessionId,
    row: &'a Row,
    col: usize,
) -> Result<T> {
    row.try_get(col)
        .map_err(|e| Error::corrupt(id, format!("column {col} of a read"), e))
}

fn header(id: &SessionId, row: &Row, want_messages: u64) -> Result<Header> {
    let u = |col: usize, what: &str| -> Result<u64> { to_u64(id, what, get(id, row, col)?) };
    let metadata: String = get(id, row, 5)?;
    let counters: String = get(id, row, 6)?;
    let bodies: Vec<String> = get(id, row, 10)?;
    let sums: Vec<String> = get(id, row, 11)?;
    let h = Header {
        user_id: get(id, row, 0)?,
        version: u(1, "version")?,
        message_count: u(2, "message count")?,
        summary_count: u(3, "summary count")?,
        system_prompt: get(id, row, 4)?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| Error::corrupt(id, "stored metadata is not a JSON object", e))?,
        counters: serde_json::from_str(&counters)
            .map_err(|e| Error::corrupt(id, "stored counters are not valid", e))?,
        created_at: u(7, "created_at")?,
        updated_at: u(8, "updated_at")?,
        last_accessed_at: u(9, "last_accessed_at")?,
        messages: bodies
            .iter()
            .map(|b| codec::decode_message(id, b.as_bytes()).map(Arc::new))
            .collect::<Result<_>>()?,
        summaries: sums
            .iter()
            .map(|s| {
                serde_json::from_str(s)
                    .map_err(|e| Error::corrupt(id, "a stored summary is not valid", e))
            })
            .collect::<Result<_>>()?,
    };
    let want = want_messages.min(h.message_count);
    if h.messages.len() as u64 != want || h.summaries.len() as u64 != h.summary_count {
        return Err(Error::Corrupt {
            id: id.clone(),
            detail: format!(
                "{} message rows and {} summary rows where the session counts {want} and {}",
                h.messages.len(),
                h.summaries.len(),
                h.summary_count
            ),
            source: None,
        });
    }
    Ok(h)
}

impl PostgresStore {
    /// Runs read `sql` and, with a TTL and `access`, the access's update
    /// pipelined behind it on the same connection.
    async fn read_rows(
        &self,
        op: &'static str,
        id: &SessionId,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        now: i64,
        access: bool,
    ) -> Result<Vec<Row>> {
        let Some(ttl) = self.ttl_ms().filter(|_| access) else {
            return self.rows(op, id, sql, params).await;
        };
        let client = self.client(op, id).await?;
        let expires = now.saturating_add(ttl);
        let sid = id.as_str();
        let touch_params: [&(dyn ToSql + Sync); 3] = [&sid, &now, &expires];
        let access = &self.sql.access;
        self.within_deadline(client, async |c| {
            let fail = |e| crate::Error::from_statement(e, false);
            let read = c.prepare_cached(sql).await.map_err(fail)?;
            let touch = c.prepare_cached(access).await.map_err(fail)?;
            let (rows, touched) =
                tokio::join!(c.query(&read, params), c.execute(&touch, &touch_params));
            if let Err(e) = touched {
                // The read stands; only the access was not recorded.
                tracing::warn!(op, error = %e, "recording an access failed");
            }
            rows.map_err(fail)
        })
        .await
        .map_err(|e| self.fail(op, id, e))
    }

    pub(crate) async fn do_load(
        &self,
        id: &SessionId,
        access: bool,
    ) -> Result<Option<ConversationState>> {
        let now = now_ms();
        let rows = self
            .read_rows(
                "load",
                id,
                &self.sql.load,
                &[&id.as_str(), &now],
                now,
                access,
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let h = header(id, row, u64::MAX)?;
        let keys: Vec<String> = get(id, row, 12)?;
        let versions: Vec<i64> = get(id, row, 13)?;
        let firsts: Vec<i64> = get(id, row, 14)?;
        let counts: Vec<i64> = get(id, row, 15)?;
        let mut writes = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let key = IdempotencyKey::new(key)
                .map_err(|e| Error::corrupt(id, "a remembered write has an invalid key", e))?;
            let at = |v: &[i64]| v.get(i).copied().unwrap_or(-1);
            let done = outcome(id, [at(&versions), at(&firsts), at(&counts)])?.replay();
            writes.push(RememberedWrite::new(key, done));
        }
        Ok(Some(ConversationState {
            id: id.clone(),
            user_id: h.user_id,
            messages: h.messages,
            system_prompt: h.system_prompt,
            summaries: h.summaries,
            metadata: h.metadata,
            counters: h.counters,
            writes,
            version: h.version,
            created_at: ts(h.created_at),
            updated_at: ts(h.updated_at),
            last_accessed_at: if access {
                ts(u64::try_from(now).unwrap_or(0))
            } else {
                ts(h.last_accessed_at)
            },
        }))
    }

    pub(crate) async fn do_load_recent(
        &self,
        id: &SessionId,
        n: usize,
        lookup: Option<&IdempotencyKey>,
        access: bool,
    ) -> Result<Option<RecentState>> {
        let now = now_ms();
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let key = lookup.map(IdempotencyKey::as_str);
        let rows = self
            .read_rows(
                "load_recent",
                id,
                &self.sql.load_recent,
                &[&id.as_str(), &now, &to_i64(n), &key],
                now,
                access,
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let h = header(id, row, n)?;
        let replay: Option<Vec<i64>> = get(id, row, 12)?;
        let replay = match replay.as_deref() {
            Some(&[v, f, c]) => Some(outcome(id, [v, f, c])?.replay()),
            Some(_) => {
                return Err(Error::Corrupt {
                    id: id.clone(),
                    detail: "a remembered write is not three numbers".into(),
                    source: None,
                });
            }
            None => None,
        };
        let pending: Option<String> = get(id, row, 13)?;
        let pending = match (&replay, pending) {
            (None, Some(body)) => Some(parse_pending(id, &body)?),
            _ => None,
        };
        Ok(Some(RecentState {
            id: id.clone(),
            user_id: h.user_id,
            messages: h.messages,
            total_messages: h.message_count,
            system_prompt: h.system_prompt,
            summaries: h.summaries,
            metadata: h.metadata,
            counters: h.counters,
            replay,
            pending,
            version: h.version,
        }))
    }

    pub(crate) async fn do_exists(&self, id: &SessionId) -> Result<bool> {
        self.value("exists", id, &self.sql.exists, &[&id.as_str(), &now_ms()])
            .await
    }

    pub(crate) async fn do_load_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
    ) -> Result<Option<Pending>> {
        let rows = self
            .rows(
                "load_pending",
                id,
                &self.sql.load_pending,
                &[&id.as_str(), &now_ms(), &key.as_str()],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(parse_pending(id, &get::<String>(id, row, 0)?)?)),
            None => Ok(None),
        }
    }
}

fn parse_pending(id: &SessionId, body: &str) -> Result<Pending> {
    serde_json::from_str(body).map_err(|e| Error::corrupt(id, "recorded progress is not valid", e))
}
