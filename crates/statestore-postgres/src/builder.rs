//! [`PostgresStoreBuilder`]: the settings of a [`PostgresStore`], the pool
//! built from them, and the migration run at connect.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use statestore_core::codec::Limits;
use tokio_postgres::Config;
use tokio_postgres::config::Host;

use crate::error::{Error, Result};
use crate::schema::{self, Names};
use crate::tls::{self, RootCerts, SslMode};
use crate::{DEFAULT_PREFIX, DEFAULT_SCHEMA, PostgresStore};

/// The default number of pooled connections.
const DEFAULT_POOL_SIZE: usize = 16;

/// The default server-side statement timeout (and pool wait).
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures a [`PostgresStore`]: see [`PostgresStore::builder`].
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    config: Config,
    pool_size: usize,
    statement_timeout: Duration,
    pool_timeout: Option<Duration>,
    schema: String,
    prefix: String,
    ttl: Option<Duration>,
    limits: Limits,
    ssl_mode: SslMode,
    partitions: Option<u32>,
    root_file: Option<RootCerts>,
    #[cfg(feature = "tls")]
    root_pem: Option<Vec<u8>>,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("target", &target(&self.config))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("pool_timeout", &self.pool_timeout)
            .field("schema", &self.schema)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("ssl_mode", &self.ssl_mode)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// `user@host:port/dbname`, for Debug and logs: never the password.
fn target(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("(default user)"),
        hosts.join(","),
        ports.join(","),
        config.get_dbname().unwrap_or("(default database)")
    )
}

impl PostgresStoreBuilder {
    pub(crate) fn new(url: &str) -> Result<Self> {
        // tokio-postgres knows neither verify-ca, verify-full nor
        // sslrootcert: they are taken out first.
        let split = tls::split(url)?;
        // tokio-postgres's parse errors name the option, never its value.
        let config = Config::from_str(&split.rest)
            .map_err(|e| Error::Config(format!("the PostgreSQL URL does not parse: {e}")))?;
        Ok(Self {
            config,
            pool_size: DEFAULT_POOL_SIZE,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            pool_timeout: None,
            schema: DEFAULT_SCHEMA.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: None,
            limits: Limits::default(),
            ssl_mode: split.mode.unwrap_or_default(),
            partitions: None,
            root_file: split.root,
            #[cfg(feature = "tls")]
            root_pem: None,
        })
    }

