//! Damaged and hostile files: truncated, overwritten in the middle, tables
//! changed behind the store's back, a read-only directory, a full disk
//! (a file-size limit in a child process). Every failure is a typed error
//! naming the file, never a panic; sessions SQLite can still read are
//! unaffected.
//!
//! The read-only and full-disk cases run in child processes: this test
//! binary re-run with `BAD_FILES_CHILD` set (the `child` test then runs the
//! child's part instead of returning at once), as in `processes.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::sid;
use statestore_core::{Append, Error, Expect, IdempotencyKey, Message, Store};
use statestore_sqlite::{SqliteStore, schema};

const CHILD: &str = "BAD_FILES_CHILD";
const PATH: &str = "BAD_FILES_PATH";
const LIMIT: &str = "BAD_FILES_LIMIT";

/// Writes a line for the parent (stdout is a pipe).
fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").unwrap();
    out.flush().unwrap();
}

/// A diagnostic for `--nocapture` runs.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The text of message `i` of session `s`: unique, `len` bytes or more.
fn text(s: &str, i: usize, len: usize) -> String {
    let head = format!("{s}-{i}-");
    format!("{head}{}", "x".repeat(len.saturating_sub(head.len())))
}

/// A real store file at `path` holding `sessions` sessions (`s00`, `s01`,
/// …) of `per` messages of about `len` bytes each, closed and fully
/// checkpointed into the main file (the `-wal` is empty afterwards).
async fn real_file(path: &Path, sessions: usize, per: usize, len: usize) -> Vec<String> {
    let store = SqliteStore::open(path).await.unwrap();
    let mut names = Vec::new();
    for s in 0..sessions {
        let name = format!("s{s:02}");
        let messages = (0..per).map(|i| Message::user(text(&name, i, len)));
        store
            .append(&sid(&name), messages.collect(), Expect::Absent)
            .await
            .unwrap();
        names.push(name);
    }
    drop(store);
    checkpoint(path);
    names
}

/// Copies every committed page into the main file and empties the WAL
/// (waiting for the dropped store's threads to let go).
fn checkpoint(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    for _ in 0..100 {
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        if busy == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("could not checkpoint {}", path.display());
}

fn page_size(path: &Path) -> u64 {
    let size: u32 = rusqlite::Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    u64::from(size)
}

/// Copies the main file (not its `-wal`/`-shm`) to `to`.
fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
}

fn names_file(err: &Error, path: &Path) -> bool {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.contains(&path.display().to_string())
}

fn texts(state: &statestore_core::ConversationState) -> Vec<String> {
    state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect()
}

/// What opening and reading every session of a damaged copy gave.
#[derive(Debug, Default)]
struct Outcome {
    open_refused: bool,
    intact: Vec<String>,
    corrupt: Vec<String>,
}

/// Opens `path` and loads each of `names` (`per` messages of `len` bytes
/// each). Every outcome must be a typed `Corrupt` naming the file or the
/// exact data written — a wrong answer or any other error fails the test.
async fn open_and_read(path: &Path, names: &[String], per: usize, len: usize) -> Outcome {
    let mut out = Outcome::default();
    let store = match SqliteStore::open(path).await {
        Ok(store) => store,
        Err(e) => {
            assert!(
                matches!(&e, Error::Corrupt { id, .. } if id.as_str() == schema::FILE_ID),
                "open {}: {e:?}",
                path.display()
            );
            assert!(names_file(&e, path), "the error names the file: {e}");
            out.open_refused = true;
            return out;
        }
    };
    for name in names {
        let id = sid(name);
        match store.load(&id).await {
            Ok(Some(state)) => {
                let want: Vec<String> = (0..per).map(|i| text(name, i, len)).collect();
                assert_eq!(texts(&state), want, "{name} read back wrong");
                out.intact.push(name.clone());
            }
            Err(e) => {
                assert!(
                    matches!(&e, Error::Corrupt { id: got, .. } if *got == id),
                    "load {name}: {e:?}"
                );
                assert!(names_file(&e, path), "the error names the file: {e}");
                out.corrupt.push(name.clone());
            }
            Ok(None) => out.corrupt.push(format!("{name} (missing)")),
        }
    }
    out
}

