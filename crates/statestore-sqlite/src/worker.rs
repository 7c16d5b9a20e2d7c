//! The threads that own the connections: one writer doing group commit, a
//! few readers. Async callers hand writes to the writer over a channel and
//! reads to the readers' queue ([`ReadQueue`]), and get their answers on
//! tokio oneshot channels, so no async runtime thread ever blocks on SQLite.
//! Transactions are begun, ended and savepointed with cached statements
//! ([`control`]), parsed once per connection.
//!
//! # Group commit
//!
//! The writer blocks for the first queued write, then takes every write
//! queued behind it (up to [`MAX_BATCH`]) and runs them all in **one**
//! `BEGIN IMMEDIATE … COMMIT` transaction, each under its own `SAVEPOINT`:
//! a write that fails (a conflict, a limit, corrupt data) is rolled back to
//! its savepoint alone and the others stay. Each caller is answered only
//! after the `COMMIT` returned, so every `Ok` is durable to the configured
//! `synchronous` level; while one batch is being fsynced the next one
//! queues up, so throughput is bounded by batches, not by fsyncs.
//!
//! If SQLite rolls the whole transaction back on its own (an I/O error, a
//! full disk) or `COMMIT` fails, every write of the batch fails with the
//! mapped error and nothing of it is in the file.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use rusqlite::Connection;
use statestore_core::{Error, Result, SessionId};
use tokio::sync::oneshot;

use crate::error::{OpCtx, chain, map};
use crate::ops::{self, Config};

/// The most writes committed in one transaction, by default.
pub(crate) const MAX_BATCH: usize = 512;
/// Expired sessions deleted, at most, by one batch.
pub(crate) const SWEEP_BUDGET: usize = 16;

/// State shared by the store handle and its threads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) busy: std::time::Duration,
    /// The database file, named by errors.
    pub(crate) path: Arc<std::path::Path>,
    /// The most writes in one transaction.
    pub(crate) max_batch: usize,
    /// Accesses recorded by reads, applied by the writer's next batch.
    pub(crate) accesses: Mutex<HashMap<SessionId, i64>>,
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
}

impl Shared {
    fn take_accesses(&self) -> Vec<(SessionId, i64)> {
        let mut map = self.accesses.lock().unwrap_or_else(PoisonError::into_inner);
        map.drain().collect()
    }
}

/// Why a whole batch failed; turned into each write's error.
#[derive(Debug)]
pub(crate) struct BatchFailure {
    kind: FailureKind,
    message: String,
    busy: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    Timeout,
    Unavailable,
    Corrupt,
    Backend,
}

impl BatchFailure {
    fn new(ctx: &OpCtx, e: rusqlite::Error) -> Self {
        Self::from_error(ctx, &map(ctx, e))
    }

