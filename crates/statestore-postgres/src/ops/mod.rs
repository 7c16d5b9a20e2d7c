//! Every operation as one statement: writes call the server-side functions
//! of schema version 2 (`functions`), reads are one `SELECT` each.
//!
//! [`write`] holds the writes, [`read`] the reads; this file the SQL
//! texts, the one way statements are run (with the retries that are
//! safe), and conversions.

mod list;
mod read;
mod write;

use std::time::Duration;

use futures_util::StreamExt;
use statestore_core::codec::{self, Limits};
use statestore_core::{Appended, Error, Expect, Message, Result, SessionId, Timestamp, Version};
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::schema::Names;

/// How many times a statement the server rolled back (serialization
/// failure, deadlock, a unique violation from a concurrent create) is run.
const ATTEMPTS: u32 = 8;

/// How much longer than the server's `statement_timeout` the client waits
/// for a reply before it gives up on the connection.
const CLIENT_MARGIN: Duration = Duration::from_secs(1);

/// Prepares (once per connection) and runs `sql`, collecting its rows. A
/// failure says whether the server had completed the statement first (see
/// [`crate::Error::from_statement`]).
pub(crate) async fn query(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, crate::Error> {
    let fail = |e| crate::Error::from_statement(e, false);
    let statement = client.prepare_cached(sql).await.map_err(fail)?;
    let stream = client
        .query_raw(&statement, params.iter().copied())
        .await
        .map_err(fail)?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await {
        match row {
            Ok(row) => rows.push(row),
            Err(e) => {
                let completed = stream.rows_affected().is_some();
                return Err(crate::Error::from_statement(e, completed));
            }
        }
    }
    Ok(rows)
}

/// The statements of one store, built once from its names.
#[derive(Debug)]
pub(crate) struct Sql {
    append: String,
    save: String,
    fork: String,
    merge: String,
    summary: String,
    touch: String,
    delete: String,
    delete_guarded: String,
    purge: String,
    put_pending: String,
    load_pending: String,
    load: String,
    load_recent: String,
    access: String,
    exists: String,
    /// The sessions table, for the statements `list` builds.
    pub(crate) sessions: String,
}

impl Sql {
    pub(crate) fn new(n: &Names) -> Self {
        let (sessions, messages, summaries, writes, pending) = (
            n.table("sessions"),
            n.table("messages"),
            n.table("summaries"),
            n.table("writes"),
            n.table("pending"),
        );
        let f = |name: &str| n.table(name);
        let live = "(s.expires_at IS NULL OR s.expires_at > $2)";
        let header = "SELECT s.user_id, s.version, s.message_count, s.summary_count,
                 s.system_prompt, s.metadata::text, s.counters::text, s.created_at,
                 s.updated_at, s.last_accessed_at,";
        let sums = format!("ARRAY(SELECT body FROM {summaries} WHERE session = $1 ORDER BY idx)");
        Self {
            append: format!(
                "SELECT {}($1, $2, $3, $4::text::jsonb, $5)::text",
                f("fn_append")
            ),
            save: format!(
                "SELECT {}($1, $2, $3, $4::text::jsonb, $5, $6)::text",
                f("fn_save")
            ),
            fork: format!("SELECT {}($1, $2, $3, $4)::text", f("fn_fork")),
            merge: format!(
                "SELECT {}($1, $2, $3, $4::text::jsonb)::text",
                f("fn_merge")
            ),
            summary: format!(
                "SELECT {}($1, $2, $3, $4::text::jsonb, $5)::text",
                f("fn_summary")
            ),
            touch: format!("SELECT {}($1, $2, $3)::text", f("fn_touch")),
            delete: format!("SELECT {}($1, $2)", f("fn_delete")),
            delete_guarded: format!(
                "SELECT {}($1, $2, $3::text::jsonb)::text",
                f("fn_delete_guarded")
            ),
            purge: format!("SELECT {}($1, $2)", f("fn_purge")),
            put_pending: format!(
                "INSERT INTO {pending} (session, key, body, expires_at)
                 SELECT $1::text, $2::text, $3::text, $4::bigint
                 WHERE NOT EXISTS (SELECT 1 FROM {writes} WHERE session = $1 AND key = $2)
                 ON CONFLICT (session, key)
                 DO UPDATE SET body = EXCLUDED.body, expires_at = EXCLUDED.expires_at"
            ),
            load_pending: format!(
                "SELECT p.body FROM {pending} p
                 WHERE p.session = $1 AND p.key = $3
                   AND (p.expires_at IS NULL OR p.expires_at > $2)
                   AND NOT EXISTS (SELECT 1 FROM {writes} w WHERE w.session = $1 AND w.key = $3)"
            ),
            load: format!(
                "{header}
                 ARRAY(SELECT body FROM {messages} WHERE session = $1 ORDER BY position),
                 {sums},
                 ARRAY(SELECT key::text FROM {writes} WHERE session = $1 ORDER BY seq),
                 ARRAY(SELECT version FROM {writes} WHERE session = $1 ORDER BY seq),
                 ARRAY(SELECT first_position FROM {writes} WHERE session = $1 ORDER BY seq),
                 ARRAY(SELECT count FROM {writes} WHERE session = $1 ORDER BY seq)
                 FROM {sessions} s WHERE s.id = $1 AND {live}"
            ),
            load_recent: format!(
                "{header}
                 ARRAY(SELECT m.body FROM (SELECT position, body FROM {messages}
                         WHERE session = $1 ORDER BY position DESC LIMIT $3) m
                       ORDER BY m.position),
                 {sums},
                 (SELECT ARRAY[w.version, w.first_position, w.count] FROM {writes} w
                   WHERE w.session = $1 AND w.key = $4),
                 (SELECT p.body FROM {pending} p WHERE p.session = $1 AND p.key = $4
                   AND (p.expires_at IS NULL OR p.expires_at > $2))
                 FROM {sessions} s WHERE s.id = $1 AND {live}"
            ),
            access: format!(
                "UPDATE {sessions} s SET last_accessed_at = greatest(s.last_accessed_at, $2),
                     expires_at = greatest(coalesce(s.expires_at, 0), $3)
                 WHERE s.id = $1 AND {live}"
            ),
            exists: format!(
                "SELECT EXISTS (SELECT 1 FROM {sessions} s WHERE s.id = $1 AND {live})"
            ),
            sessions: sessions.clone(),
        }
    }
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    to_i64(Timestamp::now().as_unix_millis())
}

/// A count or time as PostgreSQL's `bigint` holds it.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored `bigint` that must not be negative.
fn to_u64(id: &SessionId, what: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|e| Error::corrupt(id, format!("stored {what} is negative"), e))
}

