//! Durable writes (`wait_for_replicas`): the write script and its `WAIT` on
//! one connection that this write alone uses.
//!
//! `WAIT` blocks the connection it runs on until enough replicas
//! acknowledged, or its timeout passed, and it counts the writes *of that
//! connection*. On the store's shared multiplexed connection both go wrong:
//! with a replica down, every `WAIT` holds up every load and write queued
//! behind it on the connection; and after a silent reconnect between the
//! script and the `WAIT`, the `WAIT` measures a connection that wrote nothing
//! and reports success. So a durable write leases a connection of its own
//! from a small pool:
//!
//! - at most `size` connections are leased at once per store
//!   ([`RedisStoreBuilder::durable_connections`](crate::RedisStoreBuilder::durable_connections),
//!   default [`DEFAULT_DURABLE_CONNECTIONS`](crate::DEFAULT_DURABLE_CONNECTIONS));
//!   a write that finds none free within the response timeout fails with
//!   `Timeout` having sent nothing. Up to `size` idle connections per node
//!   are kept for reuse;
//! - a leased connection never reconnects: one that failed or timed out is
//!   dropped, never handed out again; the next lease opens a fresh one;
//! - the script and then `WAIT` run on the leased connection: two round
//!   trips per durable write (three when the node must load the script
//!   first; plus connecting, when no idle connection is there);
//! - when the script ran but the `WAIT` did not answer (connection lost, no
//!   reply within its timeout plus the response timeout), the write reports
//!   `NotReplicated { acknowledged: 0 }` — it may have been applied — and
//!   never success.
//!
//! Loads and writes without `wait_for_replicas` never touch this pool: they
//! stay on the shared connection, so a lagging replica delays only the
//! writes that asked to wait for it.
//!
//! On Redis Cluster the lease is a connection to the master serving the
//! session's slot, found in a slot map read with `CLUSTER NODES` over the
//! store's cluster connection (read on first use, and again after any
//! failure). A `MOVED` reply means the script did not run: the slot map is
//! dropped and the write is retried once, on the node the reply names. An
//! `ASK` (the slot is migrating) or a second `MOVED` fails the write with
//! `Unavailable` (transient, nothing written): retry it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, ConnectionInfo, RedisError, Value};
use statestore_core::{Error as StoreError, Result, SessionId};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::call::ScriptCall;
use crate::conn::{ClientResult, Connection};
use crate::error::{ClientError, client_error, timed_out};

/// Makes clients for the store's server, or for one node of its cluster,
/// with the credentials, database and TLS settings of the URL the store was
/// connected with.
#[derive(Clone)]
pub(crate) struct Factory {
    pub(crate) info: ConnectionInfo,
    #[cfg(feature = "tls")]
    pub(crate) root_cert: Option<Vec<u8>>,
}

impl Factory {
    /// A client for `node` (`host:port`), or for the URL's own address when
    /// `node` is empty.
    fn client(&self, node: &str) -> ClientResult<redis::Client> {
        let mut info = self.info.clone();
        if !node.is_empty() {
            let bad = || ClientError::BadNode(node.to_owned());
            let (host, port) = node.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let host = host.to_owned();
            let addr = match info.addr() {
                redis::ConnectionAddr::TcpTls { insecure, .. } => redis::ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: *insecure,
                    tls_params: None,
                },
                _ => redis::ConnectionAddr::Tcp(host, port),
            };
            info = info.set_addr(addr);
        }
        #[cfg(feature = "tls")]
        if let Some(root) = &self.root_cert {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.clone()),
            };
            return Ok(redis::Client::build_with_tls(info, certs)?);
        }
        Ok(redis::Client::open(info)?)
    }
}

/// The pool of connections for durable writes. See the module docs.
pub(crate) struct Durable {
    factory: Factory,
    size: usize,
    permits: Semaphore,
    /// Idle connections by node (`""` on a standalone server).
    idle: Mutex<HashMap<String, Vec<MultiplexedConnection>>>,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// Cluster: the master of each slot, empty until read.
    #[cfg(feature = "cluster")]
    slots: Option<Mutex<SlotMap>>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// One durable write's connection; goes back to the pool only through
/// [`Lease::release`].
struct Lease<'a> {
    node: String,
    conn: MultiplexedConnection,
    _permit: SemaphorePermit<'a>,
}

impl Durable {
    /// A pool of at most `size` (at least 1) leased connections; `cluster`
    /// when the store runs on Redis Cluster.
    pub(crate) fn new(
        factory: Factory,
        size: usize,
        connect_timeout: Duration,
        cluster: bool,
    ) -> Self {
        let size = size.max(1);
        #[cfg(not(feature = "cluster"))]
        let _ = cluster;
        Self {
            factory,
            size,
            permits: Semaphore::new(size),
            idle: Mutex::new(HashMap::new()),
            // No response timeout of the client's own (its default is
            // 500 ms): every step below has its own limit.
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(None),
            connect_timeout,
            #[cfg(feature = "cluster")]
            slots: cluster.then(|| Mutex::new(SlotMap::new())),
        }
    }

