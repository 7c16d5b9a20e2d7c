//! `export`, `import`, `migrate`: the JSON Lines format and the one copy
//! routine import and migrate share.

use std::collections::HashSet;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use statestore::{
    ConversationState, Counters, Expect, Message, Metadata, SessionId, Store, Summary, Timestamp,
};

use crate::args::{ExportArgs, ImportArgs, MigrateArgs};
use crate::error::CliError;
use crate::store::{all_ids, open, ordered};
use crate::ui::{self, Ui};

/// The `format` of an export's header line.
pub(crate) const FORMAT: &str = "statestore-export";

/// The format version this build writes, and the newest it reads.
pub(crate) const VERSION: u32 = 1;

/// Sessions loaded at once by export and migrate.
const READ_WIDTH: usize = 32;

/// Sessions written at once by import: enough for the SQLite store's group
/// commit to fill its batches.
const WRITE_WIDTH: usize = 128;

/// Bytes of sessions (as read from the file) being written at once by
/// import: the bound that counts when sessions are large.
const WRITE_BYTES: usize = 16 * 1024 * 1024;

/// Conflicting ids listed on stderr before "… and N more".
const CONFLICTS_LISTED: usize = 20;

/// The first line of an export.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
}

/// One session as exported: everything it holds except the store's
/// bookkeeping (version, `updated_at`, `last_accessed_at`, expiry), which
/// an import starts afresh. Fields in this order on every line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Exported {
    id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
    #[serde(default, skip_serializing_if = "Counters::is_empty")]
    counters: Counters,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    summaries: Vec<Summary>,
    #[serde(default)]
    messages: Vec<Arc<Message>>,
}

impl From<ConversationState> for Exported {
    fn from(s: ConversationState) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            created_at: s.created_at,
            system_prompt: s.system_prompt,
            metadata: s.metadata,
            counters: s.counters,
            summaries: s.summaries,
            messages: s.messages,
        }
    }
}

impl Exported {
    /// The state to save (messages shared, not copied).
    fn to_state(&self) -> ConversationState {
        let mut state = ConversationState::new(self.id.clone());
        state.user_id.clone_from(&self.user_id);
        state.created_at = self.created_at;
        state.system_prompt.clone_from(&self.system_prompt);
        state.metadata.clone_from(&self.metadata);
        state.counters.clone_from(&self.counters);
        state.summaries.clone_from(&self.summaries);
        state.messages.clone_from(&self.messages);
        state
    }

    /// The session's line, newline included.
    fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// What copying one session into a store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    /// It was absent and is now written.
    Written,
    /// It was there already, equal.
    Unchanged,
    /// It was there already, different: left as it is.
    Conflict,
}

/// Writes `session` into `store` if it is absent (create-only, so a
/// repeated or concurrent copy cannot apply twice), else compares.
async fn put(store: &dyn Store, session: &Exported) -> Result<Copied, CliError> {
    let id = &session.id;
    let state = session.to_state();
    // A session deleted between the refused write and the comparing read
    // is written on the next round.
    for _ in 0..3 {
        match store.save(&state, Expect::Absent).await {
            Ok(_) => return Ok(Copied::Written),
            Err(statestore::Error::Conflict { .. } | statestore::Error::AlreadyExists { .. }) => {
                let existing = store
                    .load(id)
                    .await
                    .map_err(CliError::read(format!("reading session {id} to compare")))?;
                if let Some(existing) = existing {
                    return Ok(if Exported::from(existing) == *session {
                        Copied::Unchanged
                    } else {
                        Copied::Conflict
                    });
                }
            }
            Err(e) => return Err(CliError::write(format!("writing session {id}"))(e)),
        }
    }
    Err(CliError::failed(format!(
        "session {id} was deleted and recreated by someone else while it was being copied; run \
         the command again"
    )))
}

/// Tallies of a copy.
#[derive(Debug, Default)]
struct Tally {
    written: u64,
    unchanged: u64,
    conflicts: Vec<SessionId>,
}

impl Tally {
    fn add(&mut self, id: SessionId, copied: Copied) {
        match copied {
            Copied::Written => self.written += 1,
            Copied::Unchanged => self.unchanged += 1,
            Copied::Conflict => self.conflicts.push(id),
        }
    }

