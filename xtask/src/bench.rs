//! `cargo xtask bench [--quick] [criterion filter…]`: runs the criterion
//! suites (and `redis-benchmark`), then writes `docs/benchmarks.md` and
//! `docs/benchmarks.json`.
//!
//! Every criterion group gets a table (groups added later, such as the
//! token-counting suite, appear without changes here), and a short list of
//! targets is computed from known benchmark ids — a target whose
//! benchmark has no result reads "not measured". Everything from the
//! `## Analysis` heading on is hand-written and kept across runs.
//!
//! # Filtered runs keep the rest
//!
//! `docs/benchmarks.json` is the machine-readable record the page is
//! rendered from: every benchmark's figures, the `bench-metric:` lines and
//! the `redis-benchmark` results, each tagged with the run (date, commit,
//! mode, filter) that measured it. An **unfiltered** run replaces the
//! record. A **filtered** run (`cargo xtask bench --quick sqlite`) merges:
//! the benchmarks it ran replace their previous figures (matched by
//! criterion id), its metrics replace those of the groups it ran, and
//! everything else — with its own run date — is kept. `redis-benchmark`
//! runs only when there is no filter or a filter mentions `redis`; the
//! previous figures are kept otherwise. Each group's heading on the page
//! says which run measured it, and the Machine section lists every run the
//! page draws on. A benchmark removed or renamed lingers until the next
//! unfiltered run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use crate::json::Json;
use crate::{Result, cargo, ensure_redis, root, run, temp_redis};

/// Criterion settings of the two modes.
const QUICK_ARGS: [&str; 6] = [
    "--warm-up-time",
    "0.5",
    "--measurement-time",
    "1",
    "--sample-size",
    "10",
];
const FULL_ARGS: [&str; 0] = [];

/// `redis-benchmark` settings: concurrency matches the 64-session suites.
const CLIENTS: u32 = 64;
/// How the one-client round-trip test is labelled.
const ONE_CLIENT: &str = "(one client, -c 1)";
const QUICK_REQUESTS: u32 = 100_000;
const FULL_REQUESTS: u32 = 500_000;
const QUICK_RUNS: usize = 3;
const FULL_RUNS: usize = 5;

/// Benchmark ids the targets are computed from.
const MEMORY_TURN: &str = "memory/turn(append 2 + load_recent 20)";
const REDIS_TURN: &str = "redis/turn(append 2 + load_recent 20)";
const BLOB_TURN: &str = "redis/blob baseline turn(GET + parse + push 2 + SET)";
const CONTINUOUS: &str = "redis/64 sessions, continuous calls";
const SELECT: &str = "context-window/select over 10,000 cached messages";
const COUNT_ENGLISH: &str = "count/english";
const COUNT_WORST: [&str; 2] = ["count/worst-a", "count/worst-space"];
/// The default exact counter (the `bpe-openai` feature) is what the
/// counting targets are checked on.
const DEFAULT_COUNTER: &str = "bpe-openai/";
const PIPELINE: &str = "pipeline/execute(offline provider, history 100)";
const SQLITE_TURN: &str = "sqlite/turn(append 2 + load_recent 20)";
const SQLITE_TURN_RELAXED: &str = "sqlite/turn(append 2 + load_recent 20), synchronous=NORMAL";
const SQLITE_CONCURRENT: &str = "sqlite/64 sessions taking turns, durable";
const SQLITE_GROUP: &str = "group commit";
const SQLITE_SINGLE: &str = "one commit per turn (max_batch 1)";
const SQLITE_FLOOR: &str = "sqlite/fdatasync floor/append 4 KiB + fdatasync";
const THREADS: &str = "memory/turns on threads(append 2 + load_recent 20, history 100)";

const DOC: &str = "docs/benchmarks.md";
/// The record the page is rendered from, merged by filtered runs.
const RECORD: &str = "docs/benchmarks.json";
const ANALYSIS: &str = "## Analysis";

/// One criterion benchmark's result (times in nanoseconds).
#[derive(Debug, Clone)]
struct Measured {
    group: String,
    /// The id within the group: function and/or parameter.
    name: String,
    full_id: String,
    median: f64,
    lower: f64,
    upper: f64,
    mad: f64,
    throughput: Option<Throughput>,
    /// When its estimates were written: the order benchmarks ran in.
    written: SystemTime,
    /// The run that measured it ([`RunInfo::date`]).
    run: String,
}

/// A `bench-metric:` line: a measurement other than time, printed by a suite.
#[derive(Debug, Clone)]
struct Metric {
    id: String,
    value: String,
    run: String,
}

#[derive(Debug, Clone, Copy)]
enum Throughput {
    Elements(f64),
    /// Bytes, reported in MiB/s.
    Bytes(f64),
    /// Bytes, reported in MB/s.
    BytesDecimal(f64),
}

impl Measured {
    /// Elements or bytes per second at the median.
    fn per_second(&self) -> Option<f64> {
        let n = match self.throughput? {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n,
        };
        Some(n / (self.median * 1e-9))
    }
}

/// One `redis-benchmark` test over several runs.
#[derive(Debug, Clone, Default)]
struct RedisBench {
    rps: Vec<f64>,
    p50_ms: Vec<f64>,
    usec_per_call: Option<f64>,
}

