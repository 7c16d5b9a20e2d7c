//! The client connections a store can run on, behind one small interface:
//! run a script, run a command, pipeline reads, and scan every master.

use redis::aio::ConnectionLike;
use redis::{Cmd, Value};
use statestore_core::SessionId;

use crate::call::ScriptCall;
use crate::error::ClientError;

/// What a call on a [`Connection`] returns.
pub(crate) type ClientResult<T> = Result<T, ClientError>;

/// A connection to Redis a [`RedisStore`](crate::RedisStore) runs on.
///
/// Built with `From` from:
/// - [`redis::aio::ConnectionManager`] — one multiplexed connection that
///   reconnects by itself. The default, and the fastest for this workload
///   (see the crate docs);
/// - `deadpool_redis::Pool` (feature `deadpool`) — a pool of multiplexed
///   connections (deadpool pings on every checkout: one extra round trip);
/// - `redis::cluster_async::ClusterConnection` (feature `cluster`) — Redis
///   Cluster.
#[derive(Clone)]
pub struct Connection(Inner);

#[derive(Clone)]
enum Inner {
    Manager(redis::aio::ConnectionManager),
    #[cfg(feature = "deadpool")]
    Pool(deadpool_redis::Pool),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl From<redis::aio::ConnectionManager> for Connection {
    fn from(c: redis::aio::ConnectionManager) -> Self {
        Self(Inner::Manager(c))
    }
}

#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl From<deadpool_redis::Pool> for Connection {
    fn from(p: deadpool_redis::Pool) -> Self {
        Self(Inner::Pool(p))
    }
}

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
impl From<redis::cluster_async::ClusterConnection> for Connection {
    fn from(c: redis::cluster_async::ClusterConnection) -> Self {
        Self(Inner::Cluster(c))
    }
}

#[cfg(feature = "deadpool")]
fn pool_error(e: deadpool_redis::PoolError) -> ClientError {
    match e {
        deadpool_redis::PoolError::Backend(e) => ClientError::Redis(e),
        other => ClientError::Pool(other),
    }
}

/// Runs `$body` with `$c` bound to a `&mut impl ConnectionLike`.
macro_rules! with_conn {
    ($self:expr, $c:ident => $body:expr) => {
        match &$self.0 {
            Inner::Manager(m) => {
                let mut conn = m.clone();
                let $c = &mut conn;
                $body
            }
            #[cfg(feature = "deadpool")]
            Inner::Pool(p) => {
                let mut conn = p.get().await.map_err(pool_error)?;
                let $c = &mut conn;
                $body
            }
            #[cfg(feature = "cluster")]
            Inner::Cluster(c) => {
                let mut conn = c.clone();
                let $c = &mut conn;
                $body
            }
        }
    };
}

