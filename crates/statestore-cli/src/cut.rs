//! `trim` and `compact`: deleting the older part of a session, after
//! summarizing it for `compact` — both guarded by the version they read.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::json;
use statestore::window::{self, CharEstimate, Summarizer, WindowPolicy};
use statestore::{BoxError, Message, Role, SessionId, Store, Summary};

use crate::args::{CompactArgs, TrimArgs};
use crate::error::CliError;
use crate::sessions::not_found;
use crate::show::one_line;
use crate::store::{Create, open_to_write};
use crate::ui::{self, Ui};

pub(crate) async fn trim(ui: &Ui, url: &str, args: TrimArgs) -> Result<(), CliError> {
    let store = open_to_write(url, &[&args.id], "trim", Create::No).await?;
    let policy = WindowPolicy::default().max_messages(args.keep);
    if args.dry_run {
        return preview(ui, &*store, &args.id, &policy, false).await;
    }
    let doing = format!("trimming session {}", args.id);
    let compacted = window::compact(&*store, &args.id, &policy, &CharEstimate)
        .await
        .map_err(|source| CliError::Window {
            doing: doing.clone(),
            source,
        })?
        .ok_or_else(|| not_found(&args.id))?;
    let left = remaining(&*store, &args.id).await?;
    report_cut(
        ui,
        &args.id,
        compacted.removed,
        left,
        compacted.version,
        None,
    )
}

/// `--dry-run`: what `trim` (or, with `summarize`, `compact`) would do to
/// session `id` under `policy`, from one read that moves none of its clocks;
/// nothing is written and no model is called.
async fn preview(
    ui: &Ui,
    store: &dyn Store,
    id: &SessionId,
    policy: &WindowPolicy,
    summarize: bool,
) -> Result<(), CliError> {
    let state = crate::sessions::load(store, id).await?;
    let doing = format!("choosing what to keep of session {id}");
    let start = window::select(&state, policy, &CharEstimate)
        .map_err(|source| CliError::Window { doing, source })?
        .first_position;
    let removed = usize::try_from(start).unwrap_or(usize::MAX);
    let left = (state.messages.len() as u64).saturating_sub(start);
    // What a summary would cover: from the end of the one there (if any)
    // to where the kept messages start.
    let covered = state
        .summaries
        .iter()
        .filter(|s| s.covers.start == 0)
        .map(|s| s.covers.end)
        .max()
        .unwrap_or(0);
    let summarized = (summarize && start > covered).then_some(covered..start);
    if ui.json {
        return ui.out_json(&json!({
            "session": id.as_str(),
            "removed": removed,
            "remaining": left,
            "version": state.version,
            "summary": null,
            "summarized": summarized.as_ref().map(|r| json!([r.start, r.end])),
            "dry_run": true,
        }));
    }
    let mut text = String::new();
    if let Some(r) = &summarized {
        let _ = writeln!(
            text,
            "would summarize messages #{}..#{}",
            r.start,
            r.end.saturating_sub(1)
        );
    }
    if removed == 0 {
        let _ = writeln!(
            text,
            "nothing to remove from {id}: {} (version {})",
            ui::count(left, "message"),
            state.version
        );
    } else {
        let _ = writeln!(
            text,
            "would remove {} from {id}; {left} would remain (version {})",
            ui::count(removed as u64, "message"),
            state.version
        );
    }
    text.push_str("(dry run: nothing changed)\n");
    ui.done(&text)
}

/// Messages the session holds now.
async fn remaining(store: &dyn Store, id: &SessionId) -> Result<u64, CliError> {
    Ok(store
        .load_recent(id, 0)
        .await
        .map_err(CliError::read(format!("reading session {id}")))?
        .map_or(0, |r| r.total_messages))
}