pub(crate) fn bench(args: &[String]) -> Result {
    let quick = args.iter().any(|a| a == "--quick");
    let filters: Vec<&String> = args.iter().filter(|a| *a != "--quick").collect();
    let criterion_args: &[&str] = if quick { &QUICK_ARGS } else { &FULL_ARGS };
    // A filtered run measures redis-benchmark only when it is about Redis.
    let with_redis_benchmark =
        filters.is_empty() || filters.iter().any(|f| f.to_lowercase().contains("redis"));
    ensure_redis()?;
    let wall = Instant::now();
    let started = SystemTime::now();
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "?".into());
    let load_before = load_average();
    let git = git_describe();

    run(
        "build the benchmarks",
        cargo().args(bench_args()).arg("--no-run"),
    )?;
    let redis_bench = if with_redis_benchmark {
        Some(redis_benchmark(quick)?)
    } else {
        None
    };
    let metrics = run_suites(criterion_args, &filters)?;
    let mut results = criterion_results(started)?;
    if results.is_empty() {
        return Err("no criterion results were written by this run".into());
    }
    let minutes = wall.elapsed().as_secs_f64() / 60.0;
    let run = RunInfo {
        date,
        cpu: cpu(),
        quick,
        filters: filters.iter().map(|s| s.to_string()).collect(),
        criterion_args: criterion_args.iter().map(|s| s.to_string()).collect(),
        minutes,
        load_before,
        load_after: load_average(),
        git,
    };
    for m in &mut results {
        m.run.clone_from(&run.date);
    }
    let measured = results.len();
    // Suites print some metrics outside criterion, whatever the filter: a
    // filtered run keeps only those of the groups it measured.
    let ran: Vec<String> = results.iter().map(|m| format!("{}/", m.group)).collect();
    let current = Record {
        metrics: metrics
            .into_iter()
            .filter(|(id, _)| filters.is_empty() || ran.iter().any(|g| id.starts_with(g.as_str())))
            .map(|(id, value)| Metric {
                id,
                value,
                run: run.date.clone(),
            })
            .collect(),
        redis: redis_bench.map(|b| (run.date.clone(), b)),
        runs: vec![run],
        results,
    };
    let record_path = root().join(RECORD);
    let record = if filters.is_empty() {
        current
    } else {
        match std::fs::read_to_string(&record_path) {
            Ok(text) => {
                let previous = Json::parse(&text)
                    .map_err(|e| e.to_string())
                    .and_then(|j| Record::from_json(&j))
                    .map_err(|e| format!("{}: {e}", record_path.display()))?;
                previous.merge(current)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The first filtered run after the record was introduced:
                // take the earlier figures from the page itself.
                match std::fs::read_to_string(root().join(DOC))
                    .ok()
                    .and_then(|page| import_page(&page))
                {
                    Some(previous) => {
                        eprintln!(
                            "bench: no {RECORD} yet: keeping the other figures of {DOC} \
                             ({} benchmarks)",
                            previous.results.len()
                        );
                        previous.merge(current)
                    }
                    None => {
                        eprintln!(
                            "bench: no {RECORD} yet: the page shows only what this filtered run \
                             measured"
                        );
                        current
                    }
                }
            }
            Err(e) => return Err(format!("{}: {e}", record_path.display())),
        }
    };
    std::fs::write(&record_path, record.to_json().write())
        .map_err(|e| format!("{}: {e}", record_path.display()))?;

    let doc = render(&record);
    let path = root().join(DOC);
    let analysis = std::fs::read_to_string(&path)
        .ok()
        .and_then(|old| {
            old.find(&format!("\n{ANALYSIS}\n"))
                .and_then(|at| old.get(at + 1..).map(str::to_owned))
        })
        .unwrap_or_else(|| {
            format!(
                "{ANALYSIS}\n\nHand-written; `cargo xtask bench` keeps everything from this \
                 heading on.\n"
            )
        });
    std::fs::write(&path, format!("{doc}\n{analysis}"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!(
        "\nbench: wrote {DOC} and {RECORD} ({measured} benchmarks measured now, {} on the page, \
         {minutes:.1} min)",
        record.results.len()
    );
    Ok(())
}

/// `"1.23 µs"` → 1230 (nanoseconds), as [`time`] writes it.
fn parse_time(text: &str) -> Option<f64> {
    let (value, unit) = text.trim().split_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let scale = match unit {
        "ns" => 1.0,
        "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(value * scale)
}

/// The cells of a Markdown table row (`| a | b |` → `["a", "b"]`).
fn row_cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(
        inner
            .split(" | ")
            .map(|c| c.trim().trim_matches('*').replace("\\|", "|"))
            .collect(),
    )
}

/// A [`Record`] read back from a page written before `docs/benchmarks.json`
/// existed (the same layout, to three significant figures): used once, so
/// that the first filtered run keeps the figures already published.
/// Throughputs are kept as the page showed them (elements or bytes per
/// iteration are derived from the rounded median, so not whole numbers).
fn import_page(page: &str) -> Option<Record> {
    let mut machine = BTreeMap::new();
    let mut section = "";
    let mut group: Option<String> = None;
    let mut results = Vec::new();
    let mut metrics = Vec::new();
    let mut redis = BTreeMap::new();
    for line in page.lines() {
        if line.starts_with("## ") {
            section = line.trim_start_matches("## ").trim();
            group = None;
            if section == ANALYSIS.trim_start_matches("## ") {
                break;
            }
            continue;
        }
        if let Some(g) = line.strip_prefix("### ") {
            group = Some(g.trim().trim_matches('`').to_owned());
            continue;
        }
        let Some(cells) = row_cells(line) else {
            continue;
        };
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
            continue;
        }
        match (section, &group, cells.as_slice()) {
            ("Machine", _, [k, v]) => {
                machine.insert(k.clone(), v.clone());
            }
            ("The ceiling: redis-benchmark", _, [test, rps, range, p50, usec]) => {
                let n = |t: &str| t.replace(',', "").trim().parse::<f64>().ok();
                let Some(median) = n(rps) else { continue };
                let (lo, hi) = range.split_once('–').unwrap_or((range, range));
                redis.insert(
                    test.clone(),
                    RedisBench {
                        rps: [n(lo), Some(median), n(hi)].into_iter().flatten().collect(),
                        p50_ms: parse_time(p50).map(|t| t / 1e6).into_iter().collect(),
                        usec_per_call: usec.trim_end_matches(" µs").parse().ok(),
                    },
                );
            }
            ("Results", Some(g), [name, median, interval, mad, rest @ ..])
                if g != "Other measurements" =>
            {
                let (Some(median), Some((lower, upper))) = (
                    parse_time(median),
                    interval
                        .split_once('–')
                        .and_then(|(l, u)| Some((parse_time(l)?, parse_time(u)?))),
                ) else {
                    continue;
                };
                let throughput = rest.first().and_then(|rate| {
                    let per_s = |unit: &str| -> Option<f64> {
                        rate.strip_suffix(unit)?
                            .replace(',', "")
                            .trim()
                            .parse()
                            .ok()
                    };
                    if let Some(r) = per_s(" MiB/s") {
                        Some(Throughput::Bytes(r * 1048576.0 * median * 1e-9))
                    } else if let Some(r) = per_s(" MB/s") {
                        Some(Throughput::BytesDecimal(r * 1e6 * median * 1e-9))
                    } else {
                        per_s("/s").map(|r| Throughput::Elements(r * median * 1e-9))
                    }
                });
                results.push(Measured {
                    group: g.clone(),
                    name: name.clone(),
                    full_id: format!("{g}/{name}"),
                    median,
                    lower,
                    upper,
                    mad: parse_time(mad).unwrap_or(f64::NAN),
                    throughput,
                    written: SystemTime::UNIX_EPOCH,
                    run: String::new(),
                });
            }
            ("Results", Some(g), [id, value])
                if g == "Other measurements" && id != "measurement" =>
            {
                metrics.push(Metric {
                    id: id.clone(),
                    value: value.clone(),
                    run: String::new(),
                });
            }
            _ => {}
        }
    }
    let date = machine.get("date")?.clone();
    let mode = machine.get("run").cloned().unwrap_or_default();
    let run = RunInfo {
        date: date.clone(),
        cpu: machine.get("CPU").cloned().unwrap_or_else(|| "?".into()),
        quick: mode.starts_with("quick"),
        filters: Vec::new(),
        criterion_args: Vec::new(),
        minutes: machine
            .get("took")
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN),
        load_before: machine
            .get("load average (1, 5, 15 min)")
            .and_then(|l| l.split(" before").next())
            .unwrap_or_default()
            .to_owned(),
        load_after: machine
            .get("load average (1, 5, 15 min)")
            .and_then(|l| l.split(", ").last())
            .map(|l| l.trim_end_matches(" after").to_owned())
            .unwrap_or_default(),
        git: machine.get("commit").cloned().unwrap_or_default(),
    };
    for m in &mut results {
        m.run.clone_from(&date);
    }
    for m in &mut metrics {
        m.run.clone_from(&date);
    }
    Some(Record {
        runs: vec![run],
        results,
        metrics,
        redis: (!redis.is_empty()).then_some((date, redis)),
    })
}

/// What the page is rendered from: `docs/benchmarks.json`.
#[derive(Debug, Clone, Default)]
struct Record {
    /// The runs the figures below come from, newest first.
    runs: Vec<RunInfo>,
    results: Vec<Measured>,
    metrics: Vec<Metric>,
    /// `redis-benchmark`, with the run that measured it.
    redis: Option<(String, BTreeMap<String, RedisBench>)>,
}

