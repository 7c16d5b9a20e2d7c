#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod close;
mod damage;
mod diagnose;
mod error;
mod ops;
pub mod schema;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, PoisonError};

use statestore_core::{
    AddSummary, Append, Appended, ConversationState, Delete, Error, Expect, IdempotencyKey,
    ListPage, ListQuery, Load, Metadata, Pending, Recent, RecentState, Result, Save, SessionId,
    Store, Version, async_trait,
};

pub use crate::builder::{SqliteStoreBuilder, Stats, Synchronous};

/// The version of the SQLite library this build links (bundled), e.g.
/// `"3.46.0"`.
#[must_use]
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}
pub use crate::damage::{Damage, DamageKind, INTEGRITY_LIMIT};
pub use crate::diagnose::Diagnosis;

use crate::error::{OpCtx, stopped};
use crate::ops::{AppendArgs, Config, SaveArgs};
use crate::worker::{ReadQueue, Shared, ToWriter};

/// A durable, embedded [`Store`] on one SQLite file.
///
/// Cloning is cheap and clones share the same threads and connections. See
/// the [crate documentation](crate) for the design.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) writer: Sender<ToWriter>,
    pub(crate) readers: Arc<ReadQueue>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) path: PathBuf,
    pub(crate) synchronous: Synchronous,
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
            damage: facts.damage,
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
