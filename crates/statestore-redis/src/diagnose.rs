//! [`RedisStore::diagnose`](crate::RedisStore::diagnose): what the
//! server(s) say about the settings this store depends on.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use statestore_core::Result;

/// What [`RedisStore::diagnose`](crate::RedisStore::diagnose) found: the
/// store's own settings and a [`NodeReport`] per server (every master of a
/// cluster, or the one server).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnosis {
    /// The storage schema this build writes (`statestore_core::codec::SCHEMA_VERSION`).
    pub schema_version: u32,
    /// The key prefix.
    pub prefix: String,
    /// The store's TTL, if it has one.
    pub ttl: Option<Duration>,
    /// Whether this is a Redis Cluster connection.
    pub cluster: bool,
    /// One report per server.
    pub nodes: Vec<NodeReport>,
}

/// One server's answers. A field is `None` when the server did not say:
/// an older server without it, or an ACL user not allowed `INFO` or
/// `CONFIG GET`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeReport {
    /// `host:port` of a cluster master; empty for the store's one server.
    pub node: String,
    /// `redis_version` from `INFO`.
    pub redis_version: Option<String>,
    /// `redis_mode`: `standalone`, `cluster` or `sentinel`.
    pub mode: Option<String>,
    /// `role`: `master` or `slave`.
    pub role: Option<String>,
    /// `connected_slaves`.
    pub replicas: Option<u64>,
    /// `used_memory` in bytes.
    pub used_memory: Option<u64>,
    /// `maxmemory` in bytes (0: no limit).
    pub maxmemory: Option<u64>,
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// Why that policy may evict single keys of a session, given the
    /// store's TTL; `None` when it cannot (or is unknown).
    pub eviction_risk: Option<&'static str>,
    /// `appendonly`: whether the append-only file is on.
    pub appendonly: Option<bool>,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub appendfsync: Option<String>,
    /// `save`: the RDB snapshot schedule (empty: no snapshots).
    pub save: Option<String>,
    /// `rdb_last_bgsave_status`: `ok` or `err`.
    pub rdb_last_bgsave_status: Option<String>,
    /// `aof_last_write_status`: `ok` or `err`.
    pub aof_last_write_status: Option<String>,
    /// Why `INFO` or `CONFIG GET` could not be read, when one could not.
    pub errors: Vec<String>,
}

impl crate::RedisStore {
    /// Asks every server (each master of a cluster) for its version, mode,
    /// memory limit and eviction policy, and persistence settings and
    /// status — what an operator checks before trusting it with sessions.
    /// Commands the ACL user may not run leave their fields `None` and say
    /// why in [`NodeReport::errors`].
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or (on a cluster) its masters
    /// cannot be listed.
    pub async fn diagnose(&self) -> Result<Diagnosis> {
        let conn = &self.inner.conn;
        let nodes = self.timed("diagnose", None, conn.scan_nodes()).await?;
        let mut reports = Vec::with_capacity(nodes.len());
        for node in nodes {
            let mut report = NodeReport {
                node: node.clone(),
                ..NodeReport::default()
            };
            match self
                .timed(
                    "diagnose",
                    None,
                    conn.query_node(&node, &redis::cmd("INFO")),
                )
                .await
            {
                Ok(Value::ServerError(e)) => report.errors.push(format!("INFO: {e}")),
                Ok(value) => {
                    let info = parse_info(&text(&value));
                    let get = |k: &str| info.get(k).cloned();
                    let num = |k: &str| info.get(k).and_then(|v| v.parse().ok());
                    report.redis_version = get("redis_version");
                    report.mode = get("redis_mode");
                    report.role = get("role");
                    report.replicas = num("connected_slaves");
                    report.used_memory = num("used_memory");
                    report.rdb_last_bgsave_status = get("rdb_last_bgsave_status");
                    report.aof_last_write_status = get("aof_last_write_status");
                    report.appendonly = info.get("aof_enabled").map(|v| v == "1");
                }
                Err(e) => report.errors.push(format!("INFO: {e}")),
            }
            for name in [
                "maxmemory",
                "maxmemory-policy",
                "appendonly",
                "appendfsync",
                "save",
            ] {
                let cmd = redis::cmd("CONFIG").arg("GET").arg(name).clone();
                match self
                    .timed("diagnose", None, conn.query_node(&node, &cmd))
                    .await
                {
                    Ok(Value::ServerError(e)) => {
                        report.errors.push(format!("CONFIG GET {name}: {e}"));
                        // The same ACL refuses the others too.
                        break;
                    }
                    Ok(value) => {
                        let Some(v) = config_value(value) else {
                            continue;
                        };
                        match name {
                            "maxmemory" => report.maxmemory = v.parse().ok(),
                            "maxmemory-policy" => report.maxmemory_policy = Some(v),
                            "appendonly" => report.appendonly = Some(v == "yes"),
                            "appendfsync" => report.appendfsync = Some(v),
                            _ => report.save = Some(v),
                        }
                    }
                    Err(e) => {
                        report.errors.push(format!("CONFIG GET {name}: {e}"));
                        // The same ACL refuses the others too.
                        break;
                    }
                }
            }
            report.eviction_risk = report
                .maxmemory_policy
                .as_deref()
                .and_then(|p| crate::eviction::unsafe_reason(p, self.inner.ttl.is_some()));
            reports.push(report);
        }
        Ok(Diagnosis {
            schema_version: statestore_core::codec::SCHEMA_VERSION,
            prefix: self.inner.keys.prefix().to_owned(),
            ttl: self.inner.ttl,
            cluster: self.inner.conn.kind() == "ClusterConnection",
            nodes: reports,
        })
    }
}

/// A reply as text (`INFO` is a bulk or verbatim string).
fn text(value: &Value) -> String {
    match value {
        Value::VerbatimString { text, .. } => text.clone(),
        other => crate::decode::bytes(other)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
    }
}

/// `key:value` lines of an `INFO` reply.
fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The value of a one-parameter `CONFIG GET` (RESP2 array or RESP3 map).
fn config_value(value: Value) -> Option<String> {
    let v = match value {
        Value::Map(pairs) => pairs.into_iter().next().map(|(_, v)| v),
        Value::Array(items) => items.into_iter().nth(1),
        _ => None,
    }?;
    crate::decode::bytes(&v).map(|b| String::from_utf8_lossy(b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_are_split_at_the_first_colon() {
        let info = parse_info("# Server\r\nredis_version:7.0.15\r\nexecutable:/a:b\r\n\r\n");
        assert_eq!(
            info.get("redis_version").map(String::as_str),
            Some("7.0.15")
        );
        assert_eq!(info.get("executable").map(String::as_str), Some("/a:b"));
        assert_eq!(info.len(), 2);
    }

    #[test]
    fn config_get_replies_of_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            config_value(Value::Array(vec![bulk("save"), bulk("")])).as_deref(),
            Some("")
        );
        assert_eq!(
            config_value(Value::Map(vec![(bulk("appendonly"), bulk("yes"))])).as_deref(),
            Some("yes")
        );
        assert_eq!(config_value(Value::Array(vec![])), None);
    }
}
