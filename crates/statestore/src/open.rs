//! [`open`] and [`open_with`]: a store from a URL.

use std::sync::Arc;

use statestore_core::Store;

use crate::url::StoreUrl;
use crate::{OpenError, Options};

/// Opens the store `url` names, with each backend's defaults and the URL's
/// query options; as [`open_with`] with [`Options::new`]. See the
/// [crate docs](crate#urls) for the URL forms and options.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # #[cfg(feature = "memory")] {
/// use statestore::{Message, SessionId};
///
/// let url = std::env::var("STATESTORE_URL").unwrap_or_else(|_| "memory://".into());
/// let store = statestore::open(&url).await?;
/// let id = SessionId::new("user-123")?;
/// store.append(&id, vec![Message::user("Hi")], statestore::Expect::Any).await?;
/// assert_eq!(store.load(&id).await?.map(|s| s.messages.len()), Some(1));
/// # }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`OpenError::FeatureDisabled`] naming the feature to enable when the
/// scheme's backend is not compiled in; [`OpenError::InvalidUrl`] or
/// [`OpenError::InvalidOption`] saying what is wrong with the URL;
/// [`OpenError::Open`] or [`OpenError::Redis`](OpenError) when the backend
/// cannot open or connect. No error shows a password.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, OpenError> {
    open_with(url, Options::new()).await
}

/// Opens the store `url` names, with `options` as defaults that the URL's
/// query options override. See the [crate docs](crate#urls).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), statestore::OpenError> {
/// # #[cfg(feature = "memory")] {
/// use std::time::Duration;
/// use statestore::Options;
///
/// // The prefix applies on Redis and is ignored in memory; the URL's ttl wins.
/// let options = Options::new().prefix("chat:").ttl(Duration::from_secs(3600));
/// let store = statestore::open_with("memory://?ttl=30m", options).await?;
/// # drop(store);
/// # }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`open`].
pub async fn open_with(url: &str, options: Options) -> Result<Arc<dyn Store>, OpenError> {
    Ok(open_backend(url, options).await?.into_store())
}

/// The concrete store a URL opened: for what only one backend offers
/// (`SqliteStore::diagnose`, `RedisStore::diagnose`, `SqliteStore::purge_expired`,
/// `PostgresStore::purge_expired`, …).
/// [`Backend::into_store`] makes it the `Arc<dyn Store>` that [`open`] returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// `memory://`.
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    Memory(statestore_memory::MemoryStore),
    /// `sqlite://`.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(statestore_sqlite::SqliteStore),
    /// `redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis(statestore_redis::RedisStore),
    /// `postgres://`, `postgresql://`.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(statestore_postgres::PostgresStore),
}

impl Backend {
    /// The store behind the trait, as [`open`] returns it: in a
    /// [`Traced`](statestore_core::telemetry::Traced) wrapper, which records
    /// a span and the store metrics for every operation (see
    /// `docs/telemetry.md`) and otherwise changes nothing.
    #[must_use]
    pub fn into_store(self) -> Arc<dyn Store> {
        statestore_core::telemetry::traced(self.into_untraced())
    }

    fn into_untraced(self) -> Arc<dyn Store> {
        match self {
            #[cfg(feature = "memory")]
            Self::Memory(store) => Arc::new(store),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(store) => Arc::new(store),
            #[cfg(feature = "redis")]
            Self::Redis(store) => Arc::new(store),
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => Arc::new(store),
        }
    }
}

/// [`open_with`], returning the concrete store instead of `Arc<dyn Store>`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), statestore::OpenError> {
/// # #[cfg(feature = "memory")] {
/// use statestore::{Backend, Options};
///
/// match statestore::open_backend("memory://", Options::new()).await? {
///     Backend::Memory(store) => drop(store),
///     other => drop(other.into_store()),
/// }
/// # }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`open`].
pub async fn open_backend(url: &str, options: Options) -> Result<Backend, OpenError> {
    let url = StoreUrl::parse(url)?;
    tracing::debug!(url = url.redacted(), "opening a store");
    match url.scheme {
        #[cfg(feature = "memory")]
        crate::url::Scheme::Memory => memory(&url, options).map(Backend::Memory),
        #[cfg(feature = "sqlite")]
        crate::url::Scheme::Sqlite => sqlite(&url, options).await.map(Backend::Sqlite),
        #[cfg(feature = "redis")]
        crate::url::Scheme::Redis { tls, cluster } => {
            redis(&url, options, tls, cluster).await.map(Backend::Redis)
        }
        #[cfg(feature = "postgres")]
        crate::url::Scheme::Postgres => postgres(&url, options).await.map(Backend::Postgres),
        // Refused by `StoreUrl::parse` (it names the feature).
        #[allow(unreachable_patterns)]
        _ => {
            drop(options);
            Err(url.invalid("this build cannot open it"))
        }
    }
}

