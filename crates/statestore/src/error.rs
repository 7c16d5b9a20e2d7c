//! Why [`open`](crate::open) failed, or (feature `otel`) why telemetry could
//! not be set up. Operations on an open store return
//! [`statestore_core::Error`] (re-exported as [`crate::Error`]).

/// Why [`open`](crate::open) or [`open_with`](crate::open_with) could not
/// open a store — the facade's one error type, so also why telemetry could
/// not be set up ([`OpenError::Telemetry`], feature `otel`).
///
/// Every variant carries the URL as given **with any password replaced by
/// `***`** and without its query, so errors and their `Debug` form can be
/// logged as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is malformed: no `scheme://`, a bad path, host list or
    /// percent-encoding. The reason says what is wrong.
    #[error("invalid store URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The scheme is none of `memory`, `sqlite`, `redis`, `rediss`,
    /// `redis+cluster`, `rediss+cluster`, `postgres`, `postgresql`.
    #[error(
        "unknown store URL scheme `{scheme}` in {url}: expected memory://, sqlite://, \
         redis://, rediss://, redis+cluster://, rediss+cluster://, postgres:// or postgresql://"
    )]
    UnknownScheme {
        /// The URL, redacted.
        url: String,
        /// The scheme found.
        scheme: String,
    },

    /// The scheme's backend is not compiled in: enable `feature` of the
    /// `statestore` crate.
    #[error(
        "{scheme}:// URLs need the `{feature}` feature of the statestore crate, which this \
         build does not enable (features = [\"{feature}\"] in Cargo.toml): {url}"
    )]
    FeatureDisabled {
        /// The URL, redacted.
        url: String,
        /// The scheme found.
        scheme: String,
        /// The feature to enable.
        feature: &'static str,
    },

    /// A query option is unknown for this scheme, given twice, or has a
    /// value that does not parse.
    #[error("invalid option `{option}` in {url}: {reason}")]
    InvalidOption {
        /// The URL, redacted (without its query).
        url: String,
        /// The option's name.
        option: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The backend could not open the store (memory, SQLite: a file that
    /// cannot be opened, is not a database, or is locked).
    #[error("cannot open {url}: {source}")]
    Open {
        /// The URL, redacted.
        url: String,
        /// The backend's error.
        #[source]
        source: statestore_core::Error,
    },

    /// The Redis store could not be built or could not connect (refused,
    /// timed out, wrong credentials, unsafe eviction policy, …).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("cannot open {url}: {source}")]
    Redis {
        /// The URL, redacted.
        url: String,
        /// The Redis backend's error (it names addresses, never passwords).
        #[source]
        source: statestore_redis::Error,
    },

    /// The PostgreSQL store could not be built, connect or migrate
    /// (refused, timed out, wrong credentials, a newer schema, …).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[error("cannot open {url}: {source}")]
    Postgres {
        /// The URL, redacted.
        url: String,
        /// The PostgreSQL backend's error (it names no password or URL).
        #[source]
        source: statestore_postgres::Error,
    },

    /// Telemetry could not be set up or shut down (feature `otel`):
    /// [`telemetry::init`](crate::telemetry::init) and
    /// [`Telemetry`](crate::telemetry::Telemetry) refused a setting (an
    /// OTLP protocol or exporter other than `http/protobuf` and `otlp`, an
    /// endpoint that is no URL), a global `tracing` subscriber was already
    /// set, or the final export of
    /// [`TelemetryGuard::shutdown`](crate::telemetry::TelemetryGuard::shutdown)
    /// failed (nothing listening, a timeout, an HTTP error status).
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    #[error("telemetry to {url}: {source}")]
    Telemetry {
        /// The OTLP endpoint as configured (its base URL, or a signal's own
        /// one), redacted.
        url: String,
        /// What failed.
        #[source]
        source: statestore_core::BoxError,
    },
}

impl OpenError {
    /// The URL the error is about, with any password replaced by `***`.
    pub fn url(&self) -> &str {
        match self {
            Self::InvalidUrl { url, .. }
            | Self::UnknownScheme { url, .. }
            | Self::FeatureDisabled { url, .. }
            | Self::InvalidOption { url, .. }
            | Self::Open { url, .. } => url,
            #[cfg(feature = "redis")]
            Self::Redis { url, .. } => url,
            #[cfg(feature = "postgres")]
            Self::Postgres { url, .. } => url,
            #[cfg(feature = "otel")]
            Self::Telemetry { url, .. } => url,
        }
    }
}