/// A store file cut short — at half its length on a page boundary, in the
/// middle of a page, after its first page, and after three pages — is
/// refused with `Corrupt` naming the file (at open or at the first read of
/// a damaged session); nothing panics and nothing reads back wrong. The
/// original file is untouched and serves every session.
#[tokio::test]
async fn truncated_files_are_typed_corrupt() {
    const PER: usize = 20;
    const LEN: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.sqlite3");
    let names = real_file(&original, 40, PER, LEN).await;
    let len = std::fs::metadata(&original).unwrap().len();
    let page = page_size(&original);
    assert!(len >= 16 * page, "the file spans many pages ({len} bytes)");
    let half_on_page = len / 2 / page * page;
    for cut in [half_on_page, half_on_page + page / 2, page, 3 * page] {
        let copy_path = dir.path().join(format!("cut-{cut}.sqlite3"));
        copy(&original, &copy_path);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&copy_path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let out = open_and_read(&copy_path, &names, PER, LEN).await;
        note(&format!("cut at {cut} of {len} bytes: {out:?}"));
        assert!(
            out.open_refused || !out.corrupt.is_empty(),
            "cut at {cut}: the damage went unnoticed"
        );
    }
    let out = open_and_read(&original, &names, PER, LEN).await;
    assert_eq!(out.intact.len(), names.len(), "{out:?}");
}

/// One page in the middle of a real file — the one holding a message of
/// session `s12` — overwritten with garbage: reading `s12` fails with
/// `Corrupt` naming the file, sessions stored on other pages read back
/// exactly and still take writes, and nothing panics.
#[tokio::test]
async fn an_overwritten_page_fails_only_the_sessions_on_it() {
    // 1,500-byte messages: two rows per 4 KiB page, so a page holds at
    // most two sessions' rows.
    const PER: usize = 8;
    const LEN: usize = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.sqlite3");
    let names = real_file(&original, 24, PER, LEN).await;
    let damaged = dir.path().join("damaged.sqlite3");
    copy(&original, &damaged);

    let page = page_size(&damaged);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let marker = text("s12", 4, 0);
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the victim's message is in the file") as u64;
    let victim_page = at / page;
    assert!(
        victim_page > 0 && (victim_page + 1) * page < bytes.len() as u64,
        "a page in the middle"
    );
    let start = usize::try_from(victim_page * page).unwrap();
    let end = usize::try_from((victim_page + 1) * page).unwrap();
    for (i, b) in bytes[start..end].iter_mut().enumerate() {
        *b = 0xA5 ^ u8::try_from(i % 256).unwrap();
    }
    std::fs::write(&damaged, &bytes).unwrap();

    let out = open_and_read(&damaged, &names, PER, LEN).await;
    note(&format!("page {victim_page} overwritten: {out:?}"));
    assert!(
        !out.open_refused,
        "one damaged data page does not stop the file"
    );
    assert!(out.corrupt.contains(&"s12".to_owned()), "{out:?}");
    // Sessions that cannot share the page with s12 (two rows per page, in
    // (session, position) order) read back exactly.
    for name in &names {
        if name != "s11" && name != "s12" && name != "s13" {
            assert!(out.intact.contains(name), "{name} was affected: {out:?}");
        }
    }
    // diagnose() says which file is sound.
    let sound = SqliteStore::open(&original)
        .await
        .unwrap()
        .diagnose()
        .await
        .unwrap();
    assert!(sound.is_intact(), "{sound:?}");
    assert_eq!(sound.journal_mode, "wal");
    assert_eq!(sound.schema_version, schema::FILE_SCHEMA_VERSION);
    assert_eq!(sound.sessions, names.len() as u64);
    assert!(sound.size_bytes > 24 * 8 * 1_500, "{sound:?}");
    // ... and take writes.
    let store = SqliteStore::open(&damaged).await.unwrap();
    let report = store.diagnose().await.unwrap();
    assert!(!report.is_intact(), "{report:?}");
    note(&format!(
        "integrity_check of the damaged file: {:?}",
        report.integrity
    ));
    let v = store
        .append(
            &sid("s03"),
            vec![Message::user("after")],
            Expect::Version(1),
        )
        .await
        .unwrap();
    assert_eq!(v, 2);
    let s03 = store.load(&sid("s03")).await.unwrap().unwrap();
    assert_eq!(texts(&s03).last().map(String::as_str), Some("after"));
    // A write to the damaged session is typed too (whether SQLite needs the
    // damaged page for it depends on where the new row lands).
    match store
        .append(&sid("s12"), vec![Message::user("x")], Expect::Any)
        .await
    {
        Ok(_) | Err(Error::Corrupt { .. }) => {}
        Err(e) => panic!("append to the damaged session: {e:?}"),
    }
}

