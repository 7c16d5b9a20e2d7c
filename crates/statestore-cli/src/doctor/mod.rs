//! `doctor`: can the store be reached, and are its settings what the store
//! needs to keep sessions whole and durable.

use std::time::Instant;

use serde_json::json;
use statestore::{Backend, Options};

use crate::args::DoctorArgs;
use crate::error::CliError;
use crate::ui::{self, Paint, Ui};

mod sqlite;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug)]
struct Check {
    status: Status,
    name: String,
    detail: String,
    /// Figures behind the check, for `--json` (`null` in most checks).
    data: serde_json::Value,
}

#[derive(Debug, Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(&mut self, status: Status, name: impl Into<String>, detail: impl Into<String>) {
        self.0.push(Check {
            status,
            name: name.into(),
            detail: detail.into(),
            data: serde_json::Value::Null,
        });
    }

    /// [`add`](Self::add), with figures `--json` shows under `data`.
    fn add_data(
        &mut self,
        status: Status,
        name: impl Into<String>,
        detail: impl Into<String>,
        data: serde_json::Value,
    ) {
        self.add(status, name, detail);
        if let Some(check) = self.0.last_mut() {
            check.data = data;
        }
    }
}

pub(crate) async fn run(ui: &Ui, url: &str, _args: DoctorArgs) -> Result<(), CliError> {
    let shown = statestore::redact_url(url);
    let mut report = Report::default();
    let started = Instant::now();
    let backend = match statestore::open_backend(url, Options::new().create(false)).await {
        Ok(b) => b,
        Err(e) => {
            if let Some(detail) = sqlite::unreadable_file(&e) {
                // Said once, in the check's line: the error after it
                // would only repeat it, with SQLite's codes.
                report.add(Status::Fail, "connect", detail);
                print(ui, &shown, &report)?;
                return Err(checks_failed(1));
            }
            report.add(Status::Fail, "connect", format!("{shown}: {e}"));
            print(ui, &shown, &report)?;
            return Err(CliError::Open(e));
        }
    };
    report.add(
        Status::Ok,
        "connect",
        format!("{shown} (opened in {} ms)", started.elapsed().as_millis()),
    );
    writable(&backend.clone().into_store(), &mut report).await;
    match backend {
        Backend::Sqlite(store) => sqlite::check(&store, &mut report).await,
        Backend::Redis(store) => redis(&store, &mut report).await,
        Backend::Postgres(store) => postgres(&store, &mut report).await,
        Backend::Memory(_) => report.add(
            Status::Warn,
            "durability",
            "memory:// lives in this process only: every session is gone when it exits",
        ),
        _ => report.add(Status::Info, "backend", "no checks for this backend"),
    }
    print(ui, &shown, &report)?;
    let failed = report.0.iter().filter(|c| c.status == Status::Fail).count();
    if failed == 0 {
        return Ok(());
    }
    Err(checks_failed(failed))
}

/// The error of a report with `n` failed checks.
fn checks_failed(n: usize) -> CliError {
    CliError::Failed {
        message: format!("{n} of the checks above failed"),
        hint: Some("each failed check says how to fix it".into()),
    }
}

/// Whether this user can write the store: a `touch` of a session that
/// exists — it moves that session's access time, nothing else — goes down
/// the write path (a transaction on SQLite, a script on Redis, a statement
/// on PostgreSQL), and a store that cannot write refuses it
/// (`Error::Refused`). An empty store has nothing to probe with.
async fn writable(store: &std::sync::Arc<dyn statestore::Store>, report: &mut Report) {
    let listed = store
        .list(&statestore::ListQuery::new().with_limit(1))
        .await;
    let Some(probe) = listed
        .ok()
        .and_then(|page| page.sessions.into_iter().next())
    else {
        report.add(Status::Info, "write", "no session to check writing with");
        return;
    };
    match store.touch(&probe.id).await {
        Ok(_) => report.add(Status::Ok, "write", "this user can write the store"),
        Err(e @ statestore::Error::Refused { .. }) => report.add(
            Status::Fail,
            "write",
            format!(
                "this user cannot write the store: {e} (fix its permissions, or use a store \
                 you can write)"
            ),
        ),
        Err(e) => report.add(Status::Warn, "write", format!("could not check: {e}")),
    }
}