/// `memory://`.
#[cfg(feature = "memory")]
fn memory(url: &StoreUrl, options: Options) -> Result<statestore_memory::MemoryStore, OpenError> {
    use statestore_memory::MemoryStore;

    if !url.location.is_empty() {
        return Err(url.invalid("memory:// takes no host or path"));
    }
    let query = &url.query;
    query.allow(&["ttl", "max_sessions"])?;
    let mut builder = MemoryStore::builder();
    if let Some(ttl) = query.duration("ttl")?.or(options.ttl) {
        builder = builder.ttl(ttl);
    }
    if let Some(max) = query.number::<usize>("max_sessions")? {
        if max == 0 {
            return Err(query.error("max_sessions", "must be at least 1"));
        }
        builder = builder.max_sessions(max);
    }
    if let Some(limits) = options.limits {
        builder = builder.limits(limits);
    }
    Ok(builder.build())
}

/// `sqlite://path`: the path is everything between `://` and `?`,
/// percent-decoded.
#[cfg(feature = "sqlite")]
async fn sqlite(
    url: &StoreUrl,
    options: Options,
) -> Result<statestore_sqlite::SqliteStore, OpenError> {
    use statestore_sqlite::{SqliteStore, Synchronous};

    let path = crate::url::decode(&url.location)
        .map_err(|reason| url.invalid(format!("the path {reason}")))?;
    if path.is_empty() {
        return Err(url.invalid(
            "sqlite:// needs a file path: sqlite://data/chat.db (relative to the working \
             directory) or sqlite:///var/lib/app/chat.db (absolute)",
        ));
    }
    let query = &url.query;
    query.allow(&["ttl", "sync", "timeout"])?;
    let mut builder = SqliteStore::builder();
    if let Some(ttl) = query.duration("ttl")?.or(options.ttl) {
        builder = builder.ttl(ttl);
    }
    match query.choice("sync", &["full", "normal"])? {
        Some(0) => builder = builder.synchronous(Synchronous::Full),
        Some(_) => builder = builder.synchronous(Synchronous::Normal),
        None => {}
    }
    if let Some(timeout) = query.duration("timeout")?.or(options.timeout) {
        builder = builder.busy_timeout(timeout);
    }
    if let Some(limits) = options.limits {
        builder = builder.limits(limits);
    }
    if let Some(create) = options.create {
        builder = builder.create(create);
    }
    let store = builder
        .open(&path)
        .await
        .map_err(|source| OpenError::Open {
            url: url.redacted().to_owned(),
            source,
        })?;
    Ok(store)
}

/// `redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`.
#[cfg(feature = "redis")]
async fn redis(
    url: &StoreUrl,
    options: Options,
    tls: bool,
    cluster: bool,
) -> Result<statestore_redis::RedisStore, OpenError> {
    use statestore_redis::{EvictionPolicyCheck, RedisStore};

    let query = &url.query;
    let mut known = vec![
        "prefix",
        "ttl",
        "timeout",
        "connect_timeout",
        "wait_for_replicas",
        "wait_timeout",
        "eviction",
    ];
    if tls {
        known.push("tls_ca");
    }
    query.allow(&known)?;

    let mut builder = RedisStore::builder();
    if let Some(prefix) = query.get("prefix").map(str::to_owned).or(options.prefix) {
        builder = builder.prefix(prefix);
    }
    if let Some(ttl) = query.duration("ttl")?.or(options.ttl) {
        builder = builder.ttl(ttl);
    }
    if let Some(timeout) = query.duration("timeout")?.or(options.timeout) {
        builder = builder.response_timeout(timeout);
    }
    if let Some(timeout) = query.duration("connect_timeout")? {
        builder = builder.connect_timeout(timeout);
    }
    let wait_timeout = query.duration("wait_timeout")?;
    match (query.number::<u32>("wait_for_replicas")?, wait_timeout) {
        (Some(replicas), timeout) => {
            let timeout = timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT);
            builder = builder.wait_for_replicas(replicas, timeout);
        }
        (None, Some(_)) => {
            return Err(query.error("wait_timeout", "it needs wait_for_replicas"));
        }
        (None, None) => {}
    }
    match query.choice("eviction", &["warn", "refuse", "ignore"])? {
        Some(0) => builder = builder.on_unsafe_eviction(EvictionPolicyCheck::Warn),
        Some(1) => builder = builder.on_unsafe_eviction(EvictionPolicyCheck::Refuse),
        Some(_) => builder = builder.on_unsafe_eviction(EvictionPolicyCheck::Ignore),
        None => {}
    }
    if let Some(limits) = options.limits {
        builder = builder.limits(limits);
    }
    #[cfg(feature = "redis-tls")]
    {
        let pem = match query.get("tls_ca") {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                query.error(
                    "tls_ca",
                    format!("cannot read the CA certificate {path}: {e}"),
                )
            })?),
            None => options.tls_root_certificate,
        };
        if let Some(pem) = pem {
            builder = builder.tls_root_certificate(pem);
        }
    }

    let base = if tls { "rediss" } else { "redis" };
    let location = url.location.as_str();
    let (userinfo, hosts) = match location.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, location),
    };
    let connected = if cluster {
        #[cfg(feature = "redis-cluster")]
        {
            let (hosts, path) = hosts.split_once('/').unwrap_or((hosts, ""));
            if !path.is_empty() {
                return Err(url.invalid(format!(
                    "a cluster URL has no /database (Redis Cluster has database 0 only): \
                     write {}://host:port,host:port",
                    url.scheme_name
                )));
            }
            let credentials = userinfo.map_or_else(String::new, |u| format!("{u}@"));
            let mut seeds = Vec::new();
            for host in hosts.split(',') {
                if host.is_empty() {
                    return Err(url.invalid("the host list has an empty entry"));
                }
                seeds.push(format!("{base}://{credentials}{host}"));
            }
            let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
            builder.connect_cluster(&seeds).await
        }
        #[cfg(not(feature = "redis-cluster"))]
        {
            // Refused by `StoreUrl::parse`.
            let _ = userinfo;
            return Err(url.invalid("this build has no Redis Cluster client"));
        }
    } else {
        if hosts.contains(',') {
            return Err(url.invalid(format!(
                "several hosts: for a Redis Cluster write {base}+cluster://host:port,host:port"
            )));
        }
        builder.connect(&format!("{base}://{location}")).await
    };
    connected.map_err(|source| OpenError::Redis {
        url: url.redacted().to_owned(),
        source,
    })
}

