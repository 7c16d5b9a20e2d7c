//! `docs/benchmarks.json`: what the page is rendered from, its file format,
//! and how a filtered run merges into it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::RECORD;
use crate::Result;

/// One criterion benchmark's result (times in nanoseconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Measured {
    pub(super) group: String,
    /// The id within the group: function and/or parameter.
    pub(super) name: String,
    pub(super) full_id: String,
    #[serde(rename = "median_ns", default = "nan", deserialize_with = "exact::f64")]
    pub(super) median: f64,
    #[serde(rename = "lower_ns", default = "nan", deserialize_with = "exact::f64")]
    pub(super) lower: f64,
    #[serde(rename = "upper_ns", default = "nan", deserialize_with = "exact::f64")]
    pub(super) upper: f64,
    #[serde(rename = "mad_ns", default = "nan", deserialize_with = "exact::f64")]
    pub(super) mad: f64,
    /// As criterion writes it: `{"Elements": 64}`, or null.
    #[serde(default)]
    pub(super) throughput: Option<Throughput>,
    /// When its estimates were written: the order benchmarks ran in (not
    /// recorded: the record keeps the order).
    #[serde(skip, default = "unix_epoch")]
    pub(super) written: SystemTime,
    /// The run that measured it ([`RunInfo::date`]).
    pub(super) run: String,
}

/// A `bench-metric:` line: a measurement other than time, printed by a suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Metric {
    pub(super) id: String,
    pub(super) value: String,
    pub(super) run: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) enum Throughput {
    Elements(#[serde(deserialize_with = "exact::f64")] f64),
    /// Bytes, reported in MiB/s.
    Bytes(#[serde(deserialize_with = "exact::f64")] f64),
    /// Bytes, reported in MB/s.
    BytesDecimal(#[serde(deserialize_with = "exact::f64")] f64),
}

impl Throughput {
    /// Criterion's `throughput` in `benchmark.json` (`{"Elements": 64}`);
    /// kinds the page has no rate for (bits, elements and bytes) are none.
    pub(super) fn from_criterion(t: &serde_json::Value) -> Option<Self> {
        let n = |key: &str| t.get(key).and_then(serde_json::Value::as_f64);
        n("Elements")
            .map(Throughput::Elements)
            .or_else(|| n("Bytes").map(Throughput::Bytes))
            .or_else(|| n("BytesDecimal").map(Throughput::BytesDecimal))
    }
}

impl Measured {
    /// Elements or bytes per second at the median.
    pub(super) fn per_second(&self) -> Option<f64> {
        let n = match self.throughput? {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n,
        };
        Some(n / (self.median * 1e-9))
    }
}

/// One `redis-benchmark` test over several runs.
#[derive(Debug, Clone, Default)]
pub(super) struct RedisBench {
    pub(super) rps: Vec<f64>,
    pub(super) p50_ms: Vec<f64>,
    pub(super) usec_per_call: Option<f64>,
}

/// `redis-benchmark`'s results, with the run that measured them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct RedisRun {
    pub(super) run: String,
    /// By test name; in the file, a list of objects naming their test.
    #[serde(with = "redis_tests")]
    pub(super) tests: BTreeMap<String, RedisBench>,
}

/// One run of `cargo xtask bench`. Fields in the order the record file
/// lists them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RunInfo {
    /// When it started (`date -u`, to the minute): also its id in the record.
    pub(super) date: String,
    /// "2 × model name", from `/proc/cpuinfo`.
    #[serde(default = "unknown")]
    pub(super) cpu: String,
    /// The commit measured (`git rev-parse --short HEAD`, "with uncommitted
    /// changes" when `crates/` or `xtask/` differ from it).
    #[serde(rename = "commit")]
    pub(super) git: String,
    #[serde(default)]
    pub(super) quick: bool,
    #[serde(default)]
    pub(super) criterion_args: Vec<String>,
    #[serde(default)]
    pub(super) filters: Vec<String>,
    #[serde(default = "nan", deserialize_with = "exact::f64")]
    pub(super) minutes: f64,
    #[serde(default)]
    pub(super) load_before: String,
    #[serde(default)]
    pub(super) load_after: String,
    /// What the run found on the machine besides the CPU. Runs recorded
    /// before it was kept have none: the page then describes the machine
    /// rendering it, as it always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) host: Option<Host>,
}

impl RunInfo {
    /// Whether the run was `cargo xtask bench --server-work`.
    pub(super) fn is_server_work(&self) -> bool {
        self.filters.iter().any(|f| f == "--server-work")
    }
}

/// The machine and the versions a run measured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Host {
    /// "23.5 GiB"
    pub(super) memory: String,
    /// "Debian GNU/Linux 12 (bookworm), Linux 6.1.0"
    pub(super) os: String,
    /// `rustc -V`
    pub(super) rustc: String,
    pub(super) redis_server: String,
    /// `postgres --version` of the server the PostgreSQL suites start
    /// ("15.14"); none in runs recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) postgres: Option<String>,
    /// The versions of the crates the figures depend on most, from
    /// `Cargo.lock`: "criterion 0.8.2, redis 1.8.1, …".
    pub(super) crates: String,
}

/// `cargo xtask bench --server-work`: the instructions redis-server runs
/// per call (see `server_work`), with the run that measured them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ServerWork {
    pub(super) run: String,
    /// Calls made before each measurement, not counted.
    pub(super) warm_up: u32,
    /// In the order measured: by length, then operation.
    pub(super) rows: Vec<ServerWorkRow>,
}

/// One operation at one history length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ServerWorkRow {
    pub(super) operation: String,
    pub(super) messages: u32,
    /// The calls counted.
    pub(super) calls: u64,
    /// Instructions per call.
    #[serde(deserialize_with = "exact::f64")]
    pub(super) instructions: f64,
}

