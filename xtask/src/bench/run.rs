//! Running the benchmarks: the criterion suites (reading back what they
//! wrote under `target/criterion/`) and `redis-benchmark`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use serde::Deserialize;

use super::record::{Measured, RedisBench, Throughput};
use super::targets::SESSION_COUNTS;
use crate::{Result, cargo, root, temp_redis};

/// Criterion settings of the two modes.
pub(super) const QUICK_ARGS: [&str; 6] = [
    "--warm-up-time",
    "0.5",
    "--measurement-time",
    "1",
    "--sample-size",
    "10",
];
pub(super) const FULL_ARGS: [&str; 0] = [];

/// `redis-benchmark` settings: concurrency matches the 64-session suites.
pub(super) const CLIENTS: u32 = 64;
/// How the one-client round-trip test is labelled.
pub(super) const ONE_CLIENT: &str = "(one client, -c 1)";
pub(super) const QUICK_REQUESTS: u32 = 100_000;
pub(super) const FULL_REQUESTS: u32 = 500_000;
pub(super) const QUICK_RUNS: usize = 3;
pub(super) const FULL_RUNS: usize = 5;

/// The `redis-benchmark` test name of the RPUSH ceiling at `clients`
/// connections: plain `RPUSH` at [`CLIENTS`] (what the targets read).
pub(super) fn ceiling_test(clients: u32) -> String {
    if clients == CLIENTS {
        "RPUSH".to_owned()
    } else {
        format!("RPUSH (-c {clients})")
    }
}

/// `cargo bench` over every bench target of the workspace (`--bench '*'`
/// leaves out the libraries' libtest harnesses, which reject criterion's
/// options), every feature on so that the Redis suites build.
pub(super) fn bench_args() -> [&'static str; 5] {
    ["bench", "--workspace", "--all-features", "--bench", "*"]
}

