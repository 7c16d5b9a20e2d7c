//! The targets' figures against made-up results.

use super::{Lookup, Pass, TARGETS, Target, evaluate};
use crate::bench::record::{Measured, Metric, RedisBench, ServerWorkRow, Throughput};
use crate::bench::targets::{
    BLOB_TURN, BLOB_TURN_MIX, REDIS_LOAD, REDIS_RAW, REDIS_TURN, REDIS_TURN_MIX,
    SERVER_WORK_EXECUTE, SERVER_WORK_TURN, SQLITE_TURN, SQLITE_TURN_RELAXED,
};
use std::collections::BTreeMap;
use std::time::SystemTime;

fn measured(group: &str, name: &str, median: f64, throughput: Option<Throughput>) -> Measured {
    Measured {
        group: group.into(),
        name: name.into(),
        full_id: format!("{group}/{name}"),
        median,
        lower: median,
        upper: median,
        mad: 0.0,
        throughput,
        written: SystemTime::UNIX_EPOCH,
        run: String::new(),
    }
}

fn target(what: &str) -> &'static Target {
    TARGETS.iter().find(|t| t.what.starts_with(what)).unwrap()
}

/// The stated threshold and the checked one agree in direction.
#[test]
fn every_row_states_its_threshold() {
    for t in TARGETS {
        let sign = match t.pass {
            Pass::AtMost(_) => "≤",
            Pass::Below(_) => "<",
            Pass::AtLeast(_) => "≥",
        };
        assert!(t.required.contains(sign), "{}: {}", t.what, t.required);
    }
    let mut whats: Vec<&str> = TARGETS.iter().map(|t| t.what).collect();
    whats.sort_unstable();
    whats.dedup();
    assert_eq!(whats.len(), TARGETS.len(), "two targets with one name");
}

#[test]
fn ratios_pass_miss_and_name_what_did_not_run() {
    let group = "memory/turn(append 2 + load_recent 20)";
    let results = [
        measured(group, "10", 600.0, None),
        measured(group, "10000", 1_000.0, None),
    ];
    let redis = BTreeMap::new();
    let r = Lookup {
        results: &results,
        redis: &redis,
        metrics: &[],
        server_work: &[],
    };
    let flat = target("memory: per-turn").evaluate(&r);
    assert_eq!(flat.measured, "1.00 µs ÷ 600 ns = **1.67×**");
    assert_eq!(
        (flat.pass, flat.figure.map(|x| x > 1.6)),
        (Some(false), Some(true))
    );

    let share = target("64 sessions: Redis appends/s").evaluate(&r);
    assert_eq!(share.pass, None);
    assert_eq!(
        share.measured,
        "not measured (`redis/64 sessions, continuous calls` and redis-benchmark did not run)"
    );
}

#[test]
fn the_worst_of_a_group_is_checked() {
    let group = "count/english";
    let mb = Some(Throughput::BytesDecimal(1e6));
    let results = [
        // 1 MB in 20 ms: 50 MB/s; in 50 ms: 20 MB/s, the slowest.
        measured(group, "bpe-openai/cl100k", 20e6, mb),
        measured(group, "bpe-openai/o200k", 50e6, mb),
        // Not the default counter: not checked.
        measured(group, "tiktoken-rs/o200k", 500e6, mb),
    ];
    let mut redis = BTreeMap::new();
    redis.insert("RPUSH".to_owned(), RedisBench::default());
    let r = Lookup {
        results: &results,
        redis: &redis,
        metrics: &[],
        server_work: &[],
    };
    let verdicts = evaluate(&r);
    let english = verdicts
        .iter()
        .find(|v| v.what.starts_with("token counting on English"))
        .unwrap();
    assert_eq!(english.measured, "**20.0 MB/s** (bpe-openai/o200k)");
    assert_eq!(english.pass, Some(false));
    let worst = verdicts
        .iter()
        .find(|v| v.what.starts_with("token counting, worst case"))
        .unwrap();
    assert_eq!(worst.measured, "not measured (`count/worst-*` did not run)");
}

