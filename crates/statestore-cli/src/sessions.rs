//! `list`, `show`, `fork`, `delete`, `trim`, `compact`, `stats`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::json;
use statestore::window::{self, CharEstimate, Summarizer, WindowPolicy};
use statestore::{
    BoxError, ConversationState, Message, Role, SessionId, Store, Summary, Timestamp,
};

use crate::args::{CompactArgs, DeleteArgs, ForkArgs, ListArgs, ShowArgs, StatsArgs, TrimArgs};
use crate::error::CliError;
use crate::store::{all_ids, open, ordered};
use crate::ui::{self, Align, Paint, Ui};

/// Sessions read at once by commands that read many.
const READ_WIDTH: usize = 16;

/// The usage counters the pipeline keeps, in display order.
const USAGE: [&str; 4] = ["prompt_tokens", "completion_tokens", "model_calls", "turns"];

pub(crate) async fn list(ui: &Ui, url: &str, args: ListArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let ids = all_ids(&*store, args.user.as_deref()).await?;
    let total = ids.len();
    let shown = if args.limit == 0 {
        &ids[..]
    } else {
        ids.get(..args.limit.min(total)).unwrap_or(&ids[..])
    };
    if args.ids_only {
        if ui.json {
            let list: Vec<&str> = shown.iter().map(SessionId::as_str).collect();
            ui.out_json(&json!({ "total": total, "sessions": list }))?;
        } else {
            let mut text = String::new();
            for id in shown {
                let _ = writeln!(text, "{id}", id = id.as_str());
            }
            ui.out(&text)?;
        }
    } else {
        let mut rows = Vec::with_capacity(shown.len());
        let mut docs = Vec::with_capacity(shown.len());
        let reader = Arc::clone(&store);
        ordered(
            shown,
            READ_WIDTH,
            move |id| {
                let store = Arc::clone(&reader);
                async move {
                    store
                        .load_recent(&id, 0)
                        .await
                        .map_err(CliError::read(format!("reading session {id}")))
                }
            },
            |id, recent| {
                // Deleted or expired since it was listed: not shown.
                let Some(r) = recent else { return Ok(()) };
                let counter = |name: &str| r.counters.get(name).copied().unwrap_or(0);
                let tokens = counter("prompt_tokens").saturating_add(counter("completion_tokens"));
                if ui.json {
                    docs.push(json!({
                        "id": id.as_str(),
                        "user_id": r.user_id,
                        "messages": r.total_messages,
                        "summaries": r.summaries.len(),
                        "version": r.version,
                        "counters": r.counters,
                    }));
                } else {
                    rows.push(vec![
                        id.as_str().to_owned(),
                        r.user_id.clone().unwrap_or_else(|| "-".into()),
                        ui::thousands(r.total_messages),
                        ui::thousands(counter("turns")),
                        ui::thousands(tokens),
                        r.version.to_string(),
                    ]);
                }
                Ok(())
            },
        )
        .await?;
        if ui.json {
            ui.out_json(&json!({ "total": total, "sessions": docs }))?;
        } else if !rows.is_empty() {
            ui.out(&ui::table(
                &[
                    ("ID", Align::Left),
                    ("USER", Align::Left),
                    ("MESSAGES", Align::Right),
                    ("TURNS", Align::Right),
                    ("TOKENS", Align::Right),
                    ("VERSION", Align::Right),
                ],
                &rows,
            ))?;
        }
    }
    if !ui.json {
        if total == 0 {
            ui.diag("no sessions");
        } else if shown.len() < total {
            ui.diag(&format!(
                "{} of {} sessions shown (--limit 0 shows all)",
                ui::thousands(shown.len() as u64),
                ui::thousands(total as u64)
            ));
        }
    }
    Ok(())
}

