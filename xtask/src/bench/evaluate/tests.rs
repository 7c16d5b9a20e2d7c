//! The targets' figures against made-up results.

use super::{Lookup, Pass, TARGETS, Target, evaluate};
use crate::bench::record::{Measured, Metric, RedisBench, Throughput};
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
            "140 bytes (197 bytes per message − 57 bytes of text)",
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
    };
    assert_eq!(overhead.evaluate(&r).pass, Some(true));
    let r = Lookup {
        results: &[],
        redis: &redis,
        metrics: metrics.get(2..).unwrap_or_default(),
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
    };
    let absent = target("Redis turn − 2 ×").evaluate(&r);
    assert_eq!(absent.pass, None);
    assert!(
        absent.measured.starts_with("not measured"),
        "{}",
        absent.measured
    );
}
