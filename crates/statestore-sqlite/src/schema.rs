//! The file layout — every table, index and pragma this crate relies on is
//! defined here.
//!
//! # Tables (schema version 3)
//!
//! | table | key | holds |
//! |-------|-----|-------|
//! | `sessions` | `id TEXT PRIMARY KEY` | one row per session: `user_id`, `version`, `message_count`, `summary_count`, `system_prompt`, `metadata` (a JSON object; rewritten by `merge_metadata`, `save`, and by an append or `add_summary_with` whose metadata patch is not empty, in the write's own transaction), `counters` (a JSON object of name → integer), `created_at`, `updated_at`, `last_accessed_at` (ms since the Unix epoch; moved by writes — but a maintenance save (`Save::keep_clocks`), which keeps them and `expires_at` — `touch` and, with a TTL only, reads — but a maintenance read (`Load::keep_clocks`), which reports it as stored), `expires_at` (ms; `NULL`: never), `write_seq` (the sequence number of the session's newest keyed write) |
//! | `messages` | `(session, position) WITHOUT ROWID` | the history, append-only: `body` is one message as JSON (`statestore_core::codec::encode_message`); positions run `0..message_count` with no gap |
//! | `summaries` | `(session, idx) WITHOUT ROWID` | summaries, oldest first: `body` is one [`Summary`](statestore_core::Summary) as JSON; `idx` runs `0..summary_count` |
//! | `writes` | `(session, key) WITHOUT ROWID` | remembered keyed appends: what the write did (`version`, `first_position`, `count`) and its `seq`; `first_position` is `-1` once a `save` rewrote the history after the write (its positions no longer hold: `Appended::rewritten`); the newest [`REMEMBERED_WRITES`](statestore_core::REMEMBERED_WRITES) per session are kept |
//!
//! | `pending` | `(session, key) WITHOUT ROWID` | progress of keyed writes still to be made (`Store::put_pending`: a turn between its tool rounds): `body` is one `statestore_core::Pending` as JSON, `expires_at` as for sessions (ms; `NULL`: never); not part of the session — it may exist before the session does — but deleted with it (schema version 2) |
//!
//! | index | on | serves |
//! |-------|----|--------|
//! | `sessions` primary key | `sessions(id)` | `list` of all sessions in id order, from a cursor |
//! | `sessions_by_user` | `sessions(user_id, id)` | `list` of one user's sessions, in id order, from a cursor |
//! | `sessions_by_recent` | `sessions(updated_at, id)` | `list` of all sessions newest first (the index read backwards), from a cursor `(updated_at, id) < (?, ?)`, narrowed by an `updated` range (schema version 3) |
//! | `sessions_by_user_recent` | `sessions(user_id, updated_at, id)` | the sidebar: `list` of one user's sessions newest first, likewise (schema version 3) |
//! | `sessions_by_expiry` | `sessions(expires_at)` where not `NULL` | the expiry sweep: the oldest expired sessions first |
//! | `writes_by_seq` | `writes(session, seq)` | forgetting a session's oldest remembered writes |
//! | `pending_by_expiry` | `pending(expires_at)` where not `NULL` | the expiry sweep of progress no turn came back for |
//!
//! A session exists exactly when its `sessions` row exists and has not
//! expired (`expires_at IS NULL OR expires_at > now`); its rows in the other
//! tables are written and deleted in the same transactions as that row. The
//! session id is stored as given (SQLite compares `TEXT` bytewise, which is
//! the order of Rust's `str`), so no id can reach another session's rows.
//!
//! # Schema version
//!
//! The file's schema version is `PRAGMA user_version`. Opening a store creates a
//! new file at [`FILE_SCHEMA_VERSION`], migrates an older one in one
//! `BEGIN IMMEDIATE` transaction (one function per step in `MIGRATIONS`:
//! each version one more function), and refuses a newer one with
//! [`Error::UnsupportedSchema`] — whose `id` is [`FILE_ID`], since the whole
//! file is concerned.
//!
//! Every open then compares the file's tables, columns and indexes with
//! the ones the migrations create (in an in-memory database): a table or
//! column dropped, renamed or retyped, or an index dropped, by someone else
//! is refused with [`Error::Corrupt`] naming the file. Tables and indexes a
//! user adds beside the store's are tolerated. A change made while a store
//! is open surfaces as [`Error::Corrupt`] from the first statement that
//! meets it ("no such table/column").
//!
//! # Pragmas
//!
//! `journal_mode=WAL` (stored in the file; readers never wait for the
//! writer), `synchronous` (per connection: `FULL` by default, see
//! [`Synchronous`](crate::Synchronous)), `busy_timeout` on every connection,
//! `foreign_keys` unused (the crate deletes a session's rows itself).
//!
//! # Statements
//!
//! Every statement the operations run is prepared once per connection and
//! kept in its statement cache (room for 64; the writer's operations use
//! about 30 between them), and every connection plans with
//! the query planner stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`):
//! plans do not depend on the values bound. Without it SQLite plans some
//! statements with their bound values — an `ORDER BY` whose leading key
//! is bound by `=` (the history and summaries reads), a bound `LIMIT` (the
//! expiry sweep, `list`) — and marks them to be parsed and planned again
//! whenever their bindings are cleared, which the cache does each time it
//! takes a statement back: a plain turn parsed four statements anew. The
//! plans do not change (every statement looks up by key or by one of the
//! indexes above); a unit test (`ops/tests.rs`) checks both for the
//! statements of a turn.

