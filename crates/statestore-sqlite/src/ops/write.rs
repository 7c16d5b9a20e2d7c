//! The writes, each inside the writer's transaction (and a savepoint of
//! its own, see `worker`): nothing is changed unless every check passed.
//! An append's and a summary's metadata patch is merged by the same
//! `patched` as `merge_metadata`, after their checks (a replay, conflict or
//! refused range merges nothing), and costs no statement when empty.

use rusqlite::{Connection, params};
use statestore_core::codec::Limits;
use statestore_core::{
    AddSummary, Appended, ConversationState, Counters, Error, Expect, IdempotencyKey, Metadata,
    REMEMBERED_WRITES, Result, Save, SessionId, Version,
};

use super::rows::{
    INSERT_MESSAGE, INSERT_SUMMARY, NewSession, access, bump, delete_rows, insert_rows, live_head,
    read_text, write_text,
};
use super::{
    Config, check, conflict, encode_messages, encode_summaries, json_text, now_ms, parse_counters,
    parse_metadata, remembered, to_i64,
};
use crate::error::{OpCtx, sql};

/// Forgets the progress of one keyed write.
const DELETE_PENDING: &str = "DELETE FROM pending WHERE session = ?1 AND key = ?2";

/// The arguments of an append, encoded before it is queued.
#[derive(Debug)]
pub(crate) struct AppendArgs {
    pub(crate) bodies: Vec<String>,
    pub(crate) expect: Expect,
    pub(crate) key: Option<IdempotencyKey>,
    pub(crate) counters: Counters,
    /// Merged into the session's metadata as [`merge_metadata`] merges.
    pub(crate) metadata: Metadata,
}

pub(crate) fn append(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    args: AppendArgs,
) -> Result<Appended> {
    let id = &ctx.id;
    let now = now_ms();
    let head = live_head(conn, ctx, id, now)?;
    if let (Some(_), Some(key)) = (&head, &args.key)
        && let Some(done) = remembered(conn, ctx, id, key)?
    {
        access(conn, ctx, cfg, id, now)?;
        return Ok(done);
    }
    let n = args.bodies.len() as u64;
    let appended = match head {
        None => {
            check(id, args.expect, None)?;
            cfg.limits.check_message_count(id, n)?;
            let counters = json_text(id, &args.counters)?;
            let metadata = patched(conn, ctx, id, false, args.metadata)?;
            NewSession {
                metadata: &metadata,
                counters: &counters,
                message_count: n,
                created_at: now,
                ..NewSession::EMPTY
            }
            .insert(conn, ctx, cfg, id, now)?;
            Appended::new(1, 0, n)
        }
        Some(head) => {
            check(id, args.expect, Some(head.version))?;
            let total = head.message_count.saturating_add(n);
            cfg.limits.check_message_count(id, total)?;
            if !args.counters.is_empty() {
                let mut counters = parse_counters(id, &read_text(conn, ctx, id, "counters")?)?;
                for (name, delta) in &args.counters {
                    let t = counters.entry(name.clone()).or_insert(0);
                    *t = t.saturating_add(*delta);
                }
                write_text(conn, ctx, id, "counters", &json_text(id, &counters)?)?;
            }
            merge_into(conn, ctx, id, args.metadata)?;
            bump(conn, ctx, cfg, id, now, Some(total))?;
            Appended::new(head.version + 1, head.message_count, n)
        }
    };
    insert_rows(
        conn,
        ctx,
        INSERT_MESSAGE,
        id,
        appended.first_position,
        &args.bodies,
    )?;
    if let Some(key) = &args.key {
        sql(
            ctx,
            conn.prepare_cached(DELETE_PENDING)
                .and_then(|mut st| st.execute([id.as_str(), key.as_str()])),
        )?;
        let seq = head.map_or(0, |h| h.write_seq) + 1;
        sql(
            ctx,
            conn.prepare_cached(
                "INSERT INTO writes (session, key, version, first_position, count, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id.as_str(),
                    key.as_str(),
                    to_i64(appended.version),
                    to_i64(appended.first_position),
                    to_i64(appended.messages),
                    to_i64(seq),
                ])
            }),
        )?;
        remembered_through(conn, ctx, id, seq)?;
    }
    Ok(appended)
}

