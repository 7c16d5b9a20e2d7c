//! `show`: one session for people (or as JSON).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::json;
use statestore::{ConversationState, Message, Role};

use crate::args::ShowArgs;
use crate::error::CliError;
use crate::sessions::{USAGE, load};
use crate::store::open;
use crate::ui::{self, Paint, Ui};

pub(crate) async fn show(ui: &Ui, url: &str, args: ShowArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let mut state = load(&*store, &args.id).await?;
    if crate::store::keys().is_none() && statestore::crypto::key_usage(&state).encrypted() > 0 {
        ui.warn(
            "this session is encrypted: its messages show empty without the key ring; give it \
             with --keys FILE",
        );
    }
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
    ui.page(&render(ui, &state, first, ttl)).await
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
    // Every value shown is [`ui::clean`]ed: stored text never reaches the
    // terminal with its control characters.
    let field = |out: &mut String, name: &str, value: &str| {
        let _ = writeln!(out, "{}  {}", bold(&format!("{name:<9}")), ui::clean(value));
    };
    field(&mut out, "session", state.id.as_str());
    field(&mut out, "user", state.user_id.as_deref().unwrap_or("-"));
    field(&mut out, "version", &state.version.to_string());
    field(&mut out, "created", &ui::timestamp(state.created_at));
    field(&mut out, "updated", &ui::timestamp(state.updated_at));
    // `show` reads without an access (`sessions::load`): the clock runs
    // from the last access, not from now.
    let expires = match ttl {
        None => "never (the store has no TTL)".to_owned(),
        Some(t) => {
            let ttl_ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            let at = state
                .last_accessed_at
                .as_unix_millis()
                .saturating_add(ttl_ms);
            let left = at.saturating_sub(statestore::Timestamp::now().as_unix_millis());
            format!(
                "{} after the last access ({}), so {} left; looking does not restart the clock",
                ui::duration(t),
                ui::timestamp(state.last_accessed_at),
                ui::duration(std::time::Duration::from_millis(left))
            )
        }
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
    // Without the key ring the store's own bookkeeping shows through: the
    // session's sealed manifest, which people have no use for (`--json`
    // shows the session as stored, manifest and all).
    let metadata: serde_json::Map<String, serde_json::Value> = state
        .metadata
        .iter()
        .filter(|(k, _)| !crate::keyscan::is_manifest_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !metadata.is_empty() {
        field(
            &mut out,
            "metadata",
            &serde_json::to_string(&metadata).unwrap_or_default(),
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
        if let (Role::Tool, Some(call)) = (m.role, m.tool_call_id()) {
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
            let call = ui::clean_line(m.tool_call_id().unwrap_or("?"));
            let _ = writeln!(
                out,
                "{head}  {} {}",
                dim(&format!("result of {call} (its call is not shown):")),
                indent(&text, 17)
            );
            continue;
        }
        if !text.is_empty() || m.tool_calls().is_empty() {
            let _ = writeln!(out, "{head}  {}", indent(&text, 17));
        }
        for (n, call) in m.tool_calls().iter().enumerate() {
            let lead = if n == 0 && text.is_empty() {
                head.clone()
            } else {
                " ".repeat(15)
            };
            let _ = writeln!(
                out,
                "{lead}  {} {}({}) {}",
                dim("calls"),
                ui::clean_line(&call.name),
                ui::clean_line(&one_line(&call.arguments, 200)),
                dim(&format!("[{}]", ui::clean_line(&call.id)))
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
    // No line ends in spaces (an empty message's line would): invisible on
    // a terminal, and noise in a diff or a copied transcript.
    out.lines()
        .fold(String::with_capacity(out.len()), |mut all, line| {
            all.push_str(line.trim_end());
            all.push('\n');
            all
        })
}

/// `text`, [`ui::clean`]ed, with every line after the first indented by
/// `width` spaces.
fn indent(text: &str, width: usize) -> String {
    ui::clean(text).replace('\n', &format!("\n{}", " ".repeat(width)))
}

/// `text` on one line, cut to `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
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
