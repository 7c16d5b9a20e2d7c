//! `docs/benchmarks.md` from a [`Record`]: the targets, the figures derived
//! from several benchmarks, the machine, how to reproduce, redis-benchmark
//! and a table per criterion group.

use std::fmt::Write as _;

use super::chart::{Chart, Series};
use super::evaluate::{self, Lookup};
use super::format::{cell, median_of, rate, sig3, thousands, time};
use super::machine::machine;
use super::record::{Measured, Metric, Record, RedisBench};
use super::run::ceiling_test;
use super::run::{CLIENTS, FULL_REQUESTS, FULL_RUNS, QUICK_REQUESTS, QUICK_RUNS};
use super::targets::{
    APPEND_MANAGER, BLOB_TURN, BLOB_TURN_MIX, CONTINUOUS, MEMORY_SESSIONS, MEMORY_TURN, PIPELINE,
    POSTGRES_BLOB, POSTGRES_BLOB_MIX, POSTGRES_REALISTIC_MIX, POSTGRES_SESSIONS, POSTGRES_TURN,
    POSTGRES_TURN_MIX, POSTGRES_TURN_RELAXED, REALISTIC_MIX, REDIS_SESSIONS, REDIS_TURN,
    REDIS_TURN_MIX, SESSION_COUNTS, SQLITE_CONCURRENT, SQLITE_FLOOR, SQLITE_GROUP, SQLITE_SESSIONS,
    SQLITE_SINGLE, SQLITE_TURN, SQLITE_TURN_RELAXED, THREADS,
};
use super::{ANALYSIS, RECORD};

/// The history lengths of the per-turn tables and chart.
const HISTORY_LENGTHS: [u32; 5] = [10, 100, 1_000, 10_000, 100_000];

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

/// Figures computed from two benchmarks.
fn derived(r: &Lookup<'_>, metrics: &[Metric]) -> Vec<String> {
    let mut out = Vec::new();
    for (store, turn) in [
        ("memory", MEMORY_TURN),
        ("redis", REDIS_TURN),
        ("sqlite", SQLITE_TURN),
        ("postgres", POSTGRES_TURN),
    ] {
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
        r.get(&format!("{CONTINUOUS}/{APPEND_MANAGER}"))
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
    out.extend(super::postgres::derived(r));
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
        .and_then(|m| evaluate::leading_number(&m.value))
}

/// One turn at each history length, every store side by side.
fn per_turn_table(r: &Lookup<'_>, metrics: &[Metric]) -> Option<String> {
    let stores = [
        ("memory", MEMORY_TURN),
        ("Redis (loopback)", REDIS_TURN),
        ("SQLite, durable", SQLITE_TURN),
        ("SQLite, relaxed", SQLITE_TURN_RELAXED),
        ("PostgreSQL, durable", POSTGRES_TURN),
        ("PostgreSQL, relaxed", POSTGRES_TURN_RELAXED),
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
         commit), relaxed is `synchronous=NORMAL`; PostgreSQL durable is a local server with \
         `fsync` and `synchronous_commit` on (a WAL flush per commit), relaxed is \
         `synchronous_commit=off`.\n\n| messages |",
    );
    for (name, _) in &present {
        let _ = write!(d, " {name} |");
    }
    d.push_str("\n|---|");
    d.push_str(&"---|".repeat(present.len()));
    d.push('\n');
    for len in HISTORY_LENGTHS {
        if present
            .iter()
            .all(|(_, group)| r.get(&format!("{group}/{len}")).is_none())
        {
            continue;
        }
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
    for len in HISTORY_LENGTHS {
        let (Some(ours), Some(blob)) = (
            r.get(&format!("{REDIS_TURN}/{len}")),
            r.get(&format!("{BLOB_TURN}/{len}")),
        ) else {
            continue;
        };
        let us = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| time(v * 1e3));
        let rtt = metric(metrics, &format!("{REDIS_TURN}/{len}/PING round trip"));
        let blob_rtt = metric(metrics, &format!("{BLOB_TURN}/{len}/PING round trip"));
        let server = metric(
            metrics,
            &format!("{REDIS_TURN}/{len}/server time per store call"),
        )
        .or_else(|| {
            // Runs before the store's loads were transactions.
            metric(
                metrics,
                &format!("{REDIS_TURN}/{len}/server time per evalsha"),
            )
        });
        let _ = writeln!(
            rows,
            "| {} | {} | {} | {} | {} | {} | {} | **{:.1}×** |",
            thousands(f64::from(len)),
            time(ours.median),
            us(rtt),
            rtt.map_or_else(|| "?".into(), |t| time(ours.median - 2.0 * t * 1e3)),
            us(server),
            time(blob.median),
            us(blob_rtt),
            blob.median / ours.median
        );
    }
    (!rows.is_empty()).then(|| {
        format!(
            "Redis per turn beside the loopback round trip (the median of 1,000 PINGs measured \
             right after each benchmark) and the server's own time per store call (`INFO \
             commandstats`: an append's `EVALSHA`, a load's `MULTI` and `EXEC`; 100 turns). A \
             turn is two calls (`load_recent`, then `append` guarded by the version it \
             returned), so two round trips; when the round trip moves between two rows, so does \
             the turn.\n\n\
             | messages | our turn | round trip | turn − 2 × round trip | server time per store \
             call | blob turn | round trip | blob ÷ ours |\n\
             |---|---|---|---|---|---|---|---|\n{rows}"
        )
    })
}

