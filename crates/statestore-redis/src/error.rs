//! Errors: [`Error`], what building a store fails with (operations return
//! [`statestore_core::Error`]), and the crate's internal [`ClientError`] of
//! a call on a connection, with how it maps to [`statestore_core::Error`].

use std::fmt;
use std::time::Duration;

use statestore_core::{BoxError, Error as StoreError, SessionId};

/// Why a [`RedisStore`](crate::RedisStore) could not be built or connected.
///
/// Messages name the address but never the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key prefix contains `{`, `}` or a control character.
    #[error("invalid key prefix: {0}")]
    InvalidPrefix(String),

    /// The URL could not be parsed.
    #[error("invalid Redis URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },

    /// The TTL is longer than [`MAX_TTL`](crate::MAX_TTL).
    #[error("invalid TTL {ttl:?}: the longest supported is {max:?}; for no expiry set none")]
    InvalidTtl {
        /// The TTL given.
        ttl: std::time::Duration,
        /// The longest supported.
        max: std::time::Duration,
    },

    /// The server's `maxmemory-policy` may evict single keys of a session,
    /// and the builder was told to
    /// [refuse](crate::EvictionPolicyCheck::Refuse) that.
    #[error(
        "Redis at {address} uses maxmemory-policy {policy}: {reason}, which tears sessions apart; \
         run CONFIG SET maxmemory-policy noeviction (and persist it in redis.conf)"
    )]
    UnsafeEvictionPolicy {
        /// `host:port` (or several, for a cluster).
        address: String,
        /// The policy the server reported.
        policy: String,
        /// Why it is unsafe.
        reason: &'static str,
    },

    /// Connecting, authenticating or loading the scripts failed, or did
    /// not finish within three times the connect timeout.
    #[error("cannot connect to Redis at {address}: {source}")]
    Connect {
        /// `host:port` (or several, for a cluster).
        address: String,
        /// What failed: the client's `redis::RedisError`, the
        /// [`statestore_core::Error`] of loading the scripts, or
        /// `tokio::time::error::Elapsed` when connecting took too long.
        #[source]
        source: BoxError,
    },

    /// [`wait_for_replicas`](crate::RedisStoreBuilder::wait_for_replicas)
    /// on a connection that is shared and reconnects by itself: its `WAIT`
    /// would stall every operation behind it, and could measure a fresh
    /// connection that wrote nothing. Use `connect`/`connect_cluster`, or
    /// `build` on a deadpool pool.
    #[error(
        "wait_for_replicas needs connections of its own: use connect or connect_cluster \
         (or build on a deadpool pool), not build on a {connection}"
    )]
    WaitNeedsOwnConnections {
        /// The kind of connection given.
        connection: &'static str,
    },
}

/// Why a call on a connection failed: redis-rs's own error, or a failure
/// of this crate's plumbing around it (a pool, a task, a cluster address),
/// kept as what it is rather than dressed up as a `redis::RedisError`.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The client library's error, as it reported it.
    Redis(redis::RedisError),
    /// deadpool gave no connection: it timed out, or the pool is closed or
    /// misconfigured (its backend errors are [`ClientError::Redis`]).
    #[cfg(feature = "deadpool")]
    Pool(deadpool_redis::PoolError),
    /// Opening a connection took longer than this.
    ConnectTimeout(Duration),
    /// A cluster node address (from `CLUSTER NODES` or a redirection) that
    /// is not `host:port`.
    BadNode(String),
    /// No healthy master serves the slot of this key (the cluster is
    /// failing over or resharding).
    #[cfg(feature = "cluster")]
    NoMaster(String),
    /// A concurrent request's task panicked or was cancelled.
    #[cfg(feature = "cluster")]
    Task(tokio::task::JoinError),
    /// The server discarded a transaction (nothing ran) for a passing state:
    /// its slot moved or is migrating, the cluster is failing over, the
    /// server is loading its data.
    Discarded(redis::RedisError),
    /// The durable-write connections were closed.
    Closed(tokio::sync::AcquireError),
}