#[test]
fn growth_is_per_unit_and_reports_the_worst() {
    let results = [
        measured("count/worst-a", "bpe-openai/x/10000", 1e4, None),
        measured("count/worst-a", "bpe-openai/x/1000000", 1.5e6, None),
        measured("count/worst-space", "bpe-openai/x/10000", 1e4, None),
        measured("count/worst-space", "bpe-openai/x/1000000", 3e6, None),
    ];
    let redis = BTreeMap::new();
    let r = Lookup {
        results: &results,
        redis: &redis,
        metrics: &[],
        server_work: &[],
    };
    let v = target("token counting, worst case").evaluate(&r);
    assert_eq!(
        v.measured,
        "**3.00×** (worst: count/worst-space, bpe-openai/x)"
    );
    assert_eq!(v.pass, Some(false));
}

/// A figure read from `bench-metric:` lines: the worst of those the
/// prefix names, its number leading the value.
#[test]
fn metrics_are_read_by_prefix_and_the_worst_is_checked() {
    let metric = |id: &str, value: &str| Metric {
        id: id.into(),
        value: value.into(),
        run: String::new(),
    };
    let redis = BTreeMap::new();
    let overhead = target("memory store: overhead per stored message");
    let metrics = [
        metric(
            "memory/overhead per stored message/100000 messages in 1 session (heap)",
            "120 bytes (177 bytes per message − 57 bytes of text)",
        ),
        metric(
            "memory/overhead per stored message/100000 messages in 1,000 sessions (heap)",
            "151 bytes (208 bytes per message − 57 bytes of text)",
        ),
        // Not the overhead: not read.
        metric(
            "memory/bytes per stored message/100000 messages in 1 session (heap)",
            "999 bytes",
        ),
    ];
    let r = Lookup {
        results: &[],
        redis: &redis,
        metrics: &metrics,
        server_work: &[],
    };
    let v = overhead.evaluate(&r);
    assert_eq!(
        v.measured,
        "**151 B** (100000 messages in 1,000 sessions (heap))"
    );
    assert_eq!(v.pass, Some(false));
    let r = Lookup {
        results: &[],
        redis: &redis,
        metrics: metrics.get(..1).unwrap_or_default(),
        server_work: &[],
    };
    assert_eq!(
        overhead.evaluate(&r).pass,
        Some(true),
        "≤ 120 B (issue 25), inclusive"
    );
    let r = Lookup {
        results: &[],
        redis: &redis,
        metrics: metrics.get(2..).unwrap_or_default(),
        server_work: &[],
    };
    let v = overhead.evaluate(&r);
    assert_eq!(v.pass, None);
    assert_eq!(
        v.measured,
        "not measured (`memory/overhead per stored message/*` did not run)"
    );
}

/// Selection is checked on its slowest policy, against "≤ 100 µs".
#[test]
fn selection_is_checked_on_its_slowest_policy() {
    let group = "context-window/select over 10,000 cached messages";
    let results = [
        measured(group, "budget fits all", 100_000.0, None),
        measured(group, "20 messages + 128k budget", 1_000.0, None),
    ];
    let redis = BTreeMap::new();
    let r = Lookup {
        results: &results,
        redis: &redis,
        metrics: &[],
        server_work: &[],
    };
    let v = target("window selection").evaluate(&r);
    assert_eq!(v.measured, "**100 µs** (budget fits all)");
    assert_eq!(v.pass, Some(true), "the bound is inclusive");
}

