//! The reads, each inside one read transaction on a reader connection: a
//! consistent snapshot of live sessions only.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use statestore_core::codec;
use statestore_core::{
    ConversationState, IdempotencyKey, Message, Pending, RecentState, Result, Summary,
};

use super::{
    all_remembered, get_u64, parse_counters, parse_metadata, parse_summary, remembered, to_i64, ts,
};
use crate::error::{OpCtx, corrupt, sql};

const LIVE: &str = "(expires_at IS NULL OR expires_at > ?2)";

/// The session row as a reader sees it (live only).
struct Header {
    user_id: Option<String>,
    version: u64,
    message_count: u64,
    summary_count: u64,
    system_prompt: Option<String>,
    metadata: String,
    counters: String,
    created_at: u64,
    updated_at: u64,
    last_accessed_at: u64,
}

fn header(conn: &Connection, ctx: &OpCtx, now: i64) -> Result<Option<Header>> {
    let q = format!(
        "SELECT user_id, version, message_count, summary_count, system_prompt, metadata,
             counters, created_at, updated_at, last_accessed_at
         FROM sessions WHERE id = ?1 AND {LIVE}"
    );
    sql(
        ctx,
        conn.prepare_cached(&q).and_then(|mut st| {
            st.query_row(params![ctx.id.as_str(), now], |r| {
                Ok(Header {
                    user_id: r.get(0)?,
                    version: get_u64(r, 1)?,
                    message_count: get_u64(r, 2)?,
                    summary_count: get_u64(r, 3)?,
                    system_prompt: r.get(4)?,
                    metadata: r.get(5)?,
                    counters: r.get(6)?,
                    created_at: get_u64(r, 7)?,
                    updated_at: get_u64(r, 8)?,
                    last_accessed_at: get_u64(r, 9)?,
                })
            })
            .optional()
        }),
    )
}

/// Messages at positions `from..header.message_count`, checked to be exactly those.
fn messages_from(
    conn: &Connection,
    ctx: &OpCtx,
    h: &Header,
    from: u64,
) -> Result<Vec<Arc<Message>>> {
    let id = &ctx.id;
    let rows: Vec<(i64, String)> = sql(
        ctx,
        conn.prepare_cached(
            "SELECT position, body FROM messages WHERE session = ?1 AND position >= ?2
             ORDER BY position",
        )
        .and_then(|mut st| {
            st.query_map(params![id.as_str(), to_i64(from)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        }),
    )?;
    let want = h.message_count.saturating_sub(from);
    if rows.len() as u64 != want {
        return Err(corrupt(
            id,
            format!(
                "{} message rows from position {from}; the session counts {want}",
                rows.len()
            ),
        ));
    }
    rows.into_iter()
        .zip(from..)
        .map(|((pos, body), expected)| {
            if pos != to_i64(expected) {
                return Err(corrupt(
                    id,
                    format!("message position {pos} where {expected} was expected"),
                ));
            }
            codec::decode_message(id, body.as_bytes()).map(Arc::new)
        })
        .collect()
}

fn summaries(conn: &Connection, ctx: &OpCtx, h: &Header) -> Result<Vec<Summary>> {
    let id = &ctx.id;
    let rows: Vec<String> = sql(
        ctx,
        conn.prepare_cached("SELECT body FROM summaries WHERE session = ?1 ORDER BY idx")
            .and_then(|mut st| st.query_map([id.as_str()], |r| r.get(0))?.collect()),
    )?;
    if rows.len() as u64 != h.summary_count {
        return Err(corrupt(
            id,
            format!(
                "{} summary rows; the session counts {}",
                rows.len(),
                h.summary_count
            ),
        ));
    }
    rows.iter().map(|s| parse_summary(id, s)).collect()
}

/// The whole session, as of `now`: with `access`, `now` is reported as
/// the access time; without (a maintenance read), the stored
/// `last_accessed_at` is.
pub(crate) fn load(
    conn: &Connection,
    ctx: &OpCtx,
    now: i64,
    access: bool,
) -> Result<Option<ConversationState>> {
    let id = &ctx.id;
    let Some(h) = header(conn, ctx, now)? else {
        return Ok(None);
    };
    let messages = messages_from(conn, ctx, &h, 0)?;
    let summaries = summaries(conn, ctx, &h)?;
    let writes = all_remembered(conn, ctx, id)?;
    Ok(Some(ConversationState {
        id: id.clone(),
        metadata: parse_metadata(id, &h.metadata)?,
        counters: parse_counters(id, &h.counters)?,
        user_id: h.user_id,
        messages,
        system_prompt: h.system_prompt,
        summaries,
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

pub(crate) fn load_recent(
    conn: &Connection,
    ctx: &OpCtx,
    now: i64,
    n: usize,
    lookup: Option<&IdempotencyKey>,
) -> Result<Option<RecentState>> {
    let id = &ctx.id;
    let Some(h) = header(conn, ctx, now)? else {
        return Ok(None);
    };
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    let messages = if n == 0 {
        Vec::new()
    } else {
        messages_from(conn, ctx, &h, h.message_count.saturating_sub(n))?
    };
    let summaries = summaries(conn, ctx, &h)?;
    let replay = match lookup {
        Some(key) => remembered(conn, ctx, id, key)?,
        None => None,
    };
    let pending = match (lookup, &replay) {
        (Some(key), None) => pending(conn, ctx, key, now)?,
        _ => None,
    };
    Ok(Some(RecentState {
        id: id.clone(),
        metadata: parse_metadata(id, &h.metadata)?,
        counters: parse_counters(id, &h.counters)?,
        user_id: h.user_id,
        messages,
        total_messages: h.message_count,
        system_prompt: h.system_prompt,
        summaries,
        replay,
        pending,
        version: h.version,
    }))
}

pub(crate) fn exists(conn: &Connection, ctx: &OpCtx, now: i64) -> Result<bool> {
    let q = format!("SELECT 1 FROM sessions WHERE id = ?1 AND {LIVE}");
    sql(
        ctx,
        conn.prepare_cached(&q)
            .and_then(|mut st| st.exists(params![ctx.id.as_str(), now])),
    )
}

/// The progress recorded under `key` that has not expired.
fn pending(
    conn: &Connection,
    ctx: &OpCtx,
    key: &IdempotencyKey,
    now: i64,
) -> Result<Option<Pending>> {
    let id = &ctx.id;
    let body: Option<String> = sql(
        ctx,
        conn.prepare_cached(
            "SELECT body FROM pending WHERE session = ?1 AND key = ?2
             AND (expires_at IS NULL OR expires_at > ?3)",
        )
        .and_then(|mut st| {
            st.query_row(params![id.as_str(), key.as_str(), now], |r| r.get(0))
                .optional()
        }),
    )?;
    body.map(|b| {
        serde_json::from_str(&b)
            .map_err(|e| statestore_core::Error::corrupt(id, "recorded progress is not valid", e))
    })
    .transpose()
}

/// [`Store::load_pending`](statestore_core::Store::load_pending): the
/// progress under `key` unless its write is remembered.
pub(crate) fn load_pending(
    conn: &Connection,
    ctx: &OpCtx,
    key: &IdempotencyKey,
    now: i64,
) -> Result<Option<Pending>> {
    if remembered(conn, ctx, &ctx.id, key)?.is_some() {
        return Ok(None);
    }
    pending(conn, ctx, key, now)
}
