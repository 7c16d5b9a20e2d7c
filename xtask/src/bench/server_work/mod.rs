//! Server work: the instructions redis-server executes per store call,
//! counted by callgrind — a measure of the server's work that does not move
//! with the machine's load as wall-clock times on a shared VM do (by up to
//! 3× between runs).
//!
//! - `cargo xtask bench --server-work [--quick] [--top N]` measures every
//!   operation at 10, 100, 1,000 and 10,000 messages (1,000 calls each;
//!   `--quick`: 200 calls, up to 1,000 messages), prints the table and
//!   records it in `docs/benchmarks.json`, whose page shows it as its own
//!   table ("Server work"), kept across other runs until this one runs
//!   again.
//! - `cargo xtask server-work` (part of `cargo xtask ci`) measures the
//!   lengths and calls of [`budgets::FILE`] (10 and 100 messages, 200
//!   calls; about 30 s) and fails when a call takes more than 10 % over its
//!   budget; `--update-budgets --reason "…"` rewrites the budgets.
//!
//! # How
//!
//! redis-server runs under `valgrind --tool=callgrind` (a
//! [`ServerBuilder::wrapper`](redis_test_server::ServerBuilder::wrapper)),
//! and the calls are made by the `server_work` example of
//! statestore-redis, through the real `RedisStore` API (its docs say what
//! each call works on). For every part of a measurement the example
//! prepares its sessions and warms up (10 calls), then says `ready`;
//! xtask dumps callgrind's counters (`callgrind_control --dump`,
//! discarded) and answers `go`; the example makes the calls and says
//! `done`; xtask dumps again and reads the dump; the instructions in it,
//! less the server's timer (`serverCron`, see [`callgrind`]), divided by
//! the calls, are the figure. The example waits for xtask's `next` before
//! it sends anything else, so a dump holds the calls and nothing more: no
//! connection setup, no `SCRIPT LOAD` (the warm-up loaded the scripts), no
//! `INFO`.
//!
//! Callgrind counts user-space instructions: reading requests, the
//! commands and scripts, writing replies, jemalloc. It does not count the
//! kernel's work (the socket reads and writes of a large value) nor
//! memory stalls; a bulk copy (`memcpy` of a 1 MB value) is a few
//! instructions per 32 bytes. So the counts compare our scripts with each
//! other and over time; against the whole-blob baseline, whose `GET` and
//! `SET` of a large value are mostly copying, they understate the blob's
//! cost.
//!
//! # Repeatable
//!
//! Two runs agree within about 0.5 % on the store's calls (the blob's
//! small `GET`s and `SET`s within 1 %; its `SET` of a value over 32 KB,
//! Redis's "big argument", within about 10 %: the value takes as many
//! socket reads as the timing makes, each a few thousand instructions).
//! What the server does on its own clock, or differently from one start to
//! the next, is kept out:
//!
//! - the timer's work (`serverCron`) is subtracted from every dump;
//! - the reply-buffer resizing of Redis 7 (which the timer does, after
//!   which a reply takes another path) is off: `DEBUG REPLYBUFFER RESIZING
//!   0` (`enable-debug-command local`);
//! - jemalloc returns no memory to the system (`MALLOC_CONF=
//!   dirty_decay_ms:-1,muzzy_decay_ms:-1`, `jemalloc-bg-thread no`): its
//!   purges run when enough time has passed, inside whichever call comes
//!   next;
//! - each server draws a random seed for its hash tables, so whether two
//!   keys share a bucket (a comparison more per lookup) changes from run to
//!   run: the example spreads the calls over 20 sessions or more, whose
//!   collisions even out.
//!
//! What remains is a few hundred instructions per call: the event loop's
//! passes on timer wake-ups, and the collisions left.
//!
//! Across machines the counts hold as long as the server does: they are
//! the redis-server build's (its version and allocator), and the string
//! functions glibc picks for the CPU (under valgrind, AVX2 at most). The
//! budgets name the redis-server they were measured on, and the check
//! notes another one.

