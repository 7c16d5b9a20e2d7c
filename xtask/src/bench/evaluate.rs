//! How a row of [`TARGETS`] becomes a verdict: what a target is, the kinds
//! of figure it can have, and [`evaluate`], the one loop over the table. A
//! target whose benchmarks did not run reads "not measured", naming what
//! is missing.

use std::collections::BTreeMap;

use super::format::{median_of, sig3, thousands, time};
use super::record::{Measured, Metric, RedisBench};
use super::targets::TARGETS;

/// One target: a row of [`TARGETS`].
#[derive(Debug)]
pub(super) struct Target {
    /// What is measured, as the page's row says it.
    pub(super) what: &'static str,
    pub(super) figure: Figure,
    /// The threshold as the page states it ("≤ 1.5×"); [`Self::pass`] is
    /// what is checked.
    pub(super) required: &'static str,
    pub(super) pass: Pass,
}

/// The threshold and its direction. It also says which end of a group is
/// the worst: the highest for an upper bound, the lowest for a lower one.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pass {
    AtMost(f64),
    Below(f64),
    AtLeast(f64),
}

impl Pass {
    fn check(self, x: f64) -> bool {
        match self {
            Pass::AtMost(limit) => x <= limit,
            Pass::Below(limit) => x < limit,
            Pass::AtLeast(limit) => x >= limit,
        }
    }

    /// Whether `x` is worse than `than` against this threshold.
    fn worse(self, x: f64, than: f64) -> bool {
        match self {
            Pass::AtMost(_) | Pass::Below(_) => x > than,
            Pass::AtLeast(_) => x < than,
        }
    }
}

/// How a target's figure is computed from the results.
#[derive(Debug)]
pub(super) enum Figure {
    /// One quantity over another: "a ÷ b = **ratio**".
    Ratio {
        over: Quantity,
        under: Quantity,
        shown: Shown,
    },
    /// The worst, against the threshold, of the benchmarks of `groups`
    /// whose name starts with `names`: "**figure** (`label`name)".
    Worst {
        groups: Groups,
        names: &'static str,
        each: Each,
        shown: Shown,
        label: &'static str,
    },
    /// Growth with the input: for every benchmark `{counter}/{long}` of
    /// `groups` (with `counter` starting with `names`), its median (per
    /// unit when `per_unit`, so that 1× is linear; else whole, so that 1×
    /// is flat) at `long` over that of `{counter}/{short}`; the worst of
    /// them: "**ratio** (worst: group, counter)".
    Growth {
        groups: Groups,
        names: &'static str,
        long: u32,
        short: u32,
        per_unit: bool,
        shown: Shown,
    },
    /// The worst, against the threshold, of the `bench-metric:` lines whose
    /// id starts with `prefix` (each the number leading its value):
    /// "**figure** (rest of the id)".
    Metric { prefix: &'static str, shown: Shown },
    /// One quantity less another: "a − b = **difference**" (a time).
    Difference { over: Quantity, under: Quantity },
    /// For each of `names`: the median of `{group}/{name}` less `times` ×
    /// the `bench-metric:` `{group}/{name}/{metric}` (in µs) measured
    /// beside it; the worst: "a − 2 × b = **excess** (at name)" (a time).
    Excess {
        group: &'static str,
        names: &'static [&'static str],
        times: f64,
        metric: &'static str,
    },
    /// The worst of the `bench-metric:` values `{group}/{name}/{metric}`
    /// (in µs) for each of `names`: "**value** (at name)" (a time).
    WorstMetric {
        group: &'static str,
        names: &'static [&'static str],
        metric: &'static str,
    },
}

/// One number from the results.
#[derive(Debug)]
pub(super) enum Quantity {
    /// A benchmark's median time (group, name); shown as a time.
    Median(&'static str, &'static str),
    /// A benchmark's throughput per second at its median (group, name);
    /// shown as "n/s".
    Rate(&'static str, &'static str),
    /// The median requests per second of a `redis-benchmark` test.
    RedisBenchmark(&'static str),
}

/// What [`Figure::Worst`] compares benchmarks by.
#[derive(Debug, Clone, Copy)]
pub(super) enum Each {
    Median,
    Rate,
}

/// Which criterion groups a figure reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Groups {
    One(&'static str),
    /// Every group whose id starts with this.
    Prefix(&'static str),
}

/// How a figure is written.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shown {
    /// "1.11×", with this many decimals.
    Times(usize),
    /// A fraction as "67 %".
    Percent,
    /// Nanoseconds as "752 ns".
    Time,
    /// Bytes per second as "31.2 MB/s".
    MegabytesPerSecond,
    /// Bytes as "210 B".
    Bytes,
}

/// A target evaluated: a row of the page's table.
#[derive(Debug, Clone)]
pub(super) struct Verdict {
    pub(super) what: &'static str,
    pub(super) required: &'static str,
    pub(super) measured: String,
    /// The figure checked, when its benchmarks ran.
    pub(super) figure: Option<f64>,
    /// `None`: not measured.
    pub(super) pass: Option<bool>,
}

/// The results the targets and the page's tables read.
pub(super) struct Lookup<'a> {
    pub(super) results: &'a [Measured],
    pub(super) redis: &'a BTreeMap<String, RedisBench>,
    /// The `bench-metric:` lines.
    pub(super) metrics: &'a [Metric],
}