    fn from_error(ctx: &OpCtx, e: &Error) -> Self {
        let kind = match e {
            Error::Timeout { .. } => FailureKind::Timeout,
            Error::Unavailable { .. } => FailureKind::Unavailable,
            Error::Corrupt { .. } => FailureKind::Corrupt,
            _ => FailureKind::Backend,
        };
        // What went wrong and where, without the operation of the batch
        // (each write's error names its own).
        let message = match e {
            Error::Unavailable { source, .. } | Error::Backend { source, .. } => {
                chain(source.as_ref())
            }
            Error::Corrupt {
                detail,
                source: Some(source),
                ..
            } => format!("{detail}: {}", chain(source.as_ref())),
            Error::Corrupt { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        Self {
            kind,
            message,
            busy: ctx.busy,
        }
    }

    /// The whole transaction was rolled back by SQLite because of `cause`
    /// (the error of the write that hit it).
    fn rolled_back(ctx: &OpCtx, cause: &Error) -> Self {
        let mut f = Self::from_error(ctx, cause);
        f.message = format!(
            "the batch's transaction was rolled back by SQLite, so this write was not kept: {}",
            f.message
        );
        if f.kind == FailureKind::Corrupt {
            // The other writes of the batch are not themselves corrupt.
            f.kind = FailureKind::Unavailable;
        }
        f
    }

    fn error(&self, op: &'static str, id: &SessionId) -> Error {
        match self.kind {
            FailureKind::Timeout => Error::Timeout {
                operation: op,
                after: self.busy,
            },
            FailureKind::Unavailable => Error::Unavailable {
                operation: op,
                source: self.message.clone().into(),
            },
            FailureKind::Corrupt => Error::Corrupt {
                id: id.clone(),
                detail: self.message.clone(),
                source: None,
            },
            FailureKind::Backend => Error::Backend {
                operation: op,
                source: self.message.clone().into(),
            },
        }
    }
}

/// One queued write.
pub(crate) trait Job: Send {
    /// Runs the write inside the batch's transaction; `Ok` when it
    /// succeeded (and its changes are kept), else its error.
    fn run(&mut self, conn: &Connection, cfg: &Config) -> Result<(), &Error>;
    /// Answers the caller once the batch is over: `failure` when the
    /// batch did not commit.
    fn finish(self: Box<Self>, failure: Option<&BatchFailure>);
}

struct Pending<T, F> {
    ctx: OpCtx,
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection, &OpCtx, &Config) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection, cfg: &Config) -> Result<(), &Error> {
        if let Some(work) = self.work.take() {
            self.result = Some(work(conn, &self.ctx, cfg).map_err(|e| in_file(&self.ctx, e)));
        }
        match &self.result {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }

    fn finish(self: Box<Self>, failure: Option<&BatchFailure>) {
        let op = self.ctx.op;
        let answer = match (self.result, failure) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), None) => Ok(v),
            (_, Some(f)) => Err(f.error(op, &self.ctx.id)),
            (None, None) => Err(crate::error::stopped(op)),
        };
        // The caller may have given up waiting; the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

/// A write job and the channel its answer arrives on.
pub(crate) fn job<T, F>(ctx: OpCtx, work: F) -> (Box<dyn Job>, oneshot::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection, &OpCtx, &Config) -> Result<T> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job = Pending {
        ctx,
        work: Some(work),
        result: None,
        reply,
    };
    (Box::new(job), rx)
}

/// What the writer thread receives.
pub(crate) enum ToWriter {
    /// A write to run in the next batch.
    Write(Box<dyn Job>),
    /// Reads recorded accesses: apply them (in a batch of their own if no
    /// write comes along).
    Wake,
    /// After the writes queued before it: checkpoint and truncate the WAL
    /// ([`SqliteStore::close`](crate::SqliteStore::close)).
    Checkpoint(OpCtx, oneshot::Sender<Result<()>>),
}

/// The writer thread's loop: one batch per wake-up, until every store
/// handle is gone; then the last recorded accesses are applied.
pub(crate) fn writer(conn: Connection, rx: Receiver<ToWriter>, shared: Arc<Shared>) {
    let ctx = OpCtx {
        op: "commit",
        id: crate::schema::file_id(),
        busy: shared.busy,
        path: Arc::clone(&shared.path),
    };
    while let Ok(first) = rx.recv() {
        let mut jobs = Vec::new();
        let mut checkpoint = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                ToWriter::Write(job) => jobs.push(job),
                ToWriter::Wake => {}
                ToWriter::Checkpoint(ctx, reply) => {
                    checkpoint = Some((ctx, reply));
                    break;
                }
            }
            if jobs.len() >= shared.max_batch {
                break;
            }
            next = rx.try_recv().ok();
        }
        batch(&conn, &ctx, &shared, jobs);
        if let Some((ctx, reply)) = checkpoint {
            let _ = reply.send(crate::close::checkpoint(&conn, &ctx));
        }
    }
    batch(&conn, &ctx, &shared, Vec::new());
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the writer connection failed");
    }
}

/// Runs `sql`'s statements (separated by `"; "`) with [`control`].
fn savepoint(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    sql.split("; ").try_for_each(|one| control(conn, one))
}