impl Record {
    /// `newer` (a filtered run) on top of `self`: its benchmarks replace
    /// those with the same id in place (new ones go last), its metrics
    /// replace those of the groups it ran, its redis-benchmark (if any)
    /// replaces the old one. Runs nothing refers to any more are dropped.
    fn merge(self, newer: Record) -> Record {
        let mut results = self.results;
        for m in newer.results.iter() {
            match results.iter_mut().find(|old| old.full_id == m.full_id) {
                Some(old) => *old = m.clone(),
                None => results.push(m.clone()),
            }
        }
        let rerun: Vec<String> = newer
            .results
            .iter()
            .map(|m| format!("{}/", m.group))
            .collect();
        let mut metrics: Vec<Metric> = self
            .metrics
            .into_iter()
            .filter(|old| {
                !rerun.iter().any(|g| old.id.starts_with(g.as_str()))
                    && !newer.metrics.iter().any(|m| m.id == old.id)
            })
            .collect();
        metrics.extend(newer.metrics);
        let redis = newer.redis.or(self.redis);
        let mut runs = newer.runs;
        for run in self.runs {
            if !runs.iter().any(|r| r.date == run.date) {
                runs.push(run);
            }
        }
        let used = |date: &str| {
            results.iter().any(|m| m.run == date)
                || metrics.iter().any(|m| m.run == date)
                || redis.as_ref().is_some_and(|(r, _)| r == date)
        };
        runs.retain(|r| used(&r.date));
        Record {
            runs,
            results,
            metrics,
            redis,
        }
    }

    fn run(&self, date: &str) -> Option<&RunInfo> {
        self.runs.iter().find(|r| r.date == date)
    }