impl<'a> Lookup<'a> {
    /// Everything `record` holds.
    pub(super) fn of(record: &'a super::record::Record) -> Self {
        static NO_REDIS: BTreeMap<String, RedisBench> = BTreeMap::new();
        Lookup {
            results: &record.results,
            redis: record.redis.as_ref().map_or(&NO_REDIS, |r| &r.tests),
            metrics: &record.metrics,
        }
    }
}

impl<'a> Lookup<'a> {
    pub(super) fn get(&self, full_id: &str) -> Option<&'a Measured> {
        self.results.iter().find(|m| m.full_id == full_id)
    }

    /// The number leading a `bench-metric:` value (`"23.4 µs (…)"` → 23.4).
    pub(super) fn metric(&self, id: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.value.split_whitespace().next()?.parse().ok())
    }

    pub(super) fn group(&self, group: &str) -> Vec<&'a Measured> {
        self.results.iter().filter(|m| m.group == group).collect()
    }

    fn groups(&self, groups: Groups) -> impl Iterator<Item = &'a Measured> {
        self.results.iter().filter(move |m| match groups {
            Groups::One(g) => m.group == g,
            Groups::Prefix(p) => m.group.starts_with(p),
        })
    }
}

/// Every target of [`TARGETS`] against the results.
pub(super) fn evaluate(r: &Lookup<'_>) -> Vec<Verdict> {
    TARGETS.iter().map(|t| t.evaluate(r)).collect()
}

impl Target {
    pub(super) fn evaluate(&self, r: &Lookup<'_>) -> Verdict {
        let (figure, measured) = match self.figure.compute(r, self.pass) {
            Ok((figure, measured)) => (Some(figure), measured),
            Err(absent) => (None, format!("not measured ({absent} did not run)")),
        };
        Verdict {
            what: self.what,
            required: self.required,
            measured,
            figure,
            pass: figure.map(|x| self.pass.check(x)),
        }
    }
}

impl Figure {
    /// The figure and how the page writes it, or what did not run.
    fn compute(&self, r: &Lookup<'_>, pass: Pass) -> Result<(f64, String), String> {
        match self {
            Figure::Ratio { over, under, shown } => match (over.read(r), under.read(r)) {
                (Some(a), Some(b)) => {
                    let x = a / b;
                    let text = format!(
                        "{} ÷ {} = **{}**",
                        over.show(a),
                        under.show(b),
                        shown.show(x)
                    );
                    Ok((x, text))
                }
                (a, b) => {
                    let mut absent: Vec<String> = Vec::new();
                    for (value, quantity) in [(a, over), (b, under)] {
                        let source = quantity.source();
                        if value.is_none() && !absent.contains(&source) {
                            absent.push(source);
                        }
                    }
                    Err(absent.join(" and "))
                }
            },
            Figure::Worst {
                groups,
                names,
                each,
                shown,
                label,
            } => {
                let candidates = r
                    .groups(*groups)
                    .filter(|m| m.name.starts_with(names))
                    .filter_map(|m| Some((m, each.of(m)?)));
                let by_figure = |a: &(&Measured, f64), b: &(&Measured, f64)| a.1.total_cmp(&b.1);
                let worst = match pass {
                    Pass::AtMost(_) | Pass::Below(_) => candidates.max_by(by_figure),
                    Pass::AtLeast(_) => candidates.min_by(by_figure),
                };
                let (m, x) = worst.ok_or_else(|| groups.source())?;
                Ok((x, format!("**{}** ({label}{})", shown.show(x), m.name)))
            }
            Figure::Growth {
                groups,
                names,
                long,
                short,
                per_unit,
                shown,
            } => {
                let mut worst: Option<(f64, String)> = None;
                for at_long in r.groups(*groups) {
                    let Some(counter) = at_long.name.strip_suffix(&format!("/{long}")) else {
                        continue;
                    };
                    if !counter.starts_with(names) {
                        continue;
                    }
                    let Some(at_short) = r.get(&format!("{}/{counter}/{short}", at_long.group))
                    else {
                        continue;
                    };
                    let x = if *per_unit {
                        (at_long.median / f64::from(*long)) / (at_short.median / f64::from(*short))
                    } else {
                        at_long.median / at_short.median
                    };
                    if worst.as_ref().is_none_or(|(w, _)| pass.worse(x, *w)) {
                        worst = Some((x, format!("{}, {counter}", at_long.group)));
                    }
                }
                let (x, which) = worst.ok_or_else(|| groups.source())?;
                Ok((x, format!("**{}** (worst: {which})", shown.show(x))))
            }
            Figure::Metric { prefix, shown } => {
                let mut worst: Option<(f64, &str)> = None;
                for m in r.metrics {
                    let Some(which) = m.id.strip_prefix(prefix) else {
                        continue;
                    };
                    let Some(x) = leading_number(&m.value) else {
                        continue;
                    };
                    if worst.is_none_or(|(w, _)| pass.worse(x, w)) {
                        worst = Some((x, which));
                    }
                }
                let (x, which) = worst.ok_or_else(|| format!("`{prefix}*`"))?;
                Ok((x, format!("**{}** ({which})", shown.show(x))))
            }
            Figure::Difference { over, under } => match (over.read(r), under.read(r)) {
                (Some(a), Some(b)) => Ok((
                    a - b,
                    format!("{} − {} = **{}**", over.show(a), under.show(b), time(a - b)),
                )),
                (None, _) => Err(over.source()),
                (_, None) => Err(under.source()),
            },
            Figure::Excess {
                group,
                names,
                times,
                metric,
            } => {
                let mut worst: Option<(f64, String)> = None;
                for name in *names {
                    let (Some(m), Some(us)) = (
                        r.get(&format!("{group}/{name}")),
                        r.metric(&format!("{group}/{name}/{metric}")),
                    ) else {
                        continue;
                    };
                    let x = m.median - times * us * 1e3;
                    if worst.as_ref().is_none_or(|(w, _)| pass.worse(x, *w)) {
                        let text = format!(
                            "{} − {times} × {} = **{}** (at {name})",
                            time(m.median),
                            time(us * 1e3),
                            time(x)
                        );
                        worst = Some((x, text));
                    }
                }
                worst.ok_or_else(|| format!("`{group}` with its {metric}"))
            }
            Figure::WorstMetric {
                group,
                names,
                metric,
            } => {
                let mut worst: Option<(f64, &str)> = None;
                for name in *names {
                    let Some(us) = r.metric(&format!("{group}/{name}/{metric}")) else {
                        continue;
                    };
                    let x = us * 1e3;
                    if worst.is_none_or(|(w, _)| pass.worse(x, w)) {
                        worst = Some((x, name));
                    }
                }
                let (x, name) = worst.ok_or_else(|| format!("`{group}` with its {metric}"))?;
                Ok((x, format!("**{}** (at {name})", time(x))))
            }
        }
    }
}