impl From<redis::RedisError> for ClientError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// A reply of an unexpected shape, as redis-rs reports it.
impl From<redis::ParsingError> for ClientError {
    fn from(e: redis::ParsingError) -> Self {
        Self::Redis(e.into())
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(e) => e.fmt(f),
            #[cfg(feature = "deadpool")]
            Self::Pool(e) => write!(f, "connection pool: {e}"),
            Self::ConnectTimeout(after) => write!(f, "connecting timed out after {after:?}"),
            Self::BadNode(node) => write!(f, "cluster node {node:?} is not host:port"),
            #[cfg(feature = "cluster")]
            Self::NoMaster(key) => write!(f, "no master serves the slot of {key:?}"),
            #[cfg(feature = "cluster")]
            Self::Task(e) => write!(f, "a concurrent request failed: {e}"),
            Self::Discarded(e) => write!(
                f,
                "the transaction was discarded, nothing ran (the cluster is failing over or \
                 resharding, or the server is loading): {e}"
            ),
            Self::Closed(e) => write!(f, "the durable-write connections are closed: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Redis(e) => e.source(),
            #[cfg(feature = "deadpool")]
            Self::Pool(e) => Some(e),
            #[cfg(feature = "cluster")]
            Self::Task(e) => Some(e),
            Self::Discarded(e) => Some(e),
            Self::Closed(e) => Some(e),
            #[cfg(feature = "cluster")]
            Self::NoMaster(_) => None,
            Self::ConnectTimeout(_) | Self::BadNode(_) => None,
        }
    }
}

/// `Timeout` for `operation` on session `id` (when there is one) after
/// `after`, logged as a warning: the write may or may not have landed.
pub(crate) fn timed_out(
    operation: &'static str,
    id: Option<&SessionId>,
    after: Duration,
) -> StoreError {
    tracing::warn!(
        operation,
        session = id.map(tracing::field::display),
        ?after,
        "Redis did not answer in time; a write may or may not have been applied"
    );
    StoreError::Timeout { operation, after }
}

/// The [`statestore_core::Error`] for a failed call: `Timeout` (logged)
/// when it did not answer in time, `Unavailable` when the server could not
/// be reached, `Backend` for anything else the server answered.
pub(crate) fn client_error(
    operation: &'static str,
    id: Option<&SessionId>,
    after: Duration,
    e: ClientError,
) -> StoreError {
    let e = match e {
        ClientError::Redis(e) => return redis_error(operation, id, after, e),
        #[cfg(feature = "deadpool")]
        ClientError::Pool(deadpool_redis::PoolError::Timeout(_)) => {
            return timed_out(operation, id, after);
        }
        ClientError::ConnectTimeout(_) => return timed_out(operation, id, after),
        other => other,
    };
    StoreError::Unavailable {
        operation,
        source: Box::new(e),
    }
}

fn redis_error(
    operation: &'static str,
    id: Option<&SessionId>,
    after: Duration,
    e: redis::RedisError,
) -> StoreError {
    if e.is_timeout() {
        timed_out(operation, id, after)
    } else if e.is_connection_refusal()
        || e.is_io_error()
        || e.is_cluster_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
    {
        StoreError::Unavailable {
            operation,
            source: Box::new(e),
        }
    } else {
        StoreError::Backend {
            operation,
            source: Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_of_our_own_are_unavailable_and_keep_their_message() {
        let id = SessionId::new("s").ok();
        let err = client_error(
            "append",
            id.as_ref(),
            Duration::from_secs(1),
            ClientError::BadNode("10.0.0.1".to_owned()),
        );
        assert!(matches!(
            err,
            StoreError::Unavailable {
                operation: "append",
                ..
            }
        ));
        assert!(
            err.to_string().contains("\"10.0.0.1\" is not host:port"),
            "{err}"
        );
        let err = client_error(
            "load",
            None,
            Duration::from_secs(2),
            ClientError::ConnectTimeout(Duration::from_secs(1)),
        );
        assert!(
            matches!(err, StoreError::Timeout { operation: "load", after } if after == Duration::from_secs(2))
        );
    }

    #[test]
    fn the_clients_own_errors_are_boxed_as_they_are() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let err = client_error("load", None, Duration::from_secs(1), refused.into());
        let StoreError::Unavailable { source, .. } = err else {
            panic!("{err:?}");
        };
        assert!(source.downcast_ref::<redis::RedisError>().is_some());
    }
}
