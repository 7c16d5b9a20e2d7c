//! The one error type every store returns.

use std::time::Duration;

use crate::{Expect, SessionId, Version, WriteOutcome};

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a [`Store`](crate::Store) operation can fail with.
///
/// Every message names the session (quoted and escaped) and what went wrong,
/// and never contains message content or credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session does not exist (for operations that need it to, such as
    /// [`Store::fork`](crate::Store::fork)'s source).
    #[error("session {id} not found")]
    NotFound {
        /// The missing session.
        id: SessionId,
    },

    /// The session already exists (the target of a fork).
    #[error("session {id} already exists")]
    AlreadyExists {
        /// The existing session.
        id: SessionId,
    },

    /// The write's [`Expect`] did not hold; nothing was written.
    #[error("conflict on session {id}: expected {expected}, found {}", match actual {
        Some(v) => format!("version {v}"),
        None => "no session".to_owned(),
    })]
    Conflict {
        /// The session.
        id: SessionId,
        /// What the write required.
        expected: Expect,
        /// The version found (`None`: the session does not exist).
        actual: Option<Version>,
    },

    /// A session id failed validation (see [`SessionId`]).
    #[error("invalid session id \"{id}\": {reason}")]
    InvalidId {
        /// The offending id, escaped and shortened for display.
        id: String,
        /// Why it was refused.
        reason: String,
    },

    /// An [`IdempotencyKey`](crate::IdempotencyKey) failed validation.
    #[error("invalid idempotency key: {reason}")]
    InvalidKey {
        /// Why it was refused.
        reason: String,
    },

    /// An argument was not acceptable (for example a fork onto itself).
    #[error("invalid argument for session {id}: {reason}")]
    InvalidArgument {
        /// The session.
        id: SessionId,
        /// What was wrong.
        reason: String,
    },

    /// A [`ListQuery::cursor`](crate::ListQuery::cursor) that this store did
    /// not produce (or that a topology change made stale).
    #[error("invalid list cursor: {reason}")]
    InvalidCursor {
        /// Why it was refused.
        reason: String,
    },

    /// A query that asks for something no store does (a `prune` with no
    /// criterion, which would remove every session); nothing was written.
    #[error("invalid query: {reason}")]
    InvalidQuery {
        /// Why it was refused.
        reason: String,
    },

    /// A message or session exceeds a configured size limit; nothing was written.
    #[error("session {id}: {what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The session.
        id: SessionId,
        /// What was too large, e.g. `"message 3 of 4"`.
        what: String,
        /// Its size in bytes (as stored).
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// Stored data under the session's keys is not something this library
    /// wrote (wrong type, garbage, truncated JSON). Other sessions are unaffected.
    #[error("session {id} holds corrupt data: {detail}")]
    Corrupt {
        /// The session.
        id: SessionId,
        /// What was found.
        detail: String,
        /// The decoding error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// A value of the session is encrypted and cannot be decrypted: its key
    /// id is not in the key ring, the key is wrong, the bytes were changed,
    /// or the value was moved there from another session, position or
    /// field. Raised by encryption layers (`statestore-crypto`), for the
    /// session alone; nothing was written. `source`, when present, is the
    /// layer's own typed error.
    #[error("session {id}: cannot decrypt {detail}{}", match key_id {
        Some(k) => format!(" (key id {k:?})"),
        None => String::new(),
    })]
    Decryption {
        /// The session.
        id: SessionId,
        /// The key id the stored value names, when it could be read.
        key_id: Option<String>,
        /// Which value, e.g. `"message 3"` (never its content).
        detail: String,
        /// The layer's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The session was written by a newer version of this library, with a
    /// schema this version cannot read. Upgrade the reader.
    #[error("session {id} uses storage schema {found}; this build reads up to {supported}")]
    UnsupportedSchema {
        /// The session.
        id: SessionId,
        /// The schema version found.
        found: u32,
        /// The newest schema version this build reads.
        supported: u32,
    },

    /// The write was applied on the primary, but fewer replicas than
    /// required acknowledged it in time: it may be lost if the primary fails
    /// now. Re-read the version before retrying a non-idempotent write.
    #[error(
        "{operation} on session {id} was applied but acknowledged by {acknowledged} of \
         {required} replicas in time; it may be lost in a failover"
    )]
    NotReplicated {
        /// The operation.
        operation: &'static str,
        /// The session.
        id: SessionId,
        /// Replicas that acknowledged.
        acknowledged: u32,
        /// Replicas required.
        required: u32,
    },

    /// The backend cannot be reached (connection refused, reset, closed).
    #[error("store unavailable during {operation}: {source}")]
    Unavailable {
        /// The operation that failed, e.g. `"append"`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// The backend refused the write before applying any of it — a
    /// read-only file or database, a read-only replica — and will refuse it
    /// again until that is changed: nothing was written, and retrying does
    /// not help.
    #[error("store refused {operation}: {source}")]
    Refused {
        /// The operation that was refused, e.g. `"append"`.
        operation: &'static str,
        /// Why, as the backend said it.
        #[source]
        source: BoxError,
    },

    /// The backend did not answer in time. The write may or may not have
    /// been applied; re-read the version before retrying a non-idempotent write.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        operation: &'static str,
        /// The configured limit.
        after: Duration,
    },

    /// Any other backend failure (for example a permission error).
    #[error("backend error during {operation}: {source}")]
    Backend {
        /// The operation that failed.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A short, stable name of the error's kind, in `snake_case`: what
    /// telemetry records as `error.type` (`conflict`, `timeout`, …).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::Conflict { .. } => "conflict",
            Self::InvalidId { .. } => "invalid_id",
            Self::InvalidKey { .. } => "invalid_key",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::InvalidCursor { .. } => "invalid_cursor",
            Self::InvalidQuery { .. } => "invalid_query",
            Self::TooLarge { .. } => "too_large",
            Self::Corrupt { .. } => "corrupt",
            Self::Decryption { .. } => "decryption",
            Self::UnsupportedSchema { .. } => "unsupported_schema",
            Self::NotReplicated { .. } => "not_replicated",
            Self::Unavailable { .. } => "unavailable",
            Self::Refused { .. } => "refused",
            Self::Timeout { .. } => "timeout",
            Self::Backend { .. } => "backend",
        }
    }

    /// Whether retrying the same call later may succeed (the backend was
    /// unavailable or slow). Conflicts are not retryable as-is: reload first.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::NotReplicated { .. }
        )
    }

    /// What this error says about the write that failed: nothing written
    /// (retry freely), outcome unknown (retry with the same
    /// [`IdempotencyKey`](crate::IdempotencyKey), or re-read first), or
    /// written (do not repeat it). For reads the answer is irrelevant.
    ///
    /// ```
    /// use statestore_core::{Error, WriteOutcome};
    /// use std::time::Duration;
    ///
    /// let e = Error::Timeout { operation: "append", after: Duration::from_secs(2) };
    /// assert!(e.is_transient());
    /// assert_eq!(e.write_outcome(), WriteOutcome::Unknown);
    /// ```
    #[must_use]
    pub fn write_outcome(&self) -> WriteOutcome {
        match self {
            // Sent (or possibly sent) without a reply.
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::Backend { .. } => {
                WriteOutcome::Unknown
            }
            Self::NotReplicated { .. } => WriteOutcome::Written,
            // Refused by a check that runs before anything is written. An
            // encryption layer raises `Decryption` only from reads, and from
            // the read a write of its own starts with (fork, re-encryption).
            _ => WriteOutcome::NotWritten,
        }
    }

    /// A [`Error::Corrupt`] with a decoding error as its source.
    pub fn corrupt(id: &SessionId, detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Corrupt {
            id: id.clone(),
            detail: detail.into(),
            source: Some(source.into()),
        }
    }
}

/// `Result<T, statestore_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_session() {
        let id = SessionId::new("a b").unwrap();
        let e = Error::Conflict {
            id: id.clone(),
            expected: Expect::Version(3),
            actual: Some(5),
        };
        assert_eq!(
            e.to_string(),
            r#"conflict on session "a b": expected version 3, found version 5"#
        );
        let e = Error::Conflict {
            id,
            expected: Expect::Version(3),
            actual: None,
        };
        assert_eq!(
            e.to_string(),
            r#"conflict on session "a b": expected version 3, found no session"#
        );
    }

    #[test]
    fn a_decryption_failure_wrote_nothing_and_names_the_key() {
        let e = Error::Decryption {
            id: SessionId::new("s").unwrap(),
            key_id: Some("2025-06".into()),
            detail: "message 3".into(),
            source: None,
        };
        assert_eq!(e.write_outcome(), WriteOutcome::NotWritten);
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            r#"session "s": cannot decrypt message 3 (key id "2025-06")"#
        );
    }
}