/// Turns against the round trips measured beside them, the server's
/// time from metrics, and a difference of two medians.
#[test]
fn excesses_metrics_and_differences() {
    let turn = "redis/turn(append 2 + load_recent 20)";
    let mut results = vec![
        measured(turn, "10", 200_000.0, None),
        measured(turn, "100", 190_000.0, None),
        measured(
            "pipeline/execute(offline provider, history 100)",
            "redis",
            201_000.0,
            None,
        ),
    ];
    let metric = |id: String, value: &str| Metric {
        id,
        value: value.into(),
        run: String::new(),
    };
    let metrics = vec![
        metric(format!("{turn}/10/PING round trip"), "90.0 µs (median)"),
        metric(format!("{turn}/100/PING round trip"), "70.0 µs (median)"),
        metric(
            format!("{turn}/10/server time per store call"),
            "5.50 µs (…)",
        ),
        metric(
            format!("{turn}/100/server time per store call"),
            "6.50 µs (…)",
        ),
    ];
    let redis = BTreeMap::new();
    let r = Lookup {
        results: &results,
        redis: &redis,
        metrics: &metrics,
        server_work: &[],
    };
    // 200 − 2 × 90 = 20 µs at 10; 190 − 2 × 70 = 50 µs at 100: the worst.
    let excess = target("Redis turn − 2 ×").evaluate(&r);
    assert_eq!(
        excess.measured,
        "190 µs − 2 × 70.0 µs = **50.0 µs** (at 100)"
    );
    assert_eq!(excess.pass, Some(false));
    let server = target("Redis: the server's time").evaluate(&r);
    assert_eq!(server.measured, "**6.50 µs** (at 100)");
    assert_eq!(server.pass, Some(false));
    let overhead = target("Redis: pipeline").evaluate(&r);
    assert_eq!(overhead.measured, "201 µs − 190 µs = **11.0 µs**");
    assert_eq!(overhead.pass, Some(true));

    results.clear();
    let r = Lookup {
        results: &results,
        redis: &redis,
        metrics: &[],
        server_work: &[],
    };
    let absent = target("Redis turn − 2 ×").evaluate(&r);
    assert_eq!(absent.pass, None);
    assert!(
        absent.measured.starts_with("not measured"),
        "{}",
        absent.measured
    );
}

fn lookup<'a>(
    results: &'a [Measured],
    metrics: &'a [Metric],
    server_work: &'a [ServerWorkRow],
) -> Lookup<'a> {
    static NO_REDIS: BTreeMap<String, RedisBench> = BTreeMap::new();
    Lookup {
        results,
        redis: &NO_REDIS,
        metrics,
        server_work,
    }
}

fn work(operation: &str, messages: u32, instructions: f64) -> ServerWorkRow {
    ServerWorkRow {
        operation: operation.into(),
        messages,
        calls: 1_000,
        instructions,
    }
}

/// Issue 25's targets 1 and 2: the most instructions per call over the
/// lengths `--server-work` measured, against 60k and 90k.
#[test]
fn server_work_is_checked_at_its_worst_length() {
    let rows = [
        work(SERVER_WORK_TURN, 10, 42_000.0),
        work(SERVER_WORK_TURN, 10_000, 60_000.0),
        work(SERVER_WORK_EXECUTE, 10, 95_000.4),
        // Another operation: not read.
        work("load_recent(20)", 10, 1e9),
    ];
    let r = lookup(&[], &[], &rows);
    let turn = target("Redis, a plain turn").evaluate(&r);
    assert_eq!(
        turn.measured,
        "**60,000 instructions** (at 10,000 messages)"
    );
    assert_eq!(turn.pass, Some(true), "the bound is inclusive");
    let execute = target("Redis, an execute's store calls").evaluate(&r);
    assert_eq!(execute.measured, "**95,000 instructions** (at 10 messages)");
    assert_eq!(execute.pass, Some(false));

    let r = lookup(&[], &[], &[]);
    let absent = target("Redis, a plain turn").evaluate(&r);
    assert_eq!(absent.pass, None);
    assert_eq!(
        absent.measured,
        "not measured (`--server-work`'s `turn: load_recent(20) + append 2` did not run)"
    );
}

