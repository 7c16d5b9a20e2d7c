//! How a row of [`TARGETS`] becomes a verdict: what a target is, the kinds
//! of figure it can have, and [`evaluate`], the one loop over the table. A
//! target whose benchmarks did not run reads "not measured", naming what
//! is missing.

use std::collections::BTreeMap;

use super::format::{median_of, sig3, thousands, time};
use super::record::{Measured, Metric, RedisBench, ServerWorkRow};
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
    /// One quantity as it is: "**value**".
    Value(Quantity),
    /// For every benchmark of the group `over` with a namesake in `under`
    /// (the same history length), its median over the namesake's; the
    /// worst: "a ÷ b = **ratio** (at name)".
    WorstRatio {
        over: &'static str,
        under: &'static str,
        shown: Shown,
    },
    /// The worst, over the history lengths measured, of the instructions
    /// redis-server executes per call of `operation` (`cargo xtask bench
    /// --server-work`): "**n instructions** (at length messages)".
    ServerWork { operation: &'static str },
    /// For each of `names`: the median of `{group}/{name}` less `times` ×
    /// the `bench-metric:` `{group}/{name}/{metric}` (in µs) measured
    /// beside it; the worst: "a − 2 × b = **excess** (at name)", or "a − b
    /// = …" when `times` is 1 (a time).
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
    /// `cargo xtask bench --server-work`: instructions per call.
    pub(super) server_work: &'a [ServerWorkRow],
}

impl<'a> Lookup<'a> {
    /// Everything `record` holds.
    pub(super) fn of(record: &'a super::record::Record) -> Self {
        static NO_REDIS: BTreeMap<String, RedisBench> = BTreeMap::new();
        Lookup {
            results: &record.results,
            redis: record.redis.as_ref().map_or(&NO_REDIS, |r| &r.tests),
            metrics: &record.metrics,
            server_work: record.server_work.as_ref().map_or(&[], |w| &w.rows),
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
            .and_then(|m| leading_number(&m.value))
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
    /// Whether the figure comes from `cargo xtask bench --server-work`,
    /// not from a criterion run.
    pub(super) fn is_server_work(&self) -> bool {
        matches!(self, Figure::ServerWork { .. })
    }

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
            Figure::Value(quantity) => {
                let x = quantity.read(r).ok_or_else(|| quantity.source())?;
                Ok((x, format!("**{}**", quantity.show(x))))
            }
            Figure::WorstRatio { over, under, shown } => {
                let mut worst: Option<(f64, String)> = None;
                for a in r.group(over) {
                    let Some(b) = r.get(&format!("{under}/{}", a.name)) else {
                        continue;
                    };
                    let x = a.median / b.median;
                    if worst.as_ref().is_none_or(|(w, _)| pass.worse(x, *w)) {
                        // The two sides belong side by side in one run.
                        let runs = if a.run == b.run {
                            ""
                        } else {
                            "; measured in different runs"
                        };
                        let text = format!(
                            "{} ÷ {} = **{}** (at {}{runs})",
                            time(a.median),
                            time(b.median),
                            shown.show(x),
                            a.name
                        );
                        worst = Some((x, text));
                    }
                }
                worst.ok_or_else(|| format!("`{over}` beside `{under}`"))
            }
            Figure::ServerWork { operation } => {
                let mut worst: Option<(f64, u32)> = None;
                for row in r.server_work.iter().filter(|w| w.operation == *operation) {
                    let x = row.instructions;
                    if worst.is_none_or(|(w, _)| pass.worse(x, w)) {
                        worst = Some((x, row.messages));
                    }
                }
                let (x, messages) =
                    worst.ok_or_else(|| format!("`--server-work`'s `{operation}`"))?;
                Ok((
                    x,
                    format!(
                        "**{} instructions** (at {} messages)",
                        thousands(x),
                        thousands(f64::from(messages))
                    ),
                ))
            }
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
                        let times = if *times == 1.0 {
                            String::new()
                        } else {
                            format!("{times} × ")
                        };
                        let text = format!(
                            "{} − {times}{} = **{}** (at {name})",
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
mod tests;