/// Runs the suites, echoing their output and collecting the `bench-metric:`
/// lines that benchmarks measuring something other than time print.
pub(super) fn run_suites(
    criterion_args: &[&str],
    filters: &[String],
) -> Result<Vec<(String, String)>> {
    let mut cmd = cargo();
    cmd.args(bench_args())
        .arg("--")
        .args(criterion_args)
        .args(filters)
        .stdout(Stdio::piped());
    let step = "benchmarks";
    let started = Instant::now();
    eprintln!("\n==> {step}\n    $ {cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    let mut metrics = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| format!("{step}: {e}"))?;
            println!("{line}");
            if let Some((id, value)) = line
                .strip_prefix("bench-metric: ")
                .and_then(|m| m.split_once(" = "))
            {
                metrics.push((id.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    let status = child.wait().map_err(|e| format!("{step}: {e}"))?;
    eprintln!("    ({step}: {:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(metrics)
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

/// Where criterion writes: `$CRITERION_HOME`, else the target directory's
/// `criterion/`.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("criterion")
}

/// Every benchmark whose `new/estimates.json` was written since `since`.
pub(super) fn criterion_results(since: SystemTime) -> Result<Vec<Measured>> {
    let mut found = Vec::new();
    let home = criterion_home();
    let mut dirs = vec![home.clone()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some(m) = read_result(&path, since)? {
                    found.push(m);
                }
            } else {
                dirs.push(path);
            }
        }
    }
    found.sort_by_key(|m| m.written);
    Ok(found)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Criterion's `new/benchmark.json`: which benchmark.
#[derive(Deserialize)]
struct CriterionId {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    full_id: String,
    /// See [`Throughput::from_criterion`].
    throughput: Option<serde_json::Value>,
}

/// Criterion's `new/estimates.json`, the parts the page shows.
#[derive(Deserialize)]
struct CriterionEstimates {
    median: CriterionEstimate,
    median_abs_dev: Option<CriterionEstimate>,
}

#[derive(Deserialize)]
struct CriterionEstimate {
    point_estimate: f64,
    confidence_interval: CriterionInterval,
}

#[derive(Deserialize)]
struct CriterionInterval {
    lower_bound: f64,
    upper_bound: f64,
}

pub(super) fn read_result(new: &Path, since: SystemTime) -> Result<Option<Measured>> {
    let estimates_path = new.join("estimates.json");
    let Ok(written) = std::fs::metadata(&estimates_path).and_then(|m| m.modified()) else {
        return Ok(None);
    };
    if written < since {
        return Ok(None);
    }
    let estimates: CriterionEstimates = read_json(&estimates_path)?;
    let id: CriterionId = read_json(&new.join("benchmark.json"))?;
    let name = match (id.function_id, id.value_str) {
        (Some(f), Some(v)) => format!("{f}/{v}"),
        (Some(f), None) => f,
        (None, Some(v)) => v,
        (None, None) => id.full_id.clone(),
    };
    Ok(Some(Measured {
        group: id.group_id,
        name,
        full_id: id.full_id,
        median: estimates.median.point_estimate,
        lower: estimates.median.confidence_interval.lower_bound,
        upper: estimates.median.confidence_interval.upper_bound,
        mad: estimates
            .median_abs_dev
            .map_or(f64::NAN, |m| m.point_estimate),
        throughput: id.throughput.as_ref().and_then(Throughput::from_criterion),
        written,
        run: String::new(),
    }))
}

/// Runs `redis-benchmark -c 64` for RPUSH and LRANGE_100 against a
/// throwaway server, several times, and reads the server's own time per
/// call from `INFO commandstats` afterwards.
pub(super) fn redis_benchmark(quick: bool) -> Result<BTreeMap<String, RedisBench>> {
    let (requests, runs) = if quick {
        (QUICK_REQUESTS, QUICK_RUNS)
    } else {
        (FULL_REQUESTS, FULL_RUNS)
    };
    let server = temp_redis()?;
    let port = server.port().to_string();
    let mut tests: BTreeMap<String, RedisBench> = BTreeMap::new();
    for i in 1..=runs {
        let step = format!("redis-benchmark {i}/{runs}");
        eprintln!("\n==> {step}");
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(["-c", &CLIENTS.to_string(), "-n", &requests.to_string()])
            .args(["-t", "rpush,lrange_100", "--csv"])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{step}: could not start: {e}"))?;
        if !out.status.success() {
            return Err(format!("{step} failed ({})", out.status));
        }
        let csv = String::from_utf8_lossy(&out.stdout);
        eprint!("{csv}");
        for (test, rps, p50) in parse_csv(&csv)? {
            let entry = tests.entry(test).or_default();
            entry.rps.push(rps);
            entry.p50_ms.extend(p50);
        }
        // The loopback round trip with one client: the floor under every
        // single-connection Redis figure (on a VM, mostly the time to wake
        // an idle vCPU).
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port, "-c", "1", "-n", "20000"])
            .args(["-t", "ping_mbulk", "--csv"])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{step}: could not start: {e}"))?;
        let csv = String::from_utf8_lossy(&out.stdout);
        eprint!("{csv}");
        for (test, rps, p50) in parse_csv(&csv)? {
            let entry = tests.entry(format!("{test} {ONE_CLIENT}")).or_default();
            entry.rps.push(rps);
            entry.p50_ms.extend(p50);
        }
    }
    // The RPUSH ceiling at every session count of the sessions chart
    // ([`CLIENTS`] is measured above), once each.
    for clients in SESSION_COUNTS.into_iter().filter(|&c| c != CLIENTS) {
        let step = format!("redis-benchmark -t rpush -c {clients}");
        eprintln!("\n==> {step}");
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args([
                "-c",
                &clients.to_string(),
                "-n",
                &QUICK_REQUESTS.to_string(),
            ])
            .args(["-t", "rpush", "--csv"])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{step}: could not start: {e}"))?;
        if !out.status.success() {
            return Err(format!("{step} failed ({})", out.status));
        }
        let csv = String::from_utf8_lossy(&out.stdout);
        eprint!("{csv}");
        for (_, rps, p50) in parse_csv(&csv)? {
            let entry = tests.entry(ceiling_test(clients)).or_default();
            entry.rps.push(rps);
            entry.p50_ms.extend(p50);
        }
    }
    let stats = server
        .command_stats_detailed()
        .map_err(|e| format!("INFO commandstats: {e}"))?;
    for (command, stat) in stats {
        for (test, bench) in &mut tests {
            let name = test.split_whitespace().next().unwrap_or_default();
            let name = name.split('_').next().unwrap_or_default();
            if name.eq_ignore_ascii_case(&command) {
                bench.usec_per_call = Some(stat.usec_per_call);
            }
        }
    }
    drop(server);
    Ok(tests)
}

/// `redis-benchmark --csv`: a header naming the columns, then one quoted
/// row per test. Returns (test, requests per second, p50 latency in ms).
pub(super) fn parse_csv(csv: &str) -> Result<Vec<(String, f64, Option<f64>)>> {
    let split = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|f| f.trim().trim_matches('"').to_owned())
            .collect()
    };
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header = split(lines.next().ok_or("redis-benchmark printed nothing")?);
    let column = |name: &str| header.iter().position(|h| h == name);
    let rps_at = column("rps").ok_or("redis-benchmark --csv: no rps column")?;
    let p50_at = column("p50_latency_ms");
    let mut rows = Vec::new();
    for line in lines {
        let fields = split(line);
        let (Some(test), Some(rps)) = (fields.first(), fields.get(rps_at)) else {
            continue;
        };
        let rps = rps
            .parse()
            .map_err(|_| format!("redis-benchmark --csv: bad rps in {line:?}"))?;
        let p50 = p50_at
            .and_then(|i| fields.get(i))
            .and_then(|p| p.parse().ok());
        rows.push((test.clone(), rps, p50));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::{parse_csv, read_result};
    use crate::bench::record::Throughput;
    use std::time::SystemTime;

    /// Criterion's `new/{estimates,benchmark}.json`, trimmed to what is read.
    #[test]
    fn reads_criterion_output() {
        let dir = std::env::temp_dir().join(format!("xtask-criterion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("estimates.json"),
            r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,
                "upper_bound":2.0},"point_estimate":1.5,"standard_error":0.1},
                "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.5e3,
                "upper_bound":1700.25},"point_estimate":1600,"standard_error":12.0},
                "median_abs_dev":{"confidence_interval":{"confidence_level":0.95,
                "lower_bound":1,"upper_bound":3},"point_estimate":2.5,"standard_error":0.5},
                "slope":null,"std_dev":null}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("benchmark.json"),
            r#"{"group_id":"redis/a \"b\" \u00b5","function_id":"f","value_str":"10",
                "throughput":{"Elements":64},"full_id":"redis/a \"b\" µ/f/10",
                "directory_name":"redis/a _b_ µ/f/10","title":"redis/a \"b\" µ/f/10"}"#,
        )
        .unwrap();
        let m = read_result(&dir, SystemTime::UNIX_EPOCH).unwrap().unwrap();
        assert_eq!(m.group, "redis/a \"b\" µ");
        assert_eq!(m.name, "f/10");
        assert_eq!(
            (m.median, m.lower, m.upper, m.mad),
            (1600.0, 1500.0, 1700.25, 2.5)
        );
        assert!(matches!(m.throughput, Some(Throughput::Elements(n)) if n == 64.0));
        // Not yet written by this run: skipped.
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(read_result(&dir, later).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\"\n\
                   \"RPUSH\",\"98039.22\",\"0.356\",\"0.080\",\"0.327\"\n\
                   \"LRANGE_100 (first 100 elements)\",\"40000.00\",\"0.9\",\"0.2\",\"0.8\"\n";
        let rows = parse_csv(csv).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], ("RPUSH".to_owned(), 98039.22, Some(0.327)));
        assert_eq!(rows[1].0, "LRANGE_100 (first 100 elements)");
    }
}
