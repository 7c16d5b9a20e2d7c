//! [`Error`]: how PostgreSQL's errors are classified — the one place where
//! SQLSTATEs are mapped — and how they become [`statestore_core::Error`]s.

use std::time::Duration;

use statestore_core::{SessionId, WriteOutcome};

/// A boxed error source.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result<T, statestore_postgres::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a PostgreSQL operation failed.
///
/// Messages name the SQLSTATE and the server's message, never a password,
/// a URL or a stored value. [`Error::write_outcome`] says whether a failed
/// write may have been applied; [`Error::into_store`] turns the error into
/// the backend-neutral [`statestore_core::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL or a builder setting is not acceptable.
    #[error("invalid PostgreSQL configuration: {0}")]
    Config(String),
    /// The server rolled the transaction back because it conflicted with a
    /// concurrent one (`40001` serialization_failure, `40P01`
    /// deadlock_detected). Nothing was written; running the whole
    /// transaction again may succeed.
    #[error("transaction rolled back by the server ({sqlstate}): {message}")]
    Retryable {
        /// The SQLSTATE.
        sqlstate: String,
        /// The server's message.
        message: String,
    },
    /// The server cancelled the statement (`57014` query_canceled, which
    /// `statement_timeout` raises; `55P03` lock_not_available, from
    /// `lock_timeout`). Its transaction was rolled back.
    #[error("statement cancelled by the server ({sqlstate}): {message}")]
    Canceled {
        /// The SQLSTATE.
        sqlstate: String,
        /// The server's message.
        message: String,
    },
    /// No pooled connection became free within the pool's wait timeout,
    /// or a new one could not be opened within the statement timeout (a
    /// hung server accepts the socket but never answers). Nothing was sent.
    #[error("no database connection became free or could be opened within {after:?}")]
    PoolTimeout {
        /// The configured wait.
        after: Duration,
    },
    /// The server did not answer a statement within the client's own
    /// deadline (the statement timeout plus a margin): it is hung
    /// (stopped, swapping, a network partition) where its own
    /// `statement_timeout` cannot fire. The connection was closed, never
    /// returned to the pool. A write in flight may or may not have been
    /// applied (it was sent, and a server that resumes may still commit it).
    #[error("no reply from PostgreSQL within {after:?}; the connection was closed")]
    Timeout {
        /// The client's deadline.
        after: Duration,
    },
    /// The server ended the connection with an error (`57P01` from
    /// `pg_terminate_backend` or a shutdown, another class `08`/`57P0x`
    /// error) *before* the statement completed: the statement's
    /// transaction was rolled back, so nothing was written. (The same error
    /// after the statement completed is [`Error::Unavailable`]: its commit
    /// may have happened.)
    #[error(
        "connection ended by the server before the statement completed ({sqlstate}): {message}"
    )]
    Aborted {
        /// The SQLSTATE.
        sqlstate: String,
        /// The server's message.
        message: String,
    },
    /// The server cannot be reached, or the connection broke (class `08`,
    /// `57P01`–`57P03`/`57P05` shutdown and termination, class `53`
    /// insufficient resources, class `58` system errors, I/O errors). A
    /// write in flight may or may not have been applied.
    #[error("PostgreSQL unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// The client's error.
        #[source]
        source: Option<BoxError>,
    },
    /// A unique constraint refused the write (`23505` unique_violation).
    /// Nothing was written.
    #[error("unique constraint {} violated", constraint.as_deref().unwrap_or("(unnamed)"))]
    UniqueViolation {
        /// The constraint's name, when the server gave it.
        constraint: Option<String>,
    },
    /// The database holds a newer schema than this build supports.
    #[error(
        "the database holds statestore schema version {found}; this build supports up to {supported}"
    )]
    UnsupportedSchema {
        /// The version found in the database.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The store's tables are not what the migrations made: someone altered
    /// them (a table, column or index missing, a column added or retyped),
    /// or a statement met such a change (`42P01` undefined_table, `42703`
    /// undefined_column, `42804` datatype_mismatch).
    #[error("the store's tables were altered: {what}")]
    Corrupt {
        /// What differs.
        what: String,
    },
    /// Any other error the server answered with. Its statement (and, in a
    /// transaction, the transaction) was rolled back.
    #[error("PostgreSQL error {sqlstate}: {message}")]
    Database {
        /// The SQLSTATE.
        sqlstate: String,
        /// The server's message.
        message: String,
    },
    /// The TLS handshake failed: the server's certificate was not trusted
    /// (signed by no trusted root, or, with `sslmode=verify-full`, issued
    /// for another host), or the server would not speak TLS. Nothing was
    /// sent; retrying will fail the same way until the configuration
    /// changes.
    #[error("TLS handshake with the PostgreSQL server failed: {message}")]
    Tls {
        /// What the TLS library reported.
        message: String,
    },
    /// A client-side failure that is none of the above (a protocol or
    /// conversion error).
    #[error("PostgreSQL client error: {message}")]
    Client {
        /// What happened.
        message: String,
    },
}

