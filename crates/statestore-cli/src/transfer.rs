//! `export`, `import`, `migrate`: streaming sessions out of a store and
//! into one (the format and the copy routine are in `copy.rs`).

use std::collections::HashSet;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use statestore::{SessionId, Store};

use crate::args::{ExportArgs, ImportArgs, MigrateArgs};
use crate::copy::{Copied, Exported, Header, Tally, check_header, put};
use crate::error::CliError;
use crate::store::{all_ids, open, open_backend, ordered};
use crate::ui::{self, Ui};

/// Sessions loaded at once by export and migrate.
const READ_WIDTH: usize = 32;

/// Sessions written at once by import: enough for the SQLite store's group
/// commit to fill its batches.
const WRITE_WIDTH: usize = 128;

/// Bytes of sessions (as read from the file) being written at once by
/// import: the bound that counts when sessions are large.
const WRITE_BYTES: usize = 16 * 1024 * 1024;

/// Where an export writes: stdout, or a temporary file renamed over the
/// destination once complete (so an interrupted export never leaves a
/// truncated file under the name asked for).
enum Sink {
    Stdout(BufWriter<std::io::StdoutLock<'static>>),
    File {
        out: BufWriter<std::fs::File>,
        tmp: PathBuf,
        dest: PathBuf,
    },
}

impl Sink {
    fn open(output: Option<&Path>) -> Result<Self, CliError> {
        let Some(dest) = output else {
            return Ok(Self::Stdout(BufWriter::new(std::io::stdout().lock())));
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into());
        let tmp = dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = std::fs::File::create(&tmp)
            .map_err(CliError::io(format!("cannot create {}", tmp.display())))?;
        Ok(Self::File {
            out: BufWriter::new(file),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    fn what(&self) -> String {
        match self {
            Self::Stdout(_) => "writing to stdout".into(),
            Self::File { tmp, .. } => format!("writing {}", tmp.display()),
        }
    }

    fn write(&mut self, text: &str) -> Result<(), CliError> {
        let what = self.what();
        let result = match self {
            Self::Stdout(out) => out.write_all(text.as_bytes()),
            Self::File { out, .. } => out.write_all(text.as_bytes()),
        };
        result.map_err(CliError::io(what))
    }

    /// Flushes, and for a file syncs it and renames it into place.
    fn finish(self) -> Result<(), CliError> {
        match self {
            Self::Stdout(mut out) => out.flush().map_err(CliError::io("writing to stdout")),
            Self::File { out, tmp, dest } => {
                let file = out.into_inner().map_err(|e| {
                    CliError::io(format!("writing {}", tmp.display()))(e.into_error())
                })?;
                file.sync_all()
                    .map_err(CliError::io(format!("syncing {}", tmp.display())))?;
                std::fs::rename(&tmp, &dest).map_err(CliError::io(format!(
                    "renaming {} to {}",
                    tmp.display(),
                    dest.display()
                )))
            }
        }
    }

    /// Removes the temporary file of a failed export.
    fn abandon(self) {
        if let Self::File { tmp, .. } = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

pub(crate) async fn export(ui: &Ui, url: &str, args: ExportArgs) -> Result<(), CliError> {
    let store = open_for(url, args.encrypted, "export").await?;
    let ids = all_ids(&*store, args.user.as_deref()).await?;
    let mut sink = Sink::open(args.output.as_deref())?;
    let result = write_export(ui, &store, &ids, &mut sink).await;
    let exported = match result {
        Ok(n) => n,
        Err(e) => {
            sink.abandon();
            return Err(e);
        }
    };
    sink.finish()?;
    let place = args
        .output
        .as_ref()
        .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    if ui.json && args.output.is_some() {
        ui.out_json(&json!({ "exported": exported, "file": place }))?;
    } else {
        ui.diag(&format!(
            "exported {} to {place}",
            ui::count(exported, "session")
        ));
    }
    Ok(())
}

/// The header and every session of `ids`, loaded `READ_WIDTH` at a time
/// and written in id order. Returns how many sessions were written (ids
/// deleted since the listing are skipped).
async fn write_export(
    ui: &Ui,
    store: &Arc<dyn Store>,
    ids: &[SessionId],
    sink: &mut Sink,
) -> Result<u64, CliError> {
    sink.write(&Header::line())?;
    let bar = ui.progress(ids.len() as u64, "exporting");
    let mut exported = 0u64;
    let reader = Arc::clone(store);
    ordered(
        ids,
        READ_WIDTH,
        move |id| {
            let store = Arc::clone(&reader);
            async move {
                let state = store
                    .load(&id)
                    .await
                    .map_err(CliError::read(format!("reading session {id}")))?;
                // Encoded in the worker: only the line travels.
                Ok(state.map(|s| Exported::from(s).line()))
            }
        },
        |_, line| {
            bar.inc(1);
            if let Some(line) = line {
                sink.write(&line)?;
                exported += 1;
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
    check_header(&line, &name)?;
    let store = open_for(url, args.encrypted, "import").await?;
    let bar = ui.progress_bytes(size, "importing");
    bar.inc(line.len() as u64);

    let mut tally = Tally::default();
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
                broken = Some((line_no, e.to_string()));
                break;
            }
        };
        while !tasks.is_empty() && (tasks.len() >= WRITE_WIDTH || in_flight >= WRITE_BYTES) {
            in_flight -= join_one(&mut tasks, &mut tally).await?;
        }
        let store = Arc::clone(&store);
        let size = line.len();
        in_flight += size;
        tasks.spawn(async move {
            let copied = put(&*store, &session).await?;
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
                "line {at} of {name} is not a session ({why}). {} before it: {}; nothing from \
                 line {at} on was imported",
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
        ui.out(&format!(
            "imported {} from {name}: {}\n",
            ui::count(tally.total(), "session"),
            tally.summary()
        ))?;
    }
    tally.conflicts(ui, args.ignore_conflicts)
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

/// The store, decrypted through the key ring; or with `encrypted` (which
/// needs a key ring, so the flag cannot pass a plaintext store for an
/// encrypted one unnoticed) the values as the backend holds them.
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

pub(crate) async fn migrate(ui: &Ui, args: MigrateArgs) -> Result<(), CliError> {
    if args.from == args.to {
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
    let dest = open(&args.to).await?;
    let ids = all_ids(&*source, args.user.as_deref()).await?;
    let bar = ui.progress(ids.len() as u64, "migrating");
    let mut tally = Tally::default();
    let mut vanished: HashSet<SessionId> = HashSet::new();
    let (src, dst) = (Arc::clone(&source), Arc::clone(&dest));
    ordered(
        &ids,
        READ_WIDTH,
        move |id| {
            let (source, dest) = (Arc::clone(&src), Arc::clone(&dst));
            async move {
                let state = source.load(&id).await.map_err(CliError::read(format!(
                    "reading session {id} from the source"
                )))?;
                match state {
                    None => Ok(None),
                    Some(state) => Ok(Some(put(&*dest, &Exported::from(state)).await?)),
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

    // The final check: every session of the source is in the destination.
    let there: HashSet<SessionId> = all_ids(&*dest, args.user.as_deref())
        .await?
        .into_iter()
        .collect();
    let expected = ids.iter().filter(|id| !vanished.contains(*id));
    let missing: Vec<&SessionId> = expected.filter(|id| !there.contains(*id)).collect();
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
            "migrated {} from {from_name} to {to_name}: {}\n",
            ui::count(tally.total(), "session"),
            tally.summary()
        );
        if missing.is_empty() {
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
        ui.out(&text)?;
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