fn ts(v: u64) -> Timestamp {
    Timestamp::from_unix_millis(v)
}

/// `[version, first_position, count]` as a write's outcome; a negative
/// first position means a save rewrote the history since the write.
fn outcome(id: &SessionId, v: [i64; 3]) -> Result<Appended> {
    let bad = |_| Error::Corrupt {
        id: id.clone(),
        detail: "a write's outcome holds a negative version or count".into(),
        source: None,
    };
    let done = Appended::new(
        u64::try_from(v[0]).map_err(bad)?,
        v[1].max(0).cast_unsigned(),
        u64::try_from(v[2]).map_err(bad)?,
    );
    Ok(if v[1] < 0 { done.rewritten() } else { done })
}

/// An expectation as the functions read it (`ek`, `ev`).
fn expect_json(expect: Expect, o: &mut serde_json::Map<String, serde_json::Value>) {
    let (kind, version): (&str, Option<Version>) = match expect {
        Expect::Any => ("any", None),
        Expect::Version(v) => ("version", Some(v)),
        Expect::Absent => ("absent", None),
    };
    o.insert("ek".into(), kind.into());
    o.insert("ev".into(), version.into());
}

fn json_text(id: &SessionId, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::InvalidArgument {
        id: id.clone(),
        reason: format!("cannot be serialized: {e}"),
    })
}