/// The arguments of a save, encoded before it is queued.
#[derive(Debug)]
pub(crate) struct SaveArgs {
    pub(crate) user_id: Option<String>,
    pub(crate) system_prompt: Option<String>,
    pub(crate) metadata: String,
    pub(crate) counters: String,
    pub(crate) messages: Vec<String>,
    pub(crate) summaries: Vec<String>,
    pub(crate) created_at: i64,
    pub(crate) expect: Expect,
    /// A maintenance save (`Save::keep_clocks`): `updated_at`,
    /// `last_accessed_at` and `expires_at` of an existing session stay.
    pub(crate) keep_clocks: bool,
    /// The remembered writes the state carries: key and message count.
    pub(crate) writes: Vec<(IdempotencyKey, u64)>,
}

impl SaveArgs {
    pub(crate) fn new(state: &ConversationState, limits: &Limits, options: Save) -> Result<Self> {
        let id = &state.id;
        limits.check_message_count(id, state.messages.len() as u64)?;
        Ok(Self {
            user_id: state.user_id.clone(),
            system_prompt: state.system_prompt.clone(),
            metadata: json_text(id, &state.metadata)?,
            counters: json_text(id, &state.counters)?,
            messages: encode_messages(id, limits, state.messages.iter().map(|m| &**m))?,
            summaries: encode_summaries(id, &state.summaries)?,
            created_at: to_i64(state.created_at.as_unix_millis()),
            expect: options.expect,
            keep_clocks: options.keep_clocks,
            writes: state
                .writes
                .iter()
                .map(|w| (w.key.clone(), w.outcome.messages))
                .collect(),
        })
    }
}

pub(crate) fn save(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    args: SaveArgs,
) -> Result<Version> {
    let id = &ctx.id;
    let now = now_ms();
    let head = live_head(conn, ctx, id, now)?;
    check(id, args.expect, head.map(|h| h.version))?;
    let version = match head {
        None => {
            NewSession {
                user_id: args.user_id.as_deref(),
                system_prompt: args.system_prompt.as_deref(),
                metadata: &args.metadata,
                counters: &args.counters,
                message_count: args.messages.len() as u64,
                summary_count: args.summaries.len() as u64,
                created_at: args.created_at,
            }
            .insert(conn, ctx, cfg, id, now)?;
            1
        }
        Some(head) => {
            // The history is replaced: remembered positions no longer hold
            // (`schema.rs`, table `writes`).
            sql(
                ctx,
                conn.prepare_cached("UPDATE writes SET first_position = -1 WHERE session = ?1")
                    .and_then(|mut st| st.execute([id.as_str()])),
            )?;
            for table in ["messages", "summaries"] {
                let q = format!("DELETE FROM {table} WHERE session = ?1");
                sql(
                    ctx,
                    conn.prepare_cached(&q)
                        .and_then(|mut st| st.execute([id.as_str()])),
                )?;
            }
            sql(
                ctx,
                conn.prepare_cached(
                    "UPDATE sessions SET user_id = ?2, system_prompt = ?3, metadata = ?4,
                         counters = ?5, message_count = ?6, summary_count = ?7
                     WHERE id = ?1",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        id.as_str(),
                        args.user_id,
                        args.system_prompt,
                        args.metadata,
                        args.counters,
                        to_i64(args.messages.len() as u64),
                        to_i64(args.summaries.len() as u64),
                    ])
                }),
            )?;
            if args.keep_clocks {
                // A maintenance write: a new version, the clocks stay.
                sql(
                    ctx,
                    conn.prepare_cached("UPDATE sessions SET version = version + 1 WHERE id = ?1")
                        .and_then(|mut st| st.execute([id.as_str()])),
                )?;
            } else {
                bump(conn, ctx, cfg, id, now, None)?;
            }
            head.version + 1
        }
    };
    insert_rows(conn, ctx, INSERT_MESSAGE, id, 0, &args.messages)?;
    insert_rows(conn, ctx, INSERT_SUMMARY, id, 0, &args.summaries)?;
    carry(conn, ctx, id, head.map_or(0, |h| h.write_seq), &args.writes)?;
    Ok(version)
}

/// Remembers the writes a save carries that the session does not remember
/// yet, without positions and at version 0 (`RememberedWrite::carried`),
/// newest sequence numbers last; forgets beyond `REMEMBERED_WRITES`.
fn carry(
    conn: &Connection,
    ctx: &OpCtx,
    id: &SessionId,
    mut seq: u64,
    writes: &[(IdempotencyKey, u64)],
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    for (key, count) in writes {
        let added = sql(
            ctx,
            conn.prepare_cached(
                "INSERT OR IGNORE INTO writes (session, key, version, first_position, count, seq)
                 VALUES (?1, ?2, 0, -1, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id.as_str(),
                    key.as_str(),
                    to_i64(*count),
                    to_i64(seq + 1)
                ])
            }),
        )?;
        if added > 0 {
            seq += 1;
        }
    }
    remembered_through(conn, ctx, id, seq)
}

