//! `list`, `fork`, `delete`, `stats` (and what `show`, `trim` and
//! `compact` share with them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::json;
use statestore::{
    ConversationState, ListOrder, ListQuery, Load, Recent, SessionId, SessionInfo, Store, Timestamp,
};

use crate::args::{DeleteArgs, ForkArgs, ListArgs, StatsArgs};
use crate::error::CliError;
use crate::store::{all_ids, open, ordered};
use crate::ui::{self, Align, Ui};

/// Sessions read at once by commands that read many.
const READ_WIDTH: usize = 16;

/// The usage counters the pipeline keeps, in display order.
pub(crate) const USAGE: [&str; 4] = ["prompt_tokens", "completion_tokens", "model_calls", "turns"];

/// The sessions `list` shows, in its order (by id, or newest first with
/// `--recent`), at most `--limit`; and how many there are in all.
async fn listed(store: &dyn Store, args: &ListArgs) -> Result<(Vec<SessionInfo>, usize), CliError> {
    let order = if args.recent {
        ListOrder::Recent
    } else {
        ListOrder::Id
    };
    let mut query = ListQuery::new()
        .user(args.user.clone())
        .order(order)
        .with_limit(1000)
        .with_count();
    let (mut sessions, mut total) = (Vec::new(), None);
    loop {
        let page = store
            .list(&query)
            .await
            .map_err(CliError::read("listing sessions"))?;
        total = total.or(page.total);
        sessions.extend(page.sessions);
        if args.limit != 0 && sessions.len() >= args.limit {
            sessions.truncate(args.limit);
            break;
        }
        match page.next_cursor {
            Some(cursor) => {
                query = query.after(Some(cursor));
                query.count = false;
            }
            None => break,
        }
    }
    let total = total.map_or(sessions.len(), |t| usize::try_from(t).unwrap_or(usize::MAX));
    Ok((sessions, total))
}

pub(crate) async fn list(ui: &Ui, url: &str, args: ListArgs) -> Result<(), CliError> {
    let store = open(url).await?;
    let (sessions, total) = listed(&*store, &args).await?;
    let shown: Vec<SessionId> = sessions.iter().map(|s| s.id.clone()).collect();
    let titles: HashMap<SessionId, Option<String>> =
        sessions.into_iter().map(|s| (s.id, s.title)).collect();
    let shown = &shown[..];
    if args.ids_only {
        if ui.json {
            // The shape of the full listing, with only the id of each.
            let list: Vec<serde_json::Value> = shown
                .iter()
                .map(|id| json!({ "id": id.as_str() }))
                .collect();
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
                    // A peek: listing is not an access (docs/design.md).
                    store
                        .load_recent_as(&id, Recent::new(0).keep_clocks())
                        .await
                        .map_err(CliError::read(format!("reading session {id}")))
                }
            },
            |id, recent| {
                // Deleted or expired since it was listed: not shown.
                let Some(r) = recent else { return Ok(()) };
                let counter = |name: &str| r.counters.get(name).copied().unwrap_or(0);
                let tokens = counter("prompt_tokens").saturating_add(counter("completion_tokens"));
                let title = titles.get(id).cloned().flatten();
                if ui.json {
                    docs.push(json!({
                        "id": id.as_str(),
                        "title": title,
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
                        title.unwrap_or_else(|| "-".into()),
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
                    ("TITLE", Align::Left),
                ],
                &rows,
            ))?;
        }
    }
    if !ui.json {
        if total == 0 {
            ui.note("no sessions");
        } else if shown.len() < total {
            ui.note(&format!(
                "{} of {} sessions shown (--limit 0 shows all)",
                ui::thousands(shown.len() as u64),
                ui::thousands(total as u64)
            ));
        }
    }
    Ok(())
}

/// Loads `id` or fails with "not found": an operator's inspection, so a
/// maintenance read (`Load::keep_clocks`) that neither restarts the
/// session's expiry nor moves its `last_accessed_at`.
pub(crate) async fn load(store: &dyn Store, id: &SessionId) -> Result<ConversationState, CliError> {
    store
        .load_with(id, Load::new().keep_clocks())
        .await
        .map_err(CliError::read(format!("reading session {id}")))?
        .ok_or_else(|| not_found(id))
}

pub(crate) fn not_found(id: &SessionId) -> CliError {
    CliError::Failed {
        message: format!("session {id} not found"),
        hint: Some("`statestore list` shows the sessions there are".into()),
    }
}

pub(crate) async fn fork(ui: &Ui, url: &str, args: ForkArgs) -> Result<(), CliError> {
    let store =
        crate::store::open_to_write(url, &[&args.source], "fork", crate::store::Create::No).await?;
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
        ui.done(&format!(
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
        let existed = if args.dry_run {
            store
                .exists(id)
                .await
                .map_err(CliError::read(format!("reading session {id}")))?
        } else {
            store
                .delete(id)
                .await
                .map_err(CliError::write(format!("deleting session {id}")))?
        };
        if existed {
            deleted.push(id.as_str());
        } else {
            missing.push(id.as_str());
        }
    }
    if ui.json {
        ui.out_json(&json!({
            "deleted": deleted,
            "not_found": missing,
            "dry_run": args.dry_run,
        }))?;
    } else {
        let mut text = String::new();
        for id in &deleted {
            if args.dry_run {
                let _ = writeln!(text, "would delete {id:?}");
            } else {
                let _ = writeln!(text, "deleted {id:?}");
            }
        }
        if args.dry_run {
            text.push_str("(dry run: nothing deleted)\n");
        }
        ui.done(&text)?;
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(CliError::Failed {
        message: format!(
            "not found{}: {}",
            if args.dry_run {
                ""
            } else {
                " (nothing deleted for them)"
            },
            missing
                .iter()
                .map(|id| format!("{id:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        hint: Some("`statestore list` shows the sessions there are".into()),
    })
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
                // A maintenance read: counting is no access.
                let state = store
                    .load_with(&id, Load::new().keep_clocks())
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
