//! [`SqliteStoreBuilder`]: how a store is configured, and opening it — the
//! writer's connection and the readers', each on a thread of its own.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use statestore_core::codec::Limits;
use statestore_core::{Error, Result};

use crate::error::{OpCtx, sql, stopped};
use crate::ops::Config;
use crate::worker::{self, ReadQueue, Shared};
use crate::{Inner, SqliteStore, schema};

/// How hard each commit works to survive a crash (SQLite's `synchronous`
/// pragma on the writer's connection, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous=FULL` (the default): the WAL is fsynced at every commit.
    /// A write that returned `Ok` survives a process kill **and** a power
    /// loss or OS crash.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is fsynced only at checkpoints. A write
    /// that returned `Ok` survives the process being killed, but the last
    /// commits before a power loss or OS crash may be rolled back (the file
    /// stays consistent). Commits cost no fsync.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Counters of the writer's work since the store was opened (see
/// [`SqliteStore::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Transactions committed by the writer. With group commit this is
    /// usually far below [`Stats::writes`] under concurrency.
    pub commits: u64,
    /// Writes that succeeded and were committed.
    pub writes: u64,
    /// Batches that failed as a whole (lock timeout, I/O error).
    pub failed_batches: u64,
}

/// Configures a [`SqliteStore`]; from [`SqliteStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteStoreBuilder {
    ttl: Option<Duration>,
    limits: Limits,
    synchronous: Synchronous,
    busy_timeout: Duration,
    readers: usize,
    max_batch: usize,
    create: bool,
}

impl Default for SqliteStoreBuilder {
    fn default() -> Self {
        Self {
            ttl: None,
            limits: Limits::none(),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            max_batch: worker::MAX_BATCH,
            create: true,
        }
    }
}

impl SqliteStoreBuilder {
    /// Sessions not accessed (read or written) for `ttl` expire: invisible
    /// at once, deleted by the writer's sweep or [`SqliteStore::purge_expired`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Size limits checked before each write ([`Error::TooLarge`], nothing written).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The durability of each commit (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long to wait for another process's write lock before failing
    /// with [`Error::Timeout`] (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Reader connections, each on its own thread (default 4; at least 1).
    pub fn readers(mut self, n: usize) -> Self {
        self.readers = n.max(1);
        self
    }

    /// The most writes the writer commits in one transaction (default 512;
    /// at least 1). `1` turns group commit off — one transaction, and with
    /// [`Synchronous::Full`] one fsync, per write — which is only useful to
    /// measure what group commit buys.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Whether [`open`](Self::open) creates the database when `path` names
    /// no file (default `true`). With `false` a missing file fails to open
    /// with [`Error::Unavailable`], its source an [`std::io::Error`] of
    /// kind `NotFound` naming the path, and nothing is created: for tools
    /// that only read, where a mistyped path must not leave an empty
    /// database behind.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Opens (creating if needed, unless [`create`](Self::create) says
    /// not to) the database at `path`, on a thread of its own so the async
    /// runtime never blocks.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedSchema`] for a file written by a newer version of
    /// this crate; [`Error::Corrupt`] for a file that is not a database or
    /// holds other tables; [`Error::Unavailable`] when it cannot be opened;
    /// [`Error::Timeout`] when another process holds the lock too long.
    pub async fn open(self, path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("statestore-sqlite-open".into())
            .spawn(move || {
                let _ = tx.send(self.open_blocking(path));
            })
            .map_err(|e| Error::Unavailable {
                operation: "open",
                source: Box::new(e),
            })?;
        rx.await.map_err(|_| stopped("open"))?
    }

    /// [`SqliteStoreBuilder::open`] on the calling thread.
    ///
    /// # Errors
    ///
    /// As [`SqliteStoreBuilder::open`].
    pub fn open_blocking(self, path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let file: Arc<Path> = Arc::from(path.as_path());
        let ctx = OpCtx {
            op: "open",
            id: schema::file_id(),
            busy: self.busy_timeout,
            path: Arc::clone(&file),
        };
        let mut writer = if self.create {
            sql(&ctx, Connection::open(&path))?
        } else {
            // Without SQLITE_OPEN_CREATE, a file removed meanwhile is not
            // created either.
            if !path.exists() {
                return Err(Error::Unavailable {
                    operation: "open",
                    source: Box::new(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no database at {}", path.display()),
                    )),
                });
            }
            // An empty file (and no write-ahead log holding its first
            // pages) is no database either: SQLite would make one of it.
            if is_empty(&path) {
                return Err(Error::Unavailable {
                    operation: "open",
                    source: Box::new(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} is an empty file, not a database (left as it is)",
                            path.display()
                        ),
                    )),
                });
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            sql(&ctx, Connection::open_with_flags(&path, flags))?
        };
        sql(&ctx, writer.busy_timeout(self.busy_timeout))?;
        let mode: String = sql(
            &ctx,
            writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)),
        )?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Backend {
                operation: "open",
                source: format!("the database refused WAL mode (journal_mode is {mode})").into(),
            });
        }
        sql(
            &ctx,
            writer.pragma_update(None, "synchronous", self.synchronous.pragma()),
        )?;
        // Deleted and overwritten content is zeroed, not left in free
        // pages and freed cells: after a store is encrypted in place, the
        // plaintext it replaced is gone from the file (and, once
        // checkpointed, from the WAL).
        sql(&ctx, writer.pragma_update(None, "secure_delete", true))?;
        schema::tune(&writer, &ctx)?;
        schema::prepare(&mut writer, &ctx)?;

        let mut readers = Vec::with_capacity(self.readers);
        for _ in 0..self.readers {
            let conn = sql(
                &ctx,
                Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE
                        | OpenFlags::SQLITE_OPEN_URI
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                ),
            )?;
            sql(&ctx, conn.busy_timeout(self.busy_timeout))?;
            sql(&ctx, conn.pragma_update(None, "query_only", true))?;
            schema::tune(&conn, &ctx)?;
            readers.push(conn);
        }

        let shared = Arc::new(Shared {
            cfg: Config {
                ttl: self.ttl,
                limits: self.limits,
            },
            busy: self.busy_timeout,
            path: file,
            max_batch: self.max_batch,
            accesses: Mutex::new(HashMap::new()),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
        });
        let spawn_failed = |e: std::io::Error| Error::Unavailable {
            operation: "open",
            source: Box::new(e),
        };
        let (writer_tx, writer_rx) = mpsc::channel();
        {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("statestore-sqlite-writer".into())
                .spawn(move || worker::writer(writer, writer_rx, shared))
                .map_err(spawn_failed)?;
        }
        let read_queue = Arc::new(ReadQueue::default());
        worker::start_readers(readers, &read_queue).map_err(spawn_failed)?;
        tracing::debug!(path = %path.display(), readers = self.readers, "opened a SQLite store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: writer_tx,
                readers: read_queue,
                shared,
                path,
                synchronous: self.synchronous,
            }),
        })
    }
}

/// Whether `path` is a file of 0 bytes whose write-ahead log (`-wal`) is
/// absent or empty too: a database whose pages are all still in its log
/// has an empty main file, and is not empty.
fn is_empty(path: &Path) -> bool {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) == Some(0) && len(Path::new(&wal)).unwrap_or(0) == 0
}
