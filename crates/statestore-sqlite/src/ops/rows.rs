//! Steps the writes share on a session's rows: its head, creating, bumping
//! and deleting it, inserting message and summary rows, and recording
//! accesses.

use rusqlite::{Connection, OptionalExtension, params};
use statestore_core::{Result, SessionId};

use super::{Config, get_u64, now_ms, to_i64};
use crate::error::{OpCtx, sql};

/// What a write needs of the session's row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub(super) version: u64,
    pub(super) message_count: u64,
    pub(super) summary_count: u64,
    pub(super) write_seq: u64,
}

/// The live session's head, deleting the session first if it has expired
/// (so the write sees it as missing, as every reader already does).
pub(super) fn live_head(
    conn: &Connection,
    ctx: &OpCtx,
    id: &SessionId,
    now: i64,
) -> Result<Option<Head>> {
    let row = sql(
        ctx,
        conn.prepare_cached(
            "SELECT version, message_count, summary_count, write_seq, expires_at
             FROM sessions WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.query_row([id.as_str()], |r| {
                Ok((
                    Head {
                        version: get_u64(r, 0)?,
                        message_count: get_u64(r, 1)?,
                        summary_count: get_u64(r, 2)?,
                        write_seq: get_u64(r, 3)?,
                    },
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .optional()
        }),
    )?;
    match row {
        Some((_, Some(expires))) if expires <= now => {
            delete_rows(conn, ctx, id.as_str())?;
            tracing::debug!(
                reason = "ttl",
                "removed an expired session before writing it"
            );
            Ok(None)
        }
        Some((head, _)) => Ok(Some(head)),
        None => Ok(None),
    }
}

/// Deletes every row of `id`; whether it had a session row.
pub(super) fn delete_rows(conn: &Connection, ctx: &OpCtx, id: &str) -> Result<bool> {
    for table in ["messages", "summaries", "writes", "pending"] {
        let q = format!("DELETE FROM {table} WHERE session = ?1");
        sql(
            ctx,
            conn.prepare_cached(&q).and_then(|mut st| st.execute([id])),
        )?;
    }
    let n = sql(
        ctx,
        conn.prepare_cached("DELETE FROM sessions WHERE id = ?1")
            .and_then(|mut st| st.execute([id])),
    )?;
    Ok(n > 0)
}

/// Records an access at `now`: `last_accessed_at` and, with a TTL, the
/// expiry move forward (never back).
pub(super) fn access(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    id: &SessionId,
    now: i64,
) -> Result<()> {
    sql(
        ctx,
        conn.prepare_cached(
            "UPDATE sessions SET last_accessed_at = max(last_accessed_at, ?2),
                 expires_at = CASE WHEN ?3 IS NULL THEN expires_at
                                   ELSE max(coalesce(expires_at, 0), ?3) END
             WHERE id = ?1",
        )
        .and_then(|mut st| st.execute(params![id.as_str(), now, cfg.expires_at(now)])),
    )?;
    Ok(())
}

/// Applies the accesses recorded by reads (`(id, when)`), skipping sessions
/// that have expired or gone since. Returns how many sessions were refreshed.
pub(crate) fn refresh(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    accesses: &[(SessionId, i64)],
) -> Result<usize> {
    let now = now_ms();
    let mut st = sql(
        ctx,
        conn.prepare_cached(
            "UPDATE sessions SET last_accessed_at = max(last_accessed_at, ?2),
                 expires_at = CASE WHEN ?3 IS NULL THEN expires_at
                                   ELSE max(coalesce(expires_at, 0), ?3) END
             WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?4)",
        ),
    )?;
    let mut n = 0;
    for (id, at) in accesses {
        n += sql(
            ctx,
            st.execute(params![id.as_str(), at, cfg.expires_at(*at), now]),
        )?;
    }
    Ok(n)
}

/// Inserts `bodies` at positions `first..` of a session's messages or
/// summaries (`insert` is [`INSERT_MESSAGE`] or [`INSERT_SUMMARY`]).
pub(super) fn insert_rows(
    conn: &Connection,
    ctx: &OpCtx,
    insert: &str,
    id: &SessionId,
    first: u64,
    bodies: &[String],
) -> Result<()> {
    let mut st = sql(ctx, conn.prepare_cached(insert))?;
    for (at, body) in (first..).zip(bodies) {
        sql(ctx, st.execute(params![id.as_str(), to_i64(at), body]))?;
    }
    Ok(())
}

pub(super) const INSERT_MESSAGE: &str =
    "INSERT INTO messages (session, position, body) VALUES (?1, ?2, ?3)";
pub(super) const INSERT_SUMMARY: &str =
    "INSERT INTO summaries (session, idx, body) VALUES (?1, ?2, ?3)";

/// The new session row of a write that creates it.
pub(super) struct NewSession<'a> {
    pub(super) user_id: Option<&'a str>,
    pub(super) system_prompt: Option<&'a str>,
    pub(super) metadata: &'a str,
    pub(super) counters: &'a str,
    pub(super) message_count: u64,
    pub(super) summary_count: u64,
    pub(super) created_at: i64,
}

impl NewSession<'_> {
    pub(super) const EMPTY: Self = NewSession {
        user_id: None,
        system_prompt: None,
        metadata: "{}",
        counters: "{}",
        message_count: 0,
        summary_count: 0,
        created_at: 0,
    };

    pub(super) fn insert(
        &self,
        conn: &Connection,
        ctx: &OpCtx,
        cfg: &Config,
        id: &SessionId,
        now: i64,
    ) -> Result<()> {
        sql(
            ctx,
            conn.prepare_cached(
                "INSERT INTO sessions (id, user_id, version, message_count, summary_count,
                     system_prompt, metadata, counters, created_at, updated_at,
                     last_accessed_at, expires_at, write_seq)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, 0)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id.as_str(),
                    self.user_id,
                    to_i64(self.message_count),
                    to_i64(self.summary_count),
                    self.system_prompt,
                    self.metadata,
                    self.counters,
                    self.created_at,
                    now,
                    cfg.expires_at(now),
                ])
            }),
        )?;
        Ok(())
    }
}