/// Our turn and the whole-blob baseline over the realistic message mix, on
/// Redis and on PostgreSQL.
fn realistic_mix_table(r: &Lookup<'_>, metrics: &[Metric]) -> Option<String> {
    let stores = [
        ("Redis", REDIS_TURN_MIX, BLOB_TURN_MIX),
        ("PostgreSQL", POSTGRES_TURN_MIX, POSTGRES_BLOB_MIX),
    ];
    let present: Vec<(&str, &str, &str)> = stores
        .into_iter()
        .filter(|(_, ours, blob)| !r.group(ours).is_empty() || !r.group(blob).is_empty())
        .collect();
    let mut rows = String::new();
    for len in HISTORY_LENGTHS {
        let pairs: Vec<Option<(&Measured, &Measured)>> = present
            .iter()
            .map(|(_, ours, blob)| {
                Some((
                    r.get(&format!("{ours}/{len}"))?,
                    r.get(&format!("{blob}/{len}"))?,
                ))
            })
            .collect();
        if pairs.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(rows, "| {} |", thousands(f64::from(len)));
        for pair in pairs {
            match pair {
                Some((ours, blob)) => {
                    let _ = write!(
                        rows,
                        " {} | {} | **{:.0}×** |",
                        time(ours.median),
                        time(blob.median),
                        blob.median / ours.median
                    );
                }
                None => rows.push_str(" — | — | — |"),
            }
        }
        rows.push('\n');
    }
    let mix = [REALISTIC_MIX, POSTGRES_REALISTIC_MIX]
        .iter()
        .find_map(|id| metrics.iter().find(|m| m.id == *id))
        .map_or("(the mix was not printed by this run)", |m| {
            m.value.as_str()
        });
    let mut header = String::from("| messages |");
    for (store, _, _) in &present {
        let _ = write!(
            header,
            " {store}: our turn | {store}: blob turn | blob ÷ ours |"
        );
    }
    (!rows.is_empty()).then(|| {
        format!(
            "Per turn over a realistic message mix — {mix} — our turn against the whole-blob \
             baseline on the same server and the same messages: on Redis the whole history as \
             one JSON value (GET, parse, push the turn, serialize, SET), on PostgreSQL as one \
             `jsonb` value per session (`SELECT`, parse, push, serialize, `UPDATE`). The tables \
             above use short messages (about 60 B).\n\n{header}\n|---|{}\n{rows}",
            "---|---|---|".repeat(present.len())
        )
    })
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

    let _ = writeln!(d, "## Targets\n");
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
    if let Some(table) = super::postgres::turn_table(&r, &HISTORY_LENGTHS) {
        let _ = writeln!(d, "{table}");
    }
    if let Some(table) = realistic_mix_table(&r, metrics) {
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