/// Runs `jobs` (and pending accesses, and a bounded expiry sweep) in one
/// transaction and answers every job after it ends.
fn batch(conn: &Connection, ctx: &OpCtx, shared: &Shared, mut jobs: Vec<Box<dyn Job>>) {
    let accesses = shared.take_accesses();
    if jobs.is_empty() && accesses.is_empty() {
        return;
    }
    let outcome = run_batch(conn, ctx, shared, &mut jobs, &accesses);
    match &outcome {
        Ok(written) => {
            shared.commits.fetch_add(1, Ordering::Relaxed);
            shared.writes.fetch_add(*written, Ordering::Relaxed);
        }
        Err(f) => {
            shared.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %f.message, writes = jobs.len(), "a write batch failed");
            if !conn.is_autocommit()
                && let Err(e) = conn.execute_batch("ROLLBACK")
            {
                tracing::error!(error = %e, "rolling back a failed batch failed");
            }
        }
    }
    let failure = outcome.err();
    for job in jobs {
        job.finish(failure.as_ref());
    }
}

fn run_batch(
    conn: &Connection,
    ctx: &OpCtx,
    shared: &Shared,
    jobs: &mut [Box<dyn Job>],
    accesses: &[(SessionId, i64)],
) -> Result<u64, BatchFailure> {
    let fail = |e| BatchFailure::new(ctx, e);
    control(conn, "BEGIN IMMEDIATE").map_err(fail)?;
    let mut written = 0;
    for job in jobs.iter_mut() {
        savepoint(conn, "SAVEPOINT write").map_err(fail)?;
        match job.run(conn, &shared.cfg) {
            Ok(()) => {
                written += 1;
                savepoint(conn, "RELEASE write").map_err(fail)?;
            }
            // SQLite rolled the whole transaction back (I/O error, full
            // disk): the batch's earlier writes are gone too.
            Err(e) if conn.is_autocommit() => return Err(BatchFailure::rolled_back(ctx, e)),
            Err(_) => savepoint(conn, "ROLLBACK TO write; RELEASE write").map_err(fail)?,
        }
    }
    // Bookkeeping that needs no durability of its own rides along.
    if !accesses.is_empty() || written > 0 {
        savepoint(conn, "SAVEPOINT upkeep").map_err(fail)?;
        let upkeep = ops::refresh(conn, ctx, &shared.cfg, accesses)
            .and_then(|_| ops::sweep(conn, ctx, SWEEP_BUDGET));
        match upkeep {
            Ok(swept) => {
                if swept > 0 {
                    tracing::debug!(swept, "removed expired sessions");
                }
                savepoint(conn, "RELEASE upkeep").map_err(fail)?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "refreshing accesses or sweeping expired sessions failed");
                if conn.is_autocommit() {
                    return Err(BatchFailure::rolled_back(ctx, &e));
                }
                savepoint(conn, "ROLLBACK TO upkeep; RELEASE upkeep").map_err(fail)?;
            }
        }
    }
    control(conn, "COMMIT").map_err(fail)?;
    Ok(written)
}

/// A [`Error::Corrupt`] found by decoding a row names its session; this
/// adds the file, as every error mapped from SQLite already does.
fn in_file(ctx: &OpCtx, e: Error) -> Error {
    match e {
        Error::Corrupt { id, detail, source } => {
            let file = ctx.path.display().to_string();
            let detail = if detail.contains(&file) {
                detail
            } else {
                format!("{detail} (in {file})")
            };
            Error::Corrupt { id, detail, source }
        }
        other => other,
    }
}

/// A read: runs on one of the reader threads' connections.
pub(crate) type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// The reads waiting for a reader thread, shared by the store handle and
/// every reader.
///
/// A queue under a mutex with a condition variable, not a channel's one
/// receiver under a mutex shared by the readers: with that, the reader
/// that took a read released the mutex to another reader, which woke up
/// only to wait on the channel in its turn — two wake-ups, and on a
/// two-core machine a stolen core, per read. Here a read wakes one idle
/// reader (`notify_one`) and nothing else.
#[derive(Default)]
pub(crate) struct ReadQueue {
    state: Mutex<ReadState>,
    ready: Condvar,
}

