//! `rotate-keys`: every session moved to the key ring's current key, with
//! progress, a summary of what failed and why, and a cursor to resume from.

use serde_json::json;
use statestore::SessionId;
use statestore::crypto::{Error as CryptoError, RotateOptions};

use crate::args::RotateKeysArgs;
use crate::error::CliError;
use crate::store::{all_ids, keys, open_backend};
use crate::ui::{self, Ui};

/// What the run saw, session by session.
#[derive(Debug, Default)]
struct Seen {
    /// Sessions deleted between the listing and their load.
    gone: u64,
    /// The cursor of the page of the first failure (`None`: the first page).
    first_failure_at: Option<Option<String>>,
    /// The cursor of the page being visited last.
    last_page: Option<String>,
}

/// A failure's kind, for `--json` and the table: stable, snake_case.
fn kind(e: &CryptoError) -> &'static str {
    match e {
        CryptoError::UnknownKey { .. } => "unknown_key",
        CryptoError::WrongKey { .. } => "wrong_key",
        CryptoError::Integrity { .. } => "integrity",
        CryptoError::Inconsistent { .. } => "inconsistent",
        CryptoError::BodyTooLarge { .. } | CryptoError::LoadTooLarge { .. } => "too_large",
        CryptoError::Malformed { .. } => "malformed",
        CryptoError::UnsupportedFormat { .. } => "unsupported_format",
        CryptoError::NotEncrypted { .. } => "not_encrypted",
        CryptoError::Busy { .. } => "busy",
        CryptoError::Store(_) => "store",
        _ => "other",
    }
}

pub(crate) async fn run(ui: &Ui, url: &str, args: RotateKeysArgs) -> Result<(), CliError> {
    let ring = keys().ok_or_else(|| CliError::Usage {
        message: "rotate-keys needs the key ring: which key is current, and every key that \
                  encrypted something"
            .into(),
        hint: Some(
            "give the key file with --keys FILE (or STATESTORE_KEYS_FILE, STATESTORE_KEYS); \
             `statestore rotate-keys --help` shows how to add a key"
                .into(),
        ),
    })?;
    let current = ring.current_id().to_owned();
    let backend = open_backend(url).await?;
    let layer = crate::store::layer(std::sync::Arc::clone(&backend), ring)
        .accept_plaintext(args.encrypt_plaintext)
        .build();
    // The bar's length costs a listing of ids: only for a person watching.
    let total = if ui.progress_bars && args.resume_from.is_none() {
        all_ids(&*backend, args.user.as_deref()).await?.len() as u64
    } else {
        0
    };
    let bar = ui.progress(total, &format!("re-encrypting to key {current}"));
    let mut options = RotateOptions::default().resume_from(args.resume_from.clone());
    if let Some(user) = &args.user {
        options = options.user(user.clone());
    }
    let mut seen = Seen::default();
    let result = layer
        .rotate_all(options, |p| {
            bar.inc(1);
            seen.last_page = p.resume_from.map(str::to_owned);
            match p.outcome {
                Ok(r) if r.version.is_none() => seen.gone += 1,
                Ok(_) => {}
                Err(_) => {
                    if seen.first_failure_at.is_none() {
                        seen.first_failure_at = Some(p.resume_from.map(str::to_owned));
                    }
                }
            }
        })
        .await;
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let resume = seen.last_page.as_deref().map_or_else(
                || "run it again".to_owned(),
                |c| format!("run it again with --resume-from {c}"),
            );
            return Err(CliError::Failed {
                message: format!(
                    "rotate-keys stopped: {e} (sessions visited before were re-encrypted)"
                ),
                hint: Some(format!(
                    "is the store reachable? `statestore doctor` checks it; then {resume}"
                )),
            });
        }
    };
    let failed = report.failed.len() as u64;
    let current_already = report
        .sessions
        .saturating_sub(report.reencrypted + failed + seen.gone);
    let resume_from = seen.first_failure_at.clone().flatten();
    let whole_store = args.user.is_none() && args.resume_from.is_none();
    let others: Vec<&str> = ring.key_ids().filter(|k| *k != current).collect();
    // Whether an old key can go is decided by a scan made now, after the
    // rotation: a process still holding the old key file may have written
    // under it meanwhile, behind the rotation.
    let after = if whole_store && report.failed.is_empty() && !others.is_empty() {
        let ids = all_ids(&*backend, None).await?;
        Some(crate::keyscan::scan(&backend, &ids).await?)
    } else {
        None
    };
    let removable: Vec<&str> = after.as_ref().map_or_else(Vec::new, |scan| {
        others
            .iter()
            .copied()
            .filter(|k| scan.usage.under(k) == 0)
            .collect()
    });
    if ui.json {
        let failures: Vec<serde_json::Value> = report
            .failed
            .iter()
            .map(|(id, e)| {
                json!({
                    "id": id.as_str(),
                    "kind": kind(e),
                    "key_id": e.key_id(),
                    "error": e.to_string(),
                })
            })
            .collect();
        ui.out_json(&json!({
            "current_key": current,
            "sessions": report.sessions,
            "reencrypted": report.reencrypted,
            "values": report.values,
            "already_current": current_already,
            "deleted_meanwhile": seen.gone,
            "failed": failures,
            "resume_from": resume_from,
            "scan_after": after.as_ref().map(|scan| json!({
                "sessions": scan.sessions,
                "keys": scan.usage.keys,
                "plaintext": scan.usage.plaintext,
                "malformed": scan.usage.malformed,
                "manifests": scan.manifests,
            })),
            "removable_keys": removable,
        }))?;
    } else {
        // Said as what happened: a run whose every re-encryption failed
        // rotated nothing.
        let done = match (report.reencrypted, failed) {
            (0, f) if f > 0 => "not rotated",
            (_, f) if f > 0 => "partly rotated",
            _ => "rotated",
        };
        let mut text = format!(
            "{done} to key {current:?}: {} visited, {} re-encrypted ({}), {} already current, \
             {} failed\n",
            ui::count(report.sessions, "session"),
            ui::thousands(report.reencrypted),
            ui::count(report.values, "value"),
            ui::thousands(current_already),
            ui::thousands(failed),
        );
        if seen.gone > 0 {
            text.push_str(&format!(
                "{} deleted meanwhile\n",
                ui::count(seen.gone, "session")
            ));
        }
        if !report.failed.is_empty() {
            let rows: Vec<Vec<String>> = report
                .failed
                .iter()
                .map(|(id, e)| failure_row(id, e))
                .collect();
            text.push('\n');
            text.push_str(&ui::table(
                &[
                    ("FAILED", ui::Align::Left),
                    ("WHY", ui::Align::Left),
                    ("ERROR", ui::Align::Left),
                ],
                &rows,
            ));
        } else if let Some(scan) = &after {
            text.push_str(&key_advice(scan, &others));
        }
        ui.done(&text)?;
    }
    if report.reencrypted > 0 {
        residue(ui, url);
    }
    if report.failed.is_empty() {
        return Ok(());
    }
    let resume = resume_from
        .as_deref()
        .map_or_else(String::new, |c| format!(" (or --resume-from {c})"));
    // What each failure left behind: a write that timed out may have landed.
    let unknown = report
        .failed
        .iter()
        .filter(|(_, e)| e.write_outcome() != statestore::WriteOutcome::NotWritten)
        .count() as u64;
    let written = match unknown {
        0 => "nothing was written to them".to_owned(),
        n if n == failed => "each may have been re-encrypted all the same".to_owned(),
        n => format!(
            "{} may have been re-encrypted all the same; nothing was written to the others",
            ui::count(n, "session")
        ),
    };
    Err(CliError::Failed {
        message: format!(
            "{} could not be re-encrypted ({written})",
            ui::count(failed, "session")
        ),
        hint: Some(failed_hint(&report.failed, &resume)),
    })
}

