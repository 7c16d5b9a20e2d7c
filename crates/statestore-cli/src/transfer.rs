//! `export`, `import`, `migrate`: streaming sessions out of a store and
//! into one (the format and the copy routine are in `copy.rs`).

use std::io::BufRead;
use std::sync::Arc;

use serde_json::json;
use statestore::{Load, SessionId, Store};

use crate::args::{ExportArgs, ImportArgs};
use crate::copy::{Copied, Exported, Header, Tally, check_header, check_values, put};
use crate::error::CliError;
use crate::sink::Sink;
use crate::store::{all_ids, open, open_backend, open_destination, ordered};
use crate::ui::{self, Ui};

/// Sessions loaded at once by export and migrate.
pub(crate) const READ_WIDTH: usize = 32;

/// Sessions written at once by import: enough for the SQLite store's group
/// commit to fill its batches.
const WRITE_WIDTH: usize = 128;

/// Bytes of sessions (as read from the file) being written at once by
/// import: the bound that counts when sessions are large.
const WRITE_BYTES: usize = 16 * 1024 * 1024;

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
    let interrupted = ctrl_c()?;
    let mut sink = Sink::open(args.output.as_deref())?;
    let written = std::cell::Cell::new(0);
    let result = tokio::select! {
        result = write_export(ui, &store, &ids, &values, &mut sink, &written) => result,
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
    let exported = match result {
        Ok(n) => n,
        Err(e) => {
            sink.abandon();
            return Err(e);
        }
    };
    sink.finish()
        .map_err(|e| cut_short(e, exported, ids.len()))?;
    let place = args
        .output
        .as_ref()
        .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    if ui.json && args.output.is_some() {
        ui.out_json(&json!({ "exported": exported, "file": place }))?;
    } else {
        ui.note(&format!(
            "exported {} to {place}",
            ui::count(exported, "session")
        ));
    }
    Ok(())
}

