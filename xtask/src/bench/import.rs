//! A [`Record`] read back from a page written before `docs/benchmarks.json`
//! existed: used once, by the first filtered run after the record was
//! introduced, so that it keeps the figures already published.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::ANALYSIS;
use super::record::{Measured, Metric, Record, RedisBench, RedisRun, RunInfo, Throughput};

/// `"1.23 µs"` → 1230 (nanoseconds), as [`super::format::time`] writes it.
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
pub(super) fn import_page(page: &str) -> Option<Record> {
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
        host: None,
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
        redis: (!redis.is_empty()).then_some(RedisRun {
            run: date,
            tests: redis,
        }),
        server_work: None,
    })
}
