//! [`SqliteStore::diagnose`](crate::SqliteStore::diagnose): what the file
//! says about itself.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::Connection;
use statestore_core::Result;

use crate::Synchronous;
use crate::damage::{self, Damage, INTEGRITY_LIMIT, Tree};
use crate::error::{OpCtx, sql};

/// What [`SqliteStore::diagnose`](crate::SqliteStore::diagnose) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnosis {
    /// The database file.
    pub path: PathBuf,
    /// The SQLite library's version (bundled with this build).
    pub sqlite_version: String,
    /// The file's schema version (`PRAGMA user_version`).
    pub schema_version: u32,
    /// The newest schema version this build reads and writes
    /// ([`FILE_SCHEMA_VERSION`](crate::schema::FILE_SCHEMA_VERSION)).
    pub supported_schema_version: u32,
    /// `PRAGMA journal_mode`: `wal` for every file this crate opened.
    pub journal_mode: String,
    /// The durability the store's writer commits with.
    pub synchronous: Synchronous,
    /// How long a write waits for another process's lock.
    pub busy_timeout: Duration,
    /// The store's TTL, if it has one.
    pub ttl: Option<Duration>,
    /// `PRAGMA integrity_check`: `["ok"]` for a sound file, otherwise the
    /// problems SQLite found, one per entry (at most
    /// [`INTEGRITY_LIMIT`](crate::INTEGRITY_LIMIT); SQLite's `*** in
    /// database main ***` banner dropped), ending with why the check
    /// itself failed if it did (`the integrity check stopped: …`).
    pub integrity: Vec<String>,
    /// [`integrity`](Self::integrity) sorted into kinds, naming the
    /// tables and indexes concerned; `None` for a sound file.
    pub damage: Option<Damage>,
    /// The file's size in bytes (`page_count × page_size`, without the WAL).
    pub size_bytes: u64,
    /// Bytes in free pages (`freelist_count × page_size`), reusable without
    /// growing the file; `VACUUM` returns them to the file system.
    pub free_bytes: u64,
    /// Sessions stored, expired ones not yet swept included.
    pub sessions: u64,
}

impl Diagnosis {
    /// Whether the integrity check found nothing wrong.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.integrity.len() == 1 && self.integrity.first().is_some_and(|r| r == "ok")
    }
}

/// Everything [`Diagnosis`] holds that is read from the file.
pub(crate) struct FileFacts {
    pub(crate) sqlite_version: String,
    pub(crate) schema_version: u32,
    pub(crate) journal_mode: String,
    pub(crate) integrity: Vec<String>,
    pub(crate) damage: Option<Damage>,
    pub(crate) size_bytes: u64,
    pub(crate) free_bytes: u64,
    pub(crate) sessions: u64,
}

/// Reads the facts on a reader connection (a read transaction: the writer
/// goes on meanwhile).
pub(crate) fn read(conn: &Connection, ctx: &OpCtx) -> Result<FileFacts> {
    let one = |q: &str| -> Result<i64> { sql(ctx, conn.query_row(q, [], |r| r.get(0))) };
    let sqlite_version: String = sql(
        ctx,
        conn.query_row("SELECT sqlite_version()", [], |r| r.get(0)),
    )?;
    let journal_mode: String = sql(ctx, conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)))?;
    let schema_version = u32::try_from(one("PRAGMA user_version")?).unwrap_or(u32::MAX);
    let page_size = u64::try_from(one("PRAGMA page_size")?).unwrap_or(0);
    let pages = u64::try_from(one("PRAGMA page_count")?).unwrap_or(0);
    let free = u64::try_from(one("PRAGMA freelist_count")?).unwrap_or(0);
    let sessions = u64::try_from(one("SELECT count(*) FROM sessions")?).unwrap_or(0);
    let (integrity, damage) = integrity(conn);
    Ok(FileFacts {
        sqlite_version,
        schema_version,
        journal_mode: journal_mode.to_ascii_lowercase(),
        integrity,
        damage,
        size_bytes: pages.saturating_mul(page_size),
        free_bytes: free.saturating_mul(page_size),
        sessions,
    })
}

/// `PRAGMA integrity_check`, one problem per line, and those problems
/// sorted (`None` for `ok`). A badly damaged file makes the check itself
/// fail: the problems found before, then why, are its answer.
fn integrity(conn: &Connection) -> (Vec<String>, Option<Damage>) {
    let mut rows = Vec::new();
    let checked = conn
        .prepare(&format!("PRAGMA integrity_check({INTEGRITY_LIMIT})"))
        .and_then(|mut st| {
            let mut found = st.query([])?;
            while let Some(row) = found.next()? {
                rows.push(row.get::<_, String>(0)?);
            }
            Ok(())
        });
    if let Err(e) = checked {
        rows.push(format!("{}{e}", damage::STOPPED));
    }
    if rows.len() == 1 && rows.first().is_some_and(|r| r == "ok") {
        return (rows, None);
    }
    let lines = damage::lines(&rows);
    // Which table or index each root page holds, to place page damage;
    // on a file too damaged to list them, the pages stay unnamed.
    let schema = conn
        .prepare("SELECT type, name, tbl_name, rootpage FROM sqlite_schema WHERE rootpage > 0")
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok(Tree {
                    kind: r.get(0)?,
                    name: r.get(1)?,
                    table: r.get(2)?,
                    root: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<Tree>>>()
        })
        .unwrap_or_default();
    let damage = damage::sort(&lines, &schema);
    (lines, Some(damage))
}
