#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod conn;
mod decode;
mod diagnose;
mod durable;
mod error;
mod eviction;
mod keys;
mod list;
mod scripts;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

/// Entry points for the fuzz targets (feature `fuzzing`); not a public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use statestore_core::SessionId;

    /// Checks the key layout's promises for `id` under `prefix`; panics on
    /// a violation (that is what the fuzzer looks for).
    pub fn check_key_encoding(prefix: &str, id: &SessionId) {
        let Ok(keys) = crate::keys::Keys::new(prefix) else {
            return;
        };
        let session = keys.session(id);
        for key in session.all() {
            let open = key.find('{');
            let close = key.find('}');
            assert!(
                matches!((open, close), (Some(o), Some(c)) if o < c && c > o + 1),
                "{key:?} has no non-empty hash tag"
            );
            assert_eq!(key.matches('{').count(), 1, "{key:?}");
            assert_eq!(key.matches('}').count(), 1, "{key:?}");
        }
        assert_eq!(
            keys.id_from_header_key(session.header.as_bytes()).as_ref(),
            Some(id),
            "the header key does not decode back to its id"
        );
    }
}

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Script, ScriptInvocation};
use statestore_core::codec::{self, Limits, SCHEMA_VERSION};
use statestore_core::{
    Append, Appended, ConversationState, Counters, Error as StoreError, Expect, IdempotencyKey,
    ListPage, ListQuery, Message, Metadata, RecentState, Result, SessionId, Store, Summary,
    Version, async_trait,
};

pub use conn::Connection;
pub use diagnose::{Diagnosis, NodeReport};
pub use error::Error;
pub use eviction::EvictionPolicyCheck;
pub use list::{LIST_MAX_SCAN_STEPS, LIST_SCAN_COUNT};

use decode::Reply;
use keys::{Keys, SessionKeys};
use scripts::Scripts;

/// A [`Store`] on Redis or Redis Cluster. See the [crate docs](crate).
///
/// Cloning is cheap; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    keys: Keys,
    scripts: Scripts,
    ttl: Option<Duration>,
    sliding_ttl: bool,
    limits: Limits,
    timeout: Duration,
    wait_for_replicas: Option<(u32, Duration)>,
    /// Connections for durable writes; see [`durable`].
    durable: Option<durable::Durable>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.inner.conn)
            .field("prefix", &self.inner.keys.prefix())
            .field("ttl", &self.inner.ttl)
            .field("sliding_ttl", &self.inner.sliding_ttl)
            .field("limits", &self.inner.limits)
            .field("timeout", &self.inner.timeout)
            .field("wait_for_replicas", &self.inner.wait_for_replicas)
            .field("durable", &self.inner.durable)
            .finish()
    }
}

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
    /// pure reads, and only writes and [`Store::touch`] restart the clock.
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
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                keys,
                scripts: Scripts::new(),
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
                    source: e,
                })?;
            return Ok((client, address));
        }
        let client = redis::Client::open(info).map_err(|e| Error::Connect {
            address: address.clone(),
            source: e,
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
        let connect_error = |source| Error::Connect {
            address: address.clone(),
            source,
        };
        let conn = tokio::time::timeout(self.connect_timeout * 3, connect)
            .await
            .map_err(|_| {
                connect_error(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                )))
            })?
            .map_err(connect_error)?;
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
            source: e,
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