/// Records `seq` as the session's newest remembered write and forgets the
/// ones beyond [`REMEMBERED_WRITES`] before it.
fn remembered_through(conn: &Connection, ctx: &OpCtx, id: &SessionId, seq: u64) -> Result<()> {
    let forget_through = to_i64(seq.saturating_sub(REMEMBERED_WRITES as u64));
    sql(
        ctx,
        conn.prepare_cached("DELETE FROM writes WHERE session = ?1 AND seq <= ?2")
            .and_then(|mut st| st.execute(params![id.as_str(), forget_through])),
    )?;
    sql(
        ctx,
        conn.prepare_cached("UPDATE sessions SET write_seq = ?2 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id.as_str(), to_i64(seq)])),
    )?;
    Ok(())
}

/// `source` copied to `ctx.id` with `INSERT … SELECT`s in the write's transaction.
pub(crate) fn fork(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    source: &SessionId,
) -> Result<Version> {
    let target = &ctx.id;
    let now = now_ms();
    if live_head(conn, ctx, source, now)?.is_none() {
        return Err(Error::NotFound { id: source.clone() });
    }
    if live_head(conn, ctx, target, now)?.is_some() {
        return Err(Error::AlreadyExists { id: target.clone() });
    }
    let (s, t) = (source.as_str(), target.as_str());
    sql(
        ctx,
        conn.prepare_cached(
            "INSERT INTO sessions (id, user_id, version, message_count, summary_count,
                 system_prompt, metadata, counters, created_at, updated_at,
                 last_accessed_at, expires_at, write_seq)
             SELECT ?2, user_id, 1, message_count, summary_count, system_prompt, metadata,
                 counters, ?3, ?3, ?3, ?4, 0
             FROM sessions WHERE id = ?1",
        )
        .and_then(|mut st| st.execute(params![s, t, now, cfg.expires_at(now)])),
    )?;
    sql(
        ctx,
        conn.prepare_cached(
            "INSERT INTO messages (session, position, body)
             SELECT ?2, position, body FROM messages WHERE session = ?1",
        )
        .and_then(|mut st| st.execute([s, t])),
    )?;
    sql(
        ctx,
        conn.prepare_cached(
            "INSERT INTO summaries (session, idx, body)
             SELECT ?2, idx, body FROM summaries WHERE session = ?1",
        )
        .and_then(|mut st| st.execute([s, t])),
    )?;
    access(conn, ctx, cfg, source, now)?;
    Ok(1)
}

/// The metadata of session `id` (empty unless it `exists`) with `patch`
/// merged, as JSON text: a key's value overwrites, `null` removes the key.
/// The one merge of every write that carries a patch.
fn patched(
    conn: &Connection,
    ctx: &OpCtx,
    id: &SessionId,
    exists: bool,
    patch: Metadata,
) -> Result<String> {
    let mut metadata = if exists {
        parse_metadata(id, &read_text(conn, ctx, id, "metadata")?)?
    } else {
        Metadata::new()
    };
    for (k, v) in patch {
        if v.is_null() {
            metadata.remove(&k);
        } else {
            metadata.insert(k, v);
        }
    }
    json_text(id, &metadata)
}

/// Merges `patch` into the metadata of the existing session `id`, in the
/// write's transaction; no statement at all when `patch` is empty (an
/// append's or a summary's usual case).
fn merge_into(conn: &Connection, ctx: &OpCtx, id: &SessionId, patch: Metadata) -> Result<()> {
    if patch.is_empty() {
        return Ok(());
    }
    let text = patched(conn, ctx, id, true, patch)?;
    write_text(conn, ctx, id, "metadata", &text)
}

pub(crate) fn merge_metadata(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    patch: Metadata,
    expect: Expect,
) -> Result<Version> {
    let id = &ctx.id;
    let now = now_ms();
    let head = live_head(conn, ctx, id, now)?;
    check(id, expect, head.map(|h| h.version))?;
    let text = patched(conn, ctx, id, head.is_some(), patch)?;
    match head {
        None => {
            NewSession {
                metadata: &text,
                created_at: now,
                ..NewSession::EMPTY
            }
            .insert(conn, ctx, cfg, id, now)?;
            Ok(1)
        }
        Some(head) => {
            write_text(conn, ctx, id, "metadata", &text)?;
            bump(conn, ctx, cfg, id, now, None)?;
            Ok(head.version + 1)
        }
    }
}