impl Connection {
    /// Whether this is a Redis Cluster client (its scripts run on one
    /// slot: the list indexes are kept by the client, see `keys.rs`).
    pub(crate) fn is_cluster(&self) -> bool {
        match &self.0 {
            #[cfg(feature = "cluster")]
            Inner::Cluster(_) => true,
            _ => false,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match &self.0 {
            Inner::Manager(_) => "ConnectionManager",
            #[cfg(feature = "deadpool")]
            Inner::Pool(_) => "deadpool_redis::Pool",
            #[cfg(feature = "cluster")]
            Inner::Cluster(_) => "ClusterConnection",
        }
    }

    /// Runs a script of `operation` on session `id` (`EVALSHA`, loading it
    /// after `NOSCRIPT`, logged).
    pub(crate) async fn invoke(
        &self,
        operation: &'static str,
        id: &SessionId,
        call: &ScriptCall<'_>,
    ) -> ClientResult<Value> {
        Ok(with_conn!(self, c => call.run(c, operation, id).await)?)
    }

    /// Whether every checkout is a connection of its own that does not
    /// reconnect while checked out (a deadpool pool), so that a write and
    /// its `WAIT` can share it. `ConnectionManager` and `ClusterConnection`
    /// are shared and reconnect by themselves.
    pub(crate) fn checks_out_exclusive(&self) -> bool {
        match &self.0 {
            #[cfg(feature = "deadpool")]
            Inner::Pool(_) => true,
            _ => false,
        }
    }

    /// Runs a write script, then — with `wait = Some((replicas, timeout_ms))` —
    /// `WAIT` on the same checked-out connection (only for connections that
    /// [check out exclusive](Self::checks_out_exclusive); the others take
    /// [`crate::durable`]). Returns the script's reply and how many replicas
    /// acknowledged: `None` without `wait`, `Some(None)` when the `WAIT`
    /// failed after the script ran.
    pub(crate) async fn invoke_durable(
        &self,
        operation: &'static str,
        id: &SessionId,
        call: &ScriptCall<'_>,
        wait: Option<(u32, u64)>,
    ) -> ClientResult<(Value, Option<Option<i64>>)> {
        let Some((replicas, timeout_ms)) = wait else {
            return Ok((self.invoke(operation, id, call).await?, None));
        };
        let wait_cmd = redis::cmd("WAIT").arg(replicas).arg(timeout_ms).clone();
        with_conn!(self, c => {
            let value = call.run(c, operation, id).await?;
            let acked = match c.req_packed_command(&wait_cmd).await {
                Ok(n) => redis::from_redis_value(n).ok(),
                Err(e) => {
                    tracing::warn!(
                        operation,
                        session = %id,
                        error = %e,
                        "WAIT failed after the write script ran"
                    );
                    None
                }
            };
            Ok((value, Some(acked)))
        })
    }

    /// Runs one keyed command (routed by its key on a cluster).
    pub(crate) async fn query(&self, cmd: &Cmd) -> ClientResult<Value> {
        Ok(with_conn!(self, c => c.req_packed_command(cmd).await)?)
    }

    /// Runs `pipe` — an atomic pipeline (`MULTI … EXEC`) whose commands
    /// all touch keys of one slot, so a cluster routes it to that slot's
    /// master — and returns each command's reply, a failed command's as a
    /// [`Value::ServerError`]. When the first command is an `EVALSHA` of
    /// `script` that the server does not have (`NOSCRIPT`: nothing in the
    /// transaction was written by it), the script is loaded and the
    /// transaction run once more.
    pub(crate) async fn transaction(
        &self,
        operation: &'static str,
        id: &SessionId,
        script: &redis::Script,
        key: &str,
        pipe: &redis::Pipeline,
    ) -> ClientResult<Vec<Value>> {
        let mut replies = self.exec(key, pipe).await?;
        let noscript = matches!(
            replies.first(),
            Some(Value::ServerError(e)) if e.kind() == Some(redis::ServerErrorKind::NoScript)
        );
        if noscript {
            tracing::debug!(
                operation,
                session = %id,
                "NOSCRIPT: the server does not have the script (restart, failover or \
                 SCRIPT FLUSH); loading it and running it again"
            );
            with_conn!(self, c => script.prepare_invoke().load_async(c).await)?;
            replies = self.exec(key, pipe).await?;
        }
        Ok(replies)
    }

    /// Runs the transaction `pipe` on the slot of `key`. A transaction the
    /// server discarded (nothing ran) because its slot is served elsewhere
    /// (`MOVED`, `READONLY`) is sent again, twice at most, after a plain
    /// command on the key — which the cluster client, unlike a transaction,
    /// follows to the right node, refreshing its slot map. One discarded
    /// for a passing state (a failover, a migration, a server loading its
    /// data) fails with [`ClientError::Discarded`], which is transient.
    pub(crate) async fn exec(&self, key: &str, pipe: &redis::Pipeline) -> ClientResult<Vec<Value>> {
        let mut attempt = 0;
        loop {
            let result: redis::RedisResult<Vec<Value>> =
                with_conn!(self, c => pipe.query_async(c).await);
            let Err(e) = result else {
                return Ok(result?);
            };
            let Some(kinds) = discarded_for(&e) else {
                return Err(e.into());
            };
            let moved = kinds.iter().any(|k| {
                matches!(
                    k,
                    redis::ServerErrorKind::Moved | redis::ServerErrorKind::ReadOnly
                )
            });
            attempt += 1;
            if !moved || attempt > 2 {
                return Err(ClientError::Discarded(e));
            }
            tracing::debug!(error = %e, "a transaction went to a node not serving its slot");
            let exists = redis::cmd("EXISTS").arg(key).clone();
            self.query(&exists).await?;
        }
    }
    /// Whether the client library may send a request again by itself —
    /// after a dropped connection, not knowing whether the first one ran —
    /// so that an unkeyed append needs a key of its own to apply once. Only
    /// the cluster client does (its `retries`); `ConnectionManager` and
    /// deadpool report the error instead.
    pub(crate) fn resends(&self) -> bool {
        match &self.0 {
            #[cfg(feature = "cluster")]
            Inner::Cluster(_) => true,
            _ => false,
        }
    }

    /// Whether two keys may be used by one script: always on a standalone
    /// server; on a cluster when they hash to one slot.
    pub(crate) fn same_slot(&self, a: &str, b: &str) -> bool {
        match &self.0 {
            #[cfg(feature = "cluster")]
            Inner::Cluster(_) => {
                use redis::cluster_routing::Slot;
                Slot::for_key(a) == Slot::for_key(b)
            }
            _ => {
                let _ = (a, b);
                true
            }
        }
    }

    /// Runs `cmds` — keyed commands that need not share a slot — in one
    /// pipelined round trip (on a cluster, where keys of different slots
    /// cannot share a pipeline, as concurrent requests over the
    /// multiplexed connections). A command the server refused (a key of
    /// the wrong type) has its error as its reply, a
    /// [`Value::ServerError`]: it fails no other.
    pub(crate) async fn query_many(&self, cmds: Vec<Cmd>) -> ClientResult<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        #[cfg(feature = "cluster")]
        if let Inner::Cluster(c) = &self.0 {
            let mut tasks = tokio::task::JoinSet::new();
            let n = cmds.len();
            for (i, cmd) in cmds.into_iter().enumerate() {
                let mut conn = c.clone();
                tasks.spawn(async move { (i, conn.req_packed_command(&cmd).await) });
            }
            let mut out = vec![Value::Nil; n];
            while let Some(done) = tasks.join_next().await {
                let (i, value) = done.map_err(ClientError::Task)?;
                let value = match value {
                    Ok(v) => v,
                    Err(e) => match e.kind() {
                        redis::ErrorKind::Server(_) => Value::ServerError(
                            redis::ServerError::try_from(e).map_err(ClientError::from)?,
                        ),
                        _ => return Err(e.into()),
                    },
                };
                if let Some(slot) = out.get_mut(i) {
                    *slot = value;
                }
            }
            return Ok(out);
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        Ok(with_conn!(self, c => pipe.query_async(c).await)?)
    }

    /// Loads every script on every node, so the first call of each is one
    /// round trip too.
    pub(crate) async fn preload(&self, scripts: &[&redis::Script]) -> ClientResult<()> {
        for script in scripts {
            with_conn!(self, c => script.prepare_invoke().load_async(c).await)?;
        }
        Ok(())
    }

    /// The nodes a listing must scan, as `host:port`, in a stable order:
    /// every master of a cluster, or `[""]` (this connection) otherwise.
    pub(crate) async fn scan_nodes(&self) -> ClientResult<Vec<String>> {
        match &self.0 {
            #[cfg(feature = "cluster")]
            Inner::Cluster(c) => {
                let mut conn = c.clone();
                let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::Random,
                );
                let nodes = conn
                    .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), routing)
                    .await?;
                let text: String = redis::from_redis_value(nodes)?;
                Ok(cluster_masters(&text))
            }
            _ => Ok(vec![String::new()]),
        }
    }

    /// Runs one command without keys on `node` (from
    /// [`Connection::scan_nodes`]): on a cluster, on that master; otherwise
    /// on this connection's server.
    pub(crate) async fn query_node(&self, node: &str, cmd: &Cmd) -> ClientResult<Value> {
        match &self.0 {
            #[cfg(feature = "cluster")]
            Inner::Cluster(c) => {
                let (host, port) = node.rsplit_once(':').ok_or_else(|| bad_node(node))?;
                let port: u16 = port.parse().map_err(|_| bad_node(node))?;
                let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    },
                );
                Ok(c.clone().route_command(cmd.clone(), routing).await?)
            }
            _ => {
                let _ = node;
                Ok(with_conn!(self, c => c.req_packed_command(cmd).await)?)
            }
        }
    }

    /// `(first slot, last slot, master host:port)` for every slot range of
    /// the cluster, from `CLUSTER NODES`.
    #[cfg(feature = "cluster")]
    pub(crate) async fn slot_masters(&self) -> ClientResult<Vec<(u16, u16, String)>> {
        let Inner::Cluster(c) = &self.0 else {
            return Ok(Vec::new());
        };
        let routing = redis::cluster_routing::RoutingInfo::SingleNode(
            redis::cluster_routing::SingleNodeRoutingInfo::Random,
        );
        let nodes = c
            .clone()
            .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), routing)
            .await?;
        let text: String = redis::from_redis_value(nodes)?;
        Ok(cluster_slots(&text))
    }

    /// One `SCAN` step on `node` (from [`Connection::scan_nodes`]).
    pub(crate) async fn scan(
        &self,
        node: &str,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> ClientResult<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .arg("TYPE")
            .arg("hash");
        let reply = match &self.0 {
            #[cfg(feature = "cluster")]
            Inner::Cluster(c) => {
                let (host, port) = node.rsplit_once(':').ok_or_else(|| bad_node(node))?;
                let port: u16 = port.parse().map_err(|_| bad_node(node))?;
                let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    },
                );
                c.clone().route_command(cmd, routing).await?
            }
            _ => {
                let _ = node;
                with_conn!(self, c => c.req_packed_command(&cmd).await)?
            }
        };
        Ok(redis::from_redis_value(reply)?)
    }
}