#[derive(Default)]
struct ReadState {
    jobs: VecDeque<ReadJob>,
    /// Cleared when every store handle is gone: the readers finish the
    /// reads queued and stop.
    closed: bool,
    /// Reader threads still running.
    readers: usize,
}

impl std::fmt::Debug for ReadQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadQueue").finish_non_exhaustive()
    }
}

impl ReadQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReadState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` for the first idle reader; fails when the store is
    /// closed or no reader thread is left.
    pub(crate) fn push(&self, job: ReadJob, op: &'static str) -> Result<()> {
        {
            let mut state = self.lock();
            if state.closed || state.readers == 0 {
                return Err(crate::error::stopped(op));
            }
            state.jobs.push_back(job);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Every store handle is gone: the readers stop once the queue is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next read, waiting for one; `None` once closed and empty.
    fn next(&self) -> Option<ReadJob> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Counts a reader thread out when it ends, however it ends; the last one
/// drops the reads still queued, whose callers then get
/// [`Error::Unavailable`] rather than waiting forever.
struct ReaderGuard<'a>(&'a ReadQueue);

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        let orphans = {
            let mut state = self.0.lock();
            state.readers = state.readers.saturating_sub(1);
            if state.readers == 0 {
                std::mem::take(&mut state.jobs)
            } else {
                VecDeque::new()
            }
        };
        drop(orphans);
    }
}

/// Starts `conns.len()` reader threads on `queue`.
pub(crate) fn start_readers(conns: Vec<Connection>, queue: &Arc<ReadQueue>) -> std::io::Result<()> {
    for (i, conn) in conns.into_iter().enumerate() {
        let mine = Arc::clone(queue);
        queue.lock().readers += 1;
        let started = std::thread::Builder::new()
            .name(format!("statestore-sqlite-reader-{i}"))
            .spawn(move || reader(conn, &mine));
        if let Err(e) = started {
            let mut state = queue.lock();
            state.readers = state.readers.saturating_sub(1);
            drop(state);
            queue.close();
            return Err(e);
        }
    }
    Ok(())
}

/// A reader thread's loop: takes reads from the shared queue until every
/// store handle is gone.
fn reader(mut conn: Connection, queue: &ReadQueue) {
    let _guard = ReaderGuard(queue);
    while let Some(job) = queue.next() {
        job(&mut conn);
    }
}

/// Runs `sql` (a transaction's `BEGIN`, `COMMIT`, `SAVEPOINT`…) as a
/// cached statement: parsed once per connection, not per transaction.
pub(crate) fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// A send half for reads, with its answer channel.
pub(crate) fn read_job<T, F>(ctx: OpCtx, work: F) -> (ReadJob, oneshot::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection, &OpCtx) -> Result<T> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job: ReadJob = Box::new(move |conn: &mut Connection| {
        // One read transaction: every SELECT of the operation sees the same snapshot.
        let answer = match control(conn, "BEGIN") {
            Ok(()) => {
                let out = work(conn, &ctx).map_err(|e| in_file(&ctx, e));
                // A read transaction has nothing to keep; ending it cannot
                // lose data. It must end, or this connection would read
                // this snapshot ever after.
                if control(conn, "ROLLBACK").is_err() && !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                out
            }
            Err(e) => Err(map(&ctx, e)),
        };
        let _ = reply.send(answer);
    });
    (job, rx)
}

/// Sends `msg` to `tx`, for [`Sender`]s of either thread kind.
pub(crate) fn send<T>(tx: &Sender<T>, msg: T, op: &'static str) -> Result<()> {
    tx.send(msg).map_err(|_| crate::error::stopped(op))
}
