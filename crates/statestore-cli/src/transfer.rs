//! `import`: streaming sessions from an export file into a store (the
//! format and the copy routine are in `copy.rs`; `export` is in
//! `export.rs`, `migrate` in `migrate.rs`).

use std::io::BufRead;
use std::sync::Arc;

use serde_json::json;
use statestore::{SessionId, Store};

use crate::args::ImportArgs;
use crate::copy::{Copied, Exported, Header, Tally, check_header, check_values, put};
use crate::error::CliError;
use crate::store::open_destination;
use crate::ui::{self, Ui};

/// Sessions loaded at once by export and migrate.
pub(crate) const READ_WIDTH: usize = 32;

/// Sessions written at once by import: enough for the SQLite store's group
/// commit to fill its batches.
const WRITE_WIDTH: usize = 128;

/// Bytes of sessions (as read from the file) being written at once by
/// import: the bound that counts when sessions are large.
const WRITE_BYTES: usize = 16 * 1024 * 1024;

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
