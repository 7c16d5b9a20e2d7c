//! Every operation as SQL on one connection. Writes run on the writer's
//! connection inside its transaction (and a savepoint of their own, see
//! `worker`); reads run on a reader connection inside a read transaction, so
//! each sees one consistent snapshot.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, params};
use statestore_core::codec::{self, Limits};
use statestore_core::{
    Appended, ConversationState, Counters, Error, Expect, IdempotencyKey, ListPage, ListQuery,
    Message, Metadata, REMEMBERED_WRITES, RecentState, Result, SessionId, Summary, Timestamp,
    Version,
};

use crate::error::{OpCtx, corrupt, sql};

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

// ---------------------------------------------------------------- writes

/// What a write needs of the session's row.
#[derive(Debug, Clone, Copy)]
struct Head {
    version: u64,
    message_count: u64,
    summary_count: u64,
    write_seq: u64,
}

/// The live session's head, deleting the session first if it has expired
/// (so the write sees it as missing, as every reader already does).
fn live_head(conn: &Connection, ctx: &OpCtx, id: &SessionId, now: i64) -> Result<Option<Head>> {
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
fn delete_rows(conn: &Connection, ctx: &OpCtx, id: &str) -> Result<bool> {
    for table in ["messages", "summaries", "writes"] {
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
fn access(conn: &Connection, ctx: &OpCtx, cfg: &Config, id: &SessionId, now: i64) -> Result<()> {
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
fn insert_rows(
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

const INSERT_MESSAGE: &str = "INSERT INTO messages (session, position, body) VALUES (?1, ?2, ?3)";
const INSERT_SUMMARY: &str = "INSERT INTO summaries (session, idx, body) VALUES (?1, ?2, ?3)";

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
            st.query_row([id.as_str(), key.as_str()], |r| {
                Ok(Appended::new(get_u64(r, 0)?, get_u64(r, 1)?, get_u64(r, 2)?).replay())
            })
            .optional()
        }),
    )
}

/// The new session row of a write that creates it.
struct NewSession<'a> {
    user_id: Option<&'a str>,
    system_prompt: Option<&'a str>,
    metadata: &'a str,
    counters: &'a str,
    message_count: u64,
    summary_count: u64,
    created_at: i64,
}

impl NewSession<'_> {
    const EMPTY: Self = NewSession {
        user_id: None,
        system_prompt: None,
        metadata: "{}",
        counters: "{}",
        message_count: 0,
        summary_count: 0,
        created_at: 0,
    };

    fn insert(
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

/// Bumps the version and timestamps of an existing session after a write.
fn bump(conn: &Connection, ctx: &OpCtx, cfg: &Config, id: &SessionId, now: i64) -> Result<()> {
    sql(
        ctx,
        conn.prepare_cached(
            "UPDATE sessions SET version = version + 1, updated_at = ?2,
                 last_accessed_at = max(last_accessed_at, ?2),
                 expires_at = CASE WHEN ?3 IS NULL THEN expires_at ELSE ?3 END
             WHERE id = ?1",
        )
        .and_then(|mut st| st.execute(params![id.as_str(), now, cfg.expires_at(now)])),
    )?;
    Ok(())
}

fn read_text(conn: &Connection, ctx: &OpCtx, id: &SessionId, column: &str) -> Result<String> {
    let q = format!("SELECT {column} FROM sessions WHERE id = ?1");
    sql(
        ctx,
        conn.prepare_cached(&q)
            .and_then(|mut st| st.query_row([id.as_str()], |r| r.get(0))),
    )
}

fn write_text(
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

/// The arguments of an append, encoded before it is queued.
#[derive(Debug)]
pub(crate) struct AppendArgs {
    pub(crate) bodies: Vec<String>,
    pub(crate) expect: Expect,
    pub(crate) key: Option<IdempotencyKey>,
    pub(crate) counters: Counters,
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
            NewSession {
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
            sql(
                ctx,
                conn.prepare_cached("UPDATE sessions SET message_count = ?2 WHERE id = ?1")
                    .and_then(|mut st| st.execute(params![id.as_str(), to_i64(total)])),
            )?;
            bump(conn, ctx, cfg, id, now)?;
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
}

impl SaveArgs {
    pub(crate) fn new(state: &ConversationState, limits: &Limits, expect: Expect) -> Result<Self> {
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
            expect,
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
            bump(conn, ctx, cfg, id, now)?;
            head.version + 1
        }
    };
    insert_rows(conn, ctx, INSERT_MESSAGE, id, 0, &args.messages)?;
    insert_rows(conn, ctx, INSERT_SUMMARY, id, 0, &args.summaries)?;
    Ok(version)
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
    let mut metadata = match head {
        None => Metadata::new(),
        Some(_) => parse_metadata(id, &read_text(conn, ctx, id, "metadata")?)?,
    };
    for (k, v) in patch {
        if v.is_null() {
            metadata.remove(&k);
        } else {
            metadata.insert(k, v);
        }
    }
    let text = json_text(id, &metadata)?;
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
            bump(conn, ctx, cfg, id, now)?;
            Ok(head.version + 1)
        }
    }
}