    fn to_json(&self) -> Json {
        let s = |v: &str| Json::Str(v.to_owned());
        let strs = |v: &[String]| Json::Arr(v.iter().map(|x| s(x)).collect());
        let nums = |v: &[f64]| Json::Arr(v.iter().map(|x| Json::Num(*x)).collect());
        let runs = self
            .runs
            .iter()
            .map(|r| {
                Json::Obj(vec![
                    ("date".into(), s(&r.date)),
                    ("cpu".into(), s(&r.cpu)),
                    ("commit".into(), s(&r.git)),
                    ("quick".into(), Json::Bool(r.quick)),
                    ("criterion_args".into(), strs(&r.criterion_args)),
                    ("filters".into(), strs(&r.filters)),
                    ("minutes".into(), Json::Num(r.minutes)),
                    ("load_before".into(), s(&r.load_before)),
                    ("load_after".into(), s(&r.load_after)),
                ])
            })
            .collect();
        let results = self
            .results
            .iter()
            .map(|m| {
                let throughput = match m.throughput {
                    None => Json::Null,
                    Some(Throughput::Elements(n)) => {
                        Json::Obj(vec![("Elements".into(), Json::Num(n))])
                    }
                    Some(Throughput::Bytes(n)) => Json::Obj(vec![("Bytes".into(), Json::Num(n))]),
                    Some(Throughput::BytesDecimal(n)) => {
                        Json::Obj(vec![("BytesDecimal".into(), Json::Num(n))])
                    }
                };
                Json::Obj(vec![
                    ("group".into(), s(&m.group)),
                    ("name".into(), s(&m.name)),
                    ("full_id".into(), s(&m.full_id)),
                    ("median_ns".into(), Json::Num(m.median)),
                    ("lower_ns".into(), Json::Num(m.lower)),
                    ("upper_ns".into(), Json::Num(m.upper)),
                    ("mad_ns".into(), Json::Num(m.mad)),
                    ("throughput".into(), throughput),
                    ("run".into(), s(&m.run)),
                ])
            })
            .collect();
        let metrics = self
            .metrics
            .iter()
            .map(|m| {
                Json::Obj(vec![
                    ("id".into(), s(&m.id)),
                    ("value".into(), s(&m.value)),
                    ("run".into(), s(&m.run)),
                ])
            })
            .collect();
        let redis = match &self.redis {
            None => Json::Null,
            Some((run, tests)) => Json::Obj(vec![
                ("run".into(), s(run)),
                (
                    "tests".into(),
                    Json::Arr(
                        tests
                            .iter()
                            .map(|(test, b)| {
                                Json::Obj(vec![
                                    ("test".into(), s(test)),
                                    ("rps".into(), nums(&b.rps)),
                                    ("p50_ms".into(), nums(&b.p50_ms)),
                                    (
                                        "usec_per_call".into(),
                                        b.usec_per_call.map_or(Json::Null, Json::Num),
                                    ),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ]),
        };
        Json::Obj(vec![
            (
                "about".into(),
                s(
                    "Written by `cargo xtask bench`; docs/benchmarks.md is rendered from it. \
                   Filtered runs merge into it (see xtask/src/bench.rs).",
                ),
            ),
            ("runs".into(), Json::Arr(runs)),
            ("results".into(), Json::Arr(results)),
            ("metrics".into(), Json::Arr(metrics)),
            ("redis_benchmark".into(), redis),
        ])
    }

    fn from_json(j: &Json) -> std::result::Result<Record, String> {
        let text = |v: &Json, key: &str| {
            v.get(key)
                .and_then(Json::str)
                .map(str::to_owned)
                .ok_or_else(|| format!("no {key}"))
        };
        let num = |v: &Json, key: &str| v.get(key).and_then(Json::num).unwrap_or(f64::NAN);
        let strs = |v: &Json, key: &str| -> Vec<String> {
            v.get(key)
                .map(Json::arr)
                .unwrap_or_default()
                .iter()
                .filter_map(|x| x.str().map(str::to_owned))
                .collect()
        };
        let nums = |v: &Json, key: &str| -> Vec<f64> {
            v.get(key)
                .map(Json::arr)
                .unwrap_or_default()
                .iter()
                .filter_map(Json::num)
                .collect()
        };
        let mut runs = Vec::new();
        for r in j.get("runs").map(Json::arr).unwrap_or_default() {
            runs.push(RunInfo {
                date: text(r, "date")?,
                cpu: text(r, "cpu").unwrap_or_else(|_| "?".into()),
                git: text(r, "commit")?,
                quick: r.get("quick") == Some(&Json::Bool(true)),
                criterion_args: strs(r, "criterion_args"),
                filters: strs(r, "filters"),
                minutes: num(r, "minutes"),
                load_before: text(r, "load_before").unwrap_or_default(),
                load_after: text(r, "load_after").unwrap_or_default(),
            });
        }
        let mut results = Vec::new();
        for m in j.get("results").map(Json::arr).unwrap_or_default() {
            let t = m.get("throughput");
            let n = |key: &str| t.and_then(|t| t.get(key)).and_then(Json::num);
            results.push(Measured {
                group: text(m, "group")?,
                name: text(m, "name")?,
                full_id: text(m, "full_id")?,
                median: num(m, "median_ns"),
                lower: num(m, "lower_ns"),
                upper: num(m, "upper_ns"),
                mad: num(m, "mad_ns"),
                throughput: n("Elements")
                    .map(Throughput::Elements)
                    .or_else(|| n("Bytes").map(Throughput::Bytes))
                    .or_else(|| n("BytesDecimal").map(Throughput::BytesDecimal)),
                written: SystemTime::UNIX_EPOCH,
                run: text(m, "run")?,
            });
        }
        let mut metrics = Vec::new();
        for m in j.get("metrics").map(Json::arr).unwrap_or_default() {
            metrics.push(Metric {
                id: text(m, "id")?,
                value: text(m, "value")?,
                run: text(m, "run")?,
            });
        }
        let redis = match j.get("redis_benchmark") {
            Some(r @ Json::Obj(_)) => {
                let mut tests = BTreeMap::new();
                for t in r.get("tests").map(Json::arr).unwrap_or_default() {
                    tests.insert(
                        text(t, "test")?,
                        RedisBench {
                            rps: nums(t, "rps"),
                            p50_ms: nums(t, "p50_ms"),
                            usec_per_call: t.get("usec_per_call").and_then(Json::num),
                        },
                    );
                }
                Some((text(r, "run")?, tests))
            }
            _ => None,
        };
        Ok(Record {
            runs,
            results,
            metrics,
            redis,
        })
    }
}

/// `cargo bench` over every bench target of the workspace (`--bench '*'`
/// leaves out the libraries' libtest harnesses, which reject criterion's
/// options), every feature on so that the Redis suites build.
fn bench_args() -> [&'static str; 5] {
    ["bench", "--workspace", "--all-features", "--bench", "*"]
}

/// Runs the suites, echoing their output and collecting the `bench-metric:`
/// lines that benchmarks measuring something other than time print.
fn run_suites(criterion_args: &[&str], filters: &[&String]) -> Result<Vec<(String, String)>> {
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
fn criterion_results(since: SystemTime) -> Result<Vec<Measured>> {
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

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Json::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_result(new: &Path, since: SystemTime) -> Result<Option<Measured>> {
    let estimates_path = new.join("estimates.json");
    let Ok(written) = std::fs::metadata(&estimates_path).and_then(|m| m.modified()) else {
        return Ok(None);
    };
    if written < since {
        return Ok(None);
    }
    let estimates = read_json(&estimates_path)?;
    let benchmark = read_json(&new.join("benchmark.json"))?;
    let text = |key: &str| benchmark.get(key).and_then(Json::str).map(str::to_owned);
    let bad = |what: &str| format!("{}: no {what}", new.display());
    let number = |path: &[&str]| estimates.at(path).and_then(Json::num);
    let group = text("group_id").ok_or_else(|| bad("group_id"))?;
    let full_id = text("full_id").ok_or_else(|| bad("full_id"))?;
    let name = match (text("function_id"), text("value_str")) {
        (Some(f), Some(v)) => format!("{f}/{v}"),
        (Some(f), None) => f,
        (None, Some(v)) => v,
        (None, None) => full_id.clone(),
    };
    let throughput = benchmark.get("throughput").and_then(|t| {
        let n = |key: &str| t.get(key).and_then(Json::num);
        n("Elements")
            .map(Throughput::Elements)
            .or_else(|| n("Bytes").map(Throughput::Bytes))
            .or_else(|| n("BytesDecimal").map(Throughput::BytesDecimal))
    });
    Ok(Some(Measured {
        group,
        name,
        full_id,
        median: number(&["median", "point_estimate"]).ok_or_else(|| bad("median"))?,
        lower: number(&["median", "confidence_interval", "lower_bound"])
            .ok_or_else(|| bad("median interval"))?,
        upper: number(&["median", "confidence_interval", "upper_bound"])
            .ok_or_else(|| bad("median interval"))?,
        mad: number(&["median_abs_dev", "point_estimate"]).unwrap_or(f64::NAN),
        throughput,
        written,
        run: String::new(),
    }))
}

/// Runs `redis-benchmark -c 64` for RPUSH and LRANGE_100 against a
/// throwaway server, several times, and reads the server's own time per
/// call from `INFO commandstats` afterwards.
fn redis_benchmark(quick: bool) -> Result<BTreeMap<String, RedisBench>> {
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
fn parse_csv(csv: &str) -> Result<Vec<(String, f64, Option<f64>)>> {
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_describe() -> String {
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

#[derive(Debug, Clone)]
struct RunInfo {
    /// When it started (`date -u`, to the minute): also its id in the record.
    date: String,
    /// "2 × model name", from `/proc/cpuinfo`.
    cpu: String,
    quick: bool,
    filters: Vec<String>,
    criterion_args: Vec<String>,
    minutes: f64,
    load_before: String,
    load_after: String,
    git: String,
}

/// "cores × model name".
fn cpu() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "?".to_owned(), |(_, v)| v.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} × {model}")
}

/// The machine and the versions, as table rows.
fn machine(run: &RunInfo) -> Vec<(String, String)> {
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
        "tokio",
        "serde_json",
    ]
    .iter()
    .filter_map(|k| locked(k))
    .collect();
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
        ("memory".into(), memory),
        ("OS".into(), format!("{os}, Linux {kernel}")),
        (
            "load average (1, 5, 15 min)".into(),
            format!("{} before, {} after", run.load_before, run.load_after),
        ),
        (
            "rustc".into(),
            output("rustc", &["-V"]).unwrap_or_else(|| "?".into()),
        ),
        ("redis-server".into(), redis),
        ("crates".into(), crates.join(", ")),
    ]);
    rows
}

/// Nanoseconds, to three significant figures.
fn time(ns: f64) -> String {
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    format!("{} {unit}", sig3(value))
}

fn sig3(x: f64) -> String {
    if !x.is_finite() {
        "?".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A whole number with thousands separators.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn rate(m: &Measured) -> String {
    match (m.throughput, m.per_second()) {
        (Some(Throughput::Elements(_)), Some(r)) => format!("{}/s", thousands(r)),
        (Some(Throughput::Bytes(_)), Some(r)) => format!("{} MiB/s", sig3(r / 1048576.0)),
        (Some(Throughput::BytesDecimal(_)), Some(r)) => format!("{} MB/s", sig3(r / 1e6)),
        _ => String::new(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn median_of(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(f64::NAN),
        n => {
            (v.get(n / 2 - 1).copied().unwrap_or(f64::NAN)
                + v.get(n / 2).copied().unwrap_or(f64::NAN))
                / 2.0
        }
    }
}

/// A target row: what, required, measured, verdict.
struct Target {
    what: String,
    required: String,
    measured: String,
    pass: Option<bool>,
}

impl Target {
    fn missing(what: &str, required: &str, absent: &str) -> Self {
        Target {
            what: what.into(),
            required: required.into(),
            measured: format!("not measured ({absent} did not run)"),
            pass: None,
        }
    }
}

struct Lookup<'a>(&'a [Measured]);

impl<'a> Lookup<'a> {
    fn get(&self, full_id: &str) -> Option<&'a Measured> {
        self.0.iter().find(|m| m.full_id == full_id)
    }
    fn group(&self, group: &str) -> Vec<&'a Measured> {
        self.0.iter().filter(|m| m.group == group).collect()
    }
}

fn flatness(r: &Lookup<'_>, store: &str, group: &str) -> Target {
    let what = format!("{store}: per-turn cost at 10,000 messages ÷ at 10");
    let required = "≤ 1.5×";
    match (
        r.get(&format!("{group}/10")),
        r.get(&format!("{group}/10000")),
    ) {
        (Some(short), Some(long)) => {
            let ratio = long.median / short.median;
            Target {
                what,
                required: required.into(),
                measured: format!(
                    "{} ÷ {} = **{:.2}×**",
                    time(long.median),
                    time(short.median),
                    ratio
                ),
                pass: Some(ratio <= 1.5),
            }
        }
        _ => Target::missing(&what, required, &format!("`{group}`")),
    }
}

fn targets(r: &Lookup<'_>, redis_bench: &BTreeMap<String, RedisBench>) -> Vec<Target> {
    let mut out = vec![
        flatness(r, "memory", MEMORY_TURN),
        flatness(r, "Redis", REDIS_TURN),
        flatness(r, "SQLite, durable (synchronous=FULL)", SQLITE_TURN),
        flatness(
            r,
            "SQLite, relaxed (synchronous=NORMAL)",
            SQLITE_TURN_RELAXED,
        ),
    ];

    let what = "SQLite, 64 sessions taking turns, durable: turns/s with group commit ÷ one \
                commit per turn (max_batch 1, the same 64 tasks)";
    out.push(
        match (
            r.get(&format!("{SQLITE_CONCURRENT}/{SQLITE_GROUP}"))
                .and_then(Measured::per_second),
            r.get(&format!("{SQLITE_CONCURRENT}/{SQLITE_SINGLE}"))
                .and_then(Measured::per_second),
        ) {
            (Some(group), Some(single)) => {
                let x = group / single;
                Target {
                    what: what.into(),
                    required: "≥ 10×".into(),
                    measured: format!(
                        "{}/s ÷ {}/s = **{x:.1}×**",
                        thousands(group),
                        thousands(single)
                    ),
                    pass: Some(x >= 10.0),
                }
            }
            _ => Target::missing(what, "≥ 10×", &format!("`{SQLITE_CONCURRENT}`")),
        },
    );

    let what = "Redis at 10,000 messages: whole-blob baseline turn ÷ our turn";
    out.push(
        match (
            r.get(&format!("{BLOB_TURN}/10000")),
            r.get(&format!("{REDIS_TURN}/10000")),
        ) {
            (Some(blob), Some(ours)) => {
                let x = blob.median / ours.median;
                Target {
                    what: what.into(),
                    required: "≥ 100× faster".into(),
                    measured: format!(
                        "{} ÷ {} = **{x:.0}×**",
                        time(blob.median),
                        time(ours.median)
                    ),
                    pass: Some(x >= 100.0),
                }
            }
            _ => Target::missing(what, "≥ 100× faster", &format!("`{BLOB_TURN}`")),
        },
    );

    let what = "64 sessions: Redis appends/s (ConnectionManager) ÷ redis-benchmark RPUSH -c 64";
    let rpush = redis_bench
        .get("RPUSH")
        .map(|b| median_of(&b.rps))
        .filter(|x| x.is_finite());
    out.push(
        match (
            r.get(&format!("{CONTINUOUS}/append 1 message, ConnectionManager"))
                .and_then(Measured::per_second),
            rpush,
        ) {
            (Some(ours), Some(raw)) => {
                let share = ours / raw;
                Target {
                    what: what.into(),
                    required: "≥ 50 %".into(),
                    measured: format!(
                        "{}/s ÷ {}/s = **{:.0} %**",
                        thousands(ours),
                        thousands(raw),
                        share * 100.0
                    ),
                    pass: Some(share >= 0.5),
                }
            }
            _ => Target::missing(
                what,
                "≥ 50 %",
                &format!("`{CONTINUOUS}` or redis-benchmark"),
            ),
        },
    );

    let what = "memory store: append 2 + load_recent(20), slowest of the four lengths";
    let turns = r.group(MEMORY_TURN);
    out.push(
        match turns.iter().max_by(|a, b| a.median.total_cmp(&b.median)) {
            Some(worst) => Target {
                what: what.into(),
                required: "< 5 µs".into(),
                measured: format!("**{}** (at {})", time(worst.median), worst.name),
                pass: Some(worst.median < 5_000.0),
            },
            None => Target::missing(what, "< 5 µs", &format!("`{MEMORY_TURN}`")),
        },
    );

    let what = "token counting on English, default exact counter (bpe-openai), slowest encoding";
    let english: Vec<&Measured> = r
        .group(COUNT_ENGLISH)
        .into_iter()
        .filter(|m| m.name.starts_with(DEFAULT_COUNTER))
        .collect();
    out.push(
        match english
            .iter()
            .filter_map(|m| Some((m, m.per_second()?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        {
            Some((m, bytes)) => Target {
                what: what.into(),
                required: "≥ 25 MB/s".into(),
                measured: format!("**{} MB/s** ({})", sig3(bytes / 1e6), m.name),
                pass: Some(bytes >= 25e6),
            },
            None => Target::missing(what, "≥ 25 MB/s", &format!("`{COUNT_ENGLISH}`")),
        },
    );

    let what =
        "token counting, worst case (one character repeated): time per byte at 1 MB ÷ at 10 kB";
    let mut worst: Option<(f64, String)> = None;
    for group in COUNT_WORST {
        for long in r.group(group) {
            let Some(counter) = long.name.strip_suffix("/1000000") else {
                continue;
            };
            if !counter.starts_with(DEFAULT_COUNTER) {
                continue;
            }
            if let Some(short) = r.get(&format!("{group}/{counter}/10000")) {
                let ratio = (long.median / 1e6) / (short.median / 1e4);
                if worst.as_ref().is_none_or(|(w, _)| ratio > *w) {
                    worst = Some((ratio, format!("{group}, {counter}")));
                }
            }
        }
    }
    out.push(match worst {
        Some((ratio, which)) => Target {
            what: what.into(),
            required: "linear: ≤ 2×".into(),
            measured: format!("**{ratio:.2}×** (worst: {which})"),
            pass: Some(ratio <= 2.0),
        },
        None => Target::missing(what, "linear: ≤ 2×", "`count/worst-*`"),
    });

    let what = "window selection over 10,000 cached messages, slowest policy";
    out.push(
        match r
            .group(SELECT)
            .into_iter()
            .max_by(|a, b| a.median.total_cmp(&b.median))
        {
            Some(m) => Target {
                what: what.into(),
                required: "< 100 µs".into(),
                measured: format!("**{}** ({})", time(m.median), m.name),
                pass: Some(m.median < 100_000.0),
            },
            None => Target::missing(what, "< 100 µs", &format!("`{SELECT}`")),
        },
    );
    out
}

/// Figures computed from two benchmarks.
fn derived(r: &Lookup<'_>, metrics: &[Metric]) -> Vec<String> {
    let mut out = Vec::new();
    for (store, turn) in [("memory", MEMORY_TURN), ("redis", REDIS_TURN)] {
        if let (Some(exec), Some(turn)) = (
            r.get(&format!("{PIPELINE}/{store}")),
            r.get(&format!("{turn}/100")),
        ) {
            out.push(format!(
                "Pipeline overhead on {store}: `execute` {} − store turn at 100 messages {} = \
                 **{}** per execute ({:.0} % of the execute).",
                time(exec.median),
                time(turn.median),
                time(exec.median - turn.median),
                (exec.median - turn.median) / exec.median * 100.0
            ));
        }
    }
    if let (Some(manager), Some(pool)) = (
        r.get(&format!("{CONTINUOUS}/append 1 message, ConnectionManager"))
            .and_then(Measured::per_second),
        r.get(&format!("{CONTINUOUS}/append 1 message, deadpool Pool"))
            .and_then(Measured::per_second),
    ) {
        out.push(format!(
            "64 sessions appending: ConnectionManager (one multiplexed connection) {}/s, \
             deadpool-redis pool (default size) {}/s: **{:.1}×**.",
            thousands(manager),
            thousands(pool),
            manager / pool
        ));
    }
    for (label, what) in [
        (SQLITE_GROUP, "with group commit"),
        (SQLITE_SINGLE, "with one commit per turn"),
    ] {
        let id = format!("{SQLITE_CONCURRENT}/{label}");
        let Some(turns) = r.get(&id).and_then(Measured::per_second) else {
            continue;
        };
        // The fdatasync measured right after this benchmark, else the
        // floor benchmark of the group.
        let (fsync_ns, source) = match metric(metrics, &format!("{id}/fdatasync right after")) {
            Some(us) => (us * 1e3, "measured right after it"),
            None => match r.get(SQLITE_FLOOR) {
                Some(floor) => (floor.median, "the floor benchmark"),
                None => continue,
            },
        };
        let per_commit = metric(metrics, &format!("{id}/writes per commit"))
            .map_or_else(String::new, |w| {
                format!("; the writer committed {w:.1} writes per transaction")
            });
        out.push(format!(
            "SQLite, 64 sessions durable, {what}: {}/s turns × one fdatasync of {} ({source}) = \
             **{:.1} turns per fsync time**{per_commit}. About 1 means fsync-bound; more means \
             turns share fsyncs.",
            thousands(turns),
            time(fsync_ns),
            turns * fsync_ns * 1e-9
        ));
    }
    if let Some(one) = r.get(&format!("{THREADS}/1 thread")) {
        for two in [
            "2 threads, different sessions",
            "2 threads, one hot session",
        ] {
            if let Some(m) = r.get(&format!("{THREADS}/{two}")) {
                out.push(format!(
                    "Memory store, {two}: {} per turn against {} on one thread: **{:.2}×** the \
                     one-thread throughput.",
                    time(m.median),
                    time(one.median),
                    one.median / m.median
                ));
            }
        }
    }
    out
}

/// The number leading a `bench-metric:` value (`"23.4 µs (…)"` → 23.4).
fn metric(metrics: &[Metric], id: &str) -> Option<f64> {
    metrics
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| m.value.split_whitespace().next()?.parse().ok())
}

/// One turn at each history length, every store side by side.
fn per_turn_table(r: &Lookup<'_>, metrics: &[Metric]) -> Option<String> {
    let stores = [
        ("memory", MEMORY_TURN),
        ("Redis (loopback)", REDIS_TURN),
        ("SQLite, durable", SQLITE_TURN),
        ("SQLite, relaxed", SQLITE_TURN_RELAXED),
    ];
    let present: Vec<(&str, &str)> = stores
        .into_iter()
        .filter(|(_, group)| !r.group(group).is_empty())
        .collect();
    if present.is_empty() {
        return None;
    }
    let mut d = String::from(
        "One turn — `load_recent(20)`, then `append` of 2 guarded by the version it returned — \
         by store and history length (medians; each store's own group below has the intervals \
         and the run that measured it). SQLite durable is `synchronous=FULL` (an fsync per \
         commit), relaxed is `synchronous=NORMAL`.\n\n| messages |",
    );
    for (name, _) in &present {
        let _ = write!(d, " {name} |");
    }
    d.push_str("\n|---|");
    d.push_str(&"---|".repeat(present.len()));
    d.push('\n');
    for len in [10, 100, 1_000, 10_000] {
        let _ = write!(d, "| {} |", thousands(f64::from(len)));
        for (_, group) in &present {
            let mut cell = r
                .get(&format!("{group}/{len}"))
                .map_or_else(|| "—".into(), |m| time(m.median));
            if *group == SQLITE_TURN
                && let Some(us) = metric(metrics, &format!("{group}/{len}/fdatasync right after"))
            {
                let _ = write!(cell, " (fdatasync right after: {})", time(us * 1e3));
            }
            let _ = write!(d, " {cell} |");
        }
        d.push('\n');
    }
    Some(d)
}

/// Our Redis turn and the blob turn at each length, beside the loopback
/// round trip measured right after each and the server's own time.
fn redis_turn_table(r: &Lookup<'_>, metrics: &[Metric]) -> Option<String> {
    let mut rows = String::new();
    for len in [10, 100, 1_000, 10_000] {
        let (Some(ours), Some(blob)) = (
            r.get(&format!("{REDIS_TURN}/{len}")),
            r.get(&format!("{BLOB_TURN}/{len}")),
        ) else {
            continue;
        };
        let us = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| time(v * 1e3));
        let rtt = metric(metrics, &format!("{REDIS_TURN}/{len}/PING round trip"));
        let blob_rtt = metric(metrics, &format!("{BLOB_TURN}/{len}/PING round trip"));
        let _ = writeln!(
            rows,
            "| {} | {} | {} | {} | {} | {} | {} | **{:.1}×** |",
            thousands(f64::from(len)),
            time(ours.median),
            us(rtt),
            rtt.map_or_else(|| "?".into(), |t| format!("{:.1}", ours.median / (t * 1e3))),
            us(metric(
                metrics,
                &format!("{REDIS_TURN}/{len}/server time per evalsha")
            )),
            time(blob.median),
            us(blob_rtt),
            blob.median / ours.median
        );
    }
    (!rows.is_empty()).then(|| {
        format!(
            "Redis per turn beside the loopback round trip (the median of 1,000 PINGs measured \
             right after each benchmark) and the server's own time per script call (`INFO \
             commandstats`, 100 turns). A turn is two calls (`load_recent`, then `append` \
             guarded by the version it returned); when the round trip moves between two rows, \
             so does the turn.\n\n\
             | messages | our turn | round trip | turn ÷ round trip | server time per script \
             call | blob turn | round trip | blob ÷ ours |\n\
             |---|---|---|---|---|---|---|---|\n{rows}"
        )
    })
}

/// "2026-11-26 01:30 UTC, quick run of abc1234" for a run date.
fn run_label(record: &Record, date: &str) -> String {
    match record.run(date) {
        Some(run) => format!(
            "{date}, {} run of {}{}",
            if run.quick { "quick" } else { "full" },
            run.git,
            if run.filters.is_empty() {
                String::new()
            } else {
                format!(", filter `{}`", run.filters.join(" "))
            }
        ),
        None => date.to_owned(),
    }
}

fn render(record: &Record) -> String {
    let results = record.results.as_slice();
    let metrics = record.metrics.as_slice();
    let empty = BTreeMap::new();
    let redis_bench = record.redis.as_ref().map_or(&empty, |(_, b)| b);
    let Some(run) = record.runs.first() else {
        return "# Benchmarks\n\nNo run recorded.\n".into();
    };
    let r = Lookup(results);
    let mut d = String::new();
    let _ = writeln!(d, "# Benchmarks\n");
    let _ = writeln!(
        d,
        "<!-- Written by `cargo xtask bench` from what that run measured. Everything above \
         \"{ANALYSIS}\" is regenerated; the analysis is hand-written and kept. -->\n"
    );
    let mode = if run.quick {
        "a **quick** run (`cargo xtask bench --quick`: fewer, shorter samples — indicative only)"
    } else {
        "a **full** run (`cargo xtask bench`)"
    };
    let source = if record.runs.len() == 1 {
        format!("Figures from {mode} on the machine below")
    } else {
        format!(
            "Figures from {} runs on the machine below — the latest {mode} with the filter \
             `{}`; every other figure is kept from the earlier run named under its group (and \
             listed under [Machine](#machine))",
            record.runs.len(),
            run.filters.join(" ")
        )
    };
    let _ = writeln!(
        d,
        "{source}: medians of criterion's samples, with the \
         95 % confidence interval of the median and the median absolute deviation (MAD) of \
         the samples. The machine is a shared 2-core VM: in-process figures move by a few \
         percent between runs, single-connection Redis figures by up to 3× with the loopback \
         round trip, fsync-bound SQLite figures with the disk (see the tables under the targets \
         and the analysis).\n"
    );

    let _ = writeln!(d, "## Targets\n");
    let _ = writeln!(d, "| target | required | measured | |\n|---|---|---|---|");
    for t in targets(&r, redis_bench) {
        let verdict = match t.pass {
            Some(true) => "PASS",
            Some(false) => "**MISS**",
            None => "—",
        };
        let _ = writeln!(
            d,
            "| {} | {} | {} | {verdict} |",
            cell(&t.what),
            cell(&t.required),
            cell(&t.measured)
        );
    }
    let _ = writeln!(
        d,
        "\nA missed target is explained under [Analysis](#analysis).\n"
    );
    let derived = derived(&r, metrics);
    if !derived.is_empty() {
        let _ = writeln!(d, "Derived:\n");
        for line in derived {
            let _ = writeln!(d, "- {line}");
        }
        let _ = writeln!(d);
    }
    if let Some(table) = per_turn_table(&r, metrics) {
        let _ = writeln!(d, "{table}");
    }
    if let Some(table) = redis_turn_table(&r, metrics) {
        let _ = writeln!(d, "{table}");
    }

    let _ = writeln!(d, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in machine(run) {
        let _ = writeln!(d, "| {} | {} |", cell(&k), cell(&v));
    }
    if record.runs.len() > 1 {
        let _ = writeln!(
            d,
            "\nThe figures on this page come from these runs (`{RECORD}` records which run \
             measured what; a filtered run replaces only what it ran):\n\n\
             | run | CPU | commit | mode | filter | took | load average before, after |\n\
             |---|---|---|---|---|---|---|"
        );
        for r in &record.runs {
            let _ = writeln!(
                d,
                "| {} | {} | {} | {} | {} | {:.1} min | {}; {} |",
                r.date,
                cell(&r.cpu),
                cell(&r.git),
                if r.quick { "quick" } else { "full" },
                if r.filters.is_empty() {
                    "—".to_owned()
                } else {
                    format!("`{}`", cell(&r.filters.join(" ")))
                },
                r.minutes,
                r.load_before,
                r.load_after
            );
        }
    }

    let (requests, runs) = if run.quick {
        (QUICK_REQUESTS, QUICK_RUNS)
    } else {
        (FULL_REQUESTS, FULL_RUNS)
    };
    let _ = writeln!(d, "\n## Reproduce\n");
    let _ = writeln!(
        d,
        "```sh\n\
         cargo xtask bench            # the full run this page quotes; starts its own redis-servers\n\
         cargo xtask bench --quick    # a few minutes: 10 samples of 1 s per benchmark\n\
         cargo xtask bench --quick sqlite   # a criterion filter: re-measures only the matching\n\
         \x20                                  # benchmarks, keeps the rest from docs/benchmarks.json\n\
         # one suite by hand (results in target/criterion/):\n\
         cargo bench -p statestore-memory --bench memory\n\
         cargo bench -p statestore-memory --bench footprint\n\
         cargo bench -p statestore-redis --all-features --bench redis\n\
         cargo bench -p statestore-sqlite --bench sqlite\n\
         cargo bench -p context-window --bench select\n\
         cargo bench -p pipeline --bench execute\n\
         # the ceiling, against any redis-server on PORT:\n\
         redis-benchmark -h 127.0.0.1 -p PORT -c {CLIENTS} -n {requests} -t rpush,lrange_100 --csv\n\
         ```\n"
    );
    let _ = writeln!(
        d,
        "`cargo xtask bench` installs `redis-server` and `redis-tools` when they are missing, \
         builds every bench target (`cargo bench --workspace --all-features --bench '*'`), runs \
         `redis-benchmark` {runs} times against a throwaway server, runs the criterion suites \
         (each Redis suite starts its own throwaway server; the SQLite suite uses files in a temp \
         dir), records `target/criterion/**/new/{{benchmark,estimates}}.json` and the suites' \
         `bench-metric:` lines in `{RECORD}`, and renders this page from that record. A \
         filtered run merges into the record: it replaces the benchmarks it ran and keeps \
         every other figure with the date of the run that measured it; it runs \
         `redis-benchmark` only when a filter mentions `redis`.\n"
    );

    let _ = writeln!(d, "## The ceiling: redis-benchmark\n");
    if redis_bench.is_empty() {
        let _ = writeln!(d, "Not measured.\n");
    } else {
        if let Some((date, _)) = &record.redis {
            let _ = writeln!(d, "_Measured {}._\n", run_label(record, date));
        }
        let _ = writeln!(
            d,
            "`redis-benchmark -c {CLIENTS} -n {} -t rpush,lrange_100`, {runs} runs against one \
             throwaway server (3-byte values; LPUSH is the fill LRANGE_100 needs), each followed \
             by `redis-benchmark -c 1 -n 20000 -t ping_mbulk`: one client's round trip, the floor \
             under every single-connection figure on this page (its p50 latency). \"server time\" is \
             `usec_per_call` from `INFO commandstats`: the time Redis itself spends per command; \
             the rest is network, scheduling and client.\n",
            thousands(f64::from(requests))
        );
        let _ = writeln!(
            d,
            "| test | requests/s (median) | min – max | p50 latency | server time per call |\n\
             |---|---|---|---|---|"
        );
        // RPUSH and LRANGE first: the ceilings the targets use.
        let rank = |test: &str| {
            ["RPUSH", "LRANGE", "LPUSH"]
                .iter()
                .position(|p| test.starts_with(p))
        };
        let mut rows: Vec<(&String, &RedisBench)> = redis_bench.iter().collect();
        rows.sort_by_key(|(test, _)| rank(test).unwrap_or(usize::MAX));
        for (test, b) in rows {
            let min = b.rps.iter().copied().fold(f64::INFINITY, f64::min);
            let max = b.rps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                d,
                "| {} | {} | {} – {} | {} | {} |",
                cell(test),
                thousands(median_of(&b.rps)),
                thousands(min),
                thousands(max),
                time(median_of(&b.p50_ms) * 1e6),
                b.usec_per_call
                    .map_or_else(|| "?".into(), |u| format!("{} µs", sig3(u)))
            );
        }
        let _ = writeln!(d);
    }

    let _ = writeln!(d, "## Results\n");
    let mut groups: Vec<&str> = Vec::new();
    for m in results {
        if !groups.contains(&m.group.as_str()) {
            groups.push(&m.group);
        }
    }
    for group in groups {
        let members = r.group(group);
        let with_rate = members.iter().any(|m| m.throughput.is_some());
        let _ = writeln!(d, "### `{}`\n", group.replace('`', "'"));
        let mut dates: Vec<&str> = Vec::new();
        for m in &members {
            if !dates.contains(&m.run.as_str()) {
                dates.push(&m.run);
            }
        }
        let labels: Vec<String> = dates.iter().map(|date| run_label(record, date)).collect();
        let _ = writeln!(d, "_Measured {}._\n", labels.join("; "));
        let _ = write!(d, "| benchmark | median | 95 % CI of the median | MAD |");
        let _ = writeln!(d, "{}", if with_rate { " throughput |" } else { "" });
        let _ = writeln!(
            d,
            "|---|---|---|---|{}",
            if with_rate { "---|" } else { "" }
        );
        for m in members {
            let _ = write!(
                d,
                "| {} | **{}** | {} – {} | {} |",
                cell(&m.name),
                time(m.median),
                time(m.lower),
                time(m.upper),
                time(m.mad)
            );
            let _ = writeln!(
                d,
                "{}",
                if with_rate {
                    format!(" {} |", rate(m))
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(d);
    }

    if !metrics.is_empty() {
        let _ = writeln!(
            d,
            "### Other measurements\n\nPrinted by the suites as `bench-metric:` lines (see each \
             bench's source for how).\n\n| measurement | value | measured |\n|---|---|---|"
        );
        for m in metrics {
            let _ = writeln!(d, "| {} | {} | {} |", cell(&m.id), cell(&m.value), m.run);
        }
        let _ = writeln!(d);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::{
        Json, Measured, Metric, Record, RedisBench, RunInfo, Throughput, import_page, parse_csv,
        render, sig3, thousands, time,
    };
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn run(date: &str, filters: &[&str]) -> RunInfo {
        RunInfo {
            date: date.into(),
            cpu: "2 × test".into(),
            quick: !filters.is_empty(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
            criterion_args: Vec::new(),
            minutes: 1.5,
            load_before: "0.5 0.4 0.3".into(),
            load_after: "1.0 0.9 0.8".into(),
            git: "abc1234".into(),
        }
    }

    fn measured(group: &str, name: &str, median: f64, run: &str) -> Measured {
        Measured {
            group: group.into(),
            name: name.into(),
            full_id: format!("{group}/{name}"),
            median,
            lower: median * 0.9,
            upper: median * 1.1,
            mad: median / 100.0,
            throughput: Some(Throughput::Elements(64.0)),
            written: SystemTime::UNIX_EPOCH,
            run: run.into(),
        }
    }

    fn metric(id: &str, run: &str) -> Metric {
        Metric {
            id: id.into(),
            value: format!("1.00 ({run})"),
            run: run.into(),
        }
    }

    /// A filtered run replaces what it ran and keeps the rest with its
    /// run; runs nothing refers to any more are dropped.
    #[test]
    fn filtered_runs_merge_by_benchmark() {
        let mut tests = BTreeMap::new();
        tests.insert("RPUSH".to_owned(), RedisBench::default());
        let old = Record {
            runs: vec![run("old", &[]), run("older", &[])],
            results: vec![
                measured("a", "1", 10.0, "old"),
                measured("a", "2", 20.0, "old"),
                measured("b", "1", 30.0, "old"),
            ],
            metrics: vec![metric("a/1/x", "old"), metric("b/1/y", "old")],
            redis: Some(("old".into(), tests)),
        };
        let new = Record {
            runs: vec![run("new", &["a/1"])],
            results: vec![
                measured("a", "1", 11.0, "new"),
                measured("c", "1", 5.0, "new"),
            ],
            metrics: vec![metric("a/1/z", "new")],
            redis: None,
        };
        let merged = old.merge(new);
        let got: Vec<(&str, f64, &str)> = merged
            .results
            .iter()
            .map(|m| (m.full_id.as_str(), m.median, m.run.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a/1", 11.0, "new"),
                ("a/2", 20.0, "old"),
                ("b/1", 30.0, "old"),
                ("c/1", 5.0, "new")
            ]
        );
        let ids: Vec<&str> = merged.metrics.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["b/1/y", "a/1/z"], "group a's old metrics replaced");
        assert_eq!(merged.redis.as_ref().map(|(r, _)| r.as_str()), Some("old"));
        let runs: Vec<&str> = merged.runs.iter().map(|r| r.date.as_str()).collect();
        assert_eq!(runs, ["new", "old"], "newest first; unused runs dropped");

        // The page names the run of each group.
        let page = render(&merged);
        assert!(page.contains("### `a`\n\n_Measured new, quick run of abc1234, filter `a/1`; old, full run of abc1234._"), "{page}");
        assert!(
            page.contains("### `b`\n\n_Measured old, full run of abc1234._"),
            "{page}"
        );
    }

    #[test]
    fn the_record_reads_back_what_it_wrote() {
        let mut tests = BTreeMap::new();
        tests.insert(
            "RPUSH".to_owned(),
            RedisBench {
                rps: vec![1.0, 2.5],
                p50_ms: vec![0.25],
                usec_per_call: Some(0.21),
            },
        );
        let record = Record {
            runs: vec![run("2026-11-26 01:30 UTC", &["sqlite"])],
            results: vec![measured(
                "sqlite/x \"y\"",
                "10",
                1234.5,
                "2026-11-26 01:30 UTC",
            )],
            metrics: vec![metric("sqlite/x/m", "2026-11-26 01:30 UTC")],
            redis: Some(("2026-11-26 01:30 UTC".into(), tests)),
        };
        let text = record.to_json().write();
        let back = Record::from_json(&Json::parse(&text).unwrap()).unwrap();
        assert_eq!(back.to_json().write(), text);
        assert_eq!(back.results[0].median, 1234.5);
        assert_eq!(back.runs[0].filters, ["sqlite"]);
    }

    /// The page written before the record existed is read back into one:
    /// rendering it again gives the same result rows.
    #[test]
    fn imports_a_page_without_a_record() {
        let page = "# Benchmarks\n\n## Machine\n\n| | |\n|---|---|\n\
            | date | 2026-11-25 21:38 UTC |\n| commit | dd8a6f1 |\n\
            | run | full: criterion defaults (3 s warm-up, 5 s measurement, 100 samples) |\n\
            | took | 8.6 min (building the benchmarks included) |\n\
            | CPU | 2 × Intel(R) Xeon(R) Processor |\n\
            | load average (1, 5, 15 min) | 1.37 1.34 1.59 before, 3.59 2.15 1.78 after |\n\n\
            ## The ceiling: redis-benchmark\n\n\
            | test | requests/s (median) | min – max | p50 latency | server time per call |\n\
            |---|---|---|---|---|\n\
            | RPUSH | 121,507 | 116,795 – 127,033 | 271 µs | 0.21 µs |\n\n\
            ## Results\n\n### `memory/turn(append 2 + load_recent 20)`\n\n\
            | benchmark | median | 95 % CI of the median | MAD |\n|---|---|---|---|\n\
            | 10 | **600 ns** | 598 ns – 601 ns | 5.38 ns |\n\
            | 10000 | **665 ns** | 661 ns – 667 ns | 10.3 ns |\n\n\
            ### `redis/64 sessions, one turn each`\n\n\
            | benchmark | median | 95 % CI of the median | MAD | throughput |\n|---|---|---|---|---|\n\
            | ConnectionManager | **4.21 ms** | 4.11 ms – 4.28 ms | 405 µs | 15,191/s |\n\n\
            ### Other measurements\n\n| measurement | value |\n|---|---|\n\
            | memory/bytes per stored message | 319 bytes (text 57 bytes) |\n\n\
            ## Analysis\n\n| not | a result |\n";
        let record = import_page(page).unwrap();
        assert_eq!(record.results.len(), 3);
        assert_eq!(record.metrics.len(), 1);
        assert_eq!(record.runs[0].date, "2026-11-25 21:38 UTC");
        assert_eq!(record.runs[0].load_after, "3.59 2.15 1.78");
        assert_eq!(record.runs[0].cpu, "2 × Intel(R) Xeon(R) Processor");
        let out = render(&record);
        for row in [
            "| 10 | **600 ns** | 598 ns – 601 ns | 5.38 ns |",
            "| 10000 | **665 ns** | 661 ns – 667 ns | 10.3 ns |",
            "| ConnectionManager | **4.21 ms** | 4.11 ms – 4.28 ms | 405 µs | 15,191/s |",
            "| RPUSH | 121,507 | 116,795 – 127,033 | 271 µs | 0.21 µs |",
            "| memory/bytes per stored message | 319 bytes (text 57 bytes) | 2026-11-25 21:38 UTC |",
            "| memory: per-turn cost at 10,000 messages ÷ at 10 | ≤ 1.5× | 665 ns ÷ 600 ns = **1.11×** | PASS |",
        ] {
            assert!(out.contains(row), "missing {row}\n{out}");
        }
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

    #[test]
    fn formats_numbers() {
        assert_eq!(time(571.4), "571 ns");
        assert_eq!(time(1_234.0), "1.23 µs");
        assert_eq!(time(287_000.0), "287 µs");
        assert_eq!(time(12_345_678.0), "12.3 ms");
        assert_eq!(sig3(f64::NAN), "?");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
