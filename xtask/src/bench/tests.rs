//! The record, its merge and the page, tested together on small records.

use super::import::import_page;
use super::record::{Host, Measured, Metric, Record, RedisBench, RedisRun, RunInfo, Throughput};
use super::render::render;
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
        host: None,
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
        redis: Some(RedisRun {
            run: "old".into(),
            tests,
        }),
        server_work: None,
    };
    let new = Record {
        runs: vec![run("new", &["a/1"])],
        results: vec![
            measured("a", "1", 11.0, "new"),
            measured("c", "1", 5.0, "new"),
        ],
        metrics: vec![metric("a/1/z", "new")],
        redis: None,
        server_work: None,
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
    assert_eq!(merged.redis.as_ref().map(|r| r.run.as_str()), Some("old"));
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
    let mut seventeen_digits = measured("a", "b", 2029.9999999999998, "2026-11-26 01:30 UTC");
    seventeen_digits.throughput = Some(Throughput::Bytes(0.9997204770000001));
    seventeen_digits.mad = f64::NAN;
    // The machine as the run recorded it, not the one rendering the page.
    let mut with_host = run("2026-11-26 01:30 UTC", &["sqlite"]);
    with_host.host = Some(Host {
        memory: "1.0 GiB".into(),
        os: "Plan 9, Linux 0.1".into(),
        rustc: "rustc 1.0.0".into(),
        redis_server: "1.0".into(),
        postgres: Some("15.0".into()),
        crates: "criterion 0.0.1".into(),
    });
    let record = Record {
        runs: vec![with_host],
        results: vec![
            measured("sqlite/x \"y\"", "10", 1234.5, "2026-11-26 01:30 UTC"),
            seventeen_digits,
        ],
        metrics: vec![metric("sqlite/x/m", "2026-11-26 01:30 UTC")],
        redis: Some(RedisRun {
            run: "2026-11-26 01:30 UTC".into(),
            tests,
        }),
        server_work: None,
    };
    let text = record.to_json().unwrap();
    let back = Record::from_json(&text).unwrap();
    assert_eq!(back.to_json().unwrap(), text);
    assert_eq!(back.results[0].median, 1234.5);
    // Figures come back bit for bit, and NaN (written as null) as NaN.
    assert_eq!(back.results[1].median, 2029.9999999999998);
    assert!(matches!(
        back.results[1].throughput,
        Some(Throughput::Bytes(n)) if n == 0.9997204770000001
    ));
    assert!(back.results[1].mad.is_nan());
    assert!(text.contains("\"mad_ns\": null"));
    assert_eq!(back.runs[0].filters, ["sqlite"]);
    assert_eq!(back.runs[0].host, record.runs[0].host);
    let page = render(&back);
    assert!(page.contains("| OS | Plan 9, Linux 0.1 |"), "{page}");
    assert!(page.contains("| crates | criterion 0.0.1 |"), "{page}");
    assert!(page.contains("| PostgreSQL | 15.0 |"), "{page}");
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

/// `docs/benchmarks.json` as committed is in the format this code
/// writes: reading it and writing it back changes nothing, and the
/// page renders from it.
#[test]
fn the_committed_record_reads_and_writes_unchanged() {
    let path = crate::root().join(super::RECORD);
    let text = std::fs::read_to_string(&path).unwrap();
    let record = Record::from_json(&text).unwrap();
    assert!(!record.results.is_empty());
    // Not assert_eq: the record is long.
    assert!(
        record.to_json().unwrap() == text,
        "{} is not what the code would write from it",
        path.display()
    );
}

/// A filtered run keeps the metrics of the groups it ran and those its
/// filter names, alternative by alternative.
#[test]
fn filtered_runs_keep_the_metrics_they_name() {
    use super::metric_kept;
    let footprint = "memory/overhead per stored message/100000 messages in 1 session (heap)";
    let evalsha = "redis/turn(append 2 + load_recent 20)/10/server time per evalsha";
    let ran = ["context-window/select over 10,000 cached messages/".to_owned()];
    let filters = |f: &str| vec![f.to_owned()];
    assert!(metric_kept(footprint, &[], &ran));
    assert!(metric_kept(
        footprint,
        &filters("select|stored message"),
        &ran
    ));
    assert!(!metric_kept(
        evalsha,
        &filters("select|stored message"),
        &ran
    ));
    assert!(!metric_kept(footprint, &filters("select"), &ran));
    assert!(!metric_kept(footprint, &filters("select|"), &ran));
    let redis_ran = ["redis/turn(append 2 + load_recent 20)/".to_owned()];
    assert!(metric_kept(evalsha, &filters("redis/turn"), &redis_ran));
}

/// The page embeds both charts, drawn from the record's turn and sessions
/// groups (with the redis-benchmark ceilings), names what is missing, and
/// states the realistic mix beside its table.
#[test]
fn the_page_embeds_charts_from_the_record() {
    use super::chart::Series;
    use super::evaluate::Lookup;
    use super::render::charts;
    use super::targets::{
        BLOB_TURN_MIX, MEMORY_SESSIONS, MEMORY_TURN, REALISTIC_MIX, REDIS_TURN_MIX,
    };
    let mut tests = BTreeMap::new();
    for (test, rps) in [("RPUSH", 200_000.0), ("RPUSH (-c 1)", 20_000.0)] {
        tests.insert(
            test.to_owned(),
            RedisBench {
                rps: vec![rps],
                ..RedisBench::default()
            },
        );
    }
    let record = Record {
        runs: vec![run("now", &[])],
        results: vec![
            measured(MEMORY_TURN, "10", 600.0, "now"),
            measured(MEMORY_TURN, "100000", 700.0, "now"),
            measured(MEMORY_SESSIONS, "1", 1_000.0, "now"),
            measured(REDIS_TURN_MIX, "1000", 300_000.0, "now"),
            measured(BLOB_TURN_MIX, "1000", 60_000_000.0, "now"),
        ],
        metrics: vec![Metric {
            id: REALISTIC_MIX.into(),
            value: "user 300 B, assistant 1.2 KB".into(),
            run: "now".into(),
        }],
        redis: Some(RedisRun {
            run: "now".into(),
            tests,
        }),
        server_work: None,
    };
    let page = render(&record);
    assert!(page.contains("![Per-turn latency against history length, log-log](bench-turn.svg)"));
    assert!(page.contains("(bench-sessions.svg)"));
    assert!(page.contains("realistic message mix — user 300 B, assistant 1.2 KB —"));
    assert!(page.contains("| 1,000 | 300 µs | 60.0 ms | **200×** |"));
    assert!(
        page.contains("| 100,000 | 700 ns |"),
        "the turn table reaches 100,000"
    );
    let charts = charts(&Lookup::of(&record));
    let points = |file: &str, series: &str| -> Vec<(f64, f64)> {
        let chart = charts.iter().find(|c| c.file == file).expect("the chart");
        let s: &Series = chart
            .chart
            .series
            .iter()
            .find(|s| s.name.starts_with(series))
            .expect("the series");
        s.points.clone()
    };
    assert_eq!(
        points("bench-turn.svg", "memory"),
        vec![(10.0, 600.0), (100_000.0, 700.0)]
    );
    // 64 turns (the test throughput) in 1 µs.
    let memory = points("bench-sessions.svg", "memory");
    assert!(
        matches!(memory.as_slice(), [(x, y)] if *x == 1.0 && (y - 64e6).abs() < 1.0),
        "{memory:?}"
    );
    // The ceiling is RPUSH/s halved, at -c 1 and at -c 64.
    assert_eq!(
        points("bench-sessions.svg", "Redis ceiling"),
        vec![(1.0, 10_000.0), (64.0, 100_000.0)]
    );
    let (_, missing) = charts
        .iter()
        .find(|c| c.file == "bench-turn.svg")
        .expect("the turn chart")
        .chart
        .svg();
    assert!(
        missing.iter().any(|m| m == "Redis (loopback)"),
        "{missing:?}"
    );
}

/// The PostgreSQL suite's figures: its three targets (a flat turn, ≥ 50×
/// the whole-jsonb baseline on the realistic mix, durable commits ≥ 50 %
/// of `synchronous_commit=off`), its column in the per-turn table, its
/// own turn table, its half of the realistic-mix table, the group-commit
/// lines and the charts' series.
#[test]
fn postgres_figures_reach_the_targets_tables_and_charts() {
    use super::evaluate::{Lookup, evaluate};
    use super::render::charts;
    use super::targets::{
        MEMORY_TURN, POSTGRES_BLOB, POSTGRES_BLOB_MIX, POSTGRES_CONCURRENT, POSTGRES_REALISTIC_MIX,
        POSTGRES_SESSIONS, POSTGRES_SYNC_OFF, POSTGRES_SYNC_ON, POSTGRES_TURN, POSTGRES_TURN_MIX,
    };
    let rated = |group: &str, name: &str, median: f64| {
        let mut m = measured(group, name, median, "now");
        m.throughput = Some(Throughput::Elements(64.0));
        m
    };
    let metric = |id: String, value: &str| Metric {
        id,
        value: value.into(),
        run: "now".into(),
    };
    let record = Record {
        runs: vec![run("now", &["postgres"])],
        results: vec![
            measured(MEMORY_TURN, "10", 600.0, "now"),
            measured(POSTGRES_TURN, "10", 400_000.0, "now"),
            measured(POSTGRES_TURN, "100000", 500_000.0, "now"),
            measured(POSTGRES_BLOB, "10", 450_000.0, "now"),
            measured(POSTGRES_TURN_MIX, "10000", 1_000_000.0, "now"),
            measured(POSTGRES_BLOB_MIX, "10000", 40_000_000.0, "now"),
            // 64 turns in 20 ms (3,200/s) against 10 ms (6,400/s).
            rated(POSTGRES_CONCURRENT, POSTGRES_SYNC_ON, 20e6),
            rated(POSTGRES_CONCURRENT, POSTGRES_SYNC_OFF, 10e6),
            rated(POSTGRES_SESSIONS, "64", 20e6),
        ],
        metrics: vec![
            metric(
                format!("{POSTGRES_TURN}/10/SELECT 1 round trip"),
                "100.0 µs (median)",
            ),
            metric(
                format!("{POSTGRES_TURN}/10/fdatasync right after"),
                "150.0 µs (median)",
            ),
            metric(
                format!("{POSTGRES_CONCURRENT}/{POSTGRES_SYNC_ON}/appends per WAL flush"),
                "7.50 (…)",
            ),
            metric(
                format!("{POSTGRES_CONCURRENT}/{POSTGRES_SYNC_ON}/mean WAL flush"),
                "2000.0 µs (…)",
            ),
            metric(
                POSTGRES_REALISTIC_MIX.into(),
                "user 300 B, assistant 1.2 KB",
            ),
        ],
        redis: None,
        server_work: None,
    };
    let r = Lookup::of(&record);
    let verdict = |what: &str| {
        evaluate(&r)
            .into_iter()
            .find(|v| v.what.starts_with(what))
            .unwrap()
    };
    let flat = verdict("PostgreSQL, durable (fsync, synchronous_commit=on): per-turn");
    assert_eq!(flat.measured, "500 µs ÷ 400 µs = **1.25×**");
    assert_eq!(flat.pass, Some(true));
    let blob = verdict("PostgreSQL, realistic message mix, 10,000 messages");
    assert_eq!(blob.measured, "40.0 ms ÷ 1.00 ms = **40×**");
    assert_eq!(blob.pass, Some(false));
    let group_commit = verdict("PostgreSQL, 64 sessions taking turns");
    assert_eq!(group_commit.measured, "3,200/s ÷ 6,400/s = **50 %**");
    assert_eq!(group_commit.pass, Some(true), "the bound is inclusive");

    let page = render(&record);
    assert!(
        page.contains("| messages | memory | PostgreSQL, durable |"),
        "the per-turn table has a PostgreSQL column: {page}"
    );
    assert!(
        page.contains("| 10 | 600 ns | 400 µs (fdatasync right after: 150 µs) |"),
        "the durable turn beside its flush: {page}"
    );
    assert!(
        page.contains("| 10 | 400 µs | 150 µs | 100 µs | — | 450 µs | **1.1×** |"),
        "{page}"
    );
    assert!(page.contains("realistic message mix — user 300 B, assistant 1.2 KB —"));
    assert!(
        page.contains("| messages | PostgreSQL: our turn | PostgreSQL: blob turn | blob ÷ ours |"),
        "{page}"
    );
    assert!(
        page.contains("| 10,000 | 1.00 ms | 40.0 ms | **40×** |"),
        "{page}"
    );
    assert!(
        page.contains(
            "`synchronous_commit=on`: **3,200/s** turns, 7.5 appends per WAL flush (a flush \
             takes 2.00 ms on average)."
        ),
        "{page}"
    );
    assert!(page.contains("reach **50 %** of the turns/s"), "{page}");
    let charts = charts(&r);
    let series = |file: &str, name: &str| {
        charts
            .iter()
            .find(|c| c.file == file)
            .and_then(|c| c.chart.series.iter().find(|s| s.name == name))
            .map(|s| s.points.clone())
            .unwrap()
    };
    assert_eq!(
        series("bench-turn.svg", "PostgreSQL, durable (loopback)"),
        vec![(10.0, 400_000.0), (100_000.0, 500_000.0)]
    );
    assert_eq!(
        series("bench-turn.svg", "whole-jsonb baseline (PostgreSQL)"),
        vec![(10.0, 450_000.0)]
    );
    assert_eq!(
        series("bench-sessions.svg", "PostgreSQL, durable (loopback)"),
        vec![(64.0, 3_200.0)]
    );
}

/// The list groups (issue 23): per store, the slowest page against 5 ms
/// and the worse page's 100,000 ÷ 1,000 against 1.5×; the sidebar table
/// has a column per store that ran, a ratio row per page and the peer
/// figure; a store that did not run reads "not measured".
#[test]
fn list_figures_reach_the_targets_and_the_sidebar_table() {
    use super::evaluate::{Lookup, evaluate};
    use super::targets::{MEMORY_LIST, POSTGRES_LIST, SQLITE_LIST};
    let record = Record {
        runs: vec![run("now", &["list"])],
        results: vec![
            measured(MEMORY_LIST, "first page/1000", 20_000.0, "now"),
            measured(MEMORY_LIST, "deep page/1000", 20_000.0, "now"),
            measured(MEMORY_LIST, "first page/100000", 22_000.0, "now"),
            measured(MEMORY_LIST, "deep page/100000", 24_000.0, "now"),
            measured(SQLITE_LIST, "first page/1000", 1_000_000.0, "now"),
            measured(SQLITE_LIST, "deep page/1000", 1_000_000.0, "now"),
            measured(SQLITE_LIST, "first page/100000", 1_200_000.0, "now"),
            measured(SQLITE_LIST, "deep page/100000", 6_000_000.0, "now"),
        ],
        metrics: Vec::new(),
        redis: None,
        server_work: None,
    };
    let r = Lookup::of(&record);
    let verdict = |what: &str| {
        evaluate(&r)
            .into_iter()
            .find(|v| v.what.starts_with(what))
            .unwrap()
    };
    let page = verdict("memory `list`: a page of 50");
    assert_eq!(page.measured, "**24.0 µs** (deep page/100000)");
    assert_eq!(page.pass, Some(true));
    let flat = verdict("memory `list`: a page at 100,000");
    assert_eq!(
        flat.measured,
        "**1.20×** (worst: memory/list(recent first, page of 50), deep page)"
    );
    assert_eq!(flat.pass, Some(true));
    let page = verdict("SQLite `list`: a page of 50");
    assert_eq!(page.measured, "**6.00 ms** (deep page/100000)");
    assert_eq!(page.pass, Some(false));
    let flat = verdict("SQLite `list`: a page at 100,000");
    assert!(flat.measured.starts_with("**6.00×**"), "{}", flat.measured);
    assert_eq!(flat.pass, Some(false));
    let absent = verdict("PostgreSQL `list`: a page of 50");
    assert_eq!(absent.pass, None);
    assert!(
        absent.measured.contains(POSTGRES_LIST),
        "{}",
        absent.measured
    );

    let page = render(&record);
    assert!(
        page.contains("| page | sessions in the store | memory | SQLite |\n"),
        "only the stores that ran have a column: {page}"
    );
    assert!(page.contains("| | 100,000 | 22.0 µs | 1.20 ms |"), "{page}");
    assert!(
        page.contains("| | 100,000 ÷ 1,000 | **1.10×** | **1.20×** |"),
        "{page}"
    );
    assert!(
        page.contains("| | 100,000 ÷ 1,000 | **1.20×** | **6.00×** |"),
        "{page}"
    );
    assert!(
        page.contains("ADK's `list_sessions` takes **74 s**"),
        "{page}"
    );
    assert!(
        page.contains("(SQLite, 6.00 ms), about **1.20 s**"),
        "{page}"
    );
}

/// A full criterion run must measure every target but those of `cargo
/// xtask bench --server-work`, which it does not run.
#[test]
fn a_full_run_need_not_measure_the_server_work() {
    let unmeasured = super::not_measured(&Record::default());
    assert!(unmeasured.iter().any(|w| w.starts_with("window selection")));
    assert!(
        !unmeasured.iter().any(|w| w.contains("callgrind")),
        "{unmeasured:?}"
    );
}
