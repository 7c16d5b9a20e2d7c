//! How SQLite's errors become [`statestore_core::Error`]s — the one place
//! where result codes are mapped, each error naming the database file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::ErrorCode;
use rusqlite::ffi;
use statestore_core::{Error, SessionId};

/// What an error is about: the operation, its session, the database file
/// and the configured busy timeout (reported by [`Error::Timeout`]).
#[derive(Debug, Clone)]
pub(crate) struct OpCtx {
    pub(crate) op: &'static str,
    pub(crate) id: SessionId,
    pub(crate) busy: Duration,
    pub(crate) path: Arc<Path>,
}

/// An SQLite failure on a named file: the source of the
/// [`Error::Unavailable`] and [`Error::Backend`] errors this crate returns.
#[derive(Debug)]
pub(crate) struct FileError {
    what: String,
    source: rusqlite::Error,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The name of an extended result code SQLite reports for I/O errors, for
/// the message (the numbers are SQLite's stable ABI).
fn ioerr_name(extended: i32) -> &'static str {
    match extended {
        ffi::SQLITE_IOERR_READ => "SQLITE_IOERR_READ",
        ffi::SQLITE_IOERR_SHORT_READ => "SQLITE_IOERR_SHORT_READ",
        ffi::SQLITE_IOERR_WRITE => "SQLITE_IOERR_WRITE",
        ffi::SQLITE_IOERR_FSYNC => "SQLITE_IOERR_FSYNC",
        ffi::SQLITE_IOERR_TRUNCATE => "SQLITE_IOERR_TRUNCATE",
        ffi::SQLITE_IOERR_FSTAT => "SQLITE_IOERR_FSTAT",
        ffi::SQLITE_IOERR_SHMOPEN => "SQLITE_IOERR_SHMOPEN",
        ffi::SQLITE_IOERR_SHMSIZE => "SQLITE_IOERR_SHMSIZE",
        ffi::SQLITE_IOERR_SHMMAP => "SQLITE_IOERR_SHMMAP",
        ffi::SQLITE_IOERR_DELETE => "SQLITE_IOERR_DELETE",
        _ => "SQLITE_IOERR",
    }
}

/// Whether an `SQLITE_ERROR` message says that a statement of this crate
/// no longer matches the file's tables: someone dropped or renamed a table
/// or column after the store created them. The crate's statements are
/// fixed, so nothing else produces these.
fn schema_changed(message: Option<&str>) -> bool {
    message.is_some_and(|m| {
        m.starts_with("no such table")
            || m.starts_with("no such column")
            || m.contains("has no column named")
            || m.starts_with("no such index")
    })
}

/// `e`'s message followed by those of its sources (skipping repeats).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    message
}

