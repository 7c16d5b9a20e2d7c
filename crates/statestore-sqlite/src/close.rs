//! [`SqliteStore::close`]: the WAL checkpointed into the database file and
//! truncated, for the end of a process.

use rusqlite::Connection;
use statestore_core::{Error, Result};

use crate::error::{OpCtx, sql, stopped};
use crate::worker::{self, ToWriter};
use crate::{SqliteStore, schema};

impl SqliteStore {
    /// Ends this process's use of the file cleanly: waits for every write
    /// queued before it, then copies the write-ahead log into the database
    /// file and truncates the `-wal` file to zero bytes
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`). Without it the `-wal` file can
    /// keep old frames — earlier versions of rewritten rows, such as the
    /// plaintext an in-place encryption replaced — until a later checkpoint
    /// overwrites them.
    ///
    /// The store stays usable (a later write starts the log afresh), so
    /// call it last. It writes nothing new: every write it waited for was
    /// already committed.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when readers (of this or another process) kept
    /// the log in use past the busy timeout: the checkpoint is incomplete
    /// and the `-wal` file keeps frames; nothing is lost (committed writes
    /// are in the log or the file). [`Error::Unavailable`] and the other
    /// errors of a write when SQLite fails.
    pub async fn close(&self) -> Result<()> {
        let ctx = OpCtx {
            op: "close",
            id: schema::file_id(),
            busy: self.inner.shared.busy,
            path: std::sync::Arc::clone(&self.inner.shared.path),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        worker::send(&self.inner.writer, ToWriter::Checkpoint(ctx, tx), "close")?;
        rx.await.map_err(|_| stopped("close"))?
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` on the writer's connection, outside
/// any transaction.
pub(crate) fn checkpoint(conn: &Connection, ctx: &OpCtx) -> Result<()> {
    let (busy, _log, _done): (i64, i64, i64) = sql(
        ctx,
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        }),
    )?;
    if busy != 0 {
        return Err(Error::Timeout {
            operation: ctx.op,
            after: ctx.busy,
        });
    }
    Ok(())
}