/// Bumps the version and timestamps of an existing session after a write
/// and, given `message_count`, sets that too (an append: one statement on
/// the session's row, not two).
pub(super) fn bump(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    id: &SessionId,
    now: i64,
    message_count: Option<u64>,
) -> Result<()> {
    sql(
        ctx,
        conn.prepare_cached(
            "UPDATE sessions SET version = version + 1, updated_at = ?2,
                 last_accessed_at = max(last_accessed_at, ?2),
                 expires_at = CASE WHEN ?3 IS NULL THEN expires_at ELSE ?3 END,
                 message_count = coalesce(?4, message_count)
             WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![
                id.as_str(),
                now,
                cfg.expires_at(now),
                message_count.map(to_i64)
            ])
        }),
    )?;
    Ok(())
}

pub(super) fn read_text(
    conn: &Connection,
    ctx: &OpCtx,
    id: &SessionId,
    column: &str,
) -> Result<String> {
    let q = format!("SELECT {column} FROM sessions WHERE id = ?1");
    sql(
        ctx,
        conn.prepare_cached(&q)
            .and_then(|mut st| st.query_row([id.as_str()], |r| r.get(0))),
    )
}

pub(super) fn write_text(
    conn: &Connection,
    ctx: &OpCtx,
    id: &SessionId,
    column: &str,
    value: &str,
) -> Result<()> {
    let q = format!("UPDATE sessions SET {column} = ?2 WHERE id = ?1");
    sql(
        ctx,
        conn.prepare_cached(&q)
            .and_then(|mut st| st.execute([id.as_str(), value])),
    )?;
    Ok(())
}
