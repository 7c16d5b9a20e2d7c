//! `docs/benchmarks.md` from a [`Record`]: the targets, the figures derived
//! from several benchmarks, the machine, how to reproduce, redis-benchmark
//! and a table per criterion group.

use std::fmt::Write as _;

use super::chart::{Chart, Series};
use super::evaluate::{self, Lookup};
use super::format::{cell, median_of, rate, sig3, thousands, time};
use super::machine::machine;
use super::record::{Measured, Record, RedisBench};
use super::run::ceiling_test;
use super::run::{CLIENTS, FULL_REQUESTS, FULL_RUNS, QUICK_REQUESTS, QUICK_RUNS};
use super::targets::{
    BLOB_TURN, MEMORY_SESSIONS, MEMORY_TURN, POSTGRES_BLOB, POSTGRES_SESSIONS, POSTGRES_TURN,
    POSTGRES_TURN_RELAXED, REDIS_SESSIONS, REDIS_TURN, SESSION_COUNTS, SQLITE_SESSIONS,
    SQLITE_TURN, SQLITE_TURN_RELAXED,
};
use super::turn_tables::{self, HISTORY_LENGTHS};
use super::{ANALYSIS, RECORD};

/// A chart the page embeds: its file under `docs/`, what it shows.
pub(super) struct PageChart {
    pub(super) file: &'static str,
    pub(super) alt: &'static str,
    pub(super) chart: Chart,
}

/// The points of a group whose benchmarks are named by a number: `(that
/// number, y of the benchmark)`.
fn numbered(r: &Lookup<'_>, group: &str, y: fn(&Measured) -> Option<f64>) -> Vec<(f64, f64)> {
    r.group(group)
        .into_iter()
        .filter_map(|m| Some((m.name.parse::<f64>().ok()?, y(m)?)))
        .collect()
}

/// The page's charts, from the same record as its tables.
pub(super) fn charts(r: &Lookup<'_>) -> Vec<PageChart> {
    let turn_series = [
        ("memory", MEMORY_TURN),
        ("SQLite, durable", SQLITE_TURN),
        ("SQLite, relaxed", SQLITE_TURN_RELAXED),
        ("Redis (loopback)", REDIS_TURN),
        ("PostgreSQL, durable (loopback)", POSTGRES_TURN),
        ("PostgreSQL, relaxed (loopback)", POSTGRES_TURN_RELAXED),
        ("whole-blob baseline (Redis)", BLOB_TURN),
        ("whole-jsonb baseline (PostgreSQL)", POSTGRES_BLOB),
    ];
    let turn = Chart {
        title: "One turn (load_recent 20 + append 2) against history length".into(),
        x_label: "messages in the session".into(),
        y_label: "time per turn (median)".into(),
        x_tick: thousands,
        // Decades: "1 µs", not "1.00 µs".
        y_tick: |ns| time(ns).replace(".00 ", " ").replace(".0 ", " "),
        series: turn_series
            .into_iter()
            .map(|(name, group)| Series {
                name: name.into(),
                points: numbered(r, group, |m| Some(m.median)),
            })
            .collect(),
    };
    let mut session_series: Vec<Series> = [
        ("memory", MEMORY_SESSIONS),
        ("SQLite, durable", SQLITE_SESSIONS),
        ("Redis (loopback)", REDIS_SESSIONS),
        ("PostgreSQL, durable (loopback)", POSTGRES_SESSIONS),
    ]
    .into_iter()
    .map(|(name, group)| Series {
        name: name.into(),
        points: numbered(r, group, Measured::per_second),
    })
    .collect();
    session_series.push(Series {
        name: "Redis ceiling: redis-benchmark RPUSH/s ÷ 2".into(),
        points: SESSION_COUNTS
            .iter()
            .filter_map(|&n| {
                let bench = r.redis.get(&ceiling_test(n))?;
                Some((f64::from(n), median_of(&bench.rps) / 2.0))
            })
            .collect(),
    });
    let sessions = Chart {
        title: "Turns per second against concurrent sessions".into(),
        x_label: "sessions taking a turn at once".into(),
        y_label: "turns per second".into(),
        x_tick: thousands,
        y_tick: |v| format!("{}/s", thousands(v)),
        series: session_series,
    };
    vec![
        PageChart {
            file: "bench-turn.svg",
            alt: "Per-turn latency against history length, log-log",
            chart: turn,
        },
        PageChart {
            file: "bench-sessions.svg",
            alt: "Turns per second against concurrent sessions, log-log",
            chart: sessions,
        },
    ]
}

