//! Salvage: `doctor` on a damaged SQLite file says in one line what is
//! wrong and what to do; `export --skip-unreadable` saves every session
//! that still reads and lists the others. Files are damaged for real:
//! bytes overwritten on a page, or rows changed with the `sqlite3` shell.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Env, RICH, Shape, export_file, numbered};

/// Sessions with long enough messages that the file spans many pages.
const LONG: Shape = Shape { text: 600, ..RICH };

/// A store `name` in `env` holding `ids`, written by `import`, with every
/// committed page in the main file (the store checkpoints when it closes).
fn store_of(env: &Env, name: &str, ids: &[String], shape: Shape) -> String {
    let file = env.path(&format!("{name}.jsonl"));
    std::fs::write(&file, export_file(ids, shape)).unwrap();
    let url = env.sqlite(name);
    env.ok(&["--store", &url, "import", file.to_str().unwrap()]);
    let wal = env.path(&format!("{name}-wal"));
    assert!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
        "the WAL was checkpointed into the file"
    );
    url
}

/// Runs `sql` on `db` with the `sqlite3` shell.
fn sqlite3(db: &Path, sql: &str) {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Overwrites the page of `db` holding `marker` with garbage.
fn overwrite_page_with(db: &Path, marker: &str) {
    const PAGE: usize = 4096;
    let mut bytes = std::fs::read(db).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the marker is in the file");
    let start = at / PAGE * PAGE;
    assert!(
        start > 0 && start + PAGE < bytes.len(),
        "a page in the middle"
    );
    for (i, b) in bytes[start..start + PAGE].iter_mut().enumerate() {
        *b = 0xA5 ^ u8::try_from(i % 256).unwrap();
    }
    std::fs::write(db, bytes).unwrap();
}

/// The report's line of check `name`.
fn line_of<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
}

/// The `--json` report's check `name`.
fn check_of(doc: &serde_json::Value, name: &str) -> serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {doc}"))
        .clone()
}

