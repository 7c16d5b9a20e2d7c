//! `--dry-run` (delete, trim, compact, import, migrate) says what the
//! command would do and changes nothing; `--quiet` keeps only data and
//! errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::{Env, RICH, Shape, export_file, numbered};

const PLAIN: Shape = Shape {
    turns: 4,
    text: 20,
    tools: false,
    summary: false,
    extras: false,
};

/// An environment whose default store holds `ids` (`PLAIN` sessions of 8
/// messages each), and the export file that filled it.
fn filled(ids: &[String]) -> (Env, std::path::PathBuf) {
    let env = Env::new();
    let file = env.path("in.jsonl");
    std::fs::write(&file, export_file(ids, PLAIN)).unwrap();
    env.ok(&["import", file.to_str().unwrap()]);
    (env, file)
}

/// The whole store as an export: what "nothing changed" is compared with.
fn snapshot(env: &Env, store: Option<&str>) -> String {
    let mut args = Vec::new();
    if let Some(url) = store {
        args.extend(["--store", url]);
    }
    args.push("export");
    env.ok(&args)
}

#[test]
fn delete_dry_run_names_what_would_go_and_deletes_nothing() {
    let (env, _) = filled(&numbered(2));
    let before = snapshot(&env, None);
    let run = env.run(&["delete", "--dry-run", "s00000", "nope"]);
    run.assert_code(1);
    assert_eq!(
        run.stdout,
        "would delete \"s00000\"\n(dry run: nothing deleted)\n"
    );
    assert!(run.stderr.contains("not found: \"nope\""), "{}", run.stderr);
    let doc = env
        .run(&["--json", "delete", "--dry-run", "s00001"])
        .assert_code(0)
        .json();
    assert_eq!(doc["deleted"], serde_json::json!(["s00001"]));
    assert_eq!(doc["dry_run"], true);
    assert_eq!(snapshot(&env, None), before, "nothing deleted");
    // The real run agrees with what the dry run said.
    assert_eq!(env.ok(&["delete", "s00000"]), "deleted \"s00000\"\n");
}

