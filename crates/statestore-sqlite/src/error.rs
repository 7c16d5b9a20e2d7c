//! How SQLite's errors become [`statestore_core::Error`]s.

use std::time::Duration;

use rusqlite::ErrorCode;
use statestore_core::{Error, SessionId};

/// What an error is about: the operation, its session, and the configured
/// busy timeout (reported by [`Error::Timeout`]).
#[derive(Debug, Clone)]
pub(crate) struct OpCtx {
    pub(crate) op: &'static str,
    pub(crate) id: SessionId,
    pub(crate) busy: Duration,
}

/// Maps a rusqlite result into the store's error type.
///
/// - `SQLITE_BUSY` / `SQLITE_LOCKED` ("database is locked") after the busy
///   timeout: [`Error::Timeout`] — never surfaced raw.
/// - A stored value of the wrong type or range, or a file that is not a
///   database: [`Error::Corrupt`] for the session concerned.
/// - I/O failures, a full disk, a file that cannot be opened: [`Error::Unavailable`].
/// - Anything else: [`Error::Backend`].
pub(crate) fn map(ctx: &OpCtx, e: rusqlite::Error) -> Error {
    use rusqlite::Error as E;
    match &e {
        E::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                tracing::warn!(
                    operation = ctx.op,
                    "database is locked; gave up after the busy timeout"
                );
                Error::Timeout {
                    operation: ctx.op,
                    after: ctx.busy,
                }
            }
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => Error::Corrupt {
                id: ctx.id.clone(),
                detail: "the database file is damaged or not a database".into(),
                source: Some(Box::new(e)),
            },
            ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory => Error::Unavailable {
                operation: ctx.op,
                source: Box::new(e),
            },
            _ => Error::Backend {
                operation: ctx.op,
                source: Box::new(e),
            },
        },
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..)
        | E::InvalidColumnType(..) => Error::Corrupt {
            id: ctx.id.clone(),
            detail: "a stored value has the wrong type".into(),
            source: Some(Box::new(e)),
        },
        _ => Error::Backend {
            operation: ctx.op,
            source: Box::new(e),
        },
    }
}

/// [`map`] applied to a result.
pub(crate) fn sql<T>(ctx: &OpCtx, r: rusqlite::Result<T>) -> Result<T, Error> {
    r.map_err(|e| map(ctx, e))
}

/// An [`Error::Unavailable`] for a store whose threads have stopped.
pub(crate) fn stopped(op: &'static str) -> Error {
    Error::Unavailable {
        operation: op,
        source: "the store's database thread has stopped".into(),
    }
}

/// A [`Error::Corrupt`] without a source.
pub(crate) fn corrupt(id: &SessionId, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        id: id.clone(),
        detail: detail.into(),
        source: None,
    }
}
