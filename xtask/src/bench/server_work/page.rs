//! The server work's table (printed by the jobs, and the page's section)
//! and the profiles `--top N` prints.

use std::fmt::Write as _;

use super::budgets;
use super::callgrind::{Dump, EXCLUDED};
use crate::bench::format::{cell, thousands};
use crate::bench::record::{Record, ServerWorkRow};
use crate::bench::render::run_label;

/// The blob baseline's operations, as the driver names them, and the turn
/// the table adds up from them.
const BLOB_GET: &str = "blob GET";
const BLOB_SET: &str = "blob SET";
const BLOB_TURN: &str = "blob turn: GET + SET";

/// The table: an operation per row (in the order measured, each blob `SET`
/// followed by the blob turn, its `GET` + `SET`), a history length per
/// column, instructions per call in the cells.
pub(super) fn table(rows: &[ServerWorkRow]) -> String {
    let mut lengths: Vec<u32> = rows.iter().map(|r| r.messages).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut operations: Vec<&str> = Vec::new();
    for r in rows {
        if !operations.contains(&r.operation.as_str()) {
            operations.push(&r.operation);
        }
    }
    let get = |operation: &str, len: u32| {
        rows.iter()
            .find(|r| r.operation == operation && r.messages == len)
            .map(|r| r.instructions)
    };
    let mut d = String::from("| operation |");
    for len in &lengths {
        let _ = write!(d, " {} |", thousands(f64::from(*len)));
    }
    d.push_str("\n|---|");
    d.push_str(&"---:|".repeat(lengths.len()));
    d.push('\n');
    let line = |d: &mut String, label: &str, cells: &mut dyn FnMut(u32) -> Option<f64>| {
        let _ = write!(d, "| {} |", cell(label));
        for &len in &lengths {
            let _ = write!(d, " {} |", cells(len).map_or_else(|| "—".into(), thousands));
        }
        d.push('\n');
    };
    for operation in operations {
        line(&mut d, operation, &mut |len| get(operation, len));
        // `blob SET` or `blob SET, <mix>`: then the turn of that mix.
        if let Some(mix) = operation.strip_prefix(BLOB_SET) {
            let get_op = format!("{BLOB_GET}{mix}");
            line(&mut d, &format!("{BLOB_TURN}{mix}"), &mut |len| {
                Some(get(&get_op, len)? + get(operation, len)?)
            });
        }
    }
    d
}

/// The page's section, when the record has server work.
pub(in crate::bench) fn section(record: &Record) -> Option<String> {
    let work = record.server_work.as_ref()?;
    let most = work.rows.iter().map(|r| r.calls).max()?;
    let fewer = work.rows.iter().any(|r| r.calls < most);
    let mut d = format!(
        "## Server work (instructions per operation, callgrind)\n\n_Measured {}._\n\n",
        run_label(record, &work.run)
    );
    let _ = write!(
        d,
        "Instructions redis-server executes per store call, counted by callgrind \
         (`cargo xtask bench --server-work`): the average over {} calls after {} warm-up calls{}, \
         made through `RedisStore` by the `server_work` example of statestore-redis (what each \
         call works on is in its docs; the method and what it leaves out are in \
         `xtask/src/bench/server_work/mod.rs`). Short messages (about 60 B) unless the mix is \
         named. Unlike the times above, these counts do not move with the machine's load: two \
         runs agree within about 0.5 % on the store's calls (within about 10 % on the blob's \
         `SET` of a value over 32 KB, which takes as many socket reads as the timing makes). \
         `cargo xtask ci` checks the figures at {} messages \
         against `{}` and fails on {:.0} % over a budget. Callgrind counts user-space \
         instructions only: the kernel's socket work and memory stalls are not in them, so the \
         blob's `GET` and `SET` of a large value, mostly copying, cost more than their count \
         says.\n\n",
        thousands(most as f64),
        work.warm_up,
        if fewer {
            " (a fifth as many where the history is 1 MB or more and the call's cost grows \
             with it)"
        } else {
            ""
        },
        budgets_lengths(),
        budgets::FILE,
        budgets::TOLERANCE * 100.0
    );
    d.push_str(&table(&work.rows));
    Some(d)
}

/// The lengths the budgets cover, as the page states them.
fn budgets_lengths() -> String {
    std::fs::read_to_string(crate::root().join(budgets::FILE))
        .ok()
        .and_then(|text| budgets::Budgets::parse(&text).ok())
        .map_or_else(
            || "10 and 100".to_owned(),
            |b| {
                b.lengths
                    .iter()
                    .map(|l| thousands(f64::from(*l)))
                    .collect::<Vec<_>>()
                    .join(" and ")
            },
        )
}

/// The `n` functions with the most instructions inclusive of their
/// callees, as (name, instructions, calls): not the excluded timer, nor
/// the frames every call passes through (the event loop, `main`: 97 % of
/// `measured` or more).
pub(super) fn top_inclusive(dump: &Dump, measured: u64, n: usize) -> Vec<(String, f64, f64)> {
    let mut all: Vec<(String, f64, f64)> = dump
        .inclusive
        .iter()
        .filter(|(name, cost)| {
            !EXCLUDED.contains(&name.as_str())
                && (cost.instructions as f64) < 0.97 * measured as f64
        })
        .map(|(name, cost)| (name.clone(), cost.instructions as f64, cost.calls as f64))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all.truncate(n);
    all
}

/// The `n` functions with the most instructions of their own, as (name,
/// instructions, calls).
pub(super) fn top_own(dump: &Dump, n: usize) -> Vec<(String, f64, f64)> {
    let mut all: Vec<(String, f64, f64)> = dump
        .own
        .iter()
        .map(|(name, ir)| {
            let calls = dump.inclusive.get(name).map_or(0, |c| c.calls);
            (name.clone(), *ir as f64, calls as f64)
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all.truncate(n);
    all
}