/// Maps a rusqlite error into the store's error type, naming the file.
///
/// | SQLite | becomes |
/// |---|---|
/// | `SQLITE_BUSY`, `SQLITE_LOCKED` ("database is locked", after the busy timeout) | [`Error::Timeout`] — never surfaced raw |
/// | `SQLITE_CORRUPT`, `SQLITE_NOTADB`; a stored value of the wrong type; `SQLITE_ERROR` "no such table/column" (tables changed behind the store's back) | [`Error::Corrupt`] for the session concerned (`*` for the whole file) |
/// | `SQLITE_READONLY` (the file, its directory or its `-wal`/`-shm` files cannot be written by this user) | [`Error::Refused`]: refused before anything was written, and refused again until that changes |
/// | `SQLITE_FULL` (disk full), `SQLITE_IOERR_*` (including a write refused by a file-size limit), `SQLITE_CANTOPEN`, `SQLITE_PERM`, `SQLITE_NOLFS`, `SQLITE_NOMEM` | [`Error::Unavailable`] (nothing of the failed write is in the file) |
/// | anything else | [`Error::Backend`] |
pub(crate) fn map(ctx: &OpCtx, e: rusqlite::Error) -> Error {
    use rusqlite::Error as E;
    let file = ctx.path.display();
    let unavailable = |what: String, source: rusqlite::Error| Error::Unavailable {
        operation: ctx.op,
        source: Box::new(FileError { what, source }),
    };
    let refused = |what: String, source: rusqlite::Error| Error::Refused {
        operation: ctx.op,
        source: Box::new(FileError { what, source }),
    };
    let corrupt = |detail: String, source: rusqlite::Error| Error::Corrupt {
        id: ctx.id.clone(),
        detail,
        source: Some(Box::new(source)),
    };
    match &e {
        E::SqliteFailure(f, message) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                tracing::warn!(
                    operation = ctx.op,
                    file = %file,
                    "database is locked; gave up after the busy timeout"
                );
                Error::Timeout {
                    operation: ctx.op,
                    after: ctx.busy,
                }
            }
            ErrorCode::NotADatabase => corrupt(
                format!("{file} is not a SQLite database (SQLITE_NOTADB)"),
                e,
            ),
            ErrorCode::DatabaseCorrupt => corrupt(
                format!("the database file {file} is damaged (SQLITE_CORRUPT)"),
                e,
            ),
            ErrorCode::DiskFull => unavailable(
                format!(
                    "the disk holding {file} is full or the file reached its size limit \
                     (SQLITE_FULL); the failed write was not committed"
                ),
                e,
            ),
            ErrorCode::SystemIoFailure => {
                let name = ioerr_name(f.extended_code);
                let what = match f.extended_code {
                    ffi::SQLITE_IOERR_WRITE | ffi::SQLITE_IOERR_TRUNCATE => format!(
                        "writing {file} failed ({name}): the disk may be full, the file over \
                         its size limit, or the device failing; the failed write was not \
                         committed"
                    ),
                    ffi::SQLITE_IOERR_FSYNC => format!(
                        "syncing {file} to disk failed ({name}): the device may be failing; \
                         the failed write may or may not be on disk"
                    ),
                    _ => format!("an I/O error on {file} ({name})"),
                };
                unavailable(what, e)
            }
            ErrorCode::ReadOnly if f.extended_code == ffi::SQLITE_READONLY_DIRECTORY => refused(
                format!(
                    "the directory holding {file} is not writable \
                         (SQLITE_READONLY_DIRECTORY): a WAL database needs its -wal and -shm \
                         files beside it"
                ),
                e,
            ),
            ErrorCode::ReadOnly => refused(
                format!(
                    "{file} is read-only (SQLITE_READONLY): the file, its directory or its \
                     -wal/-shm files cannot be written"
                ),
                e,
            ),
            ErrorCode::CannotOpen => unavailable(
                format!(
                    "cannot open {file} or its -wal/-shm files (SQLITE_CANTOPEN): the \
                     directory may be missing or not writable"
                ),
                e,
            ),
            ErrorCode::PermissionDenied => {
                unavailable(format!("permission denied on {file} (SQLITE_PERM)"), e)
            }
            ErrorCode::FileLockingProtocolFailed => {
                unavailable(format!("locking {file} failed (SQLITE_PROTOCOL)"), e)
            }
            ErrorCode::TooBig | ErrorCode::NoLargeFileSupport => unavailable(
                format!("{file}: a value or the file is too large for SQLite"),
                e,
            ),
            ErrorCode::OutOfMemory => unavailable(format!("out of memory on {file}"), e),
            ErrorCode::Unknown if schema_changed(message.as_deref()) => corrupt(
                format!(
                    "the tables of {file} were changed by someone else: {}",
                    message.as_deref().unwrap_or_default()
                ),
                e,
            ),
            _ => Error::Backend {
                operation: ctx.op,
                source: Box::new(FileError {
                    what: format!("SQLite failed on {file}"),
                    source: e,
                }),
            },
        },
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..)
        | E::InvalidColumnType(..) => {
            corrupt(format!("a value stored in {file} has the wrong type"), e)
        }
        _ => Error::Backend {
            operation: ctx.op,
            source: Box::new(FileError {
                what: format!("SQLite failed on {file}"),
                source: e,
            }),
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