/// Each message as stored (`messages.body`), checked against the size limit.
pub(crate) fn encode_messages<'a>(
    id: &SessionId,
    limits: &Limits,
    messages: impl ExactSizeIterator<Item = &'a Message>,
) -> Result<Vec<String>> {
    let bodies = messages
        .map(|m| {
            let bytes = codec::encode_message(id, m)?;
            String::from_utf8(bytes).map_err(|e| Error::InvalidArgument {
                id: id.clone(),
                reason: format!("message is not UTF-8 JSON: {e}"),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    limits.check_message_sizes(id, bodies.iter().map(String::len))?;
    Ok(bodies)
}

impl PostgresStore {
    /// When a session accessed at `now` expires (`None`: never).
    pub(crate) fn ttl_ms(&self) -> Option<i64> {
        self.ttl
            .map(|ttl| i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
    }

    fn fail(&self, op: &'static str, id: &SessionId, e: crate::Error) -> Error {
        e.into_store(op, id, self.statement_timeout)
    }

    async fn client(&self, op: &'static str, id: &SessionId) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            let e = crate::Error::from_pool(e, self.pool_timeout, self.statement_timeout);
            self.fail(op, id, e)
        })
    }

    /// How long the client waits for a statement's reply: the server's
    /// `statement_timeout` plus [`CLIENT_MARGIN`], so that a server that
    /// is alive cancels first (and says the statement was rolled back).
    pub(crate) fn deadline(&self) -> Duration {
        self.statement_timeout.saturating_add(CLIENT_MARGIN)
    }

    /// Runs `work` on `client` within [`deadline`](Self::deadline). When
    /// the server does not answer in time, the connection is taken out of
    /// the pool and closed — a request without its reply is still queued
    /// on it — and the error is [`crate::Error::Timeout`]. A connection
    /// that broke is taken out too: its task may not have noticed yet, and
    /// the pool would hand it to the next caller.
    pub(crate) async fn within_deadline<T>(
        &self,
        client: deadpool_postgres::Object,
        work: impl AsyncFnOnce(&deadpool_postgres::Object) -> Result<T, crate::Error>,
    ) -> Result<T, crate::Error> {
        let after = self.deadline();
        match tokio::time::timeout(after, work(&client)).await {
            Ok(Err(e)) if e.breaks_connection() => {
                tracing::debug!(error = %e, "the connection broke; closing it");
                drop(deadpool_postgres::Object::take(client));
                Err(e)
            }
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(?after, "no reply from PostgreSQL; closing the connection");
                drop(deadpool_postgres::Object::take(client));
                Err(crate::Error::Timeout { after })
            }
        }
    }

    /// Runs one statement and returns its rows. A statement the server
    /// rolled back as a whole — a serialization failure or deadlock, or a
    /// unique violation from a concurrent create — wrote nothing, so it is
    /// run again (each statement runs in its own implicit transaction).
    pub(crate) async fn rows(
        &self,
        op: &'static str,
        id: &SessionId,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = self.client(op, id).await?;
            let result = self
                .within_deadline(client, async |c| query(c, sql, params).await)
                .await;
            match result {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    let again = matches!(
                        e,
                        crate::Error::Retryable { .. } | crate::Error::UniqueViolation { .. }
                    );
                    if !again || attempt >= ATTEMPTS {
                        return Err(self.fail(op, id, e));
                    }
                    tracing::debug!(op, attempt, error = %e, "statement rolled back; retrying");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
                }
            }
        }
    }

    /// The server's version, as `SHOW server_version` gives it
    /// (`16.4`, `17.2 (Debian 17.2-1)`): for diagnostics.
    ///
    /// # Errors
    ///
    /// Store failures: the server cannot be reached, no pooled connection
    /// became free.
    pub async fn server_version(&self) -> Result<String> {
        let id = crate::store_id()?;
        self.value("server_version", &id, "SHOW server_version", &[])
            .await
    }

    /// One statement's single value of its single row.
    async fn value<T>(
        &self,
        op: &'static str,
        id: &SessionId,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<T>
    where
        T: for<'r> tokio_postgres::types::FromSql<'r>,
    {
        let rows = self.rows(op, id, sql, params).await?;
        let row = rows.first().ok_or_else(|| Error::Corrupt {
            id: id.clone(),
            detail: format!("{op} returned no row"),
            source: None,
        })?;
        row.try_get(0)
            .map_err(|e| self.fail(op, id, crate::Error::from(e)))
    }
}
