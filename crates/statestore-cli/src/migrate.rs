//! `migrate`: every session of one store copied into another, resumable
//! and exactly once (a session already there is skipped, not written
//! twice).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use statestore::{Load, SessionId};

use crate::args::MigrateArgs;
use crate::copy::{Exported, Tally, put};
use crate::error::CliError;
use crate::store::{all_ids, open, open_destination, ordered};
use crate::transfer::READ_WIDTH;
use crate::ui::{self, Ui};

/// The file an `sqlite://` URL names, resolved (`..`, symbolic links,
/// the working directory) when it exists; `None` for other URLs.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    // Percent-decoded, as the store decodes it.
    let mut bytes = Vec::with_capacity(path.len());
    let mut rest = path.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok());
        match (b, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(decoded)) => {
                bytes.push(decoded);
                rest = tail.get(2..).unwrap_or_default();
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    std::fs::canonicalize(String::from_utf8(bytes).ok()?).ok()
}

pub(crate) async fn migrate(ui: &Ui, args: MigrateArgs) -> Result<(), CliError> {
    let same_file = sqlite_file(&args.from).is_some_and(|f| Some(f) == sqlite_file(&args.to));
    if args.from == args.to || same_file {
        return Err(CliError::Usage {
            message: "--from and --to are the same store".into(),
            hint: None,
        });
    }
    let (from_name, to_name) = (
        statestore::redact_url(&args.from),
        statestore::redact_url(&args.to),
    );
    let source = open(&args.from).await?;
    let dest = open_destination(&args.to, "migrate", false, args.dry_run).await?;
    let ids = all_ids(&*source, args.user.as_deref()).await?;
    let bar = ui.progress(ids.len() as u64, "migrating");
    let mut tally = Tally::new(args.dry_run);
    let mut vanished: HashSet<SessionId> = HashSet::new();
    let (src, dst) = (Arc::clone(&source), Arc::clone(&dest));
    let dry_run = args.dry_run;
    ordered(
        &ids,
        READ_WIDTH,
        move |id| {
            let (source, dest) = (Arc::clone(&src), Arc::clone(&dst));
            async move {
                // A maintenance read: migrating is no access of the source.
                let state = source
                    .load_with(&id, Load::new().keep_clocks())
                    .await
                    .map_err(CliError::read(format!(
                        "reading session {id} from the source"
                    )))?;
                match state {
                    None => Ok(None),
                    Some(state) => Ok(Some(put(&*dest, &Exported::from(state), dry_run).await?)),
                }
            }
        },
        |id, copied| {
            bar.inc(1);
            match copied {
                Some(c) => tally.add(id.clone(), c),
                None => {
                    vanished.insert(id.clone());
                }
            }
            Ok(())
        },
    )
    .await?;
    bar.finish_and_clear();

    // The final check: every session of the source is in the destination
    // (a dry run copied nothing: no check).
    let there: HashSet<SessionId> = all_ids(&*dest, args.user.as_deref())
        .await?
        .into_iter()
        .collect();
    let expected = ids.iter().filter(|id| !vanished.contains(*id));
    let missing: Vec<&SessionId> = expected
        .filter(|id| !dry_run && !there.contains(*id))
        .collect();
    let expected_count = ids.len() - vanished.len();
    if ui.json {
        let mut doc = tally.json();
        if let Some(o) = doc.as_object_mut() {
            o.insert("source_sessions".into(), json!(expected_count));
            o.insert("destination_sessions".into(), json!(there.len()));
            o.insert(
                "missing".into(),
                json!(missing.iter().map(|id| id.as_str()).collect::<Vec<_>>()),
            );
            o.insert("deleted_during_migrate".into(), json!(vanished.len()));
        }
        ui.out_json(&doc)?;
    } else {
        let mut text = format!(
            "{} {} from {from_name} to {to_name}: {}\n",
            if dry_run { "would migrate" } else { "migrated" },
            ui::count(tally.total(), "session"),
            tally.summary()
        );
        if missing.is_empty() && !dry_run {
            text.push_str(&format!(
                "check: the destination holds all {} of the source ({} in all)\n",
                ui::count(expected_count as u64, "session"),
                ui::count(there.len() as u64, "session")
            ));
        }
        if !vanished.is_empty() {
            text.push_str(&format!(
                "{} deleted from the source during the migration and not copied\n",
                ui::count(vanished.len() as u64, "session")
            ));
        }
        ui.done(&text)?;
    }
    if !missing.is_empty() {
        return Err(CliError::Failed {
            message: format!(
                "check failed: {} sessions of the source are not in the destination (first: {})",
                missing.len(),
                missing.first().map(|id| id.to_string()).unwrap_or_default()
            ),
            hint: Some(
                "were they deleted or expired there meanwhile (a TTL)? Run the migrate again: it \
                 copies only what is missing"
                    .into(),
            ),
        });
    }
    tally.conflicts(ui, args.ignore_conflicts)
}
