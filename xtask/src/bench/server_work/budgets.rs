//! `xtask/server-work-budgets.json`: the instructions per call each
//! operation may take inside redis-server, checked by `cargo xtask ci`
//! (`cargo xtask server-work`), rewritten by `cargo xtask server-work
//! --update-budgets --reason "…"`.
//!
//! One budget per operation and history length, one per line, each with
//! the reason of its last change. The check fails when a call costs more
//! than [`TOLERANCE`] over its budget, and notes (without failing) one
//! that costs more than [`TOLERANCE`] under it: lower the budget then, so
//! that the saving is kept. A change that costs instructions on purpose
//! updates its budget in the same commit, with the reason.

use serde::{Deserialize, Serialize};

use super::{Measurement, Plan};
use crate::Result;

/// The file, from the workspace root.
pub(crate) const FILE: &str = "xtask/server-work-budgets.json";

/// How far over its budget a call may go before the check fails (and
/// under it before the check suggests lowering it): 10 %.
pub(super) const TOLERANCE: f64 = 0.10;

/// `--update-budgets` leaves a budget alone while its measurement is this
/// close to it (runs agree within about 0.5 %): no churn without a change.
pub(super) const UPDATE_THRESHOLD: f64 = 0.02;

/// What the file says about itself.
const ABOUT: &str = "Instructions per call inside redis-server (callgrind), by operation and \
                     history length, for `cargo xtask server-work` (part of `cargo xtask ci`): \
                     it fails when a call takes more than 10 % over its budget. An intended \
                     change updates the budget in the same commit, with the reason: `cargo xtask \
                     server-work --update-budgets --reason \"...\"`. See \
                     xtask/src/bench/server_work/mod.rs.";

/// One operation at one history length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Budget {
    pub(super) operation: String,
    pub(super) messages: u32,
    /// Instructions per call.
    pub(super) instructions: u64,
    /// Why it was last changed.
    pub(super) reason: String,
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub(super) struct Budgets {
    /// How many calls per measurement the check makes.
    pub(super) calls: u32,
    /// The history lengths it measures.
    pub(super) lengths: Vec<u32>,
    /// The redis-server the budgets were measured on (`7.0.15`): counts
    /// are the server build's, and the string functions glibc picks for
    /// the CPU (valgrind offers AVX2 at most).
    #[serde(default)]
    pub(super) redis_server: String,
    pub(super) budgets: Vec<Budget>,
}

impl Budgets {
    pub(super) fn parse(text: &str) -> Result<Budgets> {
        serde_json::from_str(text).map_err(|e| format!("{FILE}: {e}"))
    }

    /// The file's text: one budget per line, so that a diff shows which
    /// changed and why.
    pub(super) fn to_text(&self) -> Result<String> {
        let mut out = format!(
            "{{\n  \"about\": {},\n  \"calls\": {},\n  \"lengths\": {},\n  \"redis_server\": {},\n  \
             \"budgets\": [\n",
            json(ABOUT)?,
            self.calls,
            json(&self.lengths)?,
            json(&self.redis_server)?
        );
        let lines = self
            .budgets
            .iter()
            .map(|b| json(b).map(|line| format!("    {line}")))
            .collect::<Result<Vec<_>>>()?;
        out.push_str(&lines.join(",\n"));
        out.push_str("\n  ]\n}\n");
        Ok(out)
    }

    fn get(&self, operation: &str, messages: u32) -> Option<&Budget> {
        self.budgets
            .iter()
            .find(|b| b.operation == operation && b.messages == messages)
    }
}

/// `value` as compact JSON.
fn json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| format!("{FILE}: {e}"))
}

/// What a check found: failures (over budget, or no budget) and notes
/// (well under budget; budgets nothing measured).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Checked {
    pub(super) failures: Vec<String>,
    pub(super) notes: Vec<String>,
}

