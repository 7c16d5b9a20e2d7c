//! Callgrind from outside: dumping the counters of a redis-server running
//! under it (`callgrind_control --dump`), and reading a dump.
//!
//! A dump holds what the process executed since the previous dump, so two
//! dumps around a batch of calls count the batch. What a dump counts that
//! is no call's: `serverCron`, the server's timer (10 times a second:
//! statistics, expiry, client and hash-table housekeeping; about 120k
//! instructions each time, most of them jemalloc's statistics). Under
//! callgrind the server runs some 50× slower, so a batch spans 50× more
//! timer ticks than it would natively, and their number depends on the
//! machine's speed: [`Dump::measured`] leaves them out. (Callgrind's own
//! `--toggle-collect` would, but inverts collection for the whole run
//! instead.) What else runs on the timer's wake-ups (an event-loop pass,
//! a few hundred instructions each) stays in, about 30 instructions per
//! call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// Functions whose cost (with everything they call) is not the calls':
/// see the module docs.
pub(super) const EXCLUDED: [&str; 1] = ["serverCron"];

/// The file callgrind writes its dumps to, in the server's directory
/// (`callgrind.out.1`, `callgrind.out.2`, ...).
pub(super) const OUT_FILE: &str = "callgrind.out";

/// Instructions and calls of a function, inclusive of what it calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cost {
    pub(super) instructions: u64,
    pub(super) calls: u64,
}

/// One dump: `Ir` (instructions executed) in all, per function by itself,
/// and per function inclusive of its callees (summed over its call
/// sites; a recursive function counts its inner calls twice, as
/// `callgrind_annotate --inclusive=yes` does).
#[derive(Debug, Default)]
pub(super) struct Dump {
    pub(super) totals: u64,
    pub(super) own: BTreeMap<String, u64>,
    pub(super) inclusive: BTreeMap<String, Cost>,
}

impl Dump {
    /// Reads callgrind's output format (`totals:`, or the cost lines'
    /// sum without it; names compressed or not; line or instruction
    /// positions, compressed or not; the `Ir` column wherever `events:`
    /// puts it).
    pub(super) fn parse(text: &str) -> Result<Dump> {
        let mut dump = Dump::default();
        // Compressed names: `fn=(12) name` defines 12, `fn=(12)` uses it.
        // Functions (fn, cfn) share one table.
        let mut names: BTreeMap<u64, String> = BTreeMap::new();
        let mut positions = 1;
        let mut ir_column = None;
        let mut totals = None;
        let mut summed = 0u64;
        let mut function = String::new();
        let mut callee = String::new();
        // The next cost line is a call's (after `calls=`), or a jump's
        // position (after `jump=`/`jcnd=`), not the function's own.
        let mut next_is_call: Option<u64> = None;
        let mut next_is_jump = false;
        for (number, line) in text.lines().enumerate() {
            let at = || format!("callgrind output line {}", number + 1);
            if let Some(value) = line.strip_prefix("positions:") {
                positions = value.split_whitespace().count();
            } else if let Some(value) = line.strip_prefix("events:") {
                ir_column = value.split_whitespace().position(|e| e == "Ir");
                if ir_column.is_none() {
                    return Err(format!("{}: no Ir event in {line:?}", at()));
                }
            } else if let Some(value) = line.strip_prefix("totals:") {
                let column = ir_column.unwrap_or(0);
                totals = value
                    .split_whitespace()
                    .nth(column)
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| format!("{}: {e}", at()))?;
            } else if let Some(value) = line.strip_prefix("fn=") {
                function = name(&mut names, value).map_err(|e| format!("{}: {e}", at()))?;
            } else if let Some(value) = line.strip_prefix("cfn=") {
                callee = name(&mut names, value).map_err(|e| format!("{}: {e}", at()))?;
            } else if let Some(value) = line.strip_prefix("calls=") {
                let count = value
                    .split_whitespace()
                    .next()
                    .ok_or_else(|| format!("{}: empty calls=", at()))?;
                next_is_call = Some(count.parse().map_err(|e| format!("{}: {e}", at()))?);
            } else if line.starts_with("jump=") || line.starts_with("jcnd=") {
                next_is_jump = true;
            } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
                if std::mem::take(&mut next_is_jump) {
                    continue;
                }
                let column = ir_column.ok_or_else(|| format!("{}: cost before events:", at()))?;
                // Missing trailing events are zero.
                let ir: u64 = match line.split_whitespace().nth(positions + column) {
                    Some(ir) => ir.parse().map_err(|e| format!("{}: {e}", at()))?,
                    None => 0,
                };
                match next_is_call.take() {
                    Some(calls) => {
                        let cost = dump.inclusive.entry(callee.clone()).or_default();
                        cost.instructions += ir;
                        cost.calls += calls;
                    }
                    None => {
                        *dump.own.entry(function.clone()).or_default() += ir;
                        summed += ir;
                    }
                }
            }
        }
        if ir_column.is_none() {
            return Err("not callgrind output: no events: line".into());
        }
        dump.totals = totals.unwrap_or(summed);
        Ok(dump)
    }

    /// The instructions the dump counts, less those of [`EXCLUDED`].
    pub(super) fn measured(&self) -> u64 {
        let excluded: u64 = EXCLUDED
            .iter()
            .filter_map(|f| self.inclusive.get(*f))
            .map(|c| c.instructions)
            .sum();
        self.totals.saturating_sub(excluded)
    }

    /// Adds `other`'s counts to this one's (the parts of a measurement).
    pub(super) fn add(&mut self, other: Dump) {
        self.totals += other.totals;
        for (f, ir) in other.own {
            *self.own.entry(f).or_default() += ir;
        }
        for (f, cost) in other.inclusive {
            let mine = self.inclusive.entry(f).or_default();
            mine.instructions += cost.instructions;
            mine.calls += cost.calls;
        }
    }
}

