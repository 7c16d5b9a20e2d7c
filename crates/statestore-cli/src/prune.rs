//! `statestore prune`: retention by age, through `Store::prune` — the
//! sessions idle (not written) or created longer ago than a cutoff, one
//! user's with `--user`, a bounded batch per call until none is left; a
//! session written meanwhile is kept. `--dry-run` counts and deletes
//! nothing.

use std::time::Duration;

use serde_json::json;
use statestore::{PruneQuery, Timestamp};

use crate::args::PruneArgs;
use crate::error::CliError;
use crate::store::open;
use crate::ui::{self, Ui};

/// Sessions examined per `Store::prune` call.
const BATCH: usize = 200;

pub(crate) async fn prune(ui: &Ui, url: &str, args: PruneArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let mut query = match (args.idle, args.older_than) {
        (Some(idle), older) => {
            let q = PruneQuery::idle_for(idle);
            match older {
                Some(older) => q.and_older_than(older),
                None => q,
            }
        }
        (None, Some(older)) => PruneQuery::older_than(older),
        // clap requires one of them.
        (None, None) => {
            return Err(CliError::Usage {
                message: "prune needs --idle or --older-than".into(),
                hint: Some("`statestore prune --idle 30d --dry-run` shows what would go".into()),
            });
        }
    };
    if let Some(user) = &args.user {
        query = query.user(user.clone());
    }
    if args.dry_run {
        query = query.dry_run();
    }
    // Every batch measures ages at the same instant.
    let as_of = Timestamp::now();
    query = query.as_of(as_of).with_limit(BATCH);
    let bar = if ui.progress_bars {
        let counted = store
            .list(&query.listing(as_of).with_limit(1).with_count())
            .await
            .map_err(CliError::read("counting the sessions to prune"))?;
        ui.progress(counted.total.unwrap_or(0), "pruning")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (mut removed, mut kept) = (0u64, 0u64);
    loop {
        let step = store.prune(&query).await.map_err(|e| {
            bar.abandon();
            CliError::write(format!(
                "pruning (after {removed} sessions removed; running it again goes on)"
            ))(e)
        })?;
        removed += step.removed;
        kept += step.kept;
        bar.inc(step.removed + step.kept);
        match step.next_cursor {
            Some(cursor) => query = query.after(Some(cursor)),
            None => break,
        }
    }
    bar.finish_and_clear();
    if ui.json {
        ui.out_json(&json!({ "removed": removed, "kept": kept, "dry_run": args.dry_run }))?;
        return Ok(());
    }
    let what = criteria(&args);
    let sessions = |n: u64| {
        format!(
            "{} session{}",
            ui::thousands(n),
            if n == 1 { "" } else { "s" }
        )
    };
    let mut line = if args.dry_run {
        format!(
            "would prune {} {what} (dry run: nothing deleted)",
            sessions(removed)
        )
    } else {
        format!("pruned {} {what}", sessions(removed))
    };
    if kept > 0 {
        line.push_str(&format!("; {} written meanwhile, kept", sessions(kept)));
    }
    ui.done(&format!("{line}\n"))?;
    Ok(())
}

/// The criteria in words: "idle for 30d, created 1y ago or more, of alice".
fn criteria(args: &PruneArgs) -> String {
    let mut parts = Vec::new();
    if let Some(idle) = args.idle {
        parts.push(format!("idle for {}", ui::duration(idle)));
    }
    if let Some(older) = args.older_than {
        parts.push(format!("created {} ago or more", ui::duration(older)));
    }
    let mut text = parts.join(" and ");
    if let Some(user) = &args.user {
        text.push_str(&format!(" of user {user:?}"));
    }
    text
}

/// Parses `--idle` and `--older-than` (`30d`, `12h`, `90m`, …).
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    statestore::parse_duration(text)
}