/// "2026-11-26 01:30 UTC, quick run of abc1234" for a run date.
pub(super) fn run_label(record: &Record, date: &str) -> String {
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

pub(super) fn render(record: &Record) -> String {
    let results = record.results.as_slice();
    let metrics = record.metrics.as_slice();
    let r = Lookup::of(record);
    let redis_bench = r.redis;
    // The latest criterion run: a `--server-work` run measures only its
    // own table, so it is not the run the page describes.
    let Some(run) = record
        .runs
        .iter()
        .find(|r| !r.is_server_work())
        .or_else(|| record.runs.first())
    else {
        return "# Benchmarks\n\nNo run recorded.\n".into();
    };
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
        let filter = if run.filters.is_empty() {
            String::new()
        } else {
            format!(" with the filter `{}`", run.filters.join(" "))
        };
        format!(
            "Figures from {} runs on the machine below — the latest {mode}{filter}; every \
             other figure is kept from the earlier run named under its group (and listed under \
             [Machine](#machine))",
            record.runs.len(),
        )
    };
    let source = if !run.quick && record.runs.iter().any(|r| r.quick) {
        format!(
            "{source}. Some figures come from a **quick** run (fewer, shorter samples — \
             indicative only): each group's heading says which"
        )
    } else {
        source
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

    let _ = writeln!(d, "## Targets\n\n{}\n", super::targets::ORDER);
    let _ = writeln!(d, "| target | required | measured | |\n|---|---|---|---|");
    for t in evaluate::evaluate(&r) {
        let verdict = match t.pass {
            Some(true) => "PASS",
            Some(false) => "**MISS**",
            None => "—",
        };
        let _ = writeln!(
            d,
            "| {} | {} | {} | {verdict} |",
            cell(t.what),
            cell(t.required),
            cell(&t.measured)
        );
    }
    let _ = writeln!(
        d,
        "\nA missed target is explained under [Analysis](#analysis).\n"
    );
    let derived = super::derived::lines(&r);
    if !derived.is_empty() {
        let _ = writeln!(d, "Derived:\n");
        for line in derived {
            let _ = writeln!(d, "- {line}");
        }
        let _ = writeln!(d);
    }
    if let Some(table) = turn_tables::per_turn_table(&r) {
        let _ = writeln!(d, "{table}");
    }
    if let Some(table) = turn_tables::redis_turn_table(&r) {
        let _ = writeln!(d, "{table}");
    }
    if let Some(table) = super::postgres::turn_table(&r, &HISTORY_LENGTHS) {
        let _ = writeln!(d, "{table}");
    }
    if let Some(table) = turn_tables::realistic_mix_table(&r) {
        let _ = writeln!(d, "{table}");
    }
    if let Some(section) = super::list::section(&r) {
        let _ = writeln!(d, "{section}");
    }
    let _ = writeln!(
        d,
        "## Charts\n\nDrawn by `cargo xtask bench` from the same record as the tables (log-log; \
         a series with no figure in the record is left out and named under the legend). The \
         ceiling is `redis-benchmark -t rpush -c N` at each session count, halved because a \
         turn is two store calls.\n"
    );
    for c in charts(&r) {
        let (_, missing) = c.chart.svg();
        let _ = writeln!(d, "![{}]({})\n", c.alt, c.file);
        if !missing.is_empty() {
            let _ = writeln!(
                d,
                "_Not in the record, left out: {}._\n",
                missing.join("; ")
            );
        }
    }
    if let Some(section) = super::crypto::section(&r) {
        let _ = writeln!(d, "{section}");
    }
    if let Some(section) = super::server_work::section(record) {
        let _ = writeln!(d, "{section}");
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
         cargo xtask bench --server-work    # instructions per call in redis-server (callgrind)\n\
         # one suite by hand (results in target/criterion/):\n\
         cargo bench -p statestore-memory --bench memory\n\
         cargo bench -p statestore-memory --bench footprint\n\
         cargo bench -p statestore-redis --all-features --bench redis\n\
         cargo bench -p statestore-sqlite --bench sqlite\n\
         cargo bench -p statestore-postgres --bench postgres\n\
         cargo bench -p context-window --bench select\n\
         cargo bench -p pipeline --bench execute\n\
         # the ceiling, against any redis-server on PORT:\n\
         redis-benchmark -h 127.0.0.1 -p PORT -c {CLIENTS} -n {requests} -t rpush,lrange_100 --csv\n\
         ```\n"
    );
    let _ = writeln!(
        d,
        "`cargo xtask bench` installs `redis-server` and `redis-tools` (and Debian's \
         `postgresql`) when they are missing, \
         builds every bench target (`cargo bench --workspace --all-features --bench '*'`), runs \
         `redis-benchmark` {runs} times against a throwaway server, runs the criterion suites \
         (each Redis suite starts its own throwaway server, each PostgreSQL suite its own cluster \
         on loopback with `fsync` on, through `pg-test-server`; the SQLite suite uses files in a \
         temp dir), records `target/criterion/**/new/{{benchmark,estimates}}.json` and the suites' \
         `bench-metric:` lines in `{RECORD}`, and renders this page and its charts from that \
         record. Criterion's defaults (100 samples over 5 s after 3 s of warm-up) apply \
         except where a benchmark's iteration is long: the turn benchmarks at 100,000 \
         messages, the whole-blob turns over 4 MiB or more of JSON (100,000 short messages, \
         10,000 of the realistic mix) and the durable SQLite groups take 10 or 100 flat \
         samples, so that a full run takes about half an hour on this machine (building included). A \
         filtered run merges into the record: it replaces the benchmarks it ran and keeps \
         every other figure with the date of the run that measured it; it runs \
         `redis-benchmark` only when a filter mentions `redis`.\n"
    );

    let _ = writeln!(d, "## The ceiling: redis-benchmark\n");
    if redis_bench.is_empty() {
        let _ = writeln!(d, "Not measured.\n");
    } else {
        if let Some(redis) = &record.redis {
            let _ = writeln!(d, "_Measured {}._\n", run_label(record, &redis.run));
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