fn now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Configure a store: prefix, TTL, limits, timeouts; then
    /// [`build`](RedisStoreBuilder::build) it on your connection or
    /// [`connect`](RedisStoreBuilder::connect) to a URL.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// Loads every script on the server (every master of a cluster) now, so
    /// no later call needs a second round trip for `NOSCRIPT`.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub async fn preload_scripts(&self) -> Result<()> {
        let scripts = self.inner.scripts.all();
        let load = self.inner.conn.preload(&scripts);
        self.timed("preload_scripts", load).await
    }

    /// The server's `maxmemory-policy` (on a cluster, one node's), or
    /// `None` when it cannot be read — for example when the ACL user may not
    /// run `CONFIG GET` (logged at debug level).
    pub async fn eviction_policy(&self) -> Option<String> {
        let cmd = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .clone();
        let reply = self
            .timed("eviction_policy", self.inner.conn.query(&cmd))
            .await;
        let policy = match reply {
            Ok(redis::Value::Map(pairs)) => pairs.into_iter().next().map(|(_, v)| v),
            Ok(redis::Value::Array(items)) => items.into_iter().nth(1),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read maxmemory-policy");
                None
            }
        };
        policy
            .as_ref()
            .and_then(decode::bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    async fn preload(&self, address: &str) -> Result<(), Error> {
        self.preload_scripts().await.map_err(|e| Error::Connect {
            address: address.to_owned(),
            source: redis::RedisError::from(std::io::Error::other(e.to_string())),
        })
    }

    /// Runs `fut` under the response timeout, mapping client errors.
    async fn timed<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.timeout, fut).await {
            Err(_) => Err(StoreError::Timeout {
                operation,
                after: self.inner.timeout,
            }),
            Ok(Err(e)) => Err(client_error(operation, self.inner.timeout, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// A script call with the five keys of `id` and the common arguments.
    fn call<'a>(&self, script: &'a Script, keys: &SessionKeys, ttl: bool) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for key in keys.all() {
            inv.key(key);
        }
        // Reaches PEXPIRE as this decimal string, never as a Lua number
        // (which prints in exponent notation from 1e17 on).
        let ttl_ms = match self.inner.ttl {
            Some(t) if ttl => millis(t),
            _ => 0,
        };
        inv.arg(SCHEMA_VERSION).arg(now_ms()).arg(ttl_ms);
        inv
    }

    async fn run(
        &self,
        operation: &'static str,
        id: &SessionId,
        inv: &ScriptInvocation<'_>,
    ) -> Result<Reply> {
        let value = self.timed(operation, self.inner.conn.invoke(inv)).await?;
        decode::reply(id, value)
    }

    /// Runs a write script (then `WAIT`, when configured); `decode` turns
    /// its reply into the outcome or the error it stands for.
    async fn write<T>(
        &self,
        operation: &'static str,
        id: &SessionId,
        inv: &ScriptInvocation<'_>,
        decode: impl FnOnce(Reply) -> Result<T>,
    ) -> Result<T> {
        let wait = self.inner.wait_for_replicas;
        let timeout = self.inner.timeout;
        // `acked`: None without waiting; Some(None) when the WAIT failed.
        let (value, acked) = match (&self.inner.durable, wait) {
            (Some(durable), Some(wait)) => {
                let header = self.inner.keys.session(id).header;
                let (value, acked) = durable
                    .write(operation, &self.inner.conn, inv, &header, wait, timeout)
                    .await?;
                (value, Some(acked))
            }
            _ => {
                // Without a pool only an exclusive checkout waits (`build`
                // refused the rest): WAIT may take its own timeout on top.
                let limit = timeout + wait.map_or(Duration::ZERO, |w| w.1);
                let wait = wait.map(|(n, t)| (n, u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
                let call = self.inner.conn.invoke_durable(inv, wait);
                match tokio::time::timeout(limit, call).await {
                    Err(_) => {
                        return Err(StoreError::Timeout {
                            operation,
                            after: limit,
                        });
                    }
                    Ok(result) => result.map_err(|e| client_error(operation, limit, e))?,
                }
            }
        };
        let outcome = decode(decode::reply(id, value)?)?;
        if let (Some((required, _)), Some(acked)) = (wait, acked) {
            // A WAIT that failed after the script ran acknowledged nothing.
            let acknowledged = acked.map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
            if acknowledged < required {
                return Err(StoreError::NotReplicated {
                    operation,
                    id: id.clone(),
                    acknowledged,
                    required,
                });
            }
        }
        Ok(outcome)
    }

    /// Decodes a write's reply into the new version.
    fn version(&self, id: &SessionId, expect: Expect) -> impl FnOnce(Reply) -> Result<Version> {
        move |reply| decode::written(id, expect, &self.inner.limits, reply)
    }

    async fn snapshot(
        &self,
        operation: &'static str,
        id: &SessionId,
        newest: Option<usize>,
        lookup: Option<&IdempotencyKey>,
    ) -> Result<Option<decode::Snapshot>> {
        let keys = self.inner.keys.session(id);
        let sliding = self.inner.sliding_ttl;
        let mut inv = self.call(&self.inner.scripts.load, &keys, sliding);
        let n = newest.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        inv.arg(n)
            .arg(if sliding { "1" } else { "0" })
            .arg(lookup.map_or("", IdempotencyKey::as_str));
        let reply = self.run(operation, id, &inv).await?;
        decode::snapshot(id, reply)
    }

    fn encode_messages<'m>(
        &self,
        id: &SessionId,
        messages: impl ExactSizeIterator<Item = &'m Message>,
    ) -> Result<Vec<Vec<u8>>> {
        let encoded = messages
            .map(|m| codec::encode_message(id, m))
            .collect::<Result<Vec<_>>>()?;
        self.inner
            .limits
            .check_message_sizes(id, encoded.iter().map(Vec::len))?;
        Ok(encoded)
    }

    /// The `SAVE` script with already-encoded contents.
    async fn save_encoded(
        &self,
        operation: &'static str,
        id: &SessionId,
        contents: Contents<'_>,
        expect: Expect,
    ) -> Result<Version> {
        let keys = self.inner.keys.session(id);
        let mut inv = self.call(&self.inner.scripts.save, &keys, true);
        expect_args(&mut inv, expect);
        inv.arg(contents.created_at);
        for field in [contents.user_id, contents.system_prompt] {
            match field {
                Some(v) => inv.arg("1").arg(v),
                None => inv.arg("0").arg(""),
            };
        }
        inv.arg(contents.messages.len())
            .arg(contents.summaries.len())
            .arg(contents.metadata.len() / 2)
            .arg(contents.counters.len());
        for part in [contents.messages, contents.summaries, contents.metadata] {
            for item in part {
                inv.arg(item);
            }
        }
        for (name, value) in contents.counters {
            inv.arg(name.as_bytes()).arg(counter_value(*value));
        }
        self.write(operation, id, &inv, self.version(id, expect))
            .await
    }
}

/// What `SAVE` writes, encoded.
struct Contents<'a> {
    created_at: u64,
    user_id: Option<&'a str>,
    system_prompt: Option<&'a str>,
    messages: &'a [Vec<u8>],
    summaries: &'a [Vec<u8>],
    /// Field, value, field, value, …
    metadata: &'a [Vec<u8>],
    counters: &'a Counters,
}