use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};
use statestore_core::{Error, Result, SessionId};

use crate::error::{OpCtx, sql};

/// The schema version this build writes, and the newest it opens.
pub const FILE_SCHEMA_VERSION: u32 = 3;

/// The session id named by errors about the whole file (a newer schema, a
/// file that is not a store): `*`.
pub const FILE_ID: &str = "*";

/// Prepared statements each connection keeps.
pub(crate) const STATEMENT_CACHE: usize = 64;

/// Sets up a connection's statements as the module documentation says:
/// plans independent of bound values, and a statement cache that holds
/// every statement of the store's operations.
pub(crate) fn tune(conn: &Connection, ctx: &OpCtx) -> Result<()> {
    sql(
        ctx,
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true),
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Migration `i` takes a file from schema version `i` to `i + 1`.
const MIGRATIONS: [fn(&Connection) -> rusqlite::Result<()>; FILE_SCHEMA_VERSION as usize] =
    [create_v1, add_pending_v2, add_recent_indexes_v3];

/// Version 0 (an empty file) to 1.
fn create_v1(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE sessions (
             id               TEXT PRIMARY KEY NOT NULL,
             user_id          TEXT,
             version          INTEGER NOT NULL,
             message_count    INTEGER NOT NULL DEFAULT 0,
             summary_count    INTEGER NOT NULL DEFAULT 0,
             system_prompt    TEXT,
             metadata         TEXT NOT NULL DEFAULT '{}',
             counters         TEXT NOT NULL DEFAULT '{}',
             created_at       INTEGER NOT NULL,
             updated_at       INTEGER NOT NULL,
             last_accessed_at INTEGER NOT NULL,
             expires_at       INTEGER,
             write_seq        INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX sessions_by_user ON sessions(user_id, id) WHERE user_id IS NOT NULL;
         CREATE INDEX sessions_by_expiry ON sessions(expires_at) WHERE expires_at IS NOT NULL;
         CREATE TABLE messages (
             session  TEXT NOT NULL,
             position INTEGER NOT NULL,
             body     TEXT NOT NULL,
             PRIMARY KEY (session, position)
         ) WITHOUT ROWID;
         CREATE TABLE summaries (
             session TEXT NOT NULL,
             idx     INTEGER NOT NULL,
             body    TEXT NOT NULL,
             PRIMARY KEY (session, idx)
         ) WITHOUT ROWID;
         CREATE TABLE writes (
             session        TEXT NOT NULL,
             key            TEXT NOT NULL,
             version        INTEGER NOT NULL,
             first_position INTEGER NOT NULL,
             count          INTEGER NOT NULL,
             seq            INTEGER NOT NULL,
             PRIMARY KEY (session, key)
         ) WITHOUT ROWID;
         CREATE INDEX writes_by_seq ON writes(session, seq);",
    )
}

/// Version 1 to 2: the `pending` table.
fn add_pending_v2(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE pending (
             session    TEXT NOT NULL,
             key        TEXT NOT NULL,
             body       TEXT NOT NULL,
             expires_at INTEGER,
             PRIMARY KEY (session, key)
         ) WITHOUT ROWID;
         CREATE INDEX pending_by_expiry ON pending(expires_at) WHERE expires_at IS NOT NULL;",
    )
}

/// Version 2 to 3: the indexes of `list` newest first (issue 23).
fn add_recent_indexes_v3(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE INDEX sessions_by_recent ON sessions(updated_at, id);
         CREATE INDEX sessions_by_user_recent ON sessions(user_id, updated_at, id)
             WHERE user_id IS NOT NULL;",
    )
}

/// The id used in errors about the whole file.
#[expect(clippy::unwrap_used, reason = "`*` is a legal session id")]
pub(crate) fn file_id() -> SessionId {
    SessionId::new(FILE_ID).unwrap()
}