    fn total(&self) -> u64 {
        self.written + self.unchanged + self.conflicts.len() as u64
    }

    fn json(&self) -> serde_json::Value {
        let conflicts: Vec<&str> = self.conflicts.iter().map(SessionId::as_str).collect();
        json!({
            "written": self.written,
            "unchanged": self.unchanged,
            "conflicts": conflicts,
        })
    }

    fn summary(&self) -> String {
        format!(
            "{} written, {} already there and equal, {}",
            ui::thousands(self.written),
            ui::thousands(self.unchanged),
            ui::count(self.conflicts.len() as u64, "conflict")
        )
    }

    /// Lists the conflicts on stderr; the error that makes them exit 1
    /// unless `ignore`.
    fn conflicts(&mut self, ui: &Ui, ignore: bool) -> Result<(), CliError> {
        if self.conflicts.is_empty() {
            return Ok(());
        }
        self.conflicts.sort();
        for id in self.conflicts.iter().take(CONFLICTS_LISTED) {
            ui.warn(&format!(
                "conflict: session {id} exists with different content; left as it is"
            ));
        }
        if self.conflicts.len() > CONFLICTS_LISTED {
            ui.warn(&format!(
                "… and {} more conflicts",
                self.conflicts.len() - CONFLICTS_LISTED
            ));
        }
        if ignore {
            return Ok(());
        }
        Err(CliError::Failed {
            message: format!(
                "{} conflicted: present in the destination with different content, not \
                 overwritten",
                ui::count(self.conflicts.len() as u64, "session")
            ),
            hint: Some(
                "compare them with `statestore show`; delete the destination's copy to take the \
                 imported one, or pass --ignore-conflicts to keep the destination's"
                    .into(),
            ),
        })
    }
}

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
    let store = open(url).await?;
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
    let header = serde_json::to_string(&Header {
        format: FORMAT.into(),
        version: VERSION,
    })
    .unwrap_or_default();
    sink.write(&format!("{header}\n"))?;
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

/// Checks an export's first line.
fn check_header(line: &str, file: &str) -> Result<(), CliError> {
    let not_export = |why: String| CliError::Failed {
        message: format!("{file} is not a statestore export: {why}; nothing was imported"),
        hint: Some("import reads files written by `statestore export`".into()),
    };
    if line.trim().is_empty() {
        return Err(not_export("it is empty".into()));
    }
    let header: Header = serde_json::from_str(line.trim_end())
        .map_err(|e| not_export(format!("its first line is not the header ({e})")))?;
    if header.format != FORMAT {
        return Err(not_export(format!(
            "its format is {:?}, not {FORMAT:?}",
            header.format
        )));
    }
    if header.version > VERSION {
        return Err(CliError::Failed {
            message: format!(
                "{file} was written in export format version {}; this statestore reads up to \
                 version {VERSION}. Nothing was imported",
                header.version
            ),
            hint: Some("import it with a newer statestore".into()),
        });
    }
    Ok(())
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
    let store = open(url).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked() {
        assert!(check_header("{\"format\":\"statestore-export\",\"version\":1}\n", "f").is_ok());
        let newer = check_header("{\"format\":\"statestore-export\",\"version\":2}", "f")
            .unwrap_err()
            .to_string();
        assert!(newer.contains("version 2"), "{newer}");
        assert!(check_header("{\"format\":\"other\",\"version\":1}", "f").is_err());
        assert!(check_header("", "f").is_err());
        assert!(check_header("{\"id\":\"a\"}", "f").is_err());
    }

    #[test]
    fn lines_round_trip_and_refuse_unknown_fields() {
        let mut state =
            ConversationState::new(SessionId::new("a").unwrap_or_else(|_| unreachable!()));
        state.push(Message::user("hi"));
        state.version = 7;
        let line = Exported::from(state).line();
        assert!(!line.contains("version"), "{line}");
        assert!(!line.contains("updated_at"), "{line}");
        let back: Exported = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.line(), line);
        let extra = line.replacen("{", "{\"surprise\":1,", 1);
        assert!(serde_json::from_str::<Exported>(&extra).is_err());
    }
}
