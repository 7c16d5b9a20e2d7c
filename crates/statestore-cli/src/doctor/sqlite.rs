//! `doctor` on an SQLite file: its versions and settings, and what
//! `PRAGMA integrity_check` found, said in a line.

use serde_json::json;
use statestore::sqlite::{Damage, DamageKind, SqliteStore};

use super::{Report, Status};
use crate::ui;

use std::time::Instant;

/// What to do with a damaged file whose damage `REINDEX` or `VACUUM`
/// does not repair.
const SALVAGE: &str = "`statestore export --skip-unreadable -o salvage.jsonl`, then \
                       import it into a new file";

/// Raw `integrity_check` lines `--json` shows.
const JSON_LINES: usize = 20;

/// Characters of the raw example the line quotes.
const EXAMPLE_CHARS: usize = 100;

/// Tables and indexes the line names before "and N more".
const NAMED: usize = 4;

pub(super) async fn check(store: &SqliteStore, report: &mut Report) {
    let started = Instant::now();
    let d = match store.diagnose().await {
        Ok(d) => d,
        Err(e) => {
            report.add(
                Status::Fail,
                "read",
                format!("cannot read the file: {e}; save what still reads: {SALVAGE}"),
            );
            return;
        }
    };
    report.add(Status::Info, "file", d.path.display().to_string());
    report.add(
        Status::Info,
        "sqlite",
        format!("SQLite {}", d.sqlite_version),
    );
    let (status, detail) = if d.schema_version == d.supported_schema_version {
        (
            Status::Ok,
            format!(
                "{} (this build writes {})",
                d.schema_version, d.supported_schema_version
            ),
        )
    } else {
        (
            Status::Fail,
            format!(
                "{}, this build reads up to {}: use a newer statestore",
                d.schema_version, d.supported_schema_version
            ),
        )
    };
    report.add(status, "schema", detail);
    let (status, detail) = if d.journal_mode == "wal" {
        (
            Status::Ok,
            "wal: readers never wait for the writer".to_owned(),
        )
    } else {
        (
            Status::Fail,
            format!(
                "{}: the store needs wal (it sets it when it opens the file; another program \
                 changed it: PRAGMA journal_mode=WAL)",
                d.journal_mode
            ),
        )
    };
    report.add(status, "journal mode", detail);
    let (status, detail) = match d.synchronous {
        statestore::sqlite::Synchronous::Full => (
            Status::Ok,
            "full: every acknowledged write survives a power loss".to_owned(),
        ),
        _ => (
            Status::Warn,
            "normal (?sync=normal): writes survive a crash of the process, the last ones may be \
             lost in a power loss"
                .to_owned(),
        ),
    };
    report.add(status, "durability", detail);
    match &d.damage {
        None => report.add(
            Status::Ok,
            "integrity",
            format!("integrity_check ok ({} ms)", started.elapsed().as_millis()),
        ),
        Some(damage) => integrity(&d.integrity, damage, report),
    }
    report.add(
        Status::Info,
        "size",
        format!(
            "{}, {} of it free pages; {}",
            ui::bytes(d.size_bytes),
            ui::bytes(d.free_bytes),
            ui::count(d.sessions, "session")
        ),
    );
    report.add(
        Status::Info,
        "ttl",
        d.ttl.map_or_else(
            || "none: sessions stay until deleted".to_owned(),
            |t| format!("{} after the last access", ui::duration(t)),
        ),
    );
}

/// The integrity check's failure, in one line: how many problems (`100 or
/// more` where the check stopped counting), of which kinds, where, one raw
/// message as an example, and what to do next. `--json` has the same
/// figures under `data`, with the raw messages (the first
/// [`JSON_LINES`]).
fn integrity(lines: &[String], damage: &Damage, report: &mut Report) {
    let count = if damage.capped {
        format!("{} or more problems", damage.problems)
    } else {
        ui::count(damage.problems as u64, "problem")
    };
    let kinds: Vec<String> = damage
        .kinds
        .iter()
        .map(|(kind, n)| format!("{} ({n})", kind.describe()))
        .collect();
    let mut places: Vec<String> = damage
        .tables
        .iter()
        .map(|t| format!("table {t}"))
        .chain(damage.indexes.iter().map(|i| format!("index {i}")))
        .collect();
    if places.len() > NAMED {
        let more = places.len() - NAMED;
        places.truncate(NAMED);
        places.push(format!("{more} more"));
    }
    let next = next_step(damage);
    let mut detail = format!("{count}: {}", kinds.join(", "));
    if !places.is_empty() {
        detail.push_str(&format!(" in {}", places.join(", ")));
    }
    if let Some(first) = lines.first() {
        let mut example: String = first.chars().take(EXAMPLE_CHARS).collect();
        if example.len() < first.len() {
            example.push('…');
        }
        detail.push_str(&format!(" (e.g. \"{example}\")"));
    }
    detail.push_str(&format!(". {next}"));
    let data = json!({
        "problems": damage.problems,
        "capped": damage.capped,
        "kinds": damage.kinds.iter().map(|(kind, n)| json!({
            "kind": kind.name(),
            "description": kind.describe(),
            "count": n,
        })).collect::<Vec<_>>(),
        "tables": damage.tables,
        "indexes": damage.indexes,
        "index_only": damage.index_only(),
        "lines": lines.iter().take(JSON_LINES).collect::<Vec<_>>(),
        "next_step": next,
    });
    report.add_data(Status::Fail, "integrity", detail, data);
}

/// What to do about `damage`: rebuild the indexes when only they are out
/// of step with their tables, rebuild the file when only its free-space
/// bookkeeping is wrong, save what still reads otherwise.
fn next_step(damage: &Damage) -> String {
    if damage.index_only() {
        return "The tables' rows are intact: `REINDEX` rebuilds the indexes from them (e.g. \
                `sqlite3 FILE REINDEX`), then run doctor again"
            .to_owned();
    }
    let free_space_only = damage
        .kinds
        .iter()
        .all(|(kind, _)| *kind == DamageKind::FreeSpace);
    if free_space_only {
        return "No session is concerned: `VACUUM` rebuilds the file (e.g. `sqlite3 FILE \
                VACUUM`), then run doctor again"
            .to_owned();
    }
    format!("Save what still reads: {SALVAGE}")
}

/// What a file that cannot be opened because of what it holds is, in one
/// line with what to do (`None` for other failures to open): one that is
/// not an SQLite database at all (SQLite's `SQLITE_NOTADB`: its header is
/// not SQLite's), or one damaged where opening reads it (`SQLITE_CORRUPT`
/// at open: nothing in it reads through statestore, so nothing can be
/// exported). The library's detail names the file and the code. Other
/// failures (tables changed by someone else, a newer schema) keep the
/// error as it is.
pub(super) fn unreadable_file(e: &statestore::OpenError) -> Option<String> {
    let statestore::OpenError::Open {
        source: statestore::Error::Corrupt { id, detail, .. },
        ..
    } = e
    else {
        return None;
    };
    if id.as_str() != statestore::sqlite::schema::FILE_ID {
        return None;
    }
    let next = if detail.contains("SQLITE_NOTADB") {
        "its first bytes are not an SQLite header: another kind of file, or overwritten from \
         its start. Nothing in it can be read: restore it from a backup"
    } else if detail.contains("SQLITE_CORRUPT") {
        "damaged where opening it reads (its first pages, SQLite's list of tables): nothing \
         in it reads through statestore, so nothing can be exported. Restore it from a backup"
    } else {
        return None;
    };
    Some(format!("{detail}: {next}"))
}
