#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod open;
mod options;
pub mod telemetry;
mod url;

pub use error::OpenError;
pub use open::{Backend, open, open_backend, open_with};
pub use options::Options;
pub use url::parse_duration;
pub use url::redact as redact_url;

pub use statestore_core::codec;
pub use statestore_core::{
    Append, Appended, BoxError, Content, ContentPart, ConversationState, Counters, Delete, Error,
    Expect, IdempotencyKey, ImageUrl, ListCursor, ListOrder, ListPage, ListQuery, Load, Message,
    Metadata, PruneQuery, Pruned, Recent, RecentState, RememberedWrite, Result, Role, Save,
    SessionId, SessionInfo, Store, Summary, TITLE_KEY, TimeRange, Timestamp, TokenCount, ToolCall,
    Version, WriteOutcome, async_trait,
};

/// The in-memory store: [`MemoryStore`](memory::MemoryStore) (the
/// `statestore-memory` crate). URL `memory://`.
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory {
    pub use statestore_memory::*;
}

/// The embedded SQLite store: [`SqliteStore`](sqlite::SqliteStore) (the
/// `statestore-sqlite` crate). URL `sqlite://path`.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite {
    pub use statestore_sqlite::*;
}

/// The Redis and Redis Cluster store: [`RedisStore`](redis::RedisStore)
/// (the `statestore-redis` crate). URLs `redis://`, `rediss://` (feature
/// `redis-tls`), `redis+cluster://` (feature `redis-cluster`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis {
    pub use statestore_redis::*;
}

/// The PostgreSQL store: [`PostgresStore`](postgres::PostgresStore) (the
/// `statestore-postgres` crate). URLs `postgres://` and `postgresql://`.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres {
    pub use statestore_postgres::*;
}

/// What to send to the model: window selection, token counting and
/// compaction (the `context-window` crate).
#[cfg(feature = "window")]
#[cfg_attr(docsrs, doc(cfg(feature = "window")))]
pub mod window {
    pub use context_window::*;
}

/// `Pipeline::execute(session, role, content)`: windowed load, model call,
/// one atomic append; providers, middleware and tools (the `pipeline`
/// crate; its `OpenAiProvider` with feature `openai`).
#[cfg(feature = "pipeline")]
#[cfg_attr(docsrs, doc(cfg(feature = "pipeline")))]
pub mod pipeline {
    pub use ::pipeline::*;
}

/// Encryption at rest with key rotation, and compression:
/// [`Encrypted`](crypto::Encrypted) and [`Compressed`](crypto::Compressed)
/// wrap any `Arc<dyn Store>` (the `statestore-crypto` crate).
#[cfg(feature = "crypto")]
#[cfg_attr(docsrs, doc(cfg(feature = "crypto")))]
pub mod crypto {
    pub use statestore_crypto::*;
}

/// The workspace README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "pipeline", feature = "memory"))]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadme;
