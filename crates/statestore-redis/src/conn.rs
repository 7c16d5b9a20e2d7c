//! The client connections a store can run on, behind one small interface:
//! run a script, run a command, pipeline reads, and scan every master.

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisResult, ScriptInvocation, Value};

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
impl From<deadpool_redis::Pool> for Connection {
    fn from(p: deadpool_redis::Pool) -> Self {
        Self(Inner::Pool(p))
    }
}

#[cfg(feature = "cluster")]
impl From<redis::cluster_async::ClusterConnection> for Connection {
    fn from(c: redis::cluster_async::ClusterConnection) -> Self {
        Self(Inner::Cluster(c))
    }
}

#[cfg(feature = "deadpool")]
fn pool_error(e: deadpool_redis::PoolError) -> redis::RedisError {
    match e {
        deadpool_redis::PoolError::Backend(e) => e,
        other => redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connection pool: {other}"),
        )),
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
    pub(crate) fn kind(&self) -> &'static str {
        match &self.0 {
            Inner::Manager(_) => "ConnectionManager",
            #[cfg(feature = "deadpool")]
            Inner::Pool(_) => "deadpool_redis::Pool",
            #[cfg(feature = "cluster")]
            Inner::Cluster(_) => "ClusterConnection",
        }
    }

    /// Runs a script (`EVALSHA`, loading it after `NOSCRIPT`).
    pub(crate) async fn invoke(&self, inv: &ScriptInvocation<'_>) -> RedisResult<Value> {
        with_conn!(self, c => inv.invoke_async(c).await)
    }

    /// Runs a write script, then — with `wait = Some((replicas, timeout_ms))` —
    /// `WAIT` on the same connection (on a cluster: the master of `key`'s
    /// slot) until that many replicas acknowledged it. Returns the script's
    /// reply and how many replicas acknowledged.
    pub(crate) async fn invoke_durable(
        &self,
        inv: &ScriptInvocation<'_>,
        key: &str,
        wait: Option<(u32, u64)>,
    ) -> RedisResult<(Value, Option<i64>)> {
        let Some((replicas, timeout_ms)) = wait else {
            return Ok((self.invoke(inv).await?, None));
        };
        let wait_cmd = redis::cmd("WAIT").arg(replicas).arg(timeout_ms).clone();
        #[cfg(feature = "cluster")]
        if let Inner::Cluster(c) = &self.0 {
            use redis::cluster_routing::{
                Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
            };
            let mut conn = c.clone();
            let value = inv.invoke_async(&mut conn).await?;
            let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
            let acked = conn.route_command(wait_cmd, routing).await?;
            return Ok((value, redis::from_redis_value(acked).ok()));
        }
        let _ = key;
        with_conn!(self, c => {
            let value = inv.invoke_async(c).await?;
            let acked = c.req_packed_command(&wait_cmd).await?;
            Ok((value, redis::from_redis_value(acked).ok()))
        })
    }

    /// Runs one keyed command (routed by its key on a cluster).
    pub(crate) async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        with_conn!(self, c => c.req_packed_command(cmd).await)
    }

    /// `HGET key field` for each key, in one pipelined round trip (on a
    /// cluster, where keys of different slots cannot share a pipeline, as
    /// concurrent requests over the multiplexed connections).
    pub(crate) async fn hget_many(&self, keys: &[Vec<u8>], field: &str) -> RedisResult<Vec<Value>> {
        #[cfg(feature = "cluster")]
        if let Inner::Cluster(c) = &self.0 {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, key) in keys.iter().enumerate() {
                let mut conn = c.clone();
                let cmd = redis::cmd("HGET").arg(key).arg(field).clone();
                tasks.spawn(async move { (i, conn.req_packed_command(&cmd).await) });
            }
            let mut out = vec![Value::Nil; keys.len()];
            while let Some(done) = tasks.join_next().await {
                let (i, value) = done
                    .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
                if let Some(slot) = out.get_mut(i) {
                    *slot = value?;
                }
            }
            return Ok(out);
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGET").arg(key).arg(field);
        }
        with_conn!(self, c => pipe.query_async(c).await)
    }

    /// Loads every script on every node, so the first call of each is one
    /// round trip too.
    pub(crate) async fn preload(&self, scripts: &[&redis::Script]) -> RedisResult<()> {
        for script in scripts {
            with_conn!(self, c => script.prepare_invoke().load_async(c).await)?;
        }
        Ok(())
    }

    /// The nodes a listing must scan, as `host:port`, in a stable order:
    /// every master of a cluster, or `[""]` (this connection) otherwise.
    pub(crate) async fn scan_nodes(&self) -> RedisResult<Vec<String>> {
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

    /// One `SCAN` step on `node` (from [`Connection::scan_nodes`]).
    pub(crate) async fn scan(
        &self,
        node: &str,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<Vec<u8>>)> {
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

#[cfg(feature = "cluster")]
fn bad_node(node: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("cluster node {node:?} is not host:port"),
    ))
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
    }
}