/// Loads `id` or fails with "not found".
async fn load(store: &dyn Store, id: &SessionId) -> Result<ConversationState, CliError> {
    store
        .load(id)
        .await
        .map_err(CliError::read(format!("reading session {id}")))?
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &SessionId) -> CliError {
    CliError::Failed {
        message: format!("session {id} not found"),
        hint: Some("`statestore list` shows the sessions there are".into()),
    }
}

pub(crate) async fn show(ui: &Ui, url: &str, args: ShowArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let mut state = load(&*store, &args.id).await?;
    let total = state.messages.len();
    let first = args.last.map_or(0, |n| total.saturating_sub(n));
    let ttl = crate::store::url_ttl(url);
    if ui.json {
        let messages: Vec<serde_json::Value> = state
            .messages
            .iter()
            .enumerate()
            .skip(first)
            .map(|(i, m)| {
                let mut v = serde_json::to_value(&**m).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("position".into(), json!(i));
                }
                v
            })
            .collect();
        state.messages.clear();
        let mut doc = serde_json::to_value(&state).unwrap_or_default();
        if let Some(o) = doc.as_object_mut() {
            o.insert("messages".into(), json!(messages));
            o.insert("total_messages".into(), json!(total));
            o.insert("ttl_seconds".into(), json!(ttl.map(|t| t.as_secs())));
        }
        return ui.out_json(&doc);
    }
    ui.out(&render(ui, &state, first, ttl))
}

/// The human-readable `show`.
fn render(
    ui: &Ui,
    state: &ConversationState,
    first: usize,
    ttl: Option<std::time::Duration>,
) -> String {
    let mut out = String::new();
    let bold = |s: &str| ui.paint(false, Paint::Bold, s);
    let dim = |s: &str| ui.paint(false, Paint::Dim, s);
    let field = |out: &mut String, name: &str, value: &str| {
        let _ = writeln!(out, "{}  {value}", bold(&format!("{name:<9}")));
    };
    field(&mut out, "session", state.id.as_str());
    field(&mut out, "user", state.user_id.as_deref().unwrap_or("-"));
    field(&mut out, "version", &state.version.to_string());
    field(&mut out, "created", &ui::timestamp(state.created_at));
    field(&mut out, "updated", &ui::timestamp(state.updated_at));
    let expires = match ttl {
        None => "never (the store has no TTL)".to_owned(),
        Some(t) => format!(
            "{} after the last access; this read restarted the clock, so {} left",
            ui::duration(t),
            ui::duration(t)
        ),
    };
    field(&mut out, "expires", &expires);
    let total = state.messages.len();
    let shown = if first == 0 {
        format!("{total}")
    } else {
        format!("{total} (the last {} shown)", total - first)
    };
    field(&mut out, "messages", &shown);
    let mut usage: Vec<String> = USAGE
        .iter()
        .filter_map(|k| {
            state
                .counters
                .get(*k)
                .map(|v| format!("{k} {}", ui::thousands(*v)))
        })
        .collect();
    usage.extend(
        state
            .counters
            .iter()
            .filter(|(k, _)| !USAGE.contains(&k.as_str()))
            .map(|(k, v)| format!("{k} {}", ui::thousands(*v))),
    );
    field(
        &mut out,
        "usage",
        &if usage.is_empty() {
            "-".into()
        } else {
            usage.join(", ")
        },
    );
    if let Some(prompt) = &state.system_prompt {
        field(&mut out, "system", &one_line(prompt, 200));
    }
    if !state.metadata.is_empty() {
        field(
            &mut out,
            "metadata",
            &serde_json::to_string(&state.metadata).unwrap_or_default(),
        );
    }
    if !state.summaries.is_empty() {
        let _ = writeln!(out, "\n{}", bold("summaries"));
        for s in &state.summaries {
            let covers = if s.covers.is_empty() {
                "of deleted messages".to_owned()
            } else {
                format!(
                    "of #{}..#{}",
                    s.covers.start,
                    s.covers.end.saturating_sub(1)
                )
            };
            let _ = writeln!(
                out,
                "  {}\n    {}",
                dim(&format!("{covers}, made {}:", ui::timestamp(s.created_at))),
                indent(&s.content, 4)
            );
        }
    }
    if total > 0 {
        let _ = writeln!(out, "\n{}", bold("messages"));
    }
    // Tool results by the call they answer, so each is shown under its call.
    let mut results: HashMap<&str, (usize, &Message)> = HashMap::new();
    for (i, m) in state.messages.iter().enumerate() {
        if let (Role::Tool, Some(call)) = (m.role, m.tool_call_id.as_deref()) {
            results.entry(call).or_insert((i, m));
        }
    }
    let mut paired: HashSet<usize> = HashSet::new();
    for (i, m) in state.messages.iter().enumerate().skip(first) {
        if paired.contains(&i) {
            continue;
        }
        let role = format!("{:<9}", m.role.as_str());
        let head = format!("{}  {}", dim(&format!("#{i:<3}")), bold(&role));
        let text = m.text();
        if m.role == Role::Tool {
            let call = m.tool_call_id.as_deref().unwrap_or("?");
            let _ = writeln!(
                out,
                "{head}  {} {}",
                dim(&format!("result of {call} (its call is not shown):")),
                indent(&text, 17)
            );
            continue;
        }
        if !text.is_empty() || m.tool_calls.is_empty() {
            let _ = writeln!(out, "{head}  {}", indent(&text, 17));
        }
        for (n, call) in m.tool_calls.iter().enumerate() {
            let lead = if n == 0 && text.is_empty() {
                head.clone()
            } else {
                " ".repeat(15)
            };
            let _ = writeln!(
                out,
                "{lead}  {} {}({}) {}",
                dim("calls"),
                call.name,
                one_line(&call.arguments, 200),
                dim(&format!("[{}]", call.id))
            );
            match results.get(call.id.as_str()) {
                Some((at, result)) => {
                    paired.insert(*at);
                    let _ = writeln!(
                        out,
                        "{}  {} {}",
                        " ".repeat(15),
                        dim(&format!("→ #{at}")),
                        indent(&result.text(), 17 + 2 + at.to_string().len() + 2)
                    );
                }
                None => {
                    let _ = writeln!(out, "{}  {}", " ".repeat(15), dim("→ (no result stored)"));
                }
            }
        }
    }
    out
}

