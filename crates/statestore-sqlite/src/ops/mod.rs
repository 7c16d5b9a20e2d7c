//! Every operation as SQL on one connection. Writes run on the writer's
//! connection inside its transaction (and a savepoint of their own, see
//! `worker`); reads run on a reader connection inside a read transaction, so
//! each sees one consistent snapshot.
//!
//! [`write`] holds the writes, [`rows`] the steps on a session's rows they
//! share, [`read`] the reads; this file what both sides need (the
//! configuration, conversions, JSON columns, remembered writes).

mod list;
mod read;
mod rows;
#[cfg(test)]
mod tests;
mod write;

pub(crate) use list::list;
pub(crate) use read::{exists, load, load_pending, load_recent};
pub(crate) use rows::refresh;
pub(crate) use write::{
    AppendArgs, SaveArgs, add_summary, append, delete, fork, merge_metadata, put_pending, save,
    sweep, touch,
};

use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension};
use statestore_core::codec::{self, Limits};
use statestore_core::{
    Appended, Counters, Error, Expect, IdempotencyKey, Message, Metadata, RememberedWrite, Result,
    SessionId, Summary, Timestamp, Version,
};

use crate::error::{OpCtx, sql};

/// What every operation needs to know about the store's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) ttl: Option<Duration>,
    pub(crate) limits: Limits,
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    to_i64(Timestamp::now().as_unix_millis())
}

/// A count or timestamp as SQLite stores it.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored integer that must not be negative.
fn to_u64(col: usize, v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(col, Type::Integer, Box::new(e)))
}

fn get_u64(r: &rusqlite::Row<'_>, col: usize) -> rusqlite::Result<u64> {
    to_u64(col, r.get(col)?)
}

fn ts(v: u64) -> Timestamp {
    Timestamp::from_unix_millis(v)
}

impl Config {
    /// When a session accessed at `now` expires (`None`: never).
    pub(crate) fn expires_at(&self, now: i64) -> Option<i64> {
        self.ttl
            .map(|ttl| now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
    }
}

fn conflict(id: &SessionId, expected: Expect, actual: Option<Version>) -> Error {
    Error::Conflict {
        id: id.clone(),
        expected,
        actual,
    }
}

fn check(id: &SessionId, expect: Expect, actual: Option<Version>) -> Result<()> {
    if expect.admits(actual) {
        Ok(())
    } else {
        Err(conflict(id, expect, actual))
    }
}

fn json_text(id: &SessionId, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::InvalidArgument {
        id: id.clone(),
        reason: format!("cannot be serialized: {e}"),
    })
}

fn parse_metadata(id: &SessionId, text: &str) -> Result<Metadata> {
    serde_json::from_str(text)
        .map_err(|e| Error::corrupt(id, "stored metadata is not a JSON object", e))
}

fn parse_counters(id: &SessionId, text: &str) -> Result<Counters> {
    serde_json::from_str(text).map_err(|e| Error::corrupt(id, "stored counters are not valid", e))
}

fn parse_summary(id: &SessionId, text: &str) -> Result<Summary> {
    serde_json::from_str(text).map_err(|e| Error::corrupt(id, "a stored summary is not valid", e))
}

/// Each message as the JSON stored in `messages.body`, checked against the
/// size limit. Runs before the write is queued.
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

/// Summaries as stored JSON.
pub(crate) fn encode_summaries(id: &SessionId, summaries: &[Summary]) -> Result<Vec<String>> {
    summaries.iter().map(|s| json_text(id, s)).collect()
}

/// A row of `writes` from its `version`, `first_position`, `count`
/// columns at `at..at + 3`, as a repeat would return it.
fn outcome(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Appended> {
    // A negative first position: a save rewrote the history since.
    let first: i64 = r.get(at + 1)?;
    let done = Appended::new(
        get_u64(r, at)?,
        first.max(0).cast_unsigned(),
        get_u64(r, at + 2)?,
    );
    Ok(if first < 0 { done.rewritten() } else { done }.replay())
}

fn remembered(
    conn: &Connection,
    ctx: &OpCtx,
    id: &SessionId,
    key: &IdempotencyKey,
) -> Result<Option<Appended>> {
    sql(
        ctx,
        conn.prepare_cached(
            "SELECT version, first_position, count FROM writes WHERE session = ?1 AND key = ?2",
        )
        .and_then(|mut st| {
            st.query_row([id.as_str(), key.as_str()], |r| outcome(r, 0))
                .optional()
        }),
    )
}

/// Every write the session remembers, oldest first.
fn all_remembered(conn: &Connection, ctx: &OpCtx, id: &SessionId) -> Result<Vec<RememberedWrite>> {
    let rows: Vec<(String, Appended)> = sql(
        ctx,
        conn.prepare_cached(
            "SELECT key, version, first_position, count FROM writes WHERE session = ?1
             ORDER BY seq",
        )
        .and_then(|mut st| {
            st.query_map([id.as_str()], |r| Ok((r.get(0)?, outcome(r, 1)?)))?
                .collect()
        }),
    )?;
    rows.into_iter()
        .map(|(key, done)| {
            let key = IdempotencyKey::new(&key)
                .map_err(|e| Error::corrupt(id, "a remembered write has an invalid key", e))?;
            Ok(RememberedWrite::new(key, done))
        })
        .collect()
}