/// Issue 25's target 3: blob ÷ ours at every length both groups have, the
/// lowest checked against 1.0×, short messages and the mix each.
#[test]
fn blob_over_ours_is_checked_at_its_lowest_length() {
    let mut results = vec![
        measured(REDIS_TURN, "10", 300_000.0, None),
        measured(BLOB_TURN, "10", 297_000.0, None),
        measured(REDIS_TURN, "100", 250_000.0, None),
        measured(BLOB_TURN, "100", 500_000.0, None),
        // No blob turn at this length: not compared.
        measured(REDIS_TURN, "1000", 1e9, None),
        measured(REDIS_TURN_MIX, "1000", 300_000.0, None),
        measured(BLOB_TURN_MIX, "1000", 3_000_000.0, None),
    ];
    let r = lookup(&results, &[], &[]);
    let short = target("Redis, short messages: whole-blob").evaluate(&r);
    assert_eq!(short.measured, "297 µs ÷ 300 µs = **0.99×** (at 10)");
    assert_eq!(short.pass, Some(false));
    let mix = target("Redis, realistic message mix: whole-blob").evaluate(&r);
    assert_eq!(mix.measured, "3.00 ms ÷ 300 µs = **10.00×** (at 1000)");
    assert_eq!(mix.pass, Some(true));

    // Measured in two runs: passes, and says so.
    results.truncate(4);
    if let Some(blob) = results.get_mut(1) {
        blob.median = 300_000.0;
        blob.run = "another run".into();
    }
    let r = lookup(&results, &[], &[]);
    let short = target("Redis, short messages: whole-blob").evaluate(&r);
    assert_eq!(
        short.measured,
        "300 µs ÷ 300 µs = **1.00×** (at 10; measured in different runs)"
    );
    assert_eq!(short.pass, Some(true), "the bound is inclusive");
    let mix = target("Redis, realistic message mix: whole-blob").evaluate(&r);
    assert_eq!(mix.pass, None);
    assert_eq!(
        mix.measured,
        format!("not measured (`{BLOB_TURN_MIX}` beside `{REDIS_TURN_MIX}` did not run)")
    );
}

/// Issue 25's targets 9 and 10: the relaxed SQLite turn at 100 messages
/// as it is, and the durable one less the fdatasync measured right after
/// it at its worst length; and the tightened thresholds of 4 and 5.
#[test]
fn sqlite_turns_against_their_floor_and_tightened_thresholds() {
    let results = [
        measured(SQLITE_TURN_RELAXED, "100", 60_000.0, None),
        measured(SQLITE_TURN_RELAXED, "1000", 1e9, None),
        measured(SQLITE_TURN, "10", 300_000.0, None),
        measured(SQLITE_TURN, "100000", 400_000.0, None),
        measured(REDIS_LOAD, "10000", 1_600.0, None),
        measured(REDIS_RAW, "10000", 1_000.0, None),
        measured(REDIS_TURN, "10", 230_000.0, None),
    ];
    let metric = |id: String, value: &str| Metric {
        id,
        value: value.into(),
        run: String::new(),
    };
    let metrics = [
        metric(
            format!("{SQLITE_TURN}/10/fdatasync right after"),
            "250.0 µs (…)",
        ),
        metric(
            format!("{SQLITE_TURN}/100000/fdatasync right after"),
            "330.0 µs (…)",
        ),
        metric(format!("{REDIS_TURN}/10/PING round trip"), "100.0 µs (…)"),
    ];
    let r = lookup(&results, &metrics, &[]);
    let relaxed = target("SQLite, relaxed (synchronous=NORMAL): one turn").evaluate(&r);
    assert_eq!(relaxed.measured, "**60.0 µs**");
    assert_eq!(relaxed.pass, Some(true), "the bound is inclusive");
    // 300 − 250 = 50 µs at 10; 400 − 330 = 70 µs at 100,000: the worst.
    let durable = target("SQLite, durable (synchronous=FULL): one turn").evaluate(&r);
    assert_eq!(
        durable.measured,
        "400 µs − 330 µs = **70.0 µs** (at 100000)"
    );
    assert_eq!(durable.pass, Some(false));
    // 230 − 2 × 100 = 30 µs: within issue 25's ≤ 30 µs.
    let excess = target("Redis turn − 2 ×").evaluate(&r);
    assert_eq!(excess.pass, Some(true));
    // 1.6× against issue 25's ≤ 1.5×.
    let load = target("Redis `load` of 10,000").evaluate(&r);
    assert_eq!(load.pass, Some(false));

    let r = lookup(&[], &[], &[]);
    let absent = target("SQLite, relaxed (synchronous=NORMAL): one turn").evaluate(&r);
    assert_eq!(
        absent.measured,
        format!("not measured (`{SQLITE_TURN_RELAXED}` did not run)")
    );
}