/// What an SQLSTATE means for the store: see [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Retryable,
    Canceled,
    Unavailable,
    Unique,
    SchemaChanged,
    Other,
}

/// The SQLSTATE table, in one place.
///
/// | SQLSTATE | class |
/// |---|---|
/// | `40001` serialization_failure, `40P01` deadlock_detected | [`Error::Retryable`] |
/// | `57014` query_canceled, `55P03` lock_not_available | [`Error::Canceled`] |
/// | class `08` (connection), `57P01` admin_shutdown, `57P02` crash_shutdown, `57P03` cannot_connect_now, `57P05` idle_session_timeout, `25P03` idle_in_transaction_session_timeout, class `53` (insufficient resources), class `58` (system error) | [`Error::Unavailable`] |
/// | `23505` unique_violation | [`Error::UniqueViolation`] |
/// | `42P01` undefined_table, `42703` undefined_column, `42804` datatype_mismatch, `3F000` invalid_schema_name | [`Error::Corrupt`] |
/// | anything else | [`Error::Database`] |
pub(crate) fn classify(sqlstate: &str) -> Class {
    match sqlstate {
        "40001" | "40P01" => Class::Retryable,
        "57014" | "55P03" => Class::Canceled,
        "57P01" | "57P02" | "57P03" | "57P05" | "25P03" => Class::Unavailable,
        "23505" => Class::Unique,
        "42P01" | "42703" | "42804" | "3F000" => Class::SchemaChanged,
        s if s.starts_with("08") || s.starts_with("53") || s.starts_with("58") => {
            Class::Unavailable
        }
        _ => Class::Other,
    }
}

impl Error {
    /// The error for a server reply with `sqlstate`, `message` and (for a
    /// unique violation) `constraint`.
    pub(crate) fn from_sqlstate(sqlstate: &str, message: &str, constraint: Option<&str>) -> Self {
        let sqlstate_owned = sqlstate.to_owned();
        let message = message.to_owned();
        match classify(sqlstate) {
            Class::Retryable => Self::Retryable {
                sqlstate: sqlstate_owned,
                message,
            },
            Class::Canceled => Self::Canceled {
                sqlstate: sqlstate_owned,
                message,
            },
            Class::Unavailable => Self::Unavailable {
                message: format!("{sqlstate}: {message}"),
                source: None,
            },
            Class::Unique => Self::UniqueViolation {
                constraint: constraint.map(str::to_owned),
            },
            Class::SchemaChanged => Self::Corrupt {
                what: format!("{sqlstate}: {message}"),
            },
            Class::Other => Self::Database {
                sqlstate: sqlstate_owned,
                message,
            },
        }
    }

