//! A throwaway Redis Cluster of local `redis-server` nodes.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{self, LOOPBACK};
use crate::server::{RedisServer, info_field};

/// How long `redis-cli --cluster create` may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the cluster may take to be usable after `--cluster create`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every hash slot of a Redis Cluster.
const SLOTS: &str = "16384";

/// A throwaway Redis Cluster: `masters × (1 + replicas_per_master)` local
/// [`RedisServer`] nodes (`cluster-enabled yes`, `cluster-node-timeout 3000`),
/// joined with `redis-cli --cluster create`. Dropping it stops every node
/// and deletes their directories.
///
/// [`nodes`](Self::nodes) lists the masters first (in port order), then the
/// replicas, as they were when the cluster was created.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use redis_test_server::RedisCluster;
///
/// let mut cluster = RedisCluster::start(3, 1)?;
/// let seeds = cluster.urls(); // for a cluster client
/// # drop(seeds);
/// let first_master = cluster.nodes()[0].port();
/// cluster.nodes_mut()[0].kill()?; // its replica takes over after ~3 s
/// # drop(first_master);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3, as `redis-cli --cluster create`
    /// requires) with `replicas_per_master` replicas each, and waits until
    /// every node reports `cluster_state:ok`, all 16384 slots assigned and
    /// every other node known, and every replica's link to its master is up.
    ///
    /// # Errors
    ///
    /// Fewer than 3 masters; a node that does not start (see
    /// [`ServerBuilder::start`](crate::ServerBuilder::start));
    /// `redis-cli --cluster create` failing (its output is quoted); or the
    /// cluster not being ready within 60 s (the unmet condition is named).
    pub fn start(masters: usize, replicas_per_master: usize) -> io::Result<RedisCluster> {
        if masters < 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a Redis Cluster needs at least 3 masters, not {masters}"),
            ));
        }
        let total = replicas_per_master
            .checked_add(1)
            .and_then(|per| per.checked_mul(masters))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many nodes"))?;
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(RedisServer::builder().cluster_node().start()?);
        }

        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("{LOOPBACK}:{}", n.port())));
        args.extend([
            "--cluster-replicas".into(),
            replicas_per_master.to_string(),
            "--cluster-yes".into(),
        ]);
        process::run("redis-cli", &args, CREATE_TIMEOUT)?
            .into_stdout("redis-cli --cluster create")?;

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut delay = Duration::from_millis(20);
        loop {
            match readiness(&nodes, masters) {
                Ok(()) => break,
                Err(unmet) if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the cluster was not ready within {READY_TIMEOUT:?}: {unmet}"),
                    ));
                }
                Err(_) => thread::sleep(delay),
            }
            delay = (delay * 2).min(Duration::from_millis(200));
        }

        // Masters first: index them without asking which node is which.
        let mut keyed = Vec::with_capacity(nodes.len());
        for node in nodes {
            let role = node.cli(&["INFO", "replication"])?;
            let is_master = info_field(&role, "role") == Some("master");
            keyed.push((!is_master, node.port(), node));
        }
        keyed.sort_by_key(|(replica, port, _)| (*replica, *port));
        Ok(RedisCluster {
            nodes: keyed.into_iter().map(|(_, _, node)| node).collect(),
            masters,
        })
    }

    /// The URLs of the nodes that were masters when the cluster was created
    /// (`redis://127.0.0.1:PORT`): seed nodes for a cluster client. After a
    /// failover some may be replicas or down; [`masters`](Self::masters)
    /// tells the current roles.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .take(self.masters)
            .map(RedisServer::url)
            .collect()
    }

    /// Every node: the masters at creation first (port order), then the
    /// replicas.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every node, to [`kill`](RedisServer::kill), [`pause`](RedisServer::pause)
    /// or [`restart`](RedisServer::restart) one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The ports of the current masters, sorted, as `CLUSTER NODES` on the
    /// first running, unpaused node reports them: nodes flagged `master` and
    /// not `fail`, `fail?`, `handshake` or `noaddr`. A master that was just
    /// killed stays in the list until that node notices (up to the node
    /// timeout, 3 s); poll for the failover you expect.
    ///
    /// # Errors
    ///
    /// When no node is running and unpaused, or none answers.
    pub fn masters(&self) -> io::Result<Vec<u16>> {
        let mut last = None;
        for node in self.nodes.iter().filter(|n| n.is_serving()) {
            match node.cli(&["CLUSTER", "NODES"]) {
                Ok(out) => return Ok(parse_masters(&out)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "no cluster node is running and unpaused",
            )
        }))
    }
}

/// Ok when the cluster is usable — every node reports `cluster_state:ok`,
/// all slots assigned, every node known, the expected number of masters in
/// its `CLUSTER NODES`, and every replica's master link up — else the first
/// unmet condition.
fn readiness(nodes: &[RedisServer], masters: usize) -> Result<(), String> {
    let total = nodes.len().to_string();
    let mut master_count = 0;
    for node in nodes {
        let port = node.port();
        let ask = |args: &[&str]| {
            node.cli(args)
                .map_err(|e| format!("node {port}: {}: {e}", args.join(" ")))
        };
        let info = ask(&["CLUSTER", "INFO"])?;
        for (key, want) in [
            ("cluster_state", "ok"),
            ("cluster_slots_assigned", SLOTS),
            ("cluster_known_nodes", total.as_str()),
        ] {
            let got = info_field(&info, key);
            if got != Some(want) {
                return Err(format!("node {port}: {key} is {got:?}, not {want}"));
            }
        }
        // Every node must see the same roles: right after `--cluster create`
        // a node may still list a replica as a master until gossip arrives.
        let view = ask(&["CLUSTER", "NODES"])?;
        let seen = parse_masters(&view).len();
        if seen != masters {
            return Err(format!("node {port} sees {seen} masters, not {masters}"));
        }
        let replication = ask(&["INFO", "replication"])?;
        match info_field(&replication, "role") {
            Some("master") => master_count += 1,
            Some("slave") => {
                let link = info_field(&replication, "master_link_status");
                if link != Some("up") {
                    return Err(format!("replica {port}: master_link_status is {link:?}"));
                }
            }
            other => return Err(format!("node {port}: role is {other:?}")),
        }
    }
    if master_count == masters {
        Ok(())
    } else {
        Err(format!("{master_count} masters, not {masters}"))
    }
}

/// Ports of the healthy masters in a `CLUSTER NODES` reply.
fn parse_masters(nodes: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_id, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            let healthy_master = flags.contains(&"master")
                && !flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "fail?" | "handshake" | "noaddr"));
            if !healthy_master {
                return None;
            }
            // ip:port@cport[,hostname]
            let host_port = addr.split('@').next()?;
            host_port.rsplit_once(':')?.1.parse().ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::parse_masters;

    #[test]
    fn masters_are_the_healthy_master_entries() {
        let nodes = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:30002@40002,host master - 0 0 2 connected 5461-10922
a3 127.0.0.1:30003@40003 master,fail - 0 0 3 disconnected
a4 127.0.0.1:30004@40004 master,fail? - 0 0 3 connected
a5 127.0.0.1:30005@40005 slave a3 0 0 4 connected
a6 127.0.0.1:30006@40006 master - 0 0 5 connected 10923-16383
";
        assert_eq!(parse_masters(nodes), vec![30001, 30002, 30006]);
    }
}