/// Someone else changed the tables: a column dropped, a table renamed, an
/// index dropped — each refused at open with `Corrupt` for the whole file,
/// naming the file and what changed. A table renamed while a store is open
/// fails the operations that need it with `Corrupt` naming the file;
/// operations on the other tables go on.
#[tokio::test]
async fn tables_changed_by_someone_else_are_typed_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.sqlite3");
    real_file(&original, 3, 4, 50).await;
    for (case, change, mentions) in [
        (
            "dropped-column",
            "ALTER TABLE messages DROP COLUMN body",
            "table messages has columns",
        ),
        (
            "renamed-table",
            "ALTER TABLE sessions RENAME TO old_sessions",
            "table sessions is missing",
        ),
        (
            "renamed-column",
            "ALTER TABLE sessions RENAME COLUMN user_id TO owner",
            "table sessions has columns",
        ),
        (
            "dropped-index",
            "DROP INDEX sessions_by_expiry",
            "index sessions_by_expiry on sessions is missing",
        ),
    ] {
        let path = dir.path().join(format!("{case}.sqlite3"));
        copy(&original, &path);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(change)
            .unwrap();
        let err = SqliteStore::open(&path).await.unwrap_err();
        match &err {
            Error::Corrupt { id, detail, .. } => {
                assert_eq!(id.as_str(), schema::FILE_ID, "{case}");
                assert!(detail.contains(mentions), "{case}: {detail}");
                assert!(
                    detail.contains("changed by someone else"),
                    "{case}: {detail}"
                );
            }
            other => panic!("{case}: expected Corrupt, got {other:?}"),
        }
        assert!(names_file(&err, &path), "{case}: {err}");
    }

    // Changed under an open store.
    let path = dir.path().join("live.sqlite3");
    copy(&original, &path);
    let store = SqliteStore::open(&path).await.unwrap();
    let id = sid("s01");
    assert_eq!(store.load(&id).await.unwrap().unwrap().messages.len(), 4);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("ALTER TABLE messages RENAME TO kept_messages")
        .unwrap();
    let err = store.load(&id).await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { id: got, detail, .. }
            if *got == id && detail.contains("changed by someone else")),
        "load: {err:?}"
    );
    assert!(names_file(&err, &path), "{err}");
    let err = store
        .append(&id, vec![Message::user("more")], Expect::Any)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Corrupt { .. }), "append: {err:?}");
    assert!(names_file(&err, &path), "{err}");
    // What does not need the renamed table still works.
    assert!(store.exists(&id).await.unwrap());
    assert_eq!(
        store
            .merge_metadata(&id, statestore_core::Metadata::new(), Expect::Version(1))
            .await
            .unwrap(),
        2
    );
}

