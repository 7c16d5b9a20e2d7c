#![doc = include_str!("../README.md")]

mod builder;
mod diagnose;
mod error;
mod functions;
mod names;
mod ops;
pub mod partitions;
pub mod schema;
mod store;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use statestore_core::SessionId;
use statestore_core::codec::Limits;

pub use builder::PostgresStoreBuilder;
pub use diagnose::{Diagnosis, TableStats};
pub use error::{Error, Result};
pub use schema::{SCHEMA_VERSION, quote_ident};
pub use tls::SslMode;

/// The default schema of the store's tables.
pub const DEFAULT_SCHEMA: &str = "public";

/// The default prefix of the store's table and index names.
pub const DEFAULT_PREFIX: &str = "statestore_";

/// A pool of connections to one PostgreSQL database whose statestore
/// schema is current (see [`schema`]).
///
/// It implements [`Store`](statestore_core::Store): every write is one
/// call of a server-side function, every read one statement (see the
/// crate docs).
#[derive(Clone)]
pub struct PostgresStore {
    pool: deadpool_postgres::Pool,
    names: schema::Names,
    statement_timeout: Duration,
    pool_timeout: Duration,
    ttl: Option<Duration>,
    limits: Limits,
    sql: Arc<ops::Sql>,
    target: String,
    partitions: Option<u32>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("schema", &self.names.schema)
            .field("prefix", &self.names.prefix)
            .field("pool_size", &self.pool.status().max_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("pool_timeout", &self.pool_timeout)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (a libpq URL or key-value string,
    /// as `tokio_postgres::Config` parses it) with the default settings,
    /// and migrates it.
    ///
    /// # Errors
    ///
    /// As [`PostgresStoreBuilder::build`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url)?.build().await
    }

    /// A builder for a store at `url` with a pool size, statement timeout,
    /// schema, prefix or TTL.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `url` does not parse (the message never
    /// quotes it: it may hold a password).
    pub fn builder(url: &str) -> Result<PostgresStoreBuilder> {
        PostgresStoreBuilder::new(url)
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.names.schema
    }

    /// The prefix of the store's table and index names.
    pub fn prefix(&self) -> &str {
        &self.names.prefix
    }

    /// The server-side `statement_timeout` of every connection.
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// How long a caller waits for a free pooled connection.
    pub fn pool_timeout(&self) -> Duration {
        self.pool_timeout
    }

    /// How long sessions live after their last access, if they expire.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Deletes every session that has expired, in batches of at most
    /// `batch` sessions per statement (each its own transaction, so no
    /// statement holds many locks); returns how many sessions.
    ///
    /// Expired sessions are invisible to every read and write at once;
    /// this only reclaims their rows.
    ///
    /// # Errors
    ///
    /// Store failures; the batches before the failure stay deleted.
    pub async fn purge_expired(&self, batch: usize) -> statestore_core::Result<u64> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let n = self.purge_batch(batch).await?;
            total += n;
            if n < batch as u64 {
                return Ok(total);
            }
        }
    }

    /// How many hash partitions each of the store's tables has (`None`:
    /// not partitioned), as found at connect: see
    /// [`PostgresStoreBuilder::partitions`].
    pub fn partitions(&self) -> Option<u32> {
        self.partitions
    }

    /// The most connections the pool opens.
    pub fn pool_size(&self) -> usize {
        self.pool.status().max_size
    }
}

/// The id errors of store-wide operations (`list`, `purge_expired`) name.
fn store_id() -> statestore_core::Result<SessionId> {
    SessionId::new("(store)")
}
