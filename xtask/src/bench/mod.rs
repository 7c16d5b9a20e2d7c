//! `cargo xtask bench [--quick] [criterion filter…]`: runs the criterion
//! suites (and `redis-benchmark`), then writes `docs/benchmarks.md` and
//! `docs/benchmarks.json`. `cargo xtask bench --render` re-renders the page
//! from the record without running anything.
//!
//! Every criterion group gets a table (groups added later, such as the
//! token-counting suite, appear without changes here), and the targets
//! are computed from known benchmark ids by the table in [`targets`]
//! (evaluated by [`evaluate`]) — a target whose benchmark has no result
//! reads "not measured". Everything
//! from the `## Analysis` heading on is hand-written and kept across runs.
//!
//! One job per file: [`run`] runs the suites and `redis-benchmark` and
//! reads criterion's output, [`record`] is `docs/benchmarks.json` and how
//! filtered runs merge into it, [`targets`] the target table and
//! [`evaluate`] how a row of it is evaluated, [`render`]
//! the page, [`machine`] what is known about the machine, [`mod@format`] how
//! numbers are written, and [`import`] reads a page written before the
//! record existed.
//!
//! # Filtered runs keep the rest
//!
//! `docs/benchmarks.json` is the machine-readable record the page is
//! rendered from: every benchmark's figures, the `bench-metric:` lines and
//! the `redis-benchmark` results, each tagged with the run (date, commit,
//! mode, filter) that measured it. An **unfiltered** run replaces the
//! record. A **filtered** run (`cargo xtask bench --quick sqlite`) merges:
//! the benchmarks it ran replace their previous figures (matched by
//! criterion id), its metrics replace those of the groups it ran (and
//! those whose id contains its filter or a `|` alternative of it), and
//! everything else — with its own run date — is kept. `redis-benchmark`
//! runs only when there is no filter or a filter mentions `redis`; the
//! previous figures are kept otherwise. Each group's heading on the page
//! says which run measured it, and the Machine section lists every run the
//! page draws on. A benchmark removed or renamed lingers until the next
//! unfiltered run.

mod chart;
mod crypto;
mod derived;
mod evaluate;
mod format;
mod import;
mod list;
mod machine;
mod postgres;
mod record;
mod render;
mod run;
pub(crate) mod server_work;
mod targets;
#[cfg(test)]
mod tests;
mod turn_tables;

use std::time::{Instant, SystemTime};

use crate::{Result, cargo, ensure_postgres, ensure_redis, root};
use record::{Metric, Record, RedisRun, RunInfo};

const DOC: &str = "docs/benchmarks.md";
/// The record the page is rendered from, merged by filtered runs.
const RECORD: &str = "docs/benchmarks.json";
const ANALYSIS: &str = "## Analysis";

const USAGE: &str = "usage: cargo xtask bench [--quick] [criterion filter…]
       cargo xtask bench --render
       cargo xtask bench --server-work [--quick] [--top N]

Runs every criterion suite of the workspace and redis-benchmark (installing
redis-server and redis-tools, and postgresql for the PostgreSQL suites' own
throwaway clusters, when missing), records the figures in
docs/benchmarks.json and renders docs/benchmarks.md from that record; the
page's hand-written analysis (from \"## Analysis\" on) is kept.

  --quick   10 samples of 1 s per benchmark instead of criterion's defaults
  --render  re-render docs/benchmarks.md from docs/benchmarks.json; runs nothing
  --server-work  no criterion: the instructions redis-server executes per
            store call (valgrind's callgrind, installed when missing), at 10
            to 10,000 messages, 1,000 calls each (--quick: 200 calls, up to
            1,000); the page's \"Server work\" table, kept by other runs.
            --top N prints each measurement's N costliest functions
  filter    passed to criterion: only the matching benchmarks run, and their
            figures replace theirs in the record, every other figure is kept
            (redis-benchmark runs only when a filter mentions redis); the
            bench-metric lines kept are those of the groups that ran and
            those whose id contains the filter or one of its |-separated
            alternatives (\"select|stored message\": the selection group
            and the memory footprint)
  -h, --help  this text";

pub(crate) fn bench(args: &[String]) -> Result {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--server-work") {
        let rest: Vec<String> = args
            .iter()
            .filter(|a| *a != "--server-work")
            .cloned()
            .collect();
        let known = |a: &String| a == "--quick" || a == "--top" || a.parse::<usize>().is_ok();
        return match rest.iter().find(|a| !known(a)) {
            Some(other) => Err(format!(
                "--server-work takes --quick and --top N, not {other:?}\n\n{USAGE}"
            )),
            None => server_work::bench(&rest),
        };
    }
    if args.iter().any(|a| a == "--render") {
        return match args {
            [_] => render_only(),
            _ => Err(format!("--render takes no other arguments\n\n{USAGE}")),
        };
    }
    let quick = args.iter().any(|a| a == "--quick");
    let filters: Vec<String> = args.iter().filter(|a| *a != "--quick").cloned().collect();
    measure(quick, &filters)
}