fn report_cut(
    ui: &Ui,
    id: &SessionId,
    removed: usize,
    left: u64,
    version: u64,
    summary: Option<&Summary>,
) -> Result<(), CliError> {
    if ui.json {
        return ui.out_json(&json!({
            "session": id.as_str(),
            "removed": removed,
            "remaining": left,
            "version": version,
            "summary": summary.map(|s| &s.content),
            "dry_run": false,
        }));
    }
    let mut text = String::new();
    if let Some(s) = summary {
        let _ = writeln!(
            text,
            "summarized messages #0..#{} ({} characters)",
            s.covers.end.saturating_sub(1),
            s.content.chars().count()
        );
    }
    if removed == 0 {
        let _ = writeln!(
            text,
            "nothing to remove from {id}: {} (version {version})",
            ui::count(left, "message")
        );
    } else {
        let _ = writeln!(
            text,
            "removed {} from {id}; {left} remain (version {version})",
            ui::count(removed as u64, "message")
        );
    }
    ui.done(&text)
}

pub(crate) async fn compact(ui: &Ui, url: &str, args: CompactArgs) -> Result<(), CliError> {
    let store = open_to_write(url, &[&args.id], "compact", Create::No).await?;
    let exists = store
        .exists(&args.id)
        .await
        .map_err(CliError::read(format!("reading session {}", args.id)))?;
    if !exists {
        return Err(not_found(&args.id));
    }
    let policy = WindowPolicy::default().max_messages(args.keep);
    if args.dry_run {
        return preview(ui, &*store, &args.id, &policy, true).await;
    }
    let summarizer: Arc<dyn Summarizer> = {
        let provider = crate::chat::provider()?;
        if provider.name() == "offline" {
            Arc::new(Extractive)
        } else {
            Arc::new(statestore::pipeline::ProviderSummarizer::new(provider))
        }
    };
    let doing = format!("summarizing session {}", args.id);
    let summary =
        window::summarize_dropped(&*store, &args.id, &policy, &CharEstimate, &*summarizer)
            .await
            .map_err(|source| CliError::Window { doing, source })?;
    let doing = format!(
        "deleting the summarized messages of session {} (the summary is stored)",
        args.id
    );
    let compacted = window::compact(&*store, &args.id, &policy, &CharEstimate)
        .await
        .map_err(|source| CliError::Window { doing, source })?
        .ok_or_else(|| not_found(&args.id))?;
    let left = remaining(&*store, &args.id).await?;
    report_cut(
        ui,
        &args.id,
        compacted.removed,
        left,
        compacted.version,
        summary.as_ref(),
    )
}

/// The offline summarizer: the older summary, then each message's first
/// line, cut short — no model, deterministic.
#[derive(Debug)]
struct Extractive;

/// The longest summary [`Extractive`] writes, in characters.
const EXTRACT_MAX: usize = 4_000;

#[statestore::async_trait]
impl Summarizer for Extractive {
    async fn summarize(
        &self,
        previous: Option<&Summary>,
        messages: &[Arc<Message>],
    ) -> Result<String, BoxError> {
        let mut lines = Vec::new();
        if let Some(p) = previous {
            lines.push(p.content.clone());
        }
        for m in messages {
            let text = m.text();
            let first = text.lines().next().unwrap_or_default();
            match m.role {
                Role::Tool => {}
                _ if !m.tool_calls().is_empty() => {
                    let names: Vec<&str> = m.tool_calls().iter().map(|c| c.name.as_str()).collect();
                    lines.push(format!("{}: called {}", m.role, names.join(", ")));
                }
                _ if !first.is_empty() => {
                    lines.push(format!("{}: {}", m.role, one_line(first, 160)))
                }
                _ => {}
            }
        }
        let text = lines.join("\n");
        // Keep the newest part when it is long.
        let count = text.chars().count();
        Ok(if count > EXTRACT_MAX {
            let tail: String = text.chars().skip(count - EXTRACT_MAX + 1).collect();
            format!("…{tail}")
        } else {
            text
        })
    }
}