/// A future that completes on Ctrl-C (SIGINT), which from this call on no
/// longer ends the process: the caller cleans up and exits 130.
fn ctrl_c() -> Result<impl Future<Output = ()>, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint =
            signal(SignalKind::interrupt()).map_err(CliError::io("watching for Ctrl-C"))?;
        Ok(async move {
            sigint.recv().await;
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

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

/// What `head`, a file's first bytes, is when it is plainly not an export:
/// a compressed file, an SQLite database, or binary (a NUL byte, or bytes
/// that are not UTF-8 where the first line's start should be text).
fn not_an_export(head: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 6] = [
        (b"\x1f\x8b", "a gzip-compressed file"),
        (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
        (b"BZh", "a bzip2-compressed file"),
        (b"\xfd7zXZ\x00", "an xz-compressed file"),
        (b"PK\x03\x04", "a zip archive (compressed)"),
        (b"SQLite format 3\x00", "an SQLite database"),
    ];
    if let Some((_, kind)) = MAGIC.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(kind);
    }
    let start = head.get(..512).unwrap_or(head);
    let text = match std::str::from_utf8(start) {
        Ok(text) => text,
        // A character cut at the end of the sample is still text.
        Err(e) if e.error_len().is_none() => start
            .get(..e.valid_up_to())
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or_default(),
        Err(_) => return Some("a binary file"),
    };
    text.contains('\0').then_some("a binary file")
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

/// The header and every session of `ids`, loaded `READ_WIDTH` at a time
/// and written in id order. Returns how many sessions were written (ids
/// deleted since the listing are skipped).
async fn write_export(
    ui: &Ui,
    store: &Arc<dyn Store>,
    ids: &[SessionId],
    values: &Values,
    sink: &mut Sink,
    written: &std::cell::Cell<u64>,
) -> Result<u64, CliError> {
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
    let mut exported = 0u64;
    let reader = Arc::clone(store);
    ordered(
        ids,
        READ_WIDTH,
        move |id| {
            let store = Arc::clone(&reader);
            let values = values.clone();
            async move {
                // A maintenance read: exporting is no access.
                let state = store
                    .load_with(&id, Load::new().keep_clocks())
                    .await
                    .map_err(CliError::read(format!("reading session {id}")))?;
                // Encoded in the worker: only the line travels.
                state.map(|s| export_line(s, &values)).transpose()
            }
        },
        |_, line| {
            bar.inc(1);
            if let Some(line) = line {
                sink.write(&line)
                    .map_err(|e| cut_short(e, exported, ids.len()))?;
                exported += 1;
                written.set(exported);
            }
            Ok(())
        },
    )
    .await?;
    bar.finish_and_clear();
    Ok(exported)
}

pub(crate) async fn import(ui: &Ui, url: &str, args: ImportArgs) -> Result<(), CliError> {
    let stdin = args.file.as_os_str() == "-";
    let name = if stdin {
        "stdin".to_owned()
    } else {
        args.file.display().to_string()
    };
    let (mut input, size): (Box<dyn BufRead>, u64) = if stdin {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let file =
            std::fs::File::open(&args.file).map_err(CliError::io(format!("cannot open {name}")))?;
        let size = file.metadata().map_or(0, |m| m.len());
        (Box::new(std::io::BufReader::new(file)), size)
    };
    // What the file is, when it is plainly not an export (compressed,
    // a database, binary): said before anything else, nothing imported.
    let head = input
        .fill_buf()
        .map_err(CliError::io(format!("reading {name}")))?;
    if let Some(kind) = not_an_export(head) {
        return Err(CliError::Failed {
            message: format!(
                "{name} is {kind}, not a statestore export (JSON Lines); nothing was imported"
            ),
            hint: Some(match kind {
                k if k.contains("compressed") => {
                    "decompress it first, e.g. `gunzip -c FILE | statestore import -` (or \
                     zstd -dc, bzip2 -dc, xz -dc)"
                        .into()
                }
                k if k.contains("SQLite") => {
                    "to copy a store's sessions into another, use `statestore migrate --from \
                     sqlite://FILE --to URL`"
                        .into()
                }
                _ => "`statestore export` writes the files import reads".into(),
            }),
        });
    }
    let mut line = String::new();
    let read = |input: &mut Box<dyn BufRead>, line: &mut String| {
        line.clear();
        input
            .read_line(line)
            .map_err(CliError::io(format!("reading {name}")))
    };
    read(&mut input, &mut line)?;
    // The header is checked before the store is opened: a wrong file
    // changes nothing.
    let header = check_header(&line, &name)?;
    check_kind(&header, &name, args.encrypted)?;
    // Ciphertext is stored as it is (no key ring needed; with one, each
    // session is decrypted to check it first); plaintext goes through the
    // key ring's layer, or without one only into a store that is not
    // encrypted.
    let store = open_destination(url, "import", args.encrypted, args.dry_run).await?;
    let bar = ui.progress_bytes(size, "importing");
    bar.inc(line.len() as u64);

    let mut tally = Tally::new(args.dry_run);
    let mut tasks = tokio::task::JoinSet::new();
    let mut line_no = 1u64;
    let mut broken: Option<(u64, String)> = None;
    let mut in_flight = 0usize;
    loop {
        if read(&mut input, &mut line)? == 0 {
            break;
        }
        line_no += 1;
        bar.inc(line.len() as u64);
        if line.trim().is_empty() {
            continue;
        }
        let session: Exported = match serde_json::from_str(line.trim_end()) {
            Ok(s) => s,
            Err(e) => {
                broken = Some((line_no, format!("is not a session ({e})")));
                break;
            }
        };
        if let Err(why) = check_session(&session, &header, args.encrypted).await {
            broken = Some((line_no, why));
            break;
        }
        while !tasks.is_empty() && (tasks.len() >= WRITE_WIDTH || in_flight >= WRITE_BYTES) {
            in_flight -= join_one(&mut tasks, &mut tally).await?;
        }
        let store = Arc::clone(&store);
        let dry_run = args.dry_run;
        let size = line.len();
        in_flight += size;
        tasks.spawn(async move {
            let copied = put(&*store, &session, dry_run).await?;
            Ok::<_, CliError>((session.id, copied, size))
        });
    }
    while !tasks.is_empty() {
        join_one(&mut tasks, &mut tally).await?;
    }
    bar.finish_and_clear();
    if let Some((at, why)) = broken {
        return Err(CliError::Failed {
            message: format!(
                "line {at} of {name} {why}. {} before it: {}; nothing from line {at} on was \
                 imported",
                ui::count(tally.total(), "session"),
                tally.summary()
            ),
            hint: Some(format!(
                "fix or remove line {at} and import the file again: the sessions already \
                 imported are left as they are"
            )),
        });
    }
    if ui.json {
        let mut doc = tally.json();
        if let Some(o) = doc.as_object_mut() {
            o.insert("sessions".into(), json!(tally.total()));
        }
        ui.out_json(&doc)?;
    } else {
        ui.done(&format!(
            "{} {} from {name}: {}\n",
            if args.dry_run {
                "would import"
            } else {
                "imported"
            },
            ui::count(tally.total(), "session"),
            tally.summary()
        ))?;
    }
    tally.conflicts(ui, args.ignore_conflicts)
}

/// Refuses a file whose header says its values are not what the command
/// takes: an encrypted export without `--encrypted` (its ciphertext would
/// be encrypted again, and read back as empty messages), a plaintext one
/// with it, or one needing keys the key ring lacks. Nothing was imported.
fn check_kind(header: &Header, name: &str, encrypted: bool) -> Result<(), CliError> {
    let refuse = |message: String, hint: &str| CliError::Failed {
        message: format!("{message}. Nothing was imported"),
        hint: Some(hint.to_owned()),
    };
    match header.encrypted {
        Some(true) if !encrypted => {
            return Err(refuse(
                format!(
                    "{name} is an encrypted export (values under key {}): a plain import would \
                     store its ciphertext as text",
                    header.key_ids.join(", ")
                ),
                "import it with `statestore --keys FILE import --encrypted` (the same key ring \
                 reads it afterwards)",
            ));
        }
        Some(false) if encrypted => {
            return Err(refuse(
                format!("{name} is a plaintext export: --encrypted takes ciphertext only"),
                "import it without --encrypted (with --keys, it is encrypted on the way in)",
            ));
        }
        _ => {}
    }
    if let Some(ring) = crate::store::keys().filter(|_| encrypted) {
        let missing: Vec<&str> = header
            .key_ids
            .iter()
            .map(String::as_str)
            .filter(|k| !ring.contains(k))
            .collect();
        if !missing.is_empty() {
            return Err(refuse(
                format!(
                    "{name} is encrypted under key {}, which the key ring does not hold",
                    missing.join(", ")
                ),
                "add those keys to the key file (--keys): they are needed to read the sessions",
            ));
        }
    }
    Ok(())
}

/// [`check_values`] of one session, then with `encrypted` and a key ring,
/// every value decrypted (in memory) to check it: the error says why not.
async fn check_session(session: &Exported, header: &Header, encrypted: bool) -> Result<(), String> {
    check_values(session, header, encrypted)?;
    let Some(ring) = crate::store::keys().filter(|_| encrypted) else {
        return Ok(());
    };
    let state = session.to_state();
    let memory: Arc<dyn Store> = Arc::new(statestore::memory::MemoryStore::new());
    memory
        .save(&state, statestore::Expect::Absent)
        .await
        .map_err(|e| format!("cannot be checked ({e})"))?;
    crate::store::layer(memory, ring)
        .build()
        .load(&state.id)
        .await
        .map(drop)
        .map_err(|e| format!("does not decrypt with the key ring ({e})"))
}

type PutResult = Result<(SessionId, Copied, usize), CliError>;

/// Waits for one write of `tasks` and counts it; returns its size.
async fn join_one(
    tasks: &mut tokio::task::JoinSet<PutResult>,
    tally: &mut Tally,
) -> Result<usize, CliError> {
    let Some(done) = tasks.join_next().await else {
        return Ok(0);
    };
    let (id, copied, size) = done.map_err(|e| CliError::Io {
        what: "a writer task stopped".into(),
        source: std::io::Error::other(e),
    })??;
    tally.add(id, copied);
    Ok(size)
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