/// The number leading a `bench-metric:` value (`"210 bytes (…)"` → 210).
pub(super) fn leading_number(value: &str) -> Option<f64> {
    value
        .split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite())
}

impl Quantity {
    fn read(&self, r: &Lookup<'_>) -> Option<f64> {
        match self {
            Quantity::Median(group, name) => r.get(&format!("{group}/{name}")).map(|m| m.median),
            Quantity::Rate(group, name) => r
                .get(&format!("{group}/{name}"))
                .and_then(Measured::per_second),
            Quantity::RedisBenchmark(test) => r
                .redis
                .get(*test)
                .map(|b| median_of(&b.rps))
                .filter(|x| x.is_finite()),
        }
    }

    fn show(&self, x: f64) -> String {
        match self {
            Quantity::Median(..) => time(x),
            Quantity::Rate(..) | Quantity::RedisBenchmark(_) => format!("{}/s", thousands(x)),
        }
    }

    /// What did not run when this is missing.
    fn source(&self) -> String {
        match self {
            Quantity::Median(group, _) | Quantity::Rate(group, _) => format!("`{group}`"),
            Quantity::RedisBenchmark(_) => "redis-benchmark".into(),
        }
    }
}

impl Each {
    fn of(self, m: &Measured) -> Option<f64> {
        match self {
            Each::Median => Some(m.median),
            Each::Rate => m.per_second(),
        }
    }
}

impl Groups {
    fn source(self) -> String {
        match self {
            Groups::One(group) => format!("`{group}`"),
            Groups::Prefix(prefix) => format!("`{prefix}*`"),
        }
    }
}

impl Shown {
    fn show(self, x: f64) -> String {
        match self {
            Shown::Times(decimals) => format!("{x:.decimals$}×"),
            Shown::Percent => format!("{:.0} %", x * 100.0),
            Shown::Time => time(x),
            Shown::MegabytesPerSecond => format!("{} MB/s", sig3(x / 1e6)),
            Shown::Bytes => format!("{} B", thousands(x)),
        }
    }
}

#[cfg(test)]
mod tests {
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
                "110 bytes (167 bytes per message − 57 bytes of text)",
            ),
            metric(
                "memory/overhead per stored message/100000 messages in 1,000 sessions (heap)",
                "121 bytes (178 bytes per message − 57 bytes of text)",
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
            "**121 B** (100000 messages in 1,000 sessions (heap))"
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
}