pub(crate) fn add_summary(
    conn: &Connection,
    ctx: &OpCtx,
    cfg: &Config,
    summary: &Summary,
    expect: Expect,
) -> Result<Version> {
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
        &[json_text(id, summary)?],
    )?;
    sql(
        ctx,
        conn.prepare_cached("UPDATE sessions SET summary_count = ?2 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id.as_str(), to_i64(head.summary_count + 1)])),
    )?;
    bump(conn, ctx, cfg, id, now)?;
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

pub(crate) fn delete(conn: &Connection, ctx: &OpCtx) -> Result<bool> {
    let now = now_ms();
    // An expired session is already gone for every reader: not "existed".
    let live = live_head(conn, ctx, &ctx.id, now)?.is_some();
    delete_rows(conn, ctx, ctx.id.as_str())?;
    Ok(live)
}

/// Deletes up to `budget` expired sessions, oldest expiry first (the
/// `sessions_by_expiry` index); returns how many.
pub(crate) fn sweep(conn: &Connection, ctx: &OpCtx, budget: usize) -> Result<usize> {
    let now = now_ms();
    let ids: Vec<String> = sql(
        ctx,
        conn.prepare_cached(
            "SELECT id FROM sessions WHERE expires_at IS NOT NULL AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
        )
        .and_then(|mut st| {
            st.query_map(params![now, to_i64(budget as u64)], |r| r.get(0))?
                .collect()
        }),
    )?;
    for id in &ids {
        delete_rows(conn, ctx, id)?;
    }
    Ok(ids.len())
}

// ---------------------------------------------------------------- reads

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
}

fn header(conn: &Connection, ctx: &OpCtx, now: i64) -> Result<Option<Header>> {
    let q = format!(
        "SELECT user_id, version, message_count, summary_count, system_prompt, metadata,
             counters, created_at, updated_at
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

/// The whole session, as of `now` (reported as the access time).
pub(crate) fn load(conn: &Connection, ctx: &OpCtx, now: i64) -> Result<Option<ConversationState>> {
    let id = &ctx.id;
    let Some(h) = header(conn, ctx, now)? else {
        return Ok(None);
    };
    let messages = messages_from(conn, ctx, &h, 0)?;
    let summaries = summaries(conn, ctx, &h)?;
    Ok(Some(ConversationState {
        id: id.clone(),
        metadata: parse_metadata(id, &h.metadata)?,
        counters: parse_counters(id, &h.counters)?,
        user_id: h.user_id,
        messages,
        system_prompt: h.system_prompt,
        summaries,
        version: h.version,
        created_at: ts(h.created_at),
        updated_at: ts(h.updated_at),
        last_accessed_at: ts(u64::try_from(now).unwrap_or(0)),
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

/// One page: ids after the cursor in id order, `limit + 1` read to know
/// whether there is another page.
pub(crate) fn list(
    conn: &Connection,
    ctx: &OpCtx,
    now: i64,
    query: &ListQuery,
) -> Result<ListPage> {
    let limit = query.limit.max(1);
    let fetch = to_i64(limit as u64).saturating_add(1);
    // Ids are at least one byte long, so every id sorts after "".
    let after = query.cursor.as_deref().unwrap_or("");
    let raw: Vec<String> = sql(
        ctx,
        match &query.user_id {
            Some(user) => conn
                .prepare_cached(
                    "SELECT id FROM sessions
                     WHERE user_id = ?1 AND id > ?3 AND (expires_at IS NULL OR expires_at > ?2)
                     ORDER BY user_id, id LIMIT ?4",
                )
                .and_then(|mut st| {
                    st.query_map(params![user, now, after, fetch], |r| r.get(0))?
                        .collect()
                }),
            None => conn
                .prepare_cached(
                    "SELECT id FROM sessions
                     WHERE id > ?1 AND (expires_at IS NULL OR expires_at > ?2)
                     ORDER BY id LIMIT ?3",
                )
                .and_then(|mut st| {
                    st.query_map(params![after, now, fetch], |r| r.get(0))?
                        .collect()
                }),
        },
    )?;
    let more = raw.len() > limit;
    let next_cursor = if more {
        raw.get(limit - 1).cloned()
    } else {
        None
    };
    let mut ids = Vec::with_capacity(limit);
    for id in raw.into_iter().take(limit) {
        match SessionId::new(&id) {
            Ok(id) => ids.push(id),
            Err(_) => tracing::warn!("skipped a stored session id that is not a valid id"),
        }
    }
    Ok(ListPage { ids, next_cursor })
}
