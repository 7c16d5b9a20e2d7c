//! [`RedisStoreBuilder`]: a store's settings, and building it on a
//! connection or connecting it to a URL (loading the scripts and checking
//! the eviction policy).

use std::sync::Arc;
use std::time::Duration;

use statestore_core::codec::Limits;

use crate::Error;
use crate::conn::Connection;
use crate::durable;
use crate::eviction::{self, EvictionPolicyCheck};
use crate::keys::Keys;
use crate::scripts::Scripts;
use crate::store::{Inner, RedisStore};

/// Configures a [`RedisStore`]; from [`RedisStore::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    prefix: String,
    ttl: Option<Duration>,
    sliding_ttl: bool,
    limits: Limits,
    response_timeout: Duration,
    connect_timeout: Duration,
    wait_for_replicas: Option<(u32, Duration)>,
    durable_connections: usize,
    eviction_check: EvictionPolicyCheck,
    #[cfg(feature = "tls")]
    tls_root_cert: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("sliding_ttl", &self.sliding_ttl)
            .field("limits", &self.limits)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("wait_for_replicas", &self.wait_for_replicas)
            .field("durable_connections", &self.durable_connections)
            .finish_non_exhaustive()
    }
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            ttl: None,
            sliding_ttl: true,
            limits: Limits::none().with_max_message_bytes(DEFAULT_MAX_MESSAGE_BYTES),
            response_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            wait_for_replicas: None,
            durable_connections: DEFAULT_DURABLE_CONNECTIONS,
            eviction_check: EvictionPolicyCheck::default(),
            #[cfg(feature = "tls")]
            tls_root_cert: None,
        }
    }
}