/// `measured` (on `redis_server`) against `budgets`.
pub(super) fn check(budgets: &Budgets, measured: &[Measurement], redis_server: &str) -> Checked {
    let mut out = Checked::default();
    if budgets.redis_server != redis_server {
        out.notes.push(format!(
            "the budgets were measured on redis-server {}, this is {redis_server}: counts are \
             the server build's; if this one is meant to stay, re-record them",
            budgets.redis_server
        ));
    }
    for m in measured {
        let what = format!("{} at {} messages", m.operation, m.messages);
        let per_call = m.per_call();
        let Some(budget) = budgets.get(&m.operation, m.messages) else {
            out.failures.push(format!(
                "{what}: {per_call:.0} instructions per call, and no budget: record one with \
                 `cargo xtask server-work --update-budgets --reason \"...\"`"
            ));
            continue;
        };
        let limit = budget.instructions as f64;
        let change = (per_call - limit) / limit * 100.0;
        if per_call > limit * (1.0 + TOLERANCE) {
            out.failures.push(format!(
                "{what}: {per_call:.0} instructions per call, {change:+.1} % over its budget of \
                 {} (more than {:.0} %). If intended, update the budget with the reason: `cargo \
                 xtask server-work --update-budgets --reason \"...\"`",
                budget.instructions,
                TOLERANCE * 100.0
            ));
        } else if per_call < limit * (1.0 - TOLERANCE) {
            out.notes.push(format!(
                "{what}: {per_call:.0} instructions per call, {change:+.1} % under its budget of \
                 {}: lower the budget to keep the saving (`cargo xtask server-work \
                 --update-budgets --reason \"...\"`)",
                budget.instructions
            ));
        }
    }
    for b in &budgets.budgets {
        if !measured
            .iter()
            .any(|m| m.operation == b.operation && m.messages == b.messages)
        {
            out.notes.push(format!(
                "{} at {} messages has a budget but was not measured: `--update-budgets` drops it",
                b.operation, b.messages
            ));
        }
    }
    out
}

/// The budgets after `measured`, with `reason` for every one that changed:
/// new operations get one, budgets more than [`UPDATE_THRESHOLD`] off
/// their measurement get it (rounded to 100 instructions), the rest are
/// kept as they are, and budgets nothing measured are dropped. Returns the
/// new budgets and a line per change.
pub(super) fn update(
    budgets: &Budgets,
    measured: &[Measurement],
    plan: &Plan,
    redis_server: &str,
    reason: &str,
) -> (Budgets, Vec<String>) {
    let mut changes = Vec::new();
    let mut out = Vec::with_capacity(measured.len());
    for m in measured {
        let per_call = m.per_call();
        // Instructions per call, to the nearest 100.
        let hundreds = m.calls.max(1) * 100;
        let rounded = (m.instructions + hundreds / 2) / hundreds * 100;
        let fresh = Budget {
            operation: m.operation.clone(),
            messages: m.messages,
            instructions: rounded,
            reason: reason.to_owned(),
        };
        match budgets.get(&m.operation, m.messages) {
            None => {
                changes.push(format!(
                    "{} at {} messages: new budget {rounded}",
                    m.operation, m.messages
                ));
                out.push(fresh);
            }
            Some(old)
                if (per_call - old.instructions as f64).abs()
                    > old.instructions as f64 * UPDATE_THRESHOLD =>
            {
                changes.push(format!(
                    "{} at {} messages: {} → {rounded}",
                    m.operation, m.messages, old.instructions
                ));
                out.push(fresh);
            }
            Some(old) => out.push(old.clone()),
        }
    }
    for b in &budgets.budgets {
        if !out
            .iter()
            .any(|n| n.operation == b.operation && n.messages == b.messages)
        {
            changes.push(format!(
                "{} at {} messages: dropped (not measured)",
                b.operation, b.messages
            ));
        }
    }
    (
        Budgets {
            calls: plan.calls,
            lengths: plan.lengths.clone(),
            redis_server: redis_server.to_owned(),
            budgets: out,
        },
        changes,
    )
}