    /// Runs the write script `call` of `operation` on session `id` on a leased
    /// connection to the node of `key`, then `WAIT replicas wait` on the same connection. Returns the
    /// script's reply and how many replicas acknowledged, or `None` when the
    /// `WAIT` did not answer after the script ran.
    ///
    /// # Errors
    ///
    /// `Timeout` when no connection is free within `timeout` (nothing was
    /// sent) or the script does not answer within `timeout`; the client's
    /// error, mapped, when connecting or the script fails.
    pub(crate) async fn write(
        &self,
        (operation, id): (&'static str, &SessionId),
        shared: &Connection,
        call: &ScriptCall<'_>,
        key: &str,
        (replicas, wait): (u32, Duration),
        timeout: Duration,
    ) -> Result<(Value, Option<i64>)> {
        let fail = |e| client_error(operation, Some(id), timeout, e);
        let permit = tokio::time::timeout(timeout, self.permits.acquire())
            .await
            .map_err(|_| {
                tracing::warn!(
                    operation,
                    session = %id,
                    size = self.size,
                    "every durable-write connection is busy; nothing was sent"
                );
                StoreError::Timeout {
                    operation,
                    after: timeout,
                }
            })?
            .map_err(|e| fail(ClientError::Closed(e)))?;
        let node = self.node_for(shared, key).await.map_err(fail)?;
        let mut lease = self.lease(node, permit).await.map_err(fail)?;
        let mut value = self
            .script((operation, id), &mut lease, call, timeout)
            .await;
        if let Err(ScriptError::Client(e)) = &value
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved)
            && let Some((node, _)) = e.redirect_node()
        {
            // The slot moved: the script did not run. Once more, there.
            let node = node.to_owned();
            self.forget_slots();
            let permit = self.release(lease);
            lease = self.lease(node, permit).await.map_err(fail)?;
            value = self
                .script((operation, id), &mut lease, call, timeout)
                .await;
        }
        let value = match value {
            Ok(value) => value,
            Err(e) => {
                self.forget_slots();
                return Err(match e {
                    ScriptError::Timeout => timed_out(operation, Some(id), timeout),
                    ScriptError::Client(e) if e.is_cluster_error() => StoreError::Unavailable {
                        operation,
                        source: Box::new(e),
                    },
                    ScriptError::Client(e) => fail(e.into()),
                });
            }
        };
        let cmd = redis::cmd("WAIT")
            .arg(replicas)
            .arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
            .clone();
        let acked = tokio::time::timeout(wait + timeout, lease.conn.req_packed_command(&cmd)).await;
        match acked {
            Ok(Ok(n)) => {
                drop(self.release(lease));
                Ok((value, redis::from_redis_value(n).ok()))
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    operation,
                    session = %id,
                    error = %e,
                    "WAIT failed after the write script ran"
                );
                Ok((value, None))
            }
            Err(_) => {
                tracing::warn!(
                    operation,
                    session = %id,
                    "WAIT did not answer after the write script ran"
                );
                Ok((value, None))
            }
        }
    }

    /// Runs the script on the lease under `timeout`.
    async fn script(
        &self,
        (operation, id): (&'static str, &SessionId),
        lease: &mut Lease<'_>,
        call: &ScriptCall<'_>,
        timeout: Duration,
    ) -> Result<Value, ScriptError> {
        let run = call.run(&mut lease.conn, operation, id);
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::debug!(
                    operation,
                    session = %id,
                    error = %e,
                    "durable write script failed"
                );
                Err(ScriptError::Client(e))
            }
            Err(_) => Err(ScriptError::Timeout),
        }
    }

    /// An idle connection to `node`, or a new one.
    async fn lease<'a>(
        &self,
        node: String,
        permit: SemaphorePermit<'a>,
    ) -> ClientResult<Lease<'a>> {
        let idle = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.get_mut(&node).and_then(Vec::pop));
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let client = self.factory.client(&node)?;
                let connect = client.get_multiplexed_async_connection_with_config(&self.config);
                let limit = self.connect_timeout * 2;
                tokio::time::timeout(limit, connect)
                    .await
                    .map_err(|_| ClientError::ConnectTimeout(limit))??
            }
        };
        Ok(Lease {
            node,
            conn,
            _permit: permit,
        })
    }

    /// Keeps a healthy connection for the next write; returns its permit.
    fn release<'a>(&self, lease: Lease<'a>) -> SemaphorePermit<'a> {
        let Lease {
            node,
            conn,
            _permit,
        } = lease;
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(node).or_default();
            if list.len() < self.size {
                list.push(conn);
            }
        }
        _permit
    }

    /// The node to write `key` on: `""` (the URL's) on a standalone server,
    /// the master serving its slot on a cluster.
    async fn node_for(&self, shared: &Connection, key: &str) -> ClientResult<String> {
        #[cfg(feature = "cluster")]
        if let Some(slots) = &self.slots {
            let slot = redis::cluster_routing::Slot::for_key(key);
            if let Some(node) = slots.lock().ok().and_then(|map| map.get(&slot).cloned()) {
                return Ok(node.to_string());
            }
            let mut map = SlotMap::new();
            for (first, last, node) in shared.slot_masters().await? {
                let node: std::sync::Arc<str> = node.into();
                for n in first..=last {
                    if let Some(s) = redis::cluster_routing::Slot::new(n) {
                        map.insert(s, std::sync::Arc::clone(&node));
                    }
                }
            }
            let node = map.get(&slot).map(|n| n.to_string());
            if let Ok(mut slots) = slots.lock() {
                *slots = map;
            }
            return node.ok_or_else(|| ClientError::NoMaster(key.to_owned()));
        }
        let _ = (shared, key);
        Ok(String::new())
    }

    /// Drops the slot map, so the next durable write reads it again.
    fn forget_slots(&self) {
        #[cfg(feature = "cluster")]
        if let Some(Ok(mut slots)) = self.slots.as_ref().map(Mutex::lock) {
            slots.clear();
        }
    }
}

/// The master of each hash slot.
#[cfg(feature = "cluster")]
type SlotMap = HashMap<redis::cluster_routing::Slot, std::sync::Arc<str>>;

enum ScriptError {
    Timeout,
    Client(RedisError),
}