/// The child side: does nothing unless this binary was started by a test below.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let path = PathBuf::from(std::env::var(PATH).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "readonly" => rt.block_on(readonly_child(&path)),
        "readonly-file" => rt.block_on(readonly_file_child(&path)),
        "fsize" => {
            let limit: u64 = std::env::var(LIMIT).unwrap().parse().unwrap();
            rt.block_on(fsize_child(&path, limit));
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// `ERR <variant> <message>` for the parent.
fn report(prefix: &str, e: &Error) {
    let variant = format!("{e:?}");
    let variant = variant.split([' ', '{', '(']).next().unwrap_or_default();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    line(&format!("{prefix} {variant} {}", text.replace('\n', " ")));
}

async fn readonly_child(path: &Path) {
    match SqliteStore::open(path).await {
        Ok(store) => match store.load(&sid("s00")).await {
            Ok(_) => line("OPENED"),
            Err(e) => report("ERR", &e),
        },
        Err(e) => report("ERR", &e),
    }
}

/// Opens a file it may read but not write, reads a session (`READ <n>`),
/// then tries to append to it (`ERR …` expected) and reads it again.
async fn readonly_file_child(path: &Path) {
    let store = match SqliteStore::open(path).await {
        Ok(store) => store,
        Err(e) => return report("OPENERR", &e),
    };
    let read = |store: SqliteStore| async move {
        match store.load(&sid("s00")).await {
            Ok(Some(state)) => line(&format!("READ {}", state.messages.len())),
            Ok(None) => line("READ missing"),
            Err(e) => report("READERR", &e),
        }
    };
    read(store.clone()).await;
    match store
        .append(&sid("s00"), vec![Message::user("more")], Expect::Any)
        .await
    {
        Ok(done) => line(&format!("APPENDED {done:?}")),
        Err(e) => {
            line(&format!("OUTCOME {:?}", e.write_outcome()));
            report("ERR", &e);
        }
    }
    read(store).await;
}

/// Appends 2 KiB messages under a file-size limit until writes fail,
/// reporting `ACK <n>` for each acknowledged one and `ERR …` for each
/// failure (three, to see that the store keeps answering), then reads the
/// other sessions (`READ <session> <messages>`).
async fn fsize_child(path: &Path, limit: u64) {
    // SIGXFSZ is ignored by the shell that started us (`trap '' XFSZ`),
    // so a write past the limit fails with EFBIG instead of killing us.
    rustix::process::setrlimit(
        rustix::process::Resource::Fsize,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .unwrap();
    let store = SqliteStore::open(path).await.unwrap();
    let id = sid("filler");
    let mut errors = 0;
    for n in 0..10_000 {
        let turn = Append::new([Message::user(text("filler", n, 2_048))])
            .key(IdempotencyKey::new(format!("fill-{n}")).unwrap());
        match store.append_with(&id, turn).await {
            Ok(done) => line(&format!("ACK {n} {}", done.version)),
            Err(e) => {
                report("ERR", &e);
                errors += 1;
                if errors == 3 {
                    break;
                }
            }
        }
    }
    for s in ["s00", "s01", "s02"] {
        match store.load(&sid(s)).await {
            Ok(Some(state)) => line(&format!("READ {s} {}", state.messages.len())),
            Ok(None) => line(&format!("READ {s} missing")),
            Err(e) => report("READERR", &e),
        }
    }
    line("DONE");
}

/// Runs this binary's `child` test in `mode`, through `wrapper` (a command
/// and its arguments, prepended), and returns its stdout lines.
fn run_child(wrapper: &[&str], exe: &Path, mode: &str, path: &Path, limit: u64) -> Vec<String> {
    let (program, pre) = match wrapper.split_first() {
        Some((p, rest)) => (PathBuf::from(p), rest.to_vec()),
        None => (exe.to_path_buf(), Vec::new()),
    };
    let mut cmd = Command::new(program);
    cmd.args(pre);
    if !wrapper.is_empty() {
        cmd.arg(exe);
    }
    let out = cmd
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env(PATH, path)
        .env(LIMIT, limit.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {mode} failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints "test child ... " before the child's first line.
    stdout
        .lines()
        .map(|l| l.strip_prefix("test child ... ").unwrap_or(l).to_owned())
        .collect()
}

/// A real file at `path` (in `dir`), closed: its `-wal` and `-shm` are
/// gone once its last connection closes — waited for, and removed if still
/// there (checkpointed and closed, they are disposable) — so a process
/// opening it must create them. Returns its sessions' names.
async fn closed_file(dir: &Path, path: &Path) -> Vec<String> {
    let names = real_file(path, 3, 2, 50).await;
    let (wal, shm) = (dir.join("store.sqlite3-wal"), dir.join("store.sqlite3-shm"));
    for _ in 0..250 {
        if !wal.exists() && !shm.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(wal);
    let _ = std::fs::remove_file(shm);
    names
}

/// A database file its user may read but not write: it opens, reads work,
/// and a write is [`Error::Refused`] — nothing written, said as such — not
/// an outcome unknown. Run as `nobody` as the test above is.
#[tokio::test]
async fn a_read_only_file_refuses_writes_and_serves_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rofile");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("store.sqlite3");
    let names = closed_file(&dir, &path).await;
    // The directory is anyone's (the -wal and -shm files can be made); the
    // file is root's, readable by all.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let enforced = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .is_err();
    let have_setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if enforced || !have_setpriv {
        note(
            "SKIPPED a_read_only_file_refuses_writes_and_serves_reads: needs root and setpriv \
             to run the store as another user",
        );
        return;
    }
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = tmp.path().join("bad_files-child");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lines = run_child(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &exe,
        "readonly-file",
        &path,
        0,
    );
    note(&format!("read-only file: {lines:?}"));
    let reads: Vec<&String> = lines.iter().filter(|l| l.starts_with("READ")).collect();
    assert_eq!(reads, ["READ 2", "READ 2"], "{lines:?}");
    assert!(lines.iter().any(|l| l == "OUTCOME NotWritten"), "{lines:?}");
    let err = lines.iter().find(|l| l.starts_with("ERR ")).unwrap();
    assert!(err.starts_with("ERR Refused "), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    let out = open_and_read(&path, &names, 2, 50).await;
    assert_eq!(out.intact.len(), names.len(), "{out:?}");
}

/// A database in a directory its user may not write: opening fails with
/// `Refused` naming the file (SQLite cannot create the `-wal`/`-shm`
/// files a WAL database needs), never a panic, and the file is unharmed.
///
/// Tests run as root here, and root ignores permission bits (a probe write
/// into the 0500 directory succeeds), so the store is opened by a child
/// process running as `nobody` (`setpriv --reuid=65534`), from a copy of
/// this test binary that `nobody` can execute. Run as another user, the
/// test opens the store itself.
#[tokio::test]
async fn a_read_only_directory_is_a_typed_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("store.sqlite3");
    let names = closed_file(&dir, &path).await;
    let nobody = 65534;
    std::os::unix::fs::chown(&path, Some(nobody), Some(nobody)).ok();
    std::os::unix::fs::chown(&dir, Some(nobody), Some(nobody)).ok();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();

    let probe = dir.join("probe");
    let enforced = std::fs::write(&probe, b"probe").is_err();
    let _ = std::fs::remove_file(&probe);
    let lines = if enforced {
        // Not root: the bits apply to this process.
        match SqliteStore::open(&path).await {
            Ok(store) => match store.load(&sid("s00")).await {
                Ok(_) => vec!["OPENED".to_owned()],
                Err(e) => vec![format!("ERR {e:?}"), e.to_string()],
            },
            Err(e) => {
                assert!(matches!(e, Error::Refused { .. }), "{e:?}");
                assert!(names_file(&e, &path), "{e}");
                vec!["ERR Refused".to_owned(), path.display().to_string()]
            }
        }
    } else {
        let have_setpriv = Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have_setpriv {
            note(
                "SKIPPED a_read_only_directory_is_a_typed_refusal: running as root (permission \
                 bits are not enforced) and setpriv is not installed to drop to another user",
            );
            return;
        }
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = tmp.path().join("bad_files-child");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        run_child(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
            &exe,
            "readonly",
            &path,
            0,
        )
    };
    note(&format!("read-only directory: {lines:?}"));
    let err = lines
        .iter()
        .find(|l| l.starts_with("ERR "))
        .unwrap_or_else(|| panic!("the open succeeded in a read-only directory: {lines:?}"));
    assert!(err.starts_with("ERR Refused "), "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&path.display().to_string())),
        "the error names the file: {lines:?}"
    );

    // The file is unharmed.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = open_and_read(&path, &names, 2, 50).await;
    assert_eq!(out.intact.len(), names.len(), "{out:?}");
}

/// A full disk, simulated by a file-size limit (`RLIMIT_FSIZE`) in a child
/// process that ignores `SIGXFSZ`: once the WAL would grow past the limit,
/// each append fails with `Unavailable` naming the file and saying that
/// writing it failed (disk full or size limit); reads still work in that
/// process. After it exits, the file opens without the limit, holds exactly
/// the acknowledged appends, the other sessions read back exactly, and
/// writes work again.
#[tokio::test]
async fn a_full_disk_fails_writes_typed_and_keeps_acknowledged_ones() {
    const LIMIT_BYTES: u64 = 256 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let names = real_file(&path, 3, 5, 100).await;
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        size < LIMIT_BYTES / 2,
        "the file starts well under the limit"
    );

    let exe = std::env::current_exe().unwrap();
    let lines = run_child(
        &["sh", "-c", "trap '' XFSZ; exec \"$0\" \"$@\""],
        &exe,
        "fsize",
        &path,
        LIMIT_BYTES,
    );
    note(&format!(
        "file-size limit: {} acknowledged; {:?}",
        lines.iter().filter(|l| l.starts_with("ACK ")).count(),
        lines
            .iter()
            .filter(|l| !l.starts_with("ACK "))
            .collect::<Vec<_>>()
    ));
    let acked: Vec<usize> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ACK "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        acked.len() >= 5,
        "some appends fit under the limit: {lines:?}"
    );
    assert_eq!(
        acked,
        (0..acked.len()).collect::<Vec<_>>(),
        "in order, none skipped"
    );
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("ERR ")).collect();
    assert_eq!(errors.len(), 3, "{lines:?}");
    for e in &errors {
        assert!(e.starts_with("ERR Unavailable "), "{e}");
        assert!(
            e.contains(&path.display().to_string()),
            "names the file: {e}"
        );
        assert!(
            e.contains("disk") && (e.contains("size limit") || e.contains("full")),
            "says the disk or file limit: {e}"
        );
    }
    for s in ["s00", "s01", "s02"] {
        assert!(
            lines.contains(&format!("READ {s} 5")),
            "reads go on in the limited process: {lines:?}"
        );
    }
    assert!(lines.contains(&"DONE".to_owned()));

    // Without the limit: exactly the acknowledged appends, the rest intact.
    let store = SqliteStore::open(&path).await.unwrap();
    let filler = store.load(&sid("filler")).await.unwrap().unwrap();
    let want: Vec<String> = acked.iter().map(|&n| text("filler", n, 2_048)).collect();
    assert_eq!(texts(&filler), want, "exactly the acknowledged appends");
    assert_eq!(filler.version, acked.len() as u64);
    let out = open_and_read(&path, &names, 5, 100).await;
    assert_eq!(out.intact.len(), names.len(), "{out:?}");
    let v = store
        .append(
            &sid("filler"),
            vec![Message::user("room again")],
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(v, acked.len() as u64 + 1);
}