mod budgets;
mod callgrind;
mod page;
#[cfg(test)]
mod tests;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use redis_test_server::RedisServer;

use super::machine;
use super::record::{Record, RunInfo, ServerWork, ServerWorkRow};
use super::{RECORD, write_page};
use crate::{Result, build_examples, ensure_redis, ensure_valgrind, root};
use budgets::Budgets;
use callgrind::{Control, Dump};
pub(super) use page::section;

/// The example that makes the calls.
const DRIVER: &str = "server_work";

/// The wrapper redis-server runs under: jemalloc without its time-driven
/// purges, callgrind writing its dumps into the server's directory.
const WRAPPER: [&str; 5] = [
    "env",
    "MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1",
    "valgrind",
    "--tool=callgrind",
    "--callgrind-out-file=callgrind.out",
];

/// Calls made before each measurement (not counted).
const WARM_UP: u32 = 10;

/// What a run measures.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    lengths: Vec<u32>,
    calls: u32,
}

impl Plan {
    /// `cargo xtask bench --server-work`.
    fn full() -> Plan {
        Plan {
            lengths: vec![10, 100, 1_000, 10_000],
            calls: 1_000,
        }
    }

    /// `cargo xtask bench --server-work --quick`.
    fn quick() -> Plan {
        Plan {
            lengths: vec![10, 100, 1_000],
            calls: 200,
        }
    }

    /// What `cargo xtask server-work` makes when there are no budgets yet.
    fn check() -> Plan {
        Plan {
            lengths: vec![10, 100],
            calls: 200,
        }
    }
}

/// One operation at one history length: the calls counted and the
/// instructions they took, and the dump they were counted from.
#[derive(Debug)]
struct Measurement {
    operation: String,
    messages: u32,
    calls: u64,
    instructions: u64,
    profile: Dump,
}

impl Measurement {
    fn per_call(&self) -> f64 {
        self.instructions as f64 / self.calls.max(1) as f64
    }

    fn row(&self) -> ServerWorkRow {
        ServerWorkRow {
            operation: self.operation.clone(),
            messages: self.messages,
            calls: self.calls,
            instructions: self.per_call(),
        }
    }
}

/// A line the driver prints.
#[derive(Debug, PartialEq)]
enum Said {
    /// A part of a measurement is ready: `calls` calls of `operation` at
    /// `messages` messages.
    Ready {
        operation: String,
        messages: u32,
        calls: u64,
    },
    /// The part's calls are done.
    Done,
    /// Every measurement is done.
    End,
    /// Anything else (echoed).
    Other,
}

impl Said {
    fn parse(line: &str) -> Result<Said> {
        let mut fields = line.split('\t');
        if fields.next() != Some("server-work") {
            return Ok(Said::Other);
        }
        let bad = || format!("{DRIVER}: malformed line {line:?}");
        Ok(
            match (fields.next(), fields.next(), fields.next(), fields.next()) {
                (Some("ready"), Some(operation), Some(messages), Some(calls)) => Said::Ready {
                    operation: operation.to_owned(),
                    messages: messages.parse().map_err(|_| bad())?,
                    calls: calls.parse().map_err(|_| bad())?,
                },
                (Some("done"), None, ..) => Said::Done,
                (Some("end"), None, ..) => Said::End,
                _ => return Err(bad()),
            },
        )
    }
}

/// Adds a part's `calls` and `dump` to the measurement of `operation` at
/// `messages`, new or not.
fn add_part(
    measurements: &mut Vec<Measurement>,
    operation: &str,
    messages: u32,
    calls: u64,
    dump: Dump,
) {
    let instructions = dump.measured();
    match measurements
        .iter_mut()
        .find(|m| m.operation == operation && m.messages == messages)
    {
        Some(m) => {
            m.calls += calls;
            m.instructions += instructions;
            m.profile.add(dump);
        }
        None => measurements.push(Measurement {
            operation: operation.to_owned(),
            messages,
            calls,
            instructions,
            profile: dump,
        }),
    }
}