pub(crate) fn add_summary(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    add: AddSummary,
) -> Result<Version> {
    let AddSummary {
        summary,
        expect,
        metadata,
        ..
    } = add;
    let id = &ctx.id;
    let now = now_ms();
    let Some(head) = live_head(conn, ctx, id, now)? else {
        return Err(Error::NotFound { id: id.clone() });
    };
    check(id, expect, Some(head.version))?;
    let range = &summary.covers;
    if range.start >= range.end || range.end > head.message_count {
        return Err(Error::InvalidArgument {
            id: id.clone(),
            reason: format!(
                "summary covers messages {}..{}, but the history holds {}",
                range.start, range.end, head.message_count
            ),
        });
    }
    insert_rows(
        conn,
        ctx,
        INSERT_SUMMARY,
        id,
        head.summary_count,
        &[json_text(id, &summary)?],
    )?;
    sql(
        ctx,
        conn.prepare_cached("UPDATE sessions SET summary_count = ?2 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id.as_str(), to_i64(head.summary_count + 1)])),
    )?;
    merge_into(conn, ctx, id, metadata)?;
    bump(conn, ctx, cfg, id, now, None)?;
    Ok(head.version + 1)
}

pub(crate) fn touch(conn: &Connection, ctx: &OpCtx, cfg: &Config) -> Result<bool> {
    let now = now_ms();
    if live_head(conn, ctx, &ctx.id, now)?.is_none() {
        return Ok(false);
    }
    access(conn, ctx, cfg, &ctx.id, now)?;
    Ok(true)
}

/// Deletes the session's rows (and its progress) when `expect` admits
/// its version; in the write transaction, so no write lands in between.
pub(crate) fn delete(conn: &Connection, ctx: &OpCtx, expect: Expect) -> Result<bool> {
    let now = now_ms();
    // An expired session is already gone for every reader: not "existed".
    let live = live_head(conn, ctx, &ctx.id, now)?.map(|h| h.version);
    if !expect.admits(live) {
        return Err(conflict(&ctx.id, expect, live));
    }
    delete_rows(conn, ctx, ctx.id.as_str())?;
    Ok(live.is_some())
}

/// Records the progress of `key`'s write still to be made (replacing what
/// was recorded), unless that write is remembered already.
pub(crate) fn put_pending(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    key: &IdempotencyKey,
    body: &str,
) -> Result<()> {
    let id = &ctx.id;
    if remembered(conn, ctx, id, key)?.is_some() {
        return Ok(());
    }
    let now = now_ms();
    sql(
        ctx,
        conn.prepare_cached(
            "INSERT OR REPLACE INTO pending (session, key, body, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| {
            st.execute(params![id.as_str(), key.as_str(), body, cfg.expires_at(now)])
        }),
    )?;
    Ok(())
}

/// Deletes up to `budget` expired sessions, oldest expiry first (the
/// `sessions_by_expiry` index), and up to `budget` expired progress
/// records (`pending_by_expiry`); returns how many sessions.
///
/// Runs with every batch, so the usual case — nothing expired — costs two
/// index seeks and nothing else: expired progress is found first and
/// deleted by its key, because a `DELETE … WHERE (session, key) IN
/// (SELECT …)` builds a temporary b-tree for the subquery's rows on every
/// run, even when it finds none.
pub(crate) fn sweep(conn: &Connection, ctx: &OpCtx, budget: usize) -> Result<usize> {
    let now = now_ms();
    let budget = to_i64(budget as u64);
    let ids: Vec<String> = sql(
        ctx,
        conn.prepare_cached(
            "SELECT id FROM sessions WHERE expires_at IS NOT NULL AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
        )
        .and_then(|mut st| st.query_map(params![now, budget], |r| r.get(0))?.collect()),
    )?;
    for id in &ids {
        delete_rows(conn, ctx, id)?;
    }
    let progress: Vec<(String, String)> = sql(
        ctx,
        conn.prepare_cached(
            "SELECT session, key FROM pending WHERE expires_at IS NOT NULL AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
        )
        .and_then(|mut st| {
            st.query_map(params![now, budget], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        }),
    )?;
    for (session, key) in &progress {
        sql(
            ctx,
            conn.prepare_cached(DELETE_PENDING)
                .and_then(|mut st| st.execute([session, key])),
        )?;
    }
    Ok(ids.len())
}