/// How long a write waits for `wait_for_replicas` when the URL gives no
/// `wait_timeout`.
#[cfg(feature = "redis")]
const DEFAULT_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The options of `postgres://` URLs that the facade reads.
#[cfg(feature = "postgres")]
const POSTGRES_OPTIONS: [&str; 6] = [
    "prefix",
    "schema",
    "ttl",
    "timeout",
    "pool_size",
    "partitions",
];

/// The libpq options tokio-postgres reads from a URL's query, passed
/// through to it as they are.
#[cfg(feature = "postgres")]
const LIBPQ_OPTIONS: [&str; 20] = [
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslrootcert",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// `postgres://` and `postgresql://`: the facade's options are taken out
/// of the query, libpq's are passed to tokio-postgres with the rest of the
/// URL.
#[cfg(feature = "postgres")]
async fn postgres(
    url: &StoreUrl,
    options: Options,
) -> Result<statestore_postgres::PostgresStore, OpenError> {
    use statestore_postgres::PostgresStore;

    let query = &url.query;
    let known: Vec<&str> = POSTGRES_OPTIONS
        .iter()
        .chain(LIBPQ_OPTIONS.iter())
        .copied()
        .collect();
    query.allow(&known)?;

    let passed: Vec<String> = query
        .others(&POSTGRES_OPTIONS)
        .map(|(name, value)| format!("{name}={}", crate::url::encode(value)))
        .collect();
    let mut target = format!("{}://{}", url.scheme_name, url.location);
    if !passed.is_empty() {
        target.push('?');
        target.push_str(&passed.join("&"));
    }
    let failed = |source| OpenError::Postgres {
        url: url.redacted().to_owned(),
        source,
    };
    let mut builder = PostgresStore::builder(&target).map_err(failed)?;
    if let Some(prefix) = query.get("prefix").map(str::to_owned).or(options.prefix) {
        builder = builder.prefix(&prefix);
    }
    if let Some(schema) = query.get("schema") {
        builder = builder.schema(schema);
    }
    if let Some(ttl) = query.duration("ttl")?.or(options.ttl) {
        builder = builder.ttl(ttl);
    }
    if let Some(timeout) = query.duration("timeout")?.or(options.timeout) {
        builder = builder.statement_timeout(timeout);
    }
    if let Some(size) = query.number::<usize>("pool_size")? {
        if size == 0 {
            return Err(query.error("pool_size", "must be at least 1"));
        }
        builder = builder.pool_size(size);
    }
    if let Some(partitions) = query.number::<u32>("partitions")? {
        builder = builder.partitions(partitions);
    }
    if let Some(limits) = options.limits {
        builder = builder.limits(limits);
    }
    #[cfg(feature = "postgres-tls")]
    if let Some(pem) = options.tls_root_certificate {
        builder = builder.tls_root_certificate(pem);
    }
    builder.build().await.map_err(failed)
}