/// The default largest message: 4 MiB of stored JSON.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The default of [`RedisStoreBuilder::durable_connections`]: how many
/// durable writes may wait for replicas at once.
pub const DEFAULT_DURABLE_CONNECTIONS: usize = 8;
/// The longest TTL a store accepts: 100 years. (Redis refuses expiry times
/// that overflow its clock, and a write must never fail after it was
/// applied; for sessions that never expire, set no TTL.)
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl RedisStoreBuilder {
    /// Prepends `prefix` to every key (the seed's `WithPrefix`), so several
    /// apps or tenants can share one server without seeing each other's
    /// sessions. May not contain `{`, `}` or control characters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sessions expire `ttl` after their last access (the seed's `WithTTL`).
    /// Every key of a session gets the same TTL in the same atomic step.
    /// At most [`MAX_TTL`] (building fails with [`Error::InvalidTtl`]
    /// otherwise); below 1 ms counts as 1 ms.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Whether reads (`load`, `load_recent`) count as accesses: restart the
    /// TTL and update `last_accessed_at`. On by default; off makes reads
    /// pure reads, and only writes and [`Store::touch`](statestore_core::Store::touch) restart the clock.
    ///
    /// A read records its access only when one is due — when less than
    /// 90 % of the TTL is left (without a TTL, when `last_accessed_at` is a
    /// minute old) — with a second round trip (the `TOUCH` script): a
    /// session lives at least 90 % of its TTL after its last read, and
    /// `last_accessed_at` lags the last read by at most a tenth of the TTL
    /// (a minute). Every other read writes nothing.
    pub fn sliding_ttl(mut self, on: bool) -> Self {
        self.sliding_ttl = on;
        self
    }

    /// Size limits checked before anything is written. The default allows
    /// messages up to [`DEFAULT_MAX_MESSAGE_BYTES`] and any number of them.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long one operation may take before it fails with
    /// `Error::Timeout` (default 2 s). Also the response timeout of
    /// connections made by [`RedisStoreBuilder::connect`].
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Durability: after every write, wait (Redis `WAIT`) until `replicas`
    /// replicas acknowledged it, up to `timeout`; when fewer did, the write
    /// returns `Error::NotReplicated` (it was applied on the primary but may
    /// be lost in a failover). Off by default: Redis replication is
    /// asynchronous.
    ///
    /// Each durable write runs its script and its `WAIT` on a connection of
    /// its own (two round trips), never on the connection loads share, so a
    /// lagging replica delays only the writes waiting for it: see
    /// [`durable_connections`](Self::durable_connections). Needs a store made
    /// by [`connect`](Self::connect) or [`connect_cluster`](Self::connect_cluster),
    /// or [`build`](Self::build) on a deadpool pool (whose checkouts are
    /// exclusive); `build` on a shared connection refuses it.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_for_replicas = Some((replicas, timeout));
        self
    }

    /// With [`wait_for_replicas`](Self::wait_for_replicas): how many durable
    /// writes may run (and wait for replicas) at once, each on a dedicated
    /// connection (default [`DEFAULT_DURABLE_CONNECTIONS`], at least 1). A
    /// write that finds all of them busy for the response timeout fails
    /// with `Error::Timeout` without having sent anything. Up to this many
    /// idle connections per server (per master of a cluster) are kept open
    /// for reuse. Ignored for stores built on a deadpool pool (its size
    /// applies).
    pub fn durable_connections(mut self, connections: usize) -> Self {
        self.durable_connections = connections.max(1);
        self
    }

    /// What [`connect`](Self::connect) and `connect_cluster` do when the
    /// server's `maxmemory-policy` may evict single keys of a session (see
    /// [Eviction](crate#eviction)): warn through `tracing` (the default),
    /// refuse to connect, or not ask. On a cluster one node is asked.
    pub fn on_unsafe_eviction(mut self, check: EvictionPolicyCheck) -> Self {
        self.eviction_check = check;
        self
    }

    /// How long connecting may take, for connections made by this builder
    /// (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trusts this CA certificate (PEM) for `rediss://` connections made by
    /// this builder, instead of the system's roots.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// A store on a connection you configured (a
    /// [`redis::aio::ConnectionManager`], a deadpool-redis pool or a cluster
    /// connection). Scripts load on first use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPrefix`] when the prefix contains a brace;
    /// [`Error::WaitNeedsOwnConnections`] with
    /// [`wait_for_replicas`](Self::wait_for_replicas) on a
    /// `ConnectionManager` or `ClusterConnection`;
    /// [`Error::InvalidTtl`] when the TTL is over [`MAX_TTL`].
    pub fn build(self, connection: impl Into<Connection>) -> Result<RedisStore, Error> {
        let conn = connection.into();
        if self.wait_for_replicas.is_some() && !conn.checks_out_exclusive() {
            return Err(Error::WaitNeedsOwnConnections {
                connection: conn.kind(),
            });
        }
        self.assemble(conn, None)
    }

    /// The store on `conn`, with `durable` for durable writes.
    fn assemble(
        self,
        conn: Connection,
        durable: Option<durable::Durable>,
    ) -> Result<RedisStore, Error> {
        let keys = Keys::new(&self.prefix).map_err(|e| Error::InvalidPrefix(e.0))?;
        if let Some(ttl) = self.ttl.filter(|t| *t > MAX_TTL) {
            return Err(Error::InvalidTtl { ttl, max: MAX_TTL });
        }
        // The scripts keep the list indexes, except on a cluster (keys.rs).
        let client_index = conn.is_cluster();
        let scripts = Scripts::new((!client_index).then(|| keys.index_base()).as_deref());
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                keys,
                scripts,
                client_index,
                index_built: crate::reindex::Built::new(),
                ttl: self.ttl,
                sliding_ttl: self.sliding_ttl,
                limits: self.limits,
                timeout: self.response_timeout,
                wait_for_replicas: self.wait_for_replicas,
                durable,
            }),
        })
    }

    /// The pool for durable writes on the server(s) of `url`, when
    /// [`wait_for_replicas`](Self::wait_for_replicas) is on.
    fn durable(&self, url: &str, cluster: bool) -> Result<Option<durable::Durable>, Error> {
        if self.wait_for_replicas.is_none() {
            return Ok(None);
        }
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
            Error::InvalidUrl {
                reason: e.to_string(),
            }
        })?;
        let factory = durable::Factory {
            info,
            #[cfg(feature = "tls")]
            root_cert: self.tls_root_cert.clone(),
        };
        Ok(Some(durable::Durable::new(
            factory,
            self.durable_connections,
            self.connect_timeout,
            cluster,
        )))
    }

    fn client(&self, url: &str) -> Result<(redis::Client, String), Error> {
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
            Error::InvalidUrl {
                reason: e.to_string(),
            }
        })?;
        let address = info.addr().to_string();
        #[cfg(feature = "tls")]
        if let Some(root) = &self.tls_root_cert {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.clone()),
            };
            let client =
                redis::Client::build_with_tls(info, certs).map_err(|e| Error::Connect {
                    address: address.clone(),
                    source: Box::new(e),
                })?;
            return Ok((client, address));
        }
        let client = redis::Client::open(info).map_err(|e| Error::Connect {
            address: address.clone(),
            source: Box::new(e),
        })?;
        Ok((client, address))
    }

    /// Connects to `url` (`redis://[user:password@]host:port[/db]` or
    /// `rediss://…` with feature `tls`) with a multiplexed
    /// [`ConnectionManager`](redis::aio::ConnectionManager) using this
    /// builder's timeouts, and loads the scripts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`], or [`Error::Connect`] naming the address (never
    /// the password) when the server refuses, does not answer in time, or
    /// rejects the credentials.
    pub async fn connect(self, url: &str) -> Result<RedisStore, Error> {
        install_crypto_provider();
        let (client, address) = self.client(url)?;
        let durable = self.durable(url, false)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(1);
        let connect = redis::aio::ConnectionManager::new_with_config(client, config);
        self.finish(address, connect, durable).await
    }

    /// Awaits the connection (bounded), builds the store and loads the scripts.
    async fn finish<C: Into<Connection>>(
        self,
        address: String,
        connect: impl Future<Output = redis::RedisResult<C>>,
        durable: Option<durable::Durable>,
    ) -> Result<RedisStore, Error> {
        let connect_error = |source: statestore_core::BoxError| Error::Connect {
            address: address.clone(),
            source,
        };
        let conn = tokio::time::timeout(self.connect_timeout * 3, connect)
            .await
            .map_err(|elapsed| connect_error(Box::new(elapsed)))?
            .map_err(|e| connect_error(Box::new(e)))?;
        let check = self.eviction_check;
        let store = self.assemble(conn.into(), durable)?;
        store.preload(&address).await?;
        if check != EvictionPolicyCheck::Ignore {
            let policy = store.eviction_policy().await;
            eviction::apply(
                check,
                policy.as_deref(),
                store.inner.ttl.is_some(),
                &address,
            )?;
        }
        Ok(store)
    }

    /// Connects to a Redis Cluster through any of its nodes and loads the
    /// scripts on every master.
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::connect`].
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster(self, urls: &[&str]) -> Result<RedisStore, Error> {
        install_crypto_provider();
        // host:port of each seed: never the URLs, which may hold a password.
        let address = urls
            .iter()
            .map(|url| {
                redis::IntoConnectionInfo::into_connection_info(*url)
                    .map_or_else(|_| "(invalid URL)".to_owned(), |i| i.addr().to_string())
            })
            .collect::<Vec<_>>()
            .join(",");
        let durable = match urls.first() {
            Some(url) => self.durable(url, true)?,
            None => None,
        };
        let builder = redis::cluster::ClusterClientBuilder::new(urls.to_vec())
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout);
        #[cfg(feature = "tls")]
        let builder = match &self.tls_root_cert {
            Some(root) => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.clone()),
            }),
            None => builder,
        };
        let client = builder.build().map_err(|e| Error::Connect {
            address: address.clone(),
            source: Box::new(e),
        })?;
        self.finish(address, client.get_async_connection(), durable)
            .await
    }
}

/// rustls needs a process-wide crypto provider; install ring's unless the
/// application installed one.
fn install_crypto_provider() {
    #[cfg(feature = "tls")]
    {
        // Err means one is installed already: exactly what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
