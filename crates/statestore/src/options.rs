//! [`Options`]: settings for [`open_with`](crate::open_with) that a URL
//! cannot carry well, or that code rather than configuration should decide.
#![cfg_attr(
    not(any(feature = "memory", feature = "sqlite", feature = "redis")),
    allow(
        dead_code,
        reason = "with no backend compiled in, nothing reads the options"
    )
)]

use std::time::Duration;

use statestore_core::codec::Limits;

/// Settings for [`open_with`](crate::open_with), applied to whichever
/// backend the URL selects.
///
/// Each setting applies where the backend has it and is ignored where it
/// has not (a [`prefix`](Self::prefix) on `memory://`), so one `Options`
/// value serves a URL that is `memory://` in development and `redis://` in
/// production. The URL's query options win over these: `Options` are the
/// defaults the deployment's URL can override.
///
/// ```
/// use std::time::Duration;
/// use statestore::Options;
///
/// let options = Options::new()
///     .prefix("chat:")
///     .ttl(Duration::from_secs(24 * 3600))
///     .timeout(Duration::from_secs(1));
/// # drop(options);
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Options {
    pub(crate) ttl: Option<Duration>,
    pub(crate) prefix: Option<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) limits: Option<Limits>,
    #[cfg(any(feature = "redis-tls", feature = "postgres-tls"))]
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
    /// `Some(false)`: open only a store that exists (SQLite).
    pub(crate) create: Option<bool>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Options");
        d.field("ttl", &self.ttl)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("limits", &self.limits)
            .field("create", &self.create);
        #[cfg(any(feature = "redis-tls", feature = "postgres-tls"))]
        d.field(
            "tls_root_certificate",
            &self.tls_root_certificate.as_ref().map(|pem| pem.len()),
        );
        d.finish()
    }
}

impl Options {
    /// No settings: every backend's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether opening may create the store (default `true`). With
    /// `false`, an `sqlite://` URL naming no file fails with
    /// [`OpenError::Open`](crate::OpenError::Open) — its source an
    /// [`std::io::Error`] of kind `NotFound` — and leaves nothing behind:
    /// for tools that only read. The servers' stores are not files to
    /// create; this setting does not apply to them.
    pub fn create(mut self, create: bool) -> Self {
        self.create = Some(create);
        self
    }

    /// Sessions expire `ttl` after their last access (every backend; URL
    /// option `ttl`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Prepends `prefix` to every Redis key, so several apps or tenants share
    /// one server, or to PostgreSQL's table and index names (URL option
    /// `prefix`). Ignored by the other backends.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How long one operation may wait: for a Redis reply (default 2 s), or
    /// for another process's SQLite write lock (default 5 s), or for a
    /// PostgreSQL statement and a pooled connection (default 30 s). URL
    /// option `timeout`. Ignored by the memory store, which never waits.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Size limits every write is checked against before anything is
    /// written (every backend; no URL option).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Trusts this CA certificate (PEM) for `rediss://` connections (URL
    /// option `tls_ca`, a file path) and TLS `postgres://` connections (URL
    /// option `sslrootcert`, a file path) instead of the system's roots.
    #[cfg(any(feature = "redis-tls", feature = "postgres-tls"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "redis-tls", feature = "postgres-tls"))))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }
}
