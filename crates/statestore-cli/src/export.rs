//! `export`: every session of a store, or of one user, into a file (the
//! format is in `copy.rs`), optionally skipping the sessions that no
//! longer read (`--skip-unreadable`, to salvage a damaged store).

use std::sync::Arc;

use serde_json::json;
use statestore::{Load, SessionId, Store};

use crate::args::ExportArgs;
use crate::copy::{Exported, Header};
use crate::error::CliError;
use crate::sink::Sink;
use crate::store::{all_ids, open, open_backend, ordered};
use crate::transfer::READ_WIDTH;
use crate::ui::{self, Ui};

/// What an export checks in each session it writes.
#[derive(Debug, Clone)]
enum Values {
    /// Decrypted by the key ring's layer: plaintext by construction.
    Decrypted,
    /// Read as stored, without a key ring: must hold no encrypted value.
    Plain,
    /// Read as stored for `--encrypted`: every value under one of these keys.
    Sealed(Arc<Vec<String>>),
}

pub(crate) async fn export(ui: &Ui, url: &str, args: ExportArgs) -> Result<(), CliError> {
    let store = open_for(url, args.encrypted, "export").await?;
    let ids = all_ids(&*store, args.user.as_deref()).await?;
    let values = if args.encrypted {
        Values::Sealed(Arc::new(sealed_keys(&store, &ids).await?))
    } else if crate::store::keys().is_some() {
        Values::Decrypted
    } else {
        Values::Plain
    };
    // Ctrl-C stops the export and removes its temporary file: watched
    // from before the file exists.
    let interrupted = ui::ctrl_c()?;
    let mut sink = Sink::open(args.output.as_deref())?;
    let written = std::cell::Cell::new(0);
    let result = tokio::select! {
        result = write_export(
            ui, &store, &ids, (&values, args.skip_unreadable), &mut sink, &written
        ) => result,
        () = interrupted => Err(CliError::Interrupted {
            left: format!(
                "the export stopped after {} of {}; {}",
                written.get(),
                ui::count(ids.len() as u64, "session"),
                match &args.output {
                    Some(dest) => format!("{} is left as it was", dest.display()),
                    None => "what reached stdout is incomplete".into(),
                }
            ),
        }),
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            sink.abandon();
            return Err(e);
        }
    };
    let exported = outcome.exported;
    sink.finish()
        .map_err(|e| cut_short(e, exported, ids.len()))?;
    let place = args
        .output
        .as_ref()
        .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    if ui.json && args.output.is_some() {
        let mut doc = json!({ "exported": exported, "file": place });
        if let (true, Some(fields)) = (args.skip_unreadable, doc.as_object_mut()) {
            let skipped: Vec<serde_json::Value> = outcome
                .skipped
                .iter()
                .map(|(id, why)| json!({ "id": id.as_str(), "error": why }))
                .collect();
            fields.insert("skipped".into(), json!(skipped));
        }
        ui.out_json(&doc)?;
    } else {
        for (id, why) in outcome.skipped.iter().take(SKIPPED_LISTED) {
            // The store's error names the session already, most often.
            if why.contains(&id.to_string()) {
                ui.warn(&format!("skipped: {why}"));
            } else {
                ui.warn(&format!("skipped session {id}: {why}"));
            }
        }
        if outcome.skipped.len() > SKIPPED_LISTED {
            ui.warn(&format!(
                "… and {} more skipped",
                outcome.skipped.len() - SKIPPED_LISTED
            ));
        }
        let mut summary = format!("exported {} to {place}", ui::count(exported, "session"));
        if !outcome.skipped.is_empty() {
            summary.push_str(&format!(
                "; skipped {} that did not read",
                outcome.skipped.len()
            ));
        }
        ui.note(&summary);
    }
    if outcome.skipped.is_empty() {
        return Ok(());
    }
    // Exit 1, as `cp -r` and `rsync` do when some files could not be
    // read: the file is complete but for these, and a script must notice.
    let file = args
        .output
        .as_ref()
        .map_or_else(|| "FILE".to_owned(), |p| p.display().to_string());
    Err(CliError::Failed {
        message: format!(
            "{} did not read and {} left out; the {} that read are in {place}",
            ui::count(outcome.skipped.len() as u64, "session"),
            if outcome.skipped.len() == 1 {
                "was"
            } else {
                "were"
            },
            ui::count(exported, "session"),
        ),
        hint: Some(format!(
            "import them into a new store (`statestore --store sqlite://NEW.db import {file}`); \
             `statestore doctor` checks the damaged one"
        )),
    })
}