/// What to do about the failures of a run, by their kinds (each said
/// once), then how to resume.
fn failed_hint(failed: &[(SessionId, CryptoError)], resume: &str) -> String {
    let mut kinds: Vec<&'static str> = failed.iter().map(|(_, e)| kind(e)).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut parts: Vec<&str> = kinds
        .iter()
        .filter_map(|k| {
            Some(match *k {
                "unknown_key" => "an unknown_key failure needs the key it names in the key file",
                "wrong_key" => {
                    "a wrong_key failure needs the original key under the id it names (the key \
                     file's key under that id is another one)"
                }
                "not_encrypted" => {
                    "a not_encrypted failure is a value stored in plaintext: add \
                     --encrypt-plaintext to encrypt it"
                }
                "inconsistent" => {
                    "an inconsistent session has no manifest (written without --keys or by an \
                     older version: --encrypt-plaintext binds it) or does not match its manifest \
                     (changed outside statestore: restore it from a backup)"
                }
                "integrity" => {
                    "an integrity failure is a changed or moved value, or one written under \
                     another --context"
                }
                _ => return None,
            })
        })
        .collect();
    parts.push("then run rotate-keys again");
    format!(
        "{}{resume}: sessions already current are skipped",
        parts.join("; ")
    )
}

/// What to do with each old key, by the scan made after the rotation.
fn key_advice(scan: &crate::keyscan::Scan, others: &[&str]) -> String {
    let mut text = String::new();
    for key in others {
        let values = scan.usage.under(key);
        if values == 0 {
            text.push_str(&format!(
                "a scan after the rotation found no value under key {key}: key {key} can now be \
                 removed from the key file, once every process using the store has the new \
                 file; keep a copy as long as encrypted exports (export --encrypted) or backups \
                 made before may need it\n"
            ));
        } else {
            text.push_str(&format!(
                "key {key} must be kept: a scan after the rotation found {} under it in {} (a \
                 process still writing with the old key file?); give every process the new \
                 file, then run rotate-keys again\n",
                ui::count(values, "value"),
                ui::count(
                    scan.sessions_per_key.get(*key).copied().unwrap_or(0),
                    "session"
                ),
            ));
        }
    }
    text
}

/// One row of the failures table: the session, the kind, the message.
fn failure_row(id: &SessionId, e: &CryptoError) -> Vec<String> {
    vec![id.as_str().to_owned(), kind(e).to_owned(), e.to_string()]
}

/// Warns that the backend's files may still hold the values just replaced:
/// the store rewrote them, but Redis does not erase old bytes on disk at
/// once, and SQLite (which zeroes what it frees, `secure_delete`) only
/// since this version.
fn residue(ui: &Ui, url: &str) {
    let what = "the replaced values (the old plaintext or old-key ciphertext)";
    if url.starts_with("sqlite:") {
        ui.warn(&format!(
            "the store zeroed {what} as it replaced them, but a SQLite file written by an \
             earlier version of statestore can still hold values in pages freed then: with no \
             process using it, run `sqlite3 FILE 'VACUUM'` once"
        ));
    } else if url.starts_with("redis") || url.starts_with("rediss") {
        ui.warn(&format!(
            "Redis's RDB and AOF files can still hold {what} until they are rewritten: \
             BGREWRITEAOF (AOF) or BGSAVE (RDB), then remove older backups"
        ));
    }
}
