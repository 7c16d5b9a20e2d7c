//! What the page says about the machine: CPU, memory, OS, load, versions.

use std::process::Command;

use super::record::{Host, RunInfo};
use crate::root;

pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

pub(super) fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(super) fn git_describe() -> String {
    let root = root();
    let root = root.to_string_lossy();
    let Some(head) = output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]) else {
        return "?".into();
    };
    let dirty = output(
        "git",
        &[
            "-C",
            &root,
            "status",
            "--porcelain",
            "--",
            "crates",
            "xtask",
        ],
    )
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head} with uncommitted changes")
    } else {
        head
    }
}

/// "cores × model name".
pub(super) fn cpu() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "?".to_owned(), |(_, v)| v.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} × {model}")
}

/// What this machine is and runs, now.
pub(super) fn host() -> Host {
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "?".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|r| {
            r.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |k| k.trim().to_owned());
    let redis = output("redis-server", &["--version"])
        .and_then(|v| {
            v.split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into());
    let postgres = postgres_binary()
        .and_then(|bin| output(&bin, &["--version"]))
        .and_then(|v| {
            // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
            let mut words = v.split_whitespace().skip_while(|w| *w != "(PostgreSQL)");
            words.nth(1).map(str::to_owned)
        });
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap_or_default();
    let locked = |krate: &str| {
        let mut lines = lock.lines();
        while let Some(line) = lines.next() {
            if line == format!("name = \"{krate}\"") {
                return lines
                    .next()
                    .and_then(|v| v.strip_prefix("version = "))
                    .map(|v| format!("{krate} {}", v.trim_matches('"')));
            }
        }
        None
    };
    let crates: Vec<String> = [
        "criterion",
        "redis",
        "deadpool-redis",
        "tokio-postgres",
        "deadpool-postgres",
        "tokio",
        "serde_json",
    ]
    .iter()
    .filter_map(|k| locked(k))
    .collect();
    Host {
        memory,
        os: format!("{os}, Linux {kernel}"),
        rustc: output("rustc", &["-V"]).unwrap_or_else(|| "?".into()),
        redis_server: redis,
        postgres,
        crates: crates.join(", "),
    }
}

/// The `postgres` binary the PostgreSQL suites start (pg-test-server looks
/// in `$PG_BIN`, then `/usr/lib/postgresql/*/bin`, newest first, then
/// `PATH`).
fn postgres_binary() -> Option<String> {
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        return Some(
            std::path::Path::new(&dir)
                .join("postgres")
                .display()
                .to_string(),
        );
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin").join("postgres");
            bin.is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    Some(versions.pop().map_or_else(
        || "postgres".to_owned(),
        |(_, bin)| bin.display().to_string(),
    ))
}

/// The machine and the versions, as table rows: as recorded by the run,
/// else (a run recorded without them) this machine's.
pub(super) fn machine(run: &RunInfo) -> Vec<(String, String)> {
    let host = run.host.clone().unwrap_or_else(host);
    let mode = if run.quick {
        "quick (`--quick`)"
    } else {
        "full"
    };
    let criterion = if run.criterion_args.is_empty() {
        "criterion defaults (3 s warm-up, 5 s measurement, 100 samples)".to_owned()
    } else {
        format!("`{}`", run.criterion_args.join(" "))
    };
    let mut rows = vec![
        ("date".into(), run.date.clone()),
        ("commit".into(), run.git.clone()),
        ("run".into(), format!("{mode}: {criterion}")),
    ];
    if !run.filters.is_empty() {
        rows.push((
            "filter".into(),
            format!("`{}` (a partial run)", run.filters.join(" ")),
        ));
    }
    rows.extend([
        (
            "took".into(),
            format!("{:.1} min (building the benchmarks included)", run.minutes),
        ),
        ("CPU".into(), run.cpu.clone()),
        ("memory".into(), host.memory),
        ("OS".into(), host.os),
        (
            "load average (1, 5, 15 min)".into(),
            format!("{} before, {} after", run.load_before, run.load_after),
        ),
        ("rustc".into(), host.rustc),
        ("redis-server".into(), host.redis_server),
    ]);
    if let Some(postgres) = host.postgres {
        rows.push(("PostgreSQL".into(), postgres));
    }
    rows.extend([("crates".into(), host.crates)]);
    rows
}