/// The server `redis-server --version` reports, as (major, version).
fn redis_version() -> (u32, String) {
    let version = machine::output("redis-server", &["--version"])
        .and_then(|v| {
            v.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_default();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    (major, version)
}

/// A redis-server under callgrind, set up to count the same every run
/// (see the module docs).
fn start_server() -> Result<RedisServer> {
    let (major, version) = redis_version();
    let mut builder = RedisServer::builder()
        .wrapper(WRAPPER)
        .config("jemalloc-bg-thread", "no");
    if major >= 7 {
        builder = builder.config("enable-debug-command", "local");
    }
    let server = builder
        .start()
        .map_err(|e| format!("cannot start redis-server under callgrind: {e}"))?;
    if major >= 7 {
        server
            .cli(&["DEBUG", "REPLYBUFFER", "RESIZING", "0"])
            .map_err(|e| format!("DEBUG REPLYBUFFER RESIZING 0: {e}"))?;
    } else {
        eprintln!(
            "server work: redis-server {version} cannot turn reply-buffer resizing off \
             (Redis 7 can): expect run-to-run differences of a few percent"
        );
    }
    Ok(server)
}

/// Runs the driver (`driver`, the example's binary) against a server under
/// callgrind with `plan`; returns the measurements in the order made.
fn measure(plan: &Plan, driver: &Path) -> Result<Vec<Measurement>> {
    let started = Instant::now();
    let server = start_server()?;
    let control = Control {
        pid: server.pid().ok_or("redis-server is not running")?,
        dir: server.dir().to_path_buf(),
    };
    let lengths: Vec<String> = plan.lengths.iter().map(u32::to_string).collect();
    let mut child = Command::new(driver)
        .args(["--driven", "--lengths", &lengths.join(",")])
        .args(["--calls", &plan.calls.to_string()])
        .args(["--warm-up", &WARM_UP.to_string()])
        .env("REDIS_URL", server.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", driver.display()))?;
    let (Some(mut to_driver), Some(from_driver)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(format!("{DRIVER}: no pipes"));
    };
    let mut measurements = Vec::new();
    let mut part = None;
    let mut ended = false;
    for line in BufReader::new(from_driver).lines() {
        let line = line.map_err(|e| format!("{DRIVER}: {e}"))?;
        match Said::parse(&line)? {
            Said::Ready {
                operation,
                messages,
                calls,
            } => {
                control.reset()?;
                part = Some((operation, messages, calls, Instant::now()));
                writeln!(to_driver, "go").map_err(|e| format!("{DRIVER}: {e}"))?;
            }
            Said::Done => {
                let dump = control.read()?;
                let (operation, messages, calls, at) = part
                    .take()
                    .ok_or_else(|| format!("{DRIVER}: done before ready"))?;
                eprintln!(
                    "server work: {operation} at {messages} messages: {} instructions per call \
                     ({calls} calls, {:.1} s)",
                    super::format::thousands(dump.measured() as f64 / calls.max(1) as f64),
                    at.elapsed().as_secs_f64()
                );
                add_part(&mut measurements, &operation, messages, calls, dump);
                writeln!(to_driver, "next").map_err(|e| format!("{DRIVER}: {e}"))?;
            }
            Said::End => ended = true,
            Said::Other => eprintln!("{line}"),
        }
    }
    let status = child.wait().map_err(|e| format!("{DRIVER}: {e}"))?;
    if !status.success() || !ended {
        return Err(format!("{DRIVER} failed ({status})"));
    }
    drop(server);
    eprintln!(
        "server work: {} measurements in {:.1} s",
        measurements.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(measurements)
}

/// The driver's binary, built as the workspace's examples are (so that
/// nothing rebuilds after `cargo xtask examples`).
fn driver() -> Result<PathBuf> {
    build_examples(Some(DRIVER))?
        .into_iter()
        .find(|(name, _)| name == DRIVER)
        .map(|(_, path)| path)
        .ok_or_else(|| format!("cargo built no example {DRIVER}"))
}

/// `--top N` in `args`: how many functions each measurement's profile
/// lists (none without it).
fn top(args: &[String]) -> Result<Option<usize>> {
    match args.iter().position(|a| a == "--top") {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| "--top needs a number".to_owned()),
    }
}

/// `--reason TEXT` in `args`.
fn reason(args: &[String]) -> Option<&str> {
    let i = args.iter().position(|a| a == "--reason")?;
    args.get(i + 1).map(String::as_str)
}

const USAGE: &str = "usage: cargo xtask server-work [--update-budgets --reason TEXT] [--top N]

Counts the instructions redis-server executes per store call (valgrind's
callgrind; installed when missing) at the lengths and calls of
xtask/server-work-budgets.json, and fails when one takes more than 10 % over
its budget (part of `cargo xtask ci`).

  --update-budgets  rewrites the budgets that moved by more than 2 % (and
                    adds missing ones) with the reason --reason gives
  --top N           prints the N costliest functions of each measurement
  -h, --help        this text

The full table, at 10 to 10,000 messages: cargo xtask bench --server-work";

/// `cargo xtask server-work`: the check against the budgets, or
/// `--update-budgets`. `driver`: the example's binary when already built
/// (`cargo xtask ci` builds every example first).
pub(crate) fn check(args: &[String], driver: Option<PathBuf>) -> Result {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let update = args.iter().any(|a| a == "--update-budgets");
    let reason = reason(args);
    if update && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(format!(
            "--update-budgets needs --reason \"why the budgets change\"\n\n{USAGE}"
        ));
    }
    let top = top(args)?;
    let known = ["--update-budgets", "--reason", "--top"];
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if !known.contains(&arg.as_str()) {
            return Err(format!("unexpected argument {arg:?}\n\n{USAGE}"));
        }
        if arg != "--update-budgets" {
            rest.next();
        }
    }
    let path = root().join(budgets::FILE);
    let budgets = match std::fs::read_to_string(&path) {
        Ok(text) => Budgets::parse(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && update => Budgets::default(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let plan = if budgets.budgets.is_empty() {
        Plan::check()
    } else {
        Plan {
            lengths: budgets.lengths.clone(),
            calls: budgets.calls,
        }
    };
    ensure_redis()?;
    ensure_valgrind()?;
    let driver = match driver {
        Some(driver) => driver,
        None => self::driver()?,
    };
    let started = Instant::now();
    eprintln!(
        "\n==> server work: {} calls per operation at {} messages, against {}",
        plan.calls,
        plan.lengths
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        budgets::FILE
    );
    let measured = measure(&plan, &driver)?;
    println!("{}", page::table(&rows(&measured)));
    print_profiles(&measured, top);
    eprintln!("    (server work: {:.1}s)", started.elapsed().as_secs_f64());
    if update {
        let reason = reason.unwrap_or_default();
        let (new, changes) =
            budgets::update(&budgets, &measured, &plan, &redis_version().1, reason);
        std::fs::write(&path, new.to_text()?).map_err(|e| format!("{}: {e}", path.display()))?;
        if changes.is_empty() {
            eprintln!("server work: every budget within 2 % of its measurement: none changed");
        }
        for change in changes {
            eprintln!("server work: budget of {change}");
        }
        return Ok(());
    }
    let checked = budgets::check(&budgets, &measured, &redis_version().1);
    for note in &checked.notes {
        eprintln!("server work: note: {note}");
    }
    for failure in &checked.failures {
        eprintln!("server work: FAILED: {failure}");
    }
    if checked.failures.is_empty() {
        eprintln!(
            "server work: every call within {:.0} % of its budget ({})",
            budgets::TOLERANCE * 100.0,
            budgets::FILE
        );
        Ok(())
    } else {
        Err(format!(
            "server work: {} over budget or without one (see above)",
            checked.failures.len()
        ))
    }
}

/// `cargo xtask bench --server-work [--quick] [--top N]`: the whole table,
/// recorded in the page.
pub(super) fn bench(args: &[String]) -> Result {
    let quick = args.iter().any(|a| a == "--quick");
    let top = top(args)?;
    let plan = if quick { Plan::quick() } else { Plan::full() };
    ensure_redis()?;
    ensure_valgrind()?;
    let driver = driver()?;
    let wall = Instant::now();
    let date =
        machine::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "?".into());
    let load_before = machine::load_average();
    let git = machine::git_describe();
    let measured = measure(&plan, &driver)?;
    let rows = rows(&measured);
    println!("{}", page::table(&rows));
    print_profiles(&measured, top);
    // The budgets' lengths, as notes only: the check is `cargo xtask ci`'s.
    if let Ok(text) = std::fs::read_to_string(root().join(budgets::FILE)) {
        let budgets = Budgets::parse(&text)?;
        let compared: Vec<Measurement> = measured
            .into_iter()
            .filter(|m| budgets.lengths.contains(&m.messages))
            .collect();
        let checked = budgets::check(&budgets, &compared, &redis_version().1);
        for line in checked.failures.iter().chain(&checked.notes) {
            eprintln!("server work: against the budgets: {line}");
        }
    }
    let run = RunInfo {
        date: date.clone(),
        cpu: machine::cpu(),
        git,
        quick,
        criterion_args: Vec::new(),
        filters: vec!["--server-work".to_owned()],
        minutes: wall.elapsed().as_secs_f64() / 60.0,
        load_before,
        load_after: machine::load_average(),
        host: Some(machine::host()),
    };
    let current = Record {
        runs: vec![run],
        server_work: Some(ServerWork {
            run: date,
            warm_up: WARM_UP,
            rows,
        }),
        ..Record::default()
    };
    let record_path = root().join(RECORD);
    let record = match std::fs::read_to_string(&record_path) {
        Ok(text) => Record::from_json(&text)
            .map_err(|e| format!("{}: {e}", record_path.display()))?
            .merge(current),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => current,
        Err(e) => return Err(format!("{}: {e}", record_path.display())),
    };
    std::fs::write(&record_path, record.to_json()?)
        .map_err(|e| format!("{}: {e}", record_path.display()))?;
    write_page(&record)?;
    eprintln!(
        "\nbench: wrote {} and {RECORD} (server work, {:.1} min)",
        super::DOC,
        wall.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

fn rows(measured: &[Measurement]) -> Vec<ServerWorkRow> {
    measured.iter().map(Measurement::row).collect()
}

/// With `--top N`: each measurement's N costliest functions per call,
/// inclusive of what they call and by themselves, with calls per call.
fn print_profiles(measured: &[Measurement], top: Option<usize>) {
    let Some(n) = top else {
        return;
    };
    for m in measured {
        let calls = m.calls.max(1) as f64;
        let timer: u64 = callgrind::EXCLUDED
            .iter()
            .filter_map(|f| m.profile.inclusive.get(*f))
            .map(|c| c.instructions)
            .sum();
        println!(
            "\n{} at {} messages: {:.0} instructions per call (the timer's, left out: {:.0}, \
             which the self costs below include)",
            m.operation,
            m.messages,
            m.per_call(),
            timer as f64 / calls
        );
        for (label, lines) in [
            (
                "inclusive",
                page::top_inclusive(&m.profile, m.instructions, n),
            ),
            ("self", page::top_own(&m.profile, n)),
        ] {
            println!("  {label}: instructions per call, calls per call, function");
            for (name, ir, count) in lines {
                println!("  {:>10.0} {:>7.2}  {name}", ir / calls, count / calls);
            }
        }
    }
}