#[test]
fn trim_and_compact_dry_runs_count_what_would_go_and_change_nothing() {
    let (env, _) = filled(&numbered(1));
    let before = snapshot(&env, None);
    assert_eq!(
        env.ok(&["trim", "s00000", "--keep", "2", "--dry-run"]),
        "would remove 6 messages from \"s00000\"; 2 would remain (version 1)\n\
         (dry run: nothing changed)\n"
    );
    assert_eq!(
        env.ok(&["compact", "s00000", "--keep", "2", "--dry-run"]),
        "would summarize messages #0..#5\n\
         would remove 6 messages from \"s00000\"; 2 would remain (version 1)\n\
         (dry run: nothing changed)\n"
    );
    let doc = env
        .run(&["--json", "compact", "s00000", "--keep", "4", "--dry-run"])
        .assert_code(0)
        .json();
    assert_eq!(doc["removed"], 4);
    assert_eq!(doc["remaining"], 4);
    assert_eq!(doc["summarized"], serde_json::json!([0, 4]));
    assert_eq!(doc["dry_run"], true);
    assert_eq!(snapshot(&env, None), before, "nothing changed");
    // What the real trim does is what the dry run said.
    assert_eq!(
        env.ok(&["trim", "s00000", "--keep", "2"]),
        "removed 6 messages from \"s00000\"; 2 remain (version 2)\n"
    );
    // A session that is not there is the same error as without --dry-run.
    let run = env.run(&["trim", "nope", "--keep", "2", "--dry-run"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("session \"nope\" not found"),
        "{}",
        run.stderr
    );
}

#[test]
fn import_dry_run_compares_and_writes_nothing_not_even_a_new_store() {
    let ids = numbered(3);
    let (env, file) = filled(&ids[..2]);
    let before = snapshot(&env, None);
    // One session more, one changed, one equal.
    let mut changed = export_file(&ids, PLAIN);
    changed = changed.replacen("turn 0 of s00001", "turn 0 of s00001, edited", 1);
    let file2 = env.path("more.jsonl");
    std::fs::write(&file2, &changed).unwrap();
    let run = env.run(&["import", "--dry-run", file2.to_str().unwrap()]);
    run.assert_code(1);
    assert_eq!(
        run.stdout,
        format!(
            "would import 3 sessions from {}: 1 to write, 1 already there and equal, 1 conflict \
             (dry run: nothing written)\n",
            file2.display()
        )
    );
    assert!(
        run.stderr.contains("conflict: session \"s00001\""),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(&env, None), before, "nothing imported");

    // Into a store that is not there: every session would be written, and
    // no file is created.
    let fresh = env.sqlite("fresh.db");
    let doc = env
        .run(&[
            "--json",
            "--store",
            &fresh,
            "import",
            "--dry-run",
            file.to_str().unwrap(),
        ])
        .assert_code(0)
        .json();
    assert_eq!(doc["written"], 2);
    assert_eq!(doc["dry_run"], true);
    assert!(!env.path("fresh.db").exists(), "a dry run creates no store");
}

#[test]
fn migrate_dry_run_compares_with_the_destination_and_copies_nothing() {
    let ids = numbered(3);
    let (env, file) = filled(&ids);
    let to = env.sqlite("to.db");
    let from = format!("sqlite://{}", env.default_db().display());
    let run = env.run(&["migrate", "--from", &from, "--to", &to, "--dry-run"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .starts_with("would migrate 3 sessions from sqlite://"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(
            ": 3 to write, 0 already there and equal, 0 conflicts (dry run: nothing written)\n"
        ),
        "{}",
        run.stdout
    );
    assert!(!env.path("to.db").exists(), "a dry run creates no store");

    // With part of it there already, the dry run sees which part.
    std::fs::write(&file, export_file(&ids[..1], PLAIN)).unwrap();
    env.ok(&["--store", &to, "import", file.to_str().unwrap()]);
    let before = snapshot(&env, Some(&to));
    let doc = env
        .run(&[
            "--json",
            "migrate",
            "--from",
            &from,
            "--to",
            &to,
            "--dry-run",
        ])
        .assert_code(0)
        .json();
    assert_eq!(
        (doc["written"].as_u64(), doc["unchanged"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(doc["missing"], serde_json::json!([]));
    assert_eq!(snapshot(&env, Some(&to)), before, "nothing copied");
}

#[test]
fn quiet_keeps_data_and_errors_and_drops_summaries() {
    let env = Env::new();
    let file = env.path("in.jsonl");
    std::fs::write(&file, export_file(&numbered(2), RICH)).unwrap();
    let run = env.run(&["-q", "import", file.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    // Changes made quietly are made.
    assert_eq!(env.ok(&["list", "--ids-only"]), "s00000\ns00001\n");
    for args in [
        &["--quiet", "fork", "s00000", "s00000-b"][..],
        &["--quiet", "trim", "s00000-b", "--keep", "2"],
        &["--quiet", "delete", "s00000-b"],
    ] {
        let run = env.run(args);
        run.assert_code(0);
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str()),
            ("", ""),
            "{args:?}"
        );
    }
    assert_eq!(env.ok(&["list", "--ids-only"]), "s00000\ns00001\n");
    // Data is still printed, and so are errors.
    assert!(env.ok(&["-q", "show", "s00000"]).contains("weather"));
    let run = env.run(&["-q", "delete", "nope"]);
    run.assert_code(1);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    // --json output is data: unchanged by --quiet.
    let doc = env
        .run(&["-q", "--json", "delete", "--dry-run", "s00001"])
        .assert_code(0)
        .json();
    assert_eq!(doc["deleted"], serde_json::json!(["s00001"]));
}