fn user_version(conn: &Connection, ctx: &OpCtx) -> Result<u32> {
    let v: i64 = sql(
        ctx,
        conn.pragma_query_value(None, "user_version", |r| r.get(0)),
    )?;
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

fn newer(found: u32) -> Error {
    Error::UnsupportedSchema {
        id: file_id(),
        found,
        supported: FILE_SCHEMA_VERSION,
    }
}

/// Brings the file on `conn` to [`FILE_SCHEMA_VERSION`]: creates the tables
/// in an empty file, migrates an older one (in one transaction, so a crash
/// leaves it at its old version), refuses a newer one or a database that
/// holds other tables.
pub(crate) fn prepare(conn: &mut Connection, ctx: &OpCtx) -> Result<()> {
    // Cheap check first, without the write lock: most opens find the file current.
    let found = user_version(conn, ctx)?;
    if found == FILE_SCHEMA_VERSION {
        return verify(conn, ctx);
    }
    if found > FILE_SCHEMA_VERSION {
        return Err(newer(found));
    }
    let tx = sql(
        ctx,
        conn.transaction_with_behavior(TransactionBehavior::Immediate),
    )?;
    // Another process may have migrated it while we waited for the lock.
    let found = user_version(&tx, ctx)?;
    if found > FILE_SCHEMA_VERSION {
        return Err(newer(found));
    }
    if found == 0 {
        let objects: i64 = sql(
            ctx,
            tx.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            ),
        )?;
        if objects > 0 {
            return Err(Error::Corrupt {
                id: file_id(),
                detail: format!(
                    "{} holds tables but no statestore schema version: another program's database",
                    ctx.path.display()
                ),
                source: None,
            });
        }
    }
    for (from, migrate) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        sql(ctx, migrate(&tx))?;
        tracing::info!(from, to = from + 1, "migrated the statestore schema");
    }
    sql(
        ctx,
        tx.pragma_update(None, "user_version", i64::from(FILE_SCHEMA_VERSION)),
    )?;
    sql(ctx, tx.commit())?;
    verify(conn, ctx)
}

/// The columns (name, declared type, `NOT NULL`, position in the primary
/// key) of every table and the (name, table) of every index in the
/// database on `conn`, in name order.
type Layout = (
    Vec<(String, Vec<(String, String, bool, i64)>)>,
    Vec<(String, String)>,
);

fn layout(conn: &Connection) -> rusqlite::Result<Layout> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut columns = Vec::with_capacity(tables.len());
    for table in tables {
        let mut cols: Vec<(String, String, bool, i64)> = conn
            .prepare(r#"SELECT name, type, "notnull", pk FROM pragma_table_info(?1)"#)?
            .query_map([&table], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        cols.sort();
        columns.push((table, cols));
    }
    let indexes = conn
        .prepare(
            "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index'
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((columns, indexes))
}

/// Checks that the file's tables, columns and indexes are exactly those
/// the migrations create (built in an in-memory database to compare with):
/// a table renamed or dropped, a column dropped, renamed, added or retyped,
/// or an index dropped by someone else is [`Error::Corrupt`] naming the
/// file, at open rather than at the first statement that trips over it.
fn verify(conn: &Connection, ctx: &OpCtx) -> Result<()> {
    let reference = Connection::open_in_memory().and_then(|mem| {
        for migrate in MIGRATIONS {
            migrate(&mem)?;
        }
        layout(&mem)
    });
    let (want_tables, want_indexes) = sql(ctx, reference)?;
    let (got_tables, got_indexes) = sql(ctx, layout(conn))?;
    let file = ctx.path.display();
    let mut problems = Vec::new();
    for (table, want) in &want_tables {
        match got_tables.iter().find(|(t, _)| t == table) {
            None => problems.push(format!("table {table} is missing")),
            Some((_, got)) if got != want => {
                let names = |cols: &[(String, String, bool, i64)]| {
                    cols.iter()
                        .map(|(n, ty, nn, pk)| {
                            format!(
                                "{n} {ty}{}{}",
                                if *nn { " NOT NULL" } else { "" },
                                if *pk > 0 { " (key)" } else { "" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                problems.push(format!(
                    "table {table} has columns [{}], expected [{}]",
                    names(got),
                    names(want)
                ));
            }
            Some(_) => {}
        }
    }
    for (index, table) in &want_indexes {
        if !got_indexes.iter().any(|(i, t)| i == index && t == table) {
            problems.push(format!("index {index} on {table} is missing"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Corrupt {
        id: file_id(),
        detail: format!(
            "the tables of {file} were changed by someone else (schema version {FILE_SCHEMA_VERSION}): {}",
            problems.join("; ")
        ),
        source: None,
    })
}