fn print(ui: &Ui, shown: &str, report: &Report) -> Result<(), CliError> {
    if ui.json {
        let checks: Vec<serde_json::Value> = report
            .0
            .iter()
            .map(|c| {
                let mut check = json!({
                    "status": c.status.label().to_ascii_lowercase(),
                    "check": c.name,
                    "detail": c.detail,
                });
                if let (false, Some(fields)) = (c.data.is_null(), check.as_object_mut()) {
                    fields.insert("data".to_owned(), c.data.clone());
                }
                check
            })
            .collect();
        let ok = !report.0.iter().any(|c| c.status == Status::Fail);
        return ui.out_json(&json!({ "store": shown, "ok": ok, "checks": checks }));
    }
    let width = report
        .0
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for c in &report.0 {
        let paint = match c.status {
            Status::Ok => Paint::Green,
            Status::Info => Paint::Dim,
            Status::Warn => Paint::Yellow,
            Status::Fail => Paint::Red,
        };
        let label = ui.paint(false, paint, &format!("{:<4}", c.status.label()));
        // One line each, whatever the file or server put in it.
        text.push_str(&format!(
            "{label}  {:<width$}  {}\n",
            c.name,
            ui::clean_line(&c.detail)
        ));
    }
    ui.out(&text)
}

/// Dead rows above this share of a table (with at least
/// [`BLOAT_MIN_DEAD`] of them) are worth a warning: vacuum is not keeping up.
const BLOAT_WARN_RATIO: f64 = 0.2;
const BLOAT_MIN_DEAD: u64 = 1_000;

async fn postgres(store: &statestore::postgres::PostgresStore, report: &mut Report) {
    report.add(
        Status::Info,
        "store",
        format!(
            "PostgreSQL, schema {:?}, table prefix {:?}, {}",
            store.schema(),
            store.prefix(),
            store.ttl().map_or_else(
                || "no TTL".to_owned(),
                |t| format!("TTL {} after the last access", ui::duration(t))
            )
        ),
    );
    let Some(d) = asked(store.diagnose().await, report) else {
        return;
    };
    report.add(
        Status::Ok,
        "server",
        format!("PostgreSQL {}", d.server_version),
    );
    // Opening migrated the tables to this build's schema, or failed on a newer one.
    report.add(
        Status::Ok,
        "schema",
        format!(
            "{}, this build's (opening migrates an older one and refuses a newer one)",
            d.schema_version
        ),
    );
    let (status, detail) = match d.synchronous_commit.as_str() {
        "off" => (
            Status::Warn,
            "off: a server crash can lose the last acknowledged turns (up to 3 × wal_writer_delay); \
             set it to on unless that is acceptable"
                .to_owned(),
        ),
        "local" => (
            Status::Ok,
            "local: every commit is flushed here, not waited for on replicas".to_owned(),
        ),
        other => (Status::Ok, format!("{other}: every acknowledged turn is on disk")),
    };
    report.add_data(
        status,
        "synchronous_commit",
        detail,
        json!({ "value": d.synchronous_commit }),
    );
    report.add_data(
        Status::Info,
        "partitions",
        d.partitions.map_or_else(
            || "none (the tables are not partitioned)".to_owned(),
            |n| format!("{n} hash partitions by session id per table"),
        ),
        json!({ "partitions": d.partitions }),
    );
    for t in &d.tables {
        let ratio = t.dead_ratio();
        let bloated = ratio > BLOAT_WARN_RATIO && t.dead_rows >= BLOAT_MIN_DEAD;
        let mut detail = format!(
            "{}, {} live and {} dead rows ({:.0}% dead)",
            ui::bytes(t.total_bytes),
            ui::thousands(t.live_rows),
            ui::thousands(t.dead_rows),
            ratio * 100.0
        );
        if bloated {
            detail.push_str(": vacuum is behind; check autovacuum or run VACUUM");
        }
        let status = if bloated { Status::Warn } else { Status::Info };
        let data = json!({
            "table": t.qualified,
            "total_bytes": t.total_bytes,
            "live_rows": t.live_rows,
            "dead_rows": t.dead_rows,
            "dead_ratio": ratio,
        });
        report.add_data(status, format!("table {}", t.table), detail, data);
    }
}