    /// Whether running the same operation again may succeed as it is: the
    /// server rolled a conflicting transaction back, cancelled a statement,
    /// had no free connection, or could not be reached.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Retryable { .. }
                | Self::Canceled { .. }
                | Self::PoolTimeout { .. }
                | Self::Timeout { .. }
                | Self::Aborted { .. }
                | Self::Unavailable { .. }
        )
    }

    /// Whether the connection that gave this error is no longer usable: it
    /// broke or was ended, or a client-side failure left it in an unknown
    /// state.
    pub(crate) fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Aborted { .. }
                | Self::Timeout { .. }
                | Self::Client { .. }
        )
    }

    /// Whether a write that failed with this error may have been applied.
    /// Every error the server answered with rolled its statement (or
    /// transaction) back: [`WriteOutcome::NotWritten`], and so did a
    /// connection the server ended before the statement completed
    /// ([`Error::Aborted`]). A broken connection otherwise, no reply within
    /// the client's deadline ([`Error::Timeout`]), or a client-side failure
    /// after the request was sent, leaves it [`WriteOutcome::Unknown`].
    #[must_use]
    pub fn write_outcome(&self) -> WriteOutcome {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::Client { .. } => {
                WriteOutcome::Unknown
            }
            _ => WriteOutcome::NotWritten,
        }
    }

    /// The backend-neutral error for `operation` on session `id`, with the
    /// store's `statement_timeout` (reported by a cancelled statement).
    ///
    /// The mapping never claims less uncertainty than there is: where
    /// [`statestore_core::Error`] has no variant that is both transient and
    /// [`WriteOutcome::NotWritten`] (a rolled-back conflict, a cancelled
    /// statement, a pool timeout), the error becomes
    /// [`Unavailable`](statestore_core::Error::Unavailable) or
    /// [`Timeout`](statestore_core::Error::Timeout), whose outcome is
    /// `Unknown`: a keyed retry is then a replay, never a duplicate.
    pub fn into_store(
        self,
        operation: &'static str,
        id: &SessionId,
        statement_timeout: Duration,
    ) -> statestore_core::Error {
        use statestore_core::Error as E;
        match self {
            Self::Canceled { .. } => E::Timeout {
                operation,
                after: statement_timeout,
            },
            Self::PoolTimeout { after } | Self::Timeout { after } => {
                E::Timeout { operation, after }
            }
            Self::UniqueViolation { .. } => E::AlreadyExists { id: id.clone() },
            Self::UnsupportedSchema { found, supported } => E::UnsupportedSchema {
                id: id.clone(),
                found,
                supported,
            },
            Self::Corrupt { what } => E::Corrupt {
                id: id.clone(),
                detail: what,
                source: None,
            },
            e @ (Self::Retryable { .. } | Self::Aborted { .. } | Self::Unavailable { .. }) => {
                E::Unavailable {
                    operation,
                    source: Box::new(e),
                }
            }
            e => E::Backend {
                operation,
                source: Box::new(e),
            },
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            return Self::from_sqlstate(db.code().code(), db.message(), db.constraint());
        }
        // tokio-postgres's only sign of a handshake failure is its kind's
        // text; the cause is the TLS library's (or the server's refusal).
        if e.to_string() == "error performing TLS handshake" {
            let message = std::error::Error::source(&e)
                .map_or_else(|| "no detail".to_owned(), ToString::to_string);
            return Self::Tls { message };
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io {
            return Self::Unavailable {
                message: e.to_string(),
                source: Some(Box::new(e)),
            };
        }
        Self::Client {
            message: e.to_string(),
        }
    }
}

impl Error {
    /// The error for a statement that failed with `e`, `completed` telling
    /// whether the server had reported the statement complete
    /// (`CommandComplete`) before the failure. A connection the server
    /// ended with an error before that rolled the statement back — a
    /// statement's implicit transaction commits at the protocol's `Sync`,
    /// after `CommandComplete` — so it is [`Error::Aborted`]; after it, the
    /// commit may have happened (a backend terminated while it waits for a
    /// synchronous standby has committed locally).
    pub(crate) fn from_statement(e: tokio_postgres::Error, completed: bool) -> Self {
        if !completed
            && let Some(db) = e.as_db_error()
            && classify(db.code().code()) == Class::Unavailable
        {
            return Self::Aborted {
                sqlstate: db.code().code().to_owned(),
                message: db.message().to_owned(),
            };
        }
        e.into()
    }

