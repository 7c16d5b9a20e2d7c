//! Errors building a store. Operations return [`statestore_core::Error`].

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

    /// Connecting, authenticating or loading the scripts failed.
    #[error("cannot connect to Redis at {address}: {source}")]
    Connect {
        /// `host:port` (or several, for a cluster).
        address: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
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