async fn redis(store: &statestore::redis::RedisStore, report: &mut Report) {
    let Some(d) = asked(store.diagnose().await, report) else {
        return;
    };
    report.add(
        Status::Info,
        "store",
        format!(
            "{}, key prefix {:?}, storage schema {}, {}",
            if d.cluster { "Redis Cluster" } else { "Redis" },
            d.prefix,
            d.schema_version,
            d.ttl.map_or_else(
                || "no TTL".to_owned(),
                |t| format!("TTL {} after the last access", ui::duration(t))
            )
        ),
    );
    for node in &d.nodes {
        let at = if node.node.is_empty() {
            String::new()
        } else {
            format!(" {}", node.node)
        };
        let version = node.redis_version.as_deref().unwrap_or("unknown");
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let (status, detail) = if node.redis_version.is_none() {
            (
                Status::Warn,
                "the server did not say (INFO refused?)".to_owned(),
            )
        } else if major < 6 {
            (
                Status::Fail,
                format!("{version}: the store needs Redis 6.0 or newer (SCAN … TYPE)"),
            )
        } else {
            (
                Status::Ok,
                format!(
                    "{version}, {} {}{}",
                    node.mode.as_deref().unwrap_or("?"),
                    node.role.as_deref().unwrap_or("?"),
                    node.replicas
                        .map(|r| format!(", {r} replicas"))
                        .unwrap_or_default()
                ),
            )
        };
        report.add(status, format!("server{at}"), detail);
        let memory = match (node.used_memory, node.maxmemory) {
            (Some(used), Some(0)) => format!("{} used, no maxmemory limit", ui::bytes(used)),
            (Some(used), Some(max)) => {
                format!("{} used of maxmemory {}", ui::bytes(used), ui::bytes(max))
            }
            (Some(used), None) => format!("{} used", ui::bytes(used)),
            _ => "unknown".to_owned(),
        };
        report.add(Status::Info, format!("memory{at}"), memory);
        let (status, detail) = match (&node.maxmemory_policy, node.eviction_risk) {
            (None, _) => (
                Status::Warn,
                "unknown (CONFIG GET refused): make sure it is noeviction".to_owned(),
            ),
            // Without a memory limit nothing is evicted, whatever the policy.
            (Some(p), Some(reason)) if node.maxmemory == Some(0) => (
                Status::Warn,
                format!(
                    "{p}: {reason} once maxmemory is set; with no limit (maxmemory 0) nothing is \
                     evicted today. Before setting one: CONFIG SET maxmemory-policy noeviction"
                ),
            ),
            (Some(p), Some(reason)) => (
                Status::Fail,
                format!(
                    "{p}: {reason}, and a session missing some of its keys reads as corrupt. \
                     Fix: CONFIG SET maxmemory-policy noeviction (and in redis.conf)"
                ),
            ),
            (Some(p), None) if p == "noeviction" => (
                Status::Ok,
                "noeviction: when memory is full writes fail; nothing is evicted".to_owned(),
            ),
            (Some(p), None) => (
                Status::Ok,
                format!("{p}: evicts only keys with a TTL, and this store sets none"),
            ),
        };
        report.add(status, format!("eviction{at}"), detail);
        let snapshots = node.save.as_deref().map(|s| !s.trim().is_empty());
        let (status, detail) = match (node.appendonly, node.appendfsync.as_deref(), snapshots) {
            (Some(true), Some("always"), _) => (
                Status::Ok,
                "AOF, appendfsync always: every acknowledged write survives a crash".to_owned(),
            ),
            (Some(true), Some("everysec"), _) => (
                Status::Ok,
                "AOF, appendfsync everysec: a crash loses at most about a second of writes"
                    .to_owned(),
            ),
            (Some(true), fsync, _) => (
                Status::Warn,
                format!(
                    "AOF, appendfsync {}: the OS decides when writes reach the disk; a crash \
                     may lose more. Fix: CONFIG SET appendfsync everysec",
                    fsync.unwrap_or("?")
                ),
            ),
            (Some(false), _, Some(true)) => (
                Status::Warn,
                format!(
                    "RDB snapshots only (save \"{}\"): a crash loses the writes since the last \
                     snapshot. Fix: CONFIG SET appendonly yes",
                    node.save.as_deref().unwrap_or_default()
                ),
            ),
            (Some(false), _, Some(false)) => (
                Status::Warn,
                "none (no AOF, no snapshots): a restart loses every session. Fix: CONFIG SET \
                 appendonly yes"
                    .to_owned(),
            ),
            _ => (Status::Warn, "unknown (CONFIG GET refused)".to_owned()),
        };
        report.add(status, format!("persistence{at}"), detail);
        for (what, last) in [
            ("last snapshot", &node.rdb_last_bgsave_status),
            ("last AOF write", &node.aof_last_write_status),
        ] {
            if last.as_deref() == Some("err") {
                report.add(
                    Status::Fail,
                    format!("disk{at}"),
                    format!("the {what} failed: check the server's log and disk"),
                );
            }
        }
        for e in &node.errors {
            report.add(Status::Info, format!("access{at}"), e.clone());
        }
    }
}

/// A server's answer to `diagnose`, or a FAIL line saying why there is none.
fn asked<T, E: std::fmt::Display>(answer: Result<T, E>, report: &mut Report) -> Option<T> {
    match answer {
        Ok(d) => Some(d),
        Err(e) => {
            report.add(
                Status::Fail,
                "server",
                format!("cannot ask the server: {e}"),
            );
            None
        }
    }
}