/// The errors that made the server discard a transaction (`EXECABORT`)
/// when they all stand for a passing state of the server or cluster —
/// `MOVED`, `ASK`, `READONLY`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`,
/// `LOADING` — and `None` for any other error.
fn discarded_for(e: &redis::RedisError) -> Option<Vec<redis::ServerErrorKind>> {
    use redis::ServerErrorKind as K;
    if e.kind() != redis::ErrorKind::Server(K::ExecAbort) {
        return None;
    }
    let errors = e.clone().into_server_errors()?;
    let kinds: Vec<K> = errors
        .iter()
        .filter_map(|(_, error)| error.kind())
        .collect();
    let passing = !kinds.is_empty()
        && kinds.len() == errors.len()
        && kinds.iter().all(|k| {
            matches!(
                k,
                K::Moved
                    | K::Ask
                    | K::ReadOnly
                    | K::TryAgain
                    | K::ClusterDown
                    | K::MasterDown
                    | K::BusyLoading
            )
        });
    passing.then_some(kinds)
}

#[cfg(feature = "cluster")]
fn bad_node(node: &str) -> ClientError {
    ClientError::BadNode(node.to_owned())
}

/// `host:port` of each master in `CLUSTER NODES` output that is not failed,
/// sorted.
#[cfg(feature = "cluster")]
fn cluster_masters(nodes: &str) -> Vec<String> {
    let mut masters: Vec<String> = nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let _id = fields.next()?;
            let addr = fields.next()?;
            let flags = fields.next()?;
            let is_master = flags.split(',').any(|f| f == "master");
            let failed = flags.split(',').any(|f| f == "fail" || f == "noaddr");
            // addr is ip:port@cport[,hostname]
            let addr = addr.split('@').next()?;
            (is_master && !failed && !addr.is_empty()).then(|| addr.to_owned())
        })
        .collect();
    masters.sort();
    masters.dedup();
    masters
}

