#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod close;
mod diagnose;
mod error;
mod ops;
pub mod schema;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use statestore_core::codec::Limits;
use statestore_core::{
    AddSummary, Append, Appended, ConversationState, Delete, Error, Expect, IdempotencyKey,
    ListPage, ListQuery, Load, Metadata, Pending, Recent, RecentState, Result, Save, SessionId,
    Store, Version, async_trait,
};

pub use crate::diagnose::Diagnosis;

use crate::error::{OpCtx, sql, stopped};
use crate::ops::{AppendArgs, Config, SaveArgs};
use crate::worker::{ReadQueue, Shared, ToWriter};

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

/// A durable, embedded [`Store`] on one SQLite file.
///
/// Cloning is cheap and clones share the same threads and connections. See
/// the [crate documentation](crate) for the design.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Sender<ToWriter>,
    readers: Arc<ReadQueue>,
    shared: Arc<Shared>,
    path: PathBuf,
    synchronous: Synchronous,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader threads end once the reads queued are done.
        self.readers.close();
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("ttl", &self.inner.shared.cfg.ttl)
            .field("limits", &self.inner.shared.cfg.limits)
            .field("synchronous", &self.inner.synchronous)
            .field("busy_timeout", &self.inner.shared.busy)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Configures TTL, limits, durability, lock wait and readers.
    pub fn builder() -> SqliteStoreBuilder {
        SqliteStoreBuilder::default()
    }

    /// Opens (creating if needed) the database at `path` with the defaults:
    /// no TTL, no limits, `synchronous=FULL`, a 5 s busy timeout, 4 readers.
    ///
    /// # Errors
    ///
    /// As [`SqliteStoreBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().open(path).await
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the writer has done so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        Stats {
            commits: s.commits.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            failed_batches: s.failed_batches.load(Ordering::Relaxed),
        }
    }

    /// Deletes every expired session now (in transactions of at most 1,000
    /// sessions); returns how many. The writer also deletes up to 16 with
    /// every batch, and expired sessions are invisible to every read as
    /// soon as they expire, so this only reclaims space sooner.
    ///
    /// # Errors
    ///
    /// As any write.
    pub async fn purge_expired(&self) -> Result<usize> {
        const CHUNK: usize = 1_000;
        let mut total = 0;
        loop {
            let n = self
                .write("purge_expired", &schema::file_id(), |conn, ctx, _| {
                    ops::sweep(conn, ctx, CHUNK)
                })
                .await?;
            total += n;
            if n < CHUNK {
                return Ok(total);
            }
        }
    }

    /// Checks the file: the SQLite version, the file's schema version, the
    /// journal mode, the durability setting, `PRAGMA integrity_check`, the
    /// size and free space, and how many sessions it holds. Runs on a
    /// reader connection: writes go on meanwhile. The integrity check reads
    /// the whole file, so it takes time in proportion to its size.
    ///
    /// # Errors
    ///
    /// As any read.
    pub async fn diagnose(&self) -> Result<Diagnosis> {
        let facts = self
            .read("diagnose", &schema::file_id(), diagnose::read)
            .await?;
        Ok(Diagnosis {
            path: self.inner.path.clone(),
            sqlite_version: facts.sqlite_version,
            schema_version: facts.schema_version,
            supported_schema_version: schema::FILE_SCHEMA_VERSION,
            journal_mode: facts.journal_mode,
            synchronous: self.inner.synchronous,
            busy_timeout: self.inner.shared.busy,
            ttl: self.inner.shared.cfg.ttl,
            integrity: facts.integrity,
            size_bytes: facts.size_bytes,
            free_bytes: facts.free_bytes,
            sessions: facts.sessions,
        })
    }

    fn ctx(&self, op: &'static str, id: &SessionId) -> OpCtx {
        OpCtx {
            op,
            id: id.clone(),
            busy: self.inner.shared.busy,
            path: Arc::clone(&self.inner.shared.path),
        }
    }

    /// Queues a write for the next group commit and waits for its commit.
    async fn write<T, F>(&self, op: &'static str, id: &SessionId, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection, &OpCtx, &Config) -> Result<T> + Send + 'static,
    {
        let (job, rx) = worker::job(self.ctx(op, id), work);
        worker::send(&self.inner.writer, ToWriter::Write(job), op)?;
        rx.await.map_err(|_| stopped(op))?
    }

    /// Runs a read on a reader connection.
    async fn read<T, F>(&self, op: &'static str, id: &SessionId, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection, &OpCtx) -> Result<T> + Send + 'static,
    {
        let (job, rx) = worker::read_job(self.ctx(op, id), work);
        self.inner.readers.push(job, op)?;
        rx.await.map_err(|_| stopped(op))?
    }

    /// Records that a read found `id` at `now`; the writer applies it with
    /// its next batch (the sliding expiry and `last_accessed_at`).
    ///
    /// Without a TTL nothing depends on it (reads report the access time
    /// themselves), so nothing is recorded: a read costs no commit.
    fn accessed(&self, id: &SessionId, now: i64) {
        if self.inner.shared.cfg.ttl.is_none() {
            return;
        }
        let first = {
            let mut map = self
                .inner
                .shared
                .accesses
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let first = map.is_empty();
            map.insert(id.clone(), now);
            first
        };
        if first {
            // Nothing to do if the writer is gone: the store is shutting down.
            let _ = self.inner.writer.send(ToWriter::Wake);
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn system_name(&self) -> &'static str {
        "sqlite"
    }

    async fn load_with(&self, id: &SessionId, options: Load) -> Result<Option<ConversationState>> {
        let now = ops::now_ms();
        // A maintenance read records no access: the row's
        // `last_accessed_at` and `expires_at` stay as they are.
        let access = !options.keep_clocks;
        let state = self
            .read("load", id, move |conn, ctx| {
                ops::load(conn, ctx, now, access)
            })
            .await?;
        if access && state.is_some() {
            self.accessed(id, now);
        }
        Ok(state)
    }

    async fn load_recent_as(&self, id: &SessionId, read: Recent) -> Result<Option<RecentState>> {
        let now = ops::now_ms();
        let (n, lookup, access) = (read.n, read.lookup, !read.keep_clocks);
        let recent = self
            .read("load_recent", id, move |conn, ctx| {
                ops::load_recent(conn, ctx, now, n, lookup.as_ref())
            })
            .await?;
        // A maintenance read records no access.
        if access && recent.is_some() {
            self.accessed(id, now);
        }
        Ok(recent)
    }

    async fn save_with(&self, state: &ConversationState, options: Save) -> Result<Version> {
        let args = SaveArgs::new(state, &self.inner.shared.cfg.limits, options)?;
        self.write("save", &state.id, move |conn, ctx, cfg| {
            ops::save(conn, ctx, cfg, args)
        })
        .await
    }

    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        let bodies =
            ops::encode_messages(id, &self.inner.shared.cfg.limits, append.messages.iter())?;
        let args = AppendArgs {
            bodies,
            expect: append.expect,
            key: append.key,
            counters: append.counters,
            metadata: append.metadata,
        };
        self.write("append", id, move |conn, ctx, cfg| {
            ops::append(conn, ctx, cfg, args)
        })
        .await
    }

    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        statestore_core::check_fork_ids(source, target)?;
        let source = source.clone();
        self.write("fork", target, move |conn, ctx, cfg| {
            ops::fork(conn, ctx, cfg, &source)
        })
        .await
    }

    async fn delete_with(&self, id: &SessionId, options: Delete) -> Result<bool> {
        let expect = options.expect;
        self.write("delete", id, move |conn, ctx, _| {
            ops::delete(conn, ctx, expect)
        })
        .await
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        let now = ops::now_ms();
        self.read("exists", id, move |conn, ctx| ops::exists(conn, ctx, now))
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let now = ops::now_ms();
        let query = query.clone();
        self.read("list", &schema::file_id(), move |conn, ctx| {
            ops::list(conn, ctx, now, &query)
        })
        .await
    }

    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        self.write("merge_metadata", id, move |conn, ctx, cfg| {
            ops::merge_metadata(conn, ctx, cfg, patch, expect)
        })
        .await
    }

    async fn add_summary_with(&self, id: &SessionId, add: AddSummary) -> Result<Version> {
        self.write("add_summary", id, move |conn, ctx, cfg| {
            ops::add_summary(conn, ctx, cfg, add)
        })
        .await
    }

    async fn touch(&self, id: &SessionId) -> Result<bool> {
        self.write("touch", id, ops::touch).await
    }

    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> Result<()> {
        let limits = &self.inner.shared.cfg.limits;
        // Each message within the size limit, as an append would check it.
        ops::encode_messages(id, limits, pending.messages.iter())?;
        let body = serde_json::to_string(pending).map_err(|e| Error::InvalidArgument {
            id: id.clone(),
            reason: format!("progress cannot be serialized: {e}"),
        })?;
        let key = key.clone();
        self.write("put_pending", id, move |conn, ctx, cfg| {
            ops::put_pending(conn, ctx, cfg, &key, &body)
        })
        .await
    }

    async fn load_pending(&self, id: &SessionId, key: &IdempotencyKey) -> Result<Option<Pending>> {
        let now = ops::now_ms();
        let key = key.clone();
        self.read("load_pending", id, move |conn, ctx| {
            ops::load_pending(conn, ctx, &key, now)
        })
        .await
    }
}