/// A counter value as Redis keeps it: `HINCRBY` works on `i64`, so values
/// (and increments) saturate at `i64::MAX`.
fn counter_value(value: u64) -> String {
    value.min(i64::MAX.unsigned_abs()).to_string()
}

fn expect_args(inv: &mut ScriptInvocation<'_>, expect: Expect) {
    match expect {
        Expect::Any => inv.arg("a").arg(0),
        Expect::Version(v) => inv.arg("v").arg(v),
        Expect::Absent => inv.arg("n").arg(0),
    };
}

fn client_error(operation: &'static str, after: Duration, e: redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout { operation, after }
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

fn json(id: &SessionId, value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::InvalidArgument {
        id: id.clone(),
        reason: format!("cannot be serialized: {e}"),
    })
}

fn metadata_pairs(id: &SessionId, metadata: &Metadata) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(metadata.len() * 2);
    for (k, v) in metadata {
        out.push(k.as_bytes().to_vec());
        out.push(json(id, v)?);
    }
    Ok(out)
}

#[async_trait]
impl Store for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<ConversationState>> {
        self.snapshot("load", id, None, None)
            .await?
            .map(|s| s.into_state(id))
            .transpose()
    }

    async fn load_recent_with(
        &self,
        id: &SessionId,
        n: usize,
        lookup: Option<&IdempotencyKey>,
    ) -> Result<Option<RecentState>> {
        self.snapshot("load_recent", id, Some(n), lookup)
            .await?
            .map(|s| s.into_recent(id))
            .transpose()
    }

    async fn save(&self, state: &ConversationState, expect: Expect) -> Result<Version> {
        let id = &state.id;
        self.inner
            .limits
            .check_message_count(id, state.messages.len() as u64)?;
        let messages = self.encode_messages(id, state.messages.iter().map(|m| &**m))?;
        let summaries = state
            .summaries
            .iter()
            .map(|s| json(id, s))
            .collect::<Result<Vec<_>>>()?;
        let metadata = metadata_pairs(id, &state.metadata)?;
        let contents = Contents {
            created_at: state.created_at.as_unix_millis(),
            user_id: state.user_id.as_deref(),
            system_prompt: state.system_prompt.as_deref(),
            messages: &messages,
            summaries: &summaries,
            metadata: &metadata,
            counters: &state.counters,
        };
        self.save_encoded("save", id, contents, expect).await
    }

    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        let Append {
            messages,
            expect,
            key,
            counters,
            ..
        } = append;
        let encoded = self.encode_messages(id, messages.iter())?;
        let keys = self.inner.keys.session(id);
        let mut inv = self.call(&self.inner.scripts.append, &keys, true);
        expect_args(&mut inv, expect);
        let max = self.inner.limits.max_messages;
        inv.arg(max.map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX)));
        // An unkeyed append gets a key of its own, so that a request the
        // client library re-sends by itself is a replay, not a second append.
        let (kind, key) = match key {
            Some(key) => ("k", key),
            None => ("g", IdempotencyKey::random()),
        };
        inv.arg(kind).arg(key.as_str()).arg(counters.len());
        for (name, delta) in &counters {
            inv.arg(name.as_bytes()).arg(counter_value(*delta));
        }
        for m in &encoded {
            inv.arg(m);
        }
        let limits = &self.inner.limits;
        let appended = self
            .write("append", id, &inv, |r| {
                decode::appended(id, expect, limits, r)
            })
            .await?;
        // The caller made one call: a replay of the store's own key is the
        // client's re-send of that call, whose write is this call's.
        Ok(if kind == "g" {
            Appended::new(appended.version, appended.first_position, appended.messages)
        } else {
            appended
        })
    }

    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        statestore_core::check_fork_ids(source, target)?;
        // 1. One consistent snapshot of the source (one script, its slot).
        let snapshot = self
            .snapshot("fork", source, None, None)
            .await?
            .ok_or_else(|| StoreError::NotFound { id: source.clone() })?;
        let raw = snapshot.into_raw(source)?;
        // 2. Create-only write of the whole target (one script, its slot):
        // the target appears complete or not at all, and never overwrites.
        let contents = Contents {
            created_at: now_ms(),
            user_id: raw.user_id.as_deref(),
            system_prompt: raw.system_prompt.as_deref(),
            messages: &raw.messages,
            summaries: &raw.summaries,
            metadata: &raw.metadata,
            counters: &raw.counters,
        };
        match self
            .save_encoded("fork", target, contents, Expect::Absent)
            .await
        {
            Err(StoreError::Conflict { .. }) => {
                Err(StoreError::AlreadyExists { id: target.clone() })
            }
            other => other,
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let keys = self.inner.keys.session(id);
        let mut inv = self.inner.scripts.delete.prepare_invoke();
        for key in keys.all() {
            inv.key(key);
        }
        match self.run("delete", id, &inv).await? {
            Reply::Ok(rest) => Ok(rest.first().and_then(decode::int) == Some(1)),
            _ => Err(StoreError::Corrupt {
                id: id.clone(),
                detail: "delete returned an unexpected reply".into(),
                source: None,
            }),
        }
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        let keys = self.inner.keys.session(id);
        let cmd = redis::cmd("EXISTS").arg(&keys.header).clone();
        let value = self.timed("exists", self.inner.conn.query(&cmd)).await?;
        Ok(decode::int(&value) == Some(1))
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let fut = list::page(&self.inner.conn, &self.inner.keys, query);
        match tokio::time::timeout(self.inner.timeout * 4, fut).await {
            Err(_) => Err(StoreError::Timeout {
                operation: "list",
                after: self.inner.timeout * 4,
            }),
            Ok(result) => result.map_err(|e| match e {
                list::ListError::Client(e) => client_error("list", self.inner.timeout, e),
                list::ListError::Store(e) => e,
            }),
        }
    }

    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        let keys = self.inner.keys.session(id);
        let mut inv = self.call(&self.inner.scripts.merge_metadata, &keys, true);
        expect_args(&mut inv, expect);
        let (set, delete): (Vec<_>, Vec<_>) = patch.iter().partition(|(_, v)| !v.is_null());
        inv.arg(set.len());
        for (k, v) in set {
            inv.arg(k.as_bytes()).arg(json(id, v)?);
        }
        for (k, _) in delete {
            inv.arg(k.as_bytes());
        }
        self.write("merge_metadata", id, &inv, self.version(id, expect))
            .await
    }

    async fn add_summary(
        &self,
        id: &SessionId,
        summary: Summary,
        expect: Expect,
    ) -> Result<Version> {
        let keys = self.inner.keys.session(id);
        let mut inv = self.call(&self.inner.scripts.add_summary, &keys, true);
        expect_args(&mut inv, expect);
        inv.arg(summary.covers.start)
            .arg(summary.covers.end)
            .arg(json(id, &summary)?);
        self.write("add_summary", id, &inv, self.version(id, expect))
            .await
    }

    async fn touch(&self, id: &SessionId) -> Result<bool> {
        let keys = self.inner.keys.session(id);
        let inv = self.call(&self.inner.scripts.touch, &keys, true);
        match self.run("touch", id, &inv).await? {
            Reply::Ok(_) => Ok(true),
            _ => Ok(false),
        }
    }
}