/// Runs the benchmarks, merges into the record when filtered, writes both
/// files.
fn measure(quick: bool, filters: &[String]) -> Result {
    let criterion_args: &[&str] = if quick {
        &run::QUICK_ARGS
    } else {
        &run::FULL_ARGS
    };
    // A filtered run measures redis-benchmark only when it is about Redis.
    let with_redis_benchmark =
        filters.is_empty() || filters.iter().any(|f| f.to_lowercase().contains("redis"));
    ensure_redis()?;
    ensure_postgres()?;
    let wall = Instant::now();
    let started = SystemTime::now();
    let date =
        machine::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "?".into());
    let load_before = machine::load_average();
    let git = machine::git_describe();

    crate::run(
        "build the benchmarks",
        cargo().args(run::bench_args()).arg("--no-run"),
    )?;
    let redis_bench = if with_redis_benchmark {
        Some(run::redis_benchmark(quick)?)
    } else {
        None
    };
    let metrics = run::run_suites(criterion_args, filters)?;
    let mut results = run::criterion_results(started)?;
    if results.is_empty() {
        return Err("no criterion results were written by this run".into());
    }
    let minutes = wall.elapsed().as_secs_f64() / 60.0;
    let run = RunInfo {
        date,
        cpu: machine::cpu(),
        quick,
        filters: filters.to_vec(),
        criterion_args: criterion_args.iter().map(|s| s.to_string()).collect(),
        minutes,
        load_before,
        load_after: machine::load_average(),
        git,
        host: Some(machine::host()),
    };
    for m in &mut results {
        m.run.clone_from(&run.date);
    }
    let measured = results.len();
    // Suites print some metrics outside criterion, whatever the filter: a
    // filtered run keeps only those of the groups it measured, and those
    // a filter names: criterion takes one regex, so each `|` alternative of
    // it counts (`cargo xtask bench --quick "select|stored message"`).
    let ran: Vec<String> = results.iter().map(|m| format!("{}/", m.group)).collect();
    let current = Record {
        metrics: metrics
            .into_iter()
            .filter(|(id, _)| metric_kept(id, filters, &ran))
            .map(|(id, value)| Metric {
                id,
                value,
                run: run.date.clone(),
            })
            .collect(),
        redis: redis_bench.map(|tests| RedisRun {
            run: run.date.clone(),
            tests,
        }),
        runs: vec![run],
        results,
        server_work: None,
    };
    let record_path = root().join(RECORD);
    let record = if filters.is_empty() {
        // The server work is not measured here: kept from the record.
        match std::fs::read_to_string(&record_path) {
            Ok(text) => current.keeping_server_work(
                &Record::from_json(&text).map_err(|e| format!("{}: {e}", record_path.display()))?,
            ),
            Err(_) => current,
        }
    } else {
        match std::fs::read_to_string(&record_path) {
            Ok(text) => {
                let previous = Record::from_json(&text)
                    .map_err(|e| format!("{}: {e}", record_path.display()))?;
                previous.merge(current)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The first filtered run after the record was introduced:
                // take the earlier figures from the page itself.
                match std::fs::read_to_string(root().join(DOC))
                    .ok()
                    .and_then(|page| import::import_page(&page))
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
    std::fs::write(&record_path, record.to_json()?)
        .map_err(|e| format!("{}: {e}", record_path.display()))?;
    write_page(&record)?;
    eprintln!(
        "\nbench: wrote {DOC} and {RECORD} ({measured} benchmarks measured now, {} on the page, \
         {minutes:.1} min)",
        record.results.len()
    );
    // An unfiltered run is the whole page: every target must come from it.
    if filters.is_empty() {
        let unmeasured = not_measured(&record);
        if !unmeasured.is_empty() {
            return Err(format!(
                "targets not measured by this full run (their benchmark did not run): {}",
                unmeasured.join("; ")
            ));
        }
    }
    Ok(())
}

/// Whether a run with `filters` that measured the groups `ran` (each with
/// a trailing `/`) keeps the metric `id`: every metric of an unfiltered
/// run; those of the groups it ran, and those whose id contains a filter
/// or one of its `|` alternatives (criterion takes one regex).
fn metric_kept(id: &str, filters: &[String], ran: &[String]) -> bool {
    filters.is_empty()
        || ran.iter().any(|g| id.starts_with(g.as_str()))
        || filters
            .iter()
            .flat_map(|f| f.split('|'))
            .any(|alt| !alt.is_empty() && id.contains(alt))
}

/// The targets `record` has no figure for, but those whose figure comes
/// from `cargo xtask bench --server-work`, which a criterion run does not
/// make (a criterion run keeps its figures; with none yet, says so).
fn not_measured(record: &Record) -> Vec<&'static str> {
    let mut unmeasured = Vec::new();
    for (v, target) in evaluate::evaluate(&evaluate::Lookup::of(record))
        .into_iter()
        .zip(targets::TARGETS)
    {
        if v.figure.is_some() {
            continue;
        }
        if target.figure.is_server_work() {
            eprintln!(
                "bench: not measured yet, run `cargo xtask bench --server-work`: {}",
                v.what
            );
        } else {
            unmeasured.push(v.what);
        }
    }
    unmeasured
}

/// `--render`: the page again from the record, nothing run.
fn render_only() -> Result {
    let record_path = root().join(RECORD);
    let text = std::fs::read_to_string(&record_path)
        .map_err(|e| format!("{}: {e}", record_path.display()))?;
    let record = Record::from_json(&text).map_err(|e| format!("{}: {e}", record_path.display()))?;
    write_page(&record)?;
    eprintln!(
        "bench: rendered {DOC} from {RECORD} ({} benchmarks)",
        record.results.len()
    );
    Ok(())
}

/// Writes the page rendered from `record`, keeping its hand-written
/// analysis.
fn write_page(record: &Record) -> Result {
    let doc = render::render(record);
    for chart in render::charts(&evaluate::Lookup::of(record)) {
        let path = root().join("docs").join(chart.file);
        let (svg, _) = chart.chart.svg();
        std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
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
        .map_err(|e| format!("{}: {e}", path.display()))
}