#[test]
fn doctor_says_in_one_line_which_pages_are_damaged_and_what_to_do() {
    let env = Env::new();
    let url = store_of(&env, "damaged.db", &numbered(40), LONG);
    overwrite_page_with(&env.path("damaged.db"), "turn 1 of s00020: ");

    let run = env.run(&["--store", &url, "doctor"]);
    run.assert_code(1);
    assert!(run.stdout.lines().count() <= 12, "short:\n{}", run.stdout);
    let integrity = line_of(&run.stdout, "integrity");
    assert!(integrity.starts_with("FAIL"), "{integrity}");
    assert!(
        integrity.chars().count() <= 400,
        "one short line: {integrity}"
    );
    for part in [
        "problem",
        "damaged pages",
        "in table messages",
        "(e.g. \"",
        "statestore export --skip-unreadable -o salvage.jsonl",
        "import it into a new file",
    ] {
        assert!(integrity.contains(part), "{part:?} missing: {integrity}");
    }
    assert_eq!(
        run.stderr.lines().count(),
        2,
        "the error and its hint:\n{}",
        run.stderr
    );

    let run = env.run(&["--store", &url, "--json", "doctor"]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    let check = check_of(&doc, "integrity");
    assert_eq!(check["status"], "fail");
    let data = &check["data"];
    let problems = data["problems"].as_u64().unwrap();
    assert!(problems >= 1, "{data}");
    assert_eq!(data["capped"], problems >= 100, "{data}");
    let kinds: Vec<&str> = data["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"pages"), "{data}");
    assert!(
        data["tables"]
            .as_array()
            .unwrap()
            .contains(&"messages".into()),
        "{data}"
    );
    assert_eq!(data["index_only"], false);
    let lines = data["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 20, "{data}");
    assert!(
        lines.iter().all(|l| !l.as_str().unwrap().contains('\n')),
        "one message per entry: {data}"
    );
    assert!(
        data["next_step"]
            .as_str()
            .unwrap()
            .contains("--skip-unreadable"),
        "{data}"
    );
}

#[test]
fn an_index_out_of_step_is_repaired_by_reindex_as_doctor_says() {
    let env = Env::new();
    let url = store_of(&env, "index.db", &numbered(12), RICH);
    let db = env.path("index.db");
    // Rows changed while the index is made to ignore them, then restored
    // as it was: the index no longer matches its table.
    let original = "CREATE INDEX sessions_by_user ON sessions(user_id, id) WHERE user_id IS \
                    NOT NULL";
    sqlite3(
        &db,
        "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = 'CREATE INDEX \
         sessions_by_user ON sessions(user_id, id) WHERE 0' WHERE name = 'sessions_by_user';",
    );
    sqlite3(
        &db,
        "UPDATE sessions SET user_id = 'moved' WHERE id IN ('s00001', 's00002')",
    );
    sqlite3(
        &db,
        &format!(
            "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = '{original}' WHERE name \
             = 'sessions_by_user';"
        ),
    );

    let run = env.run(&["--store", &url, "doctor"]);
    run.assert_code(1);
    let integrity = line_of(&run.stdout, "integrity");
    for part in [
        "2 problems",
        "index entries not matching their table (2)",
        "table sessions",
        "index sessions_by_user",
        "row ",
        "REINDEX",
    ] {
        assert!(integrity.contains(part), "{part:?} missing: {integrity}");
    }
    assert!(!integrity.contains("skip-unreadable"), "{integrity}");
    let data = check_of(
        &env.run(&["--store", &url, "--json", "doctor"]).json(),
        "integrity",
    )["data"]
        .clone();
    assert_eq!(data["index_only"], true, "{data}");
    assert_eq!(data["indexes"], serde_json::json!(["sessions_by_user"]));

    sqlite3(&db, "REINDEX");
    let out = env.ok(&["--store", &url, "doctor"]);
    assert!(
        line_of(&out, "integrity").starts_with("ok"),
        "repaired:\n{out}"
    );
}

#[test]
fn doctor_on_a_file_that_is_no_database_says_so_in_one_line() {
    let env = Env::new();
    let db = env.path("noise.db");
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    std::fs::write(&db, noise).unwrap();
    let run = env.run(&["--store", &env.sqlite("noise.db"), "doctor"]);
    run.assert_code(1);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    let connect = line_of(&run.stdout, "connect");
    assert!(connect.starts_with("FAIL"), "{connect}");
    assert!(
        connect.contains("is not a SQLite database")
            && connect.contains("restore it from a backup"),
        "{connect}"
    );
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
    assert!(
        !run.stderr.contains("Error code"),
        "not repeated with SQLite's codes:\n{}",
        run.stderr
    );
}

/// A store of 12 sessions where `s00003` holds a message that is not JSON
/// and `s00007` one of the wrong type: the file stays a sound database.
fn two_unreadable(env: &Env) -> (String, Vec<String>) {
    let ids = numbered(12);
    let url = store_of(env, "bad.db", &ids, RICH);
    // The sound export, to compare with.
    let full = env.path("full.jsonl");
    env.ok(&["--store", &url, "export", "-o", full.to_str().unwrap()]);
    sqlite3(
        &env.path("bad.db"),
        "UPDATE messages SET body = '{not json' WHERE session = 's00003' AND position = 1; \
         UPDATE messages SET body = x'00ff' WHERE session = 's00007' AND position = 0;",
    );
    let sound: Vec<String> = std::fs::read_to_string(full)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"id\":\"s00003\"") && !l.contains("\"id\":\"s00007\""))
        .map(str::to_owned)
        .collect();
    (url, sound)
}

#[test]
fn without_skip_unreadable_the_first_unreadable_session_fails_the_export() {
    let env = Env::new();
    let (url, _) = two_unreadable(&env);
    let out = env.path("out.jsonl");
    let run = env.run(&["--store", &url, "export", "-o", out.to_str().unwrap()]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("reading session \"s00003\""),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--skip-unreadable"), "{}", run.stderr);
    assert!(!out.exists(), "no file is left");
}

#[test]
fn skip_unreadable_exports_every_session_that_reads_and_lists_the_others() {
    let env = Env::new();
    let (url, sound) = two_unreadable(&env);
    let out = env.path("salvage.jsonl");
    let run = env.run(&[
        "--store",
        &url,
        "export",
        "--skip-unreadable",
        "-o",
        out.to_str().unwrap(),
    ]);
    run.assert_code(1);
    // Every other session, exactly as a sound export writes it.
    let written: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(written, sound);
    for id in ["s00003", "s00007"] {
        assert!(
            run.stderr.contains(&format!(
                "warning: skipped: session \"{id}\" holds corrupt data"
            )),
            "{id}:\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains(&format!(
            "exported 10 sessions to {}; skipped 2 that did not read",
            out.display()
        )),
        "{}",
        run.stderr
    );
    // The salvage imports into a new store whole.
    let fresh = env.sqlite("fresh.db");
    env.ok(&["--store", &fresh, "import", out.to_str().unwrap()]);
    let listed = env.ok(&["--store", &fresh, "list", "--ids-only"]);
    let mut want = numbered(12);
    want.retain(|id| id != "s00003" && id != "s00007");
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);

    // --json: the summary lists them.
    let again = env.path("again.jsonl");
    let run = env.run(&[
        "--store",
        &url,
        "--json",
        "export",
        "--skip-unreadable",
        "-o",
        again.to_str().unwrap(),
    ]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["exported"], 10);
    let skipped: Vec<&str> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["error"].as_str().unwrap().contains("corrupt"), "{s}");
            s["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(skipped, ["s00003", "s00007"]);

    // With nothing unreadable, the flag changes nothing.
    let sound_url = store_of(&env, "sound.db", &numbered(3), RICH);
    let run = env.run(&[
        "--store",
        &sound_url,
        "export",
        "--skip-unreadable",
        "-o",
        env.path("sound.jsonl").to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(!run.stderr.contains("skipped"), "{}", run.stderr);
}

/// `--encrypted` reads every session's envelopes before writing any: it
/// cannot leave one out, and says so rather than ignoring the flag.
#[test]
fn skip_unreadable_is_refused_with_encrypted() {
    let env = Env::new();
    let run = env.run(&["export", "--encrypted", "--skip-unreadable"]);
    run.assert_code(2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}