/// The slot ranges of each master in `CLUSTER NODES` output that is not
/// failed (`[slot->-node]` migration entries skipped).
#[cfg(feature = "cluster")]
fn cluster_slots(nodes: &str) -> Vec<(u16, u16, String)> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| *f == "fail" || *f == "noaddr") {
            continue;
        }
        let Some(addr) = addr.split('@').next().filter(|a| !a.is_empty()) else {
            continue;
        };
        for range in fields.iter().skip(8) {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
                out.push((first, last, addr.to_owned()));
            }
        }
    }
    out
}

#[cfg(all(test, feature = "cluster"))]
mod tests {
    #[test]
    fn parses_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
aaaa 127.0.0.1:30009@40009 master,fail - 0 0 1 disconnected
";
        assert_eq!(
            super::cluster_masters(text),
            ["127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003"]
        );
        assert_eq!(
            super::cluster_slots(text),
            [
                (5461, 10922, "127.0.0.1:30002".to_owned()),
                (10923, 16383, "127.0.0.1:30003".to_owned()),
                (0, 5460, "127.0.0.1:30001".to_owned()),
            ]
        );
        let migrating =
            "e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-10 12 [13->-67ed]\n";
        assert_eq!(
            super::cluster_slots(migrating),
            [
                (0, 10, "127.0.0.1:30001".to_owned()),
                (12, 12, "127.0.0.1:30001".to_owned())
            ]
        );
    }
}