/// `text` with every line after the first indented by `width` spaces.
fn indent(text: &str, width: usize) -> String {
    text.replace('\n', &format!("\n{}", " ".repeat(width)))
}

/// `text` on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

pub(crate) async fn fork(ui: &Ui, url: &str, args: ForkArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let version = store
        .fork(&args.source, &args.target)
        .await
        .map_err(CliError::write(format!(
            "forking session {} to {}",
            args.source, args.target
        )))?;
    if ui.json {
        ui.out_json(&json!({
            "source": args.source.as_str(),
            "target": args.target.as_str(),
            "version": version,
        }))
    } else {
        ui.out(&format!(
            "forked {} to {} (version {version})\n",
            args.source, args.target
        ))
    }
}

pub(crate) async fn delete(ui: &Ui, url: &str, args: DeleteArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let mut deleted = Vec::new();
    let mut missing = Vec::new();
    for id in &args.ids {
        let existed = store
            .delete(id)
            .await
            .map_err(CliError::write(format!("deleting session {id}")))?;
        if existed {
            deleted.push(id.as_str());
        } else {
            missing.push(id.as_str());
        }
    }
    if ui.json {
        ui.out_json(&json!({ "deleted": deleted, "not_found": missing }))?;
    } else {
        let mut text = String::new();
        for id in &deleted {
            let _ = writeln!(text, "deleted {id:?}");
        }
        ui.out(&text)?;
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(CliError::Failed {
        message: format!(
            "not found (nothing deleted for them): {}",
            missing
                .iter()
                .map(|id| format!("{id:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        hint: Some("`statestore list` shows the sessions there are".into()),
    })
}

pub(crate) async fn trim(ui: &Ui, url: &str, args: TrimArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let policy = WindowPolicy::default().max_messages(args.keep);
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
    ui.out(&text)
}

pub(crate) async fn compact(ui: &Ui, url: &str, args: CompactArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let exists = store
        .exists(&args.id)
        .await
        .map_err(CliError::read(format!("reading session {}", args.id)))?;
    if !exists {
        return Err(not_found(&args.id));
    }
    let policy = WindowPolicy::default().max_messages(args.keep);
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
                _ if !m.tool_calls.is_empty() => {
                    let names: Vec<&str> = m.tool_calls.iter().map(|c| c.name.as_str()).collect();
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

pub(crate) async fn stats(ui: &Ui, url: &str, args: StatsArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let ids = all_ids(&*store, args.user.as_deref()).await?;
    let bar = ui.progress(ids.len() as u64, "reading");
    let mut sessions = 0u64;
    let mut messages = 0u64;
    let mut summaries = 0u64;
    let mut bytes = 0u64;
    let mut users = HashSet::new();
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    let mut oldest: Option<Timestamp> = None;
    let mut newest: Option<Timestamp> = None;
    let reader = Arc::clone(&store);
    ordered(
        &ids,
        READ_WIDTH,
        move |id| {
            let store = Arc::clone(&reader);
            async move {
                let state = store
                    .load(&id)
                    .await
                    .map_err(CliError::read(format!("reading session {id}")))?;
                // Measured here, in the worker, so only figures travel.
                Ok(state.map(|s| {
                    let size = serde_json::to_vec(&s).map_or(0, |v| v.len() as u64);
                    (s, size)
                }))
            }
        },
        |_, loaded| {
            bar.inc(1);
            let Some((s, size)) = loaded else {
                return Ok(());
            };
            sessions += 1;
            messages += s.messages.len() as u64;
            summaries += s.summaries.len() as u64;
            bytes += size;
            if let Some(u) = s.user_id {
                users.insert(u);
            }
            for (k, v) in s.counters {
                let total = counters.entry(k).or_insert(0);
                *total = total.saturating_add(v);
            }
            oldest = Some(oldest.map_or(s.created_at, |o| o.min(s.created_at)));
            newest = Some(newest.map_or(s.updated_at, |n| n.max(s.updated_at)));
            Ok(())
        },
    )
    .await?;
    bar.finish_and_clear();
    if ui.json {
        return ui.out_json(&json!({
            "sessions": sessions,
            "users": users.len(),
            "messages": messages,
            "summaries": summaries,
            "bytes": bytes,
            "counters": counters,
            "oldest_created_at": oldest,
            "newest_updated_at": newest,
        }));
    }
    let mut rows = vec![
        vec!["sessions".to_owned(), ui::thousands(sessions)],
        vec!["users".to_owned(), ui::thousands(users.len() as u64)],
        vec!["messages".to_owned(), ui::thousands(messages)],
        vec!["summaries".to_owned(), ui::thousands(summaries)],
        vec![
            "size as JSON".to_owned(),
            format!("{} ({} bytes)", ui::bytes(bytes), ui::thousands(bytes)),
        ],
    ];
    for name in USAGE {
        rows.push(vec![
            name.to_owned(),
            ui::thousands(counters.get(name).copied().unwrap_or(0)),
        ]);
    }
    for (name, v) in counters
        .iter()
        .filter(|(k, _)| !USAGE.contains(&k.as_str()))
    {
        rows.push(vec![name.clone(), ui::thousands(*v)]);
    }
    if let (Some(o), Some(n)) = (oldest, newest) {
        rows.push(vec!["oldest created".to_owned(), ui::timestamp(o)]);
        rows.push(vec!["last written".to_owned(), ui::timestamp(n)]);
    }
    ui.out(
        &ui::table(&[("", Align::Left), ("", Align::Left)], &rows)
            .split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_owned()),
    )
}