/// A function's name from `value` (`(id) name`, `(id)` or `name`),
/// recording a compressed name's definition.
fn name(names: &mut BTreeMap<u64, String>, value: &str) -> Result<String> {
    let value = value.trim();
    let Some(rest) = value.strip_prefix('(') else {
        return Ok(value.to_owned());
    };
    let (id, name) = rest
        .split_once(')')
        .ok_or_else(|| format!("unclosed name id in {value:?}"))?;
    let id: u64 = id
        .parse()
        .map_err(|e| format!("bad name id in {value:?}: {e}"))?;
    let name = name.trim();
    if name.is_empty() {
        names
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("name id ({id}) used before it is defined"))
    } else {
        names.insert(id, name.to_owned());
        Ok(name.to_owned())
    }
}

/// The callgrind of one redis-server: its pid and the directory its dumps
/// land in.
#[derive(Debug)]
pub(super) struct Control {
    pub(super) pid: u32,
    pub(super) dir: PathBuf,
}

impl Control {
    /// Asks callgrind to dump its counters now (`callgrind_control --dump`,
    /// which returns once the dump is written) and returns the dump's
    /// file.
    pub(super) fn dump(&self) -> Result<PathBuf> {
        let out = Command::new("callgrind_control")
            .arg("--dump")
            .arg(self.pid.to_string())
            .output()
            .map_err(|e| format!("callgrind_control: {e} (it comes with valgrind)"))?;
        if !out.status.success() {
            return Err(format!(
                "callgrind_control --dump {} failed ({}): {}{}",
                self.pid,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        newest_part(&self.dir)?.ok_or_else(|| {
            format!(
                "callgrind_control --dump {} wrote no {OUT_FILE}.<n> in {}",
                self.pid,
                self.dir.display()
            )
        })
    }

    /// Dumps the counters and throws the dump away: what ran before is
    /// not counted.
    pub(super) fn reset(&self) -> Result {
        let path = self.dump()?;
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Dumps the counters and reads the dump (then removes its file).
    pub(super) fn read(&self) -> Result<Dump> {
        let path = self.dump()?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dump = Dump::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(dump)
    }
}

/// The dump file with the highest part number in `dir`.
fn newest_part(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(part) = name
            .to_str()
            .and_then(|n| n.strip_prefix(OUT_FILE)?.strip_prefix('.')?.parse().ok())
        else {
            continue;
        };
        if newest.as_ref().is_none_or(|(n, _)| part > *n) {
            newest = Some((part, entry.path()));
        }
    }
    Ok(newest.map(|(_, path)| path))
}