/// Skipped sessions listed one per line; the rest are counted.
const SKIPPED_LISTED: usize = 20;

/// For `export --encrypted`: the key ids of every value of `ids`, from a
/// scan made before anything is written; refused when a value is
/// plaintext or malformed.
async fn sealed_keys(store: &Arc<dyn Store>, ids: &[SessionId]) -> Result<Vec<String>, CliError> {
    let found = crate::keyscan::scan(store, ids).await?;
    if let Some(first) = &found.first_plaintext {
        return Err(CliError::Failed {
            message: format!(
                "export --encrypted: the store still holds {} in {} (the first: {first}), which \
                 the file would carry in the clear. Nothing was written",
                ui::count(found.usage.plaintext, "plaintext value"),
                ui::count(found.plaintext_sessions, "session"),
            ),
            hint: Some(
                "encrypt them first with `statestore rotate-keys --keys FILE \
                 --encrypt-plaintext`, or export decrypted (without --encrypted) and keep the \
                 file as safe as the key file"
                    .into(),
            ),
        });
    }
    if let Some(first) = &found.first_malformed {
        return Err(CliError::Failed {
            message: format!(
                "export --encrypted: session {first} holds a value whose envelope header does \
                 not parse. Nothing was written"
            ),
            hint: Some("`statestore --keys FILE show` that session to see which".into()),
        });
    }
    Ok(found.usage.keys.into_keys().collect())
}

/// Whether `state` may be written by an export of `values`; its line if so.
fn export_line(state: statestore::ConversationState, values: &Values) -> Result<String, CliError> {
    let id = state.id.clone();
    let usage = match values {
        Values::Decrypted => None,
        Values::Plain | Values::Sealed(_) => Some(statestore::crypto::key_usage(&state)),
    };
    match (values, usage) {
        (Values::Plain, Some(u)) if u.encrypted() > 0 => Err(CliError::Failed {
            message: format!(
                "session {id} is encrypted: without the key ring its values would be exported \
                 as ciphertext under a header that says plaintext. The export is abandoned: \
                 an -o file is left as it was"
            ),
            hint: Some(
                "give the key file with --keys FILE to export decrypted, or add --encrypted to \
                 export the ciphertext"
                    .into(),
            ),
        }),
        (Values::Sealed(keys), Some(u))
            if u.plaintext > 0 || u.malformed > 0 || u.keys.keys().any(|k| !keys.contains(k)) =>
        {
            Err(CliError::Failed {
                message: format!(
                    "session {id} changed during the export (it now holds plaintext or a key \
                     the header does not list; is a process without the new key file writing, \
                     or a rotation running?). The export is abandoned: an -o file is left as it \
                     was"
                ),
                hint: Some("run the export again".into()),
            })
        }
        _ => Ok(Exported::from(state).line()),
    }
}

/// An export's write error: a reader that closed the pipe early (`export |
/// head`) is a failure that says how much it received — not the quiet
/// success it is for a listing — since a backup cut short must not look
/// complete.
fn cut_short(e: CliError, written: u64, total: usize) -> CliError {
    if !e.is_broken_pipe() {
        return e;
    }
    CliError::Failed {
        message: format!(
            "the export was cut short: its reader closed the pipe having received at most \
             {written} of {}",
            ui::count(total as u64, "session")
        ),
        hint: Some(
            "the output is incomplete: export again, into a file (-o FILE) if the reader stops \
             early"
                .into(),
        ),
    }
}

/// What an export did: how many sessions it wrote, and with
/// `--skip-unreadable` the ones it skipped, each with why (in id order).
#[derive(Debug, Default)]
struct Outcome {
    exported: u64,
    skipped: Vec<(SessionId, String)>,
}

/// One session as read for the export.
enum Read {
    /// Its line.
    Line(String),
    /// It did not read (`--skip-unreadable`): why.
    Unreadable(String),
}