    /// The error for a pool failure: `wait` is how long a caller waits for
    /// a free connection, `open` how long opening a new one may take.
    pub(crate) fn from_pool(
        e: deadpool_postgres::PoolError,
        wait: Duration,
        open: Duration,
    ) -> Self {
        use deadpool_postgres::{PoolError as P, TimeoutType};
        match e {
            P::Backend(e) => e.into(),
            P::Timeout(TimeoutType::Wait) => Self::PoolTimeout { after: wait },
            P::Timeout(TimeoutType::Create | TimeoutType::Recycle) => {
                Self::PoolTimeout { after: open }
            }
            P::Closed => Self::Unavailable {
                message: "the connection pool is closed".to_owned(),
                source: None,
            },
            other => Self::Client {
                message: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlstate_table() {
        let cases = [
            ("40001", Class::Retryable),
            ("40P01", Class::Retryable),
            ("57014", Class::Canceled),
            ("55P03", Class::Canceled),
            ("08000", Class::Unavailable),
            ("08006", Class::Unavailable),
            ("08P01", Class::Unavailable),
            ("57P01", Class::Unavailable),
            ("57P02", Class::Unavailable),
            ("57P03", Class::Unavailable),
            ("57P05", Class::Unavailable),
            ("25P03", Class::Unavailable),
            ("53300", Class::Unavailable),
            ("53100", Class::Unavailable),
            ("58030", Class::Unavailable),
            ("23505", Class::Unique),
            ("42P01", Class::SchemaChanged),
            ("42703", Class::SchemaChanged),
            ("42804", Class::SchemaChanged),
            ("3F000", Class::SchemaChanged),
            ("23503", Class::Other),
            ("22P02", Class::Other),
            ("42601", Class::Other),
            ("57000", Class::Other),
        ];
        for (sqlstate, class) in cases {
            assert_eq!(classify(sqlstate), class, "{sqlstate}");
        }
    }

    fn id() -> SessionId {
        SessionId::new("s").expect("a valid id")
    }

    #[test]
    fn server_refusals_wrote_nothing_and_broken_connections_are_unknown() {
        let t = Duration::from_secs(5);
        let outcome = |code: &str| Error::from_sqlstate(code, "m", None).write_outcome();
        for code in ["40001", "40P01", "57014", "23505", "42P01", "22P02"] {
            assert_eq!(outcome(code), WriteOutcome::NotWritten, "{code}");
        }
        for code in ["08006", "57P01", "53300"] {
            assert_eq!(outcome(code), WriteOutcome::Unknown, "{code}");
        }
        // The neutral error never claims more certainty than there is.
        for code in ["40001", "40P01", "57014", "08006", "57P01", "22P02"] {
            let store = Error::from_sqlstate(code, "m", None).into_store("append", &id(), t);
            assert_eq!(store.write_outcome(), WriteOutcome::Unknown, "{code}");
        }
        let pool = Error::PoolTimeout { after: t }.into_store("load", &id(), t);
        assert!(pool.is_transient());
    }

    #[test]
    fn each_class_becomes_its_store_error() {
        use statestore_core::Error as E;
        let t = Duration::from_secs(5);
        let store =
            |code: &str| Error::from_sqlstate(code, "m", Some("c")).into_store("fork", &id(), t);
        assert!(matches!(
            store("40001"),
            E::Unavailable {
                operation: "fork",
                ..
            }
        ));
        assert!(matches!(store("57014"), E::Timeout { after, .. } if after == t));
        assert!(matches!(store("08006"), E::Unavailable { .. }));
        assert!(matches!(store("23505"), E::AlreadyExists { .. }));
        assert!(matches!(store("42703"), E::Corrupt { .. }));
        assert!(matches!(store("22P02"), E::Backend { .. }));
        let newer = Error::UnsupportedSchema {
            found: 9,
            supported: 1,
        }
        .into_store("open", &id(), t);
        assert!(matches!(
            newer,
            E::UnsupportedSchema {
                found: 9,
                supported: 1,
                ..
            }
        ));
        assert!(Error::from_sqlstate("40P01", "m", None).is_retryable());
        assert!(!Error::from_sqlstate("23505", "m", None).is_retryable());
    }

    #[test]
    fn client_deadlines_are_unknown_and_aborted_statements_wrote_nothing() {
        use statestore_core::Error as E;
        let t = Duration::from_millis(1500);
        let timeout = Error::Timeout { after: t };
        assert_eq!(timeout.write_outcome(), WriteOutcome::Unknown);
        assert!(timeout.is_retryable());
        let store = timeout.into_store("append", &id(), Duration::from_millis(500));
        assert!(matches!(store, E::Timeout { operation: "append", after } if after == t));
        let aborted = Error::Aborted {
            sqlstate: "57P01".into(),
            message: "terminating connection due to administrator command".into(),
        };
        assert_eq!(aborted.write_outcome(), WriteOutcome::NotWritten);
        assert!(aborted.is_retryable());
        // The neutral error has no transient variant that wrote nothing.
        let store = aborted.into_store("append", &id(), t);
        assert!(matches!(store, E::Unavailable { .. }));
        assert_eq!(store.write_outcome(), WriteOutcome::Unknown);
    }

    #[test]
    fn messages_name_the_sqlstate_and_constraint() {
        let e = Error::from_sqlstate("40P01", "deadlock detected", None);
        assert_eq!(
            e.to_string(),
            "transaction rolled back by the server (40P01): deadlock detected"
        );
        let e = Error::from_sqlstate("23505", "duplicate key", Some("sessions_pkey"));
        assert_eq!(e.to_string(), "unique constraint sessions_pkey violated");
    }
}