/// What the page is rendered from: `docs/benchmarks.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Record {
    /// The runs the figures below come from, newest first.
    #[serde(default)]
    pub(super) runs: Vec<RunInfo>,
    #[serde(default)]
    pub(super) results: Vec<Measured>,
    #[serde(default)]
    pub(super) metrics: Vec<Metric>,
    /// `redis-benchmark`, with the run that measured it.
    #[serde(rename = "redis_benchmark", default)]
    pub(super) redis: Option<RedisRun>,
    /// `cargo xtask bench --server-work`, kept until it runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) server_work: Option<ServerWork>,
}

impl Record {
    /// `newer` (a filtered run, or `--server-work`) on top of `self`: its
    /// benchmarks replace those with the same id in place (new ones go
    /// last), its metrics replace those of the groups it ran, its
    /// redis-benchmark and server work (if any) replace the old ones. Runs
    /// nothing refers to any more are dropped.
    pub(super) fn merge(self, newer: Record) -> Record {
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
        let server_work = newer.server_work.or(self.server_work);
        let mut runs = newer.runs;
        for run in self.runs {
            if !runs.iter().any(|r| r.date == run.date) {
                runs.push(run);
            }
        }
        let used = |date: &str| {
            results.iter().any(|m| m.run == date)
                || metrics.iter().any(|m| m.run == date)
                || redis.as_ref().is_some_and(|r| r.run == date)
                || server_work.as_ref().is_some_and(|w| w.run == date)
        };
        runs.retain(|r| used(&r.date));
        Record {
            runs,
            results,
            metrics,
            redis,
            server_work,
        }
    }

    /// This record (an unfiltered run's, which replaces the file) with the
    /// server work of `previous` and its run: `cargo xtask bench` does not
    /// measure it, `--server-work` does.
    pub(super) fn keeping_server_work(mut self, previous: &Record) -> Record {
        if self.server_work.is_none()
            && let Some(work) = &previous.server_work
        {
            if let Some(run) = previous.run(&work.run)
                && self.run(&run.date).is_none()
            {
                self.runs.push(run.clone());
            }
            self.server_work = Some(work.clone());
        }
        self
    }

    pub(super) fn run(&self, date: &str) -> Option<&RunInfo> {
        self.runs.iter().find(|r| r.date == date)
    }

    /// The record as `docs/benchmarks.json` holds it.
    pub(super) fn to_json(&self) -> Result<String> {
        #[derive(Serialize)]
        struct File<'a> {
            about: &'static str,
            #[serde(flatten)]
            record: &'a Record,
        }
        let mut text = serde_json::to_string_pretty(&File {
            about: ABOUT,
            record: self,
        })
        .map_err(|e| format!("{RECORD}: {e}"))?;
        text.push('\n');
        Ok(text)
    }

    /// Reads `docs/benchmarks.json` (its `about` is ignored).
    pub(super) fn from_json(text: &str) -> std::result::Result<Record, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// What `docs/benchmarks.json` says about itself.
const ABOUT: &str = "Written by `cargo xtask bench`; docs/benchmarks.md is rendered from it. \
                     Filtered runs merge into it (see xtask/src/bench/record.rs).";

fn nan() -> f64 {
    f64::NAN
}

fn unknown() -> String {
    "?".into()
}

fn unix_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

/// Figures read back exactly. serde_json's own float parsing (without its
/// `float_roundtrip` feature, which would change float parsing in every
/// crate of a workspace build) can be one unit in the last place off for
/// 17-digit numbers, so every filtered run would nudge figures it did not
/// measure. Each number's text is parsed by std instead (`RawValue`: the
/// additive `raw_value` feature). JSON has no NaN: serde_json writes a
/// non-finite figure as `null`, which reads back as NaN ("?" on the page).
mod exact {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use serde_json::value::RawValue;

    struct Figure(f64);

    impl<'de> Deserialize<'de> for Figure {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let raw = <&'de RawValue>::deserialize(d)?;
            raw.get()
                .parse()
                .map(Figure)
                .map_err(|_| D::Error::custom(format!("not a number: {}", raw.get())))
        }
    }

    pub(super) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<Figure>::deserialize(d)?.map_or(f64::NAN, |f| f.0))
    }

    pub(super) fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<Figure>::deserialize(d)?.map(|f| f.0))
    }

    pub(super) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<Figure>>::deserialize(d)?
            .into_iter()
            .map(|f| f.map_or(f64::NAN, |f| f.0))
            .collect())
    }
}

/// `redis-benchmark`'s tests as a list of objects, each naming its test.
mod redis_tests {
    use super::{RedisBench, exact};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize)]
    struct Row {
        test: String,
        #[serde(default, deserialize_with = "exact::list")]
        rps: Vec<f64>,
        #[serde(default, deserialize_with = "exact::list")]
        p50_ms: Vec<f64>,
        #[serde(default, deserialize_with = "exact::option")]
        usec_per_call: Option<f64>,
    }

    pub(super) fn serialize<S: Serializer>(
        tests: &BTreeMap<String, RedisBench>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(tests.iter().map(|(test, b)| Row {
            test: test.clone(),
            rps: b.rps.clone(),
            p50_ms: b.p50_ms.clone(),
            usec_per_call: b.usec_per_call,
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, RedisBench>, D::Error> {
        let rows = Vec::<Row>::deserialize(d)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let bench = RedisBench {
                    rps: r.rps,
                    p50_ms: r.p50_ms,
                    usec_per_call: r.usec_per_call,
                };
                (r.test, bench)
            })
            .collect())
    }
}