/// Whether `e`, from loading one session, says that this session's data
/// does not read — stored bytes that do not decode, a value that does not
/// decrypt or is over a limit — rather than that the store cannot be
/// reached or refused: the errors `--skip-unreadable` skips. An error
/// about the whole file (`Corrupt` of session `*`) is not one session's.
fn unreadable(e: &statestore::Error) -> bool {
    use statestore::Error as E;
    match e {
        E::Corrupt { id, .. } => id.as_str() != statestore::sqlite::schema::FILE_ID,
        E::Decryption { .. } | E::TooLarge { .. } | E::UnsupportedSchema { .. } => true,
        other => statestore::crypto::Error::from_store(other).is_some(),
    }
}

/// The error of session `id` that did not read, without
/// `--skip-unreadable`: the store's error and hint, and how to export the
/// other sessions.
fn unreadable_error(id: &SessionId, e: statestore::Error) -> CliError {
    let error = CliError::read(format!("reading session {id}"))(e);
    let skip = "to export every session that still reads and list the ones that do not, add \
                --skip-unreadable";
    CliError::Failed {
        message: format!(
            "{}. The export is abandoned: an -o file is left as it was",
            crate::error::chain(&error)
        ),
        hint: Some(match error.hint() {
            Some(hint) => format!("{hint}; {skip}"),
            None => skip.to_owned(),
        }),
    }
}

/// The header and every session of `ids`, loaded `READ_WIDTH` at a time
/// and written in id order; with `skip`, a session that does not read
/// ([`unreadable`]) is left out and listed instead of failing the export.
/// Ids deleted since the listing are left out silently.
async fn write_export(
    ui: &Ui,
    store: &Arc<dyn Store>,
    ids: &[SessionId],
    (values, skip): (&Values, bool),
    sink: &mut Sink,
    written: &std::cell::Cell<u64>,
) -> Result<Outcome, CliError> {
    let key_ids = match values {
        Values::Sealed(keys) => Some(keys.to_vec()),
        _ => None,
    };
    sink.write(&Header::line(
        key_ids.is_some(),
        key_ids.unwrap_or_default(),
    ))
    .map_err(|e| cut_short(e, 0, ids.len()))?;
    let bar = ui.progress(ids.len() as u64, "exporting");
    let mut outcome = Outcome::default();
    let reader = Arc::clone(store);
    ordered(
        ids,
        READ_WIDTH,
        move |id| {
            let store = Arc::clone(&reader);
            let values = values.clone();
            async move {
                // A maintenance read: exporting is no access.
                let state = match store.load_with(&id, Load::new().keep_clocks()).await {
                    Ok(state) => state,
                    Err(e) if unreadable(&e) && skip => {
                        return Ok(Some(Read::Unreadable(crate::error::chain(&e))));
                    }
                    Err(e) if unreadable(&e) => return Err(unreadable_error(&id, e)),
                    Err(e) => return Err(CliError::read(format!("reading session {id}"))(e)),
                };
                // Encoded in the worker: only the line travels. A session
                // that reads but may not be exported as asked (encrypted,
                // without --keys) is no salvage case: it fails the export.
                state
                    .map(|s| export_line(s, &values).map(Read::Line))
                    .transpose()
            }
        },
        |id, read| {
            bar.inc(1);
            match read {
                Some(Read::Line(line)) => {
                    sink.write(&line)
                        .map_err(|e| cut_short(e, outcome.exported, ids.len()))?;
                    outcome.exported += 1;
                    written.set(outcome.exported);
                }
                Some(Read::Unreadable(why)) => outcome.skipped.push((id.clone(), why)),
                None => {}
            }
            Ok(())
        },
    )
    .await?;
    bar.finish_and_clear();
    Ok(outcome)
}

/// The store to export, decrypted through the key ring; or with
/// `encrypted` (which needs a key ring) the values as the backend holds
/// them.
async fn open_for(url: &str, encrypted: bool, what: &str) -> Result<Arc<dyn Store>, CliError> {
    if !encrypted {
        return open(url).await;
    }
    if crate::store::keys().is_none() {
        return Err(CliError::Usage {
            message: format!("{what} --encrypted is for an encrypted store: it needs its key ring"),
            hint: Some(
                "give the key file with --keys FILE (or STATESTORE_KEYS_FILE, STATESTORE_KEYS)"
                    .into(),
            ),
        });
    }
    open_backend(url).await
}