    /// Creates the tables hash-partitioned by session id, with `n`
    /// partitions each (1 to 1024; default: not partitioned), when this
    /// connect creates them (see the [`partitions`](crate::partitions)
    /// module). Opening an existing store checks that it has `n`
    /// partitions: partitioning never changes after creation.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), statestore_postgres::Error> {
    /// use statestore_postgres::PostgresStore;
    ///
    /// let store = PostgresStore::builder("postgres://app@db.internal/app")?
    ///     .partitions(16)
    ///     .build()
    ///     .await?;
    /// assert_eq!(store.partitions(), Some(16));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = Some(n);
        self
    }

    /// Whether and how connections use TLS (default: the URL's `sslmode`,
    /// else [`SslMode::Prefer`]). Modes that require TLS need feature
    /// `tls`: without it [`build`](Self::build) refuses them.
    #[must_use]
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = mode;
        self
    }

    /// Trusts the CA certificates in `pem` (one or more PEM certificates)
    /// instead of the system's roots, as the URL's `sslrootcert=<file>`
    /// does (this wins over it). With `sslmode=require` it makes the
    /// connection verify the certificate's chain, as libpq does.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), statestore_postgres::Error> {
    /// use statestore_postgres::PostgresStore;
    ///
    /// let ca = std::fs::read("/etc/ssl/db-ca.pem").unwrap_or_default();
    /// let store = PostgresStore::builder("postgres://app@db.internal/app?sslmode=verify-full")?
    ///     .tls_root_certificate(ca)
    ///     .build()
    ///     .await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[must_use]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_pem = Some(pem.into());
        self
    }

    /// The pool's connection manager: with TLS as [`ssl_mode`](Self::ssl_mode) says.
    fn manager(&self, mut config: Config) -> Result<Manager> {
        let settings = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        config.ssl_mode(self.ssl_mode.negotiation());
        #[cfg(feature = "tls")]
        if self.ssl_mode != SslMode::Disable {
            let pem = match (&self.root_pem, &self.root_file) {
                (Some(pem), _) => Some(pem.clone()),
                (None, Some(RootCerts::File(path))) => Some(std::fs::read(path).map_err(|e| {
                    Error::Config(format!("cannot read sslrootcert {path:?}: {e}"))
                })?),
                (None, Some(RootCerts::System) | None) => None,
            };
            let connector = tls::connect::MakeRustls::new(self.ssl_mode, pem.as_deref())?;
            return Ok(Manager::from_config(config, connector, settings));
        }
        #[cfg(not(feature = "tls"))]
        {
            if self.ssl_mode.requires_tls() {
                return Err(tls::unsupported(&format!(
                    "sslmode={}",
                    self.ssl_mode.as_str()
                )));
            }
            if self.root_file.is_some() && self.ssl_mode != SslMode::Disable {
                return Err(tls::unsupported("sslrootcert"));
            }
        }
        Ok(Manager::from_config(
            config,
            tokio_postgres::NoTls,
            settings,
        ))
    }

    /// The most connections the pool opens (default 16; at least 1).
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// The server-side `statement_timeout` of every connection (default
    /// 30 s; at least 1 ms). It also bounds opening a connection, and,
    /// unless [`pool_timeout`](Self::pool_timeout) says otherwise, how long
    /// a caller waits for a free pooled connection. The client gives every
    /// statement this long plus a margin of its own (for a server that
    /// cannot answer at all) before it closes the connection and fails with
    /// a timeout.
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a caller waits for a free pooled connection when all are
    /// busy before failing with a timeout (default: the statement timeout;
    /// at least 1 ms).
    #[must_use]
    pub fn pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = Some(timeout.max(Duration::from_millis(1)));
        self
    }

    /// The schema of the store's tables (default `public`), created if
    /// missing. Any name: it is quoted.
    #[must_use]
    pub fn schema(mut self, schema: &str) -> Self {
        schema.clone_into(&mut self.schema);
        self
    }

    /// The prefix of the store's table and index names (default
    /// `statestore_`; may be empty). Any characters: names are quoted.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Sessions expire this long after their last access (default: never).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The size limits of messages and histories (default: none).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the pool, connects once and migrates the schema (see
    /// [`schema`](crate::schema)).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a schema or prefix PostgreSQL cannot keep,
    /// [`Error::Unavailable`] when the server cannot be reached,
    /// [`Error::UnsupportedSchema`] for a newer schema,
    /// [`Error::Corrupt`] when the tables were altered, or the server's
    /// error if the migration fails (it is then rolled back).
    pub async fn build(self) -> Result<PostgresStore> {
        let mut names = Names::new(&self.schema, &self.prefix)?;
        crate::partitions::validate(self.partitions)?;
        names.partitions = self.partitions;
        let mut config = self.config.clone();
        let timeout_ms = self.statement_timeout.as_millis();
        let options = match config.get_options() {
            Some(given) => format!("{given} -c statement_timeout={timeout_ms}"),
            None => format!("-c statement_timeout={timeout_ms}"),
        };
        config.options(&options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.statement_timeout);
        }
        let target = target(&config);
        let manager = self.manager(config)?;
        let pool_timeout = self.pool_timeout.unwrap_or(self.statement_timeout);
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .wait_timeout(Some(pool_timeout))
            .create_timeout(Some(self.statement_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Config(format!("building the connection pool: {e}")))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| Error::from_pool(e, pool_timeout, self.statement_timeout))?;
        let found = schema::migrate(&mut client, &names).await?;
        let partitions = crate::partitions::check(&client, &names, self.partitions).await?;
        tracing::debug!(%target, schema = %names.schema, prefix = %names.prefix, found, "connected");
        drop(client);
        let sql = Arc::new(crate::ops::Sql::new(&names));
        Ok(PostgresStore {
            pool,
            names,
            statement_timeout: self.statement_timeout,
            pool_timeout,
            ttl: self.ttl,
            limits: self.limits,
            sql,
            target,
            partitions,
        })
    }
}
