//! `statestore prune`, run as a binary on SQLite: a dry run deletes
//! nothing, `--user` limits it, only sessions idle past the cutoff go, a
//! session written since stays; `--json`; no cutoff is a usage error.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::{Env, RICH, export_file};

#[test]
fn prune_deletes_idle_sessions_only() {
    let env = Env::new();
    let url = env.sqlite("p.db");
    let ids: Vec<String> = ["alice-1", "alice-2", "bob-1"].map(str::to_owned).to_vec();
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, export_file(&ids, RICH)).unwrap();
    env.ok(&["--store", &url, "import", seed.to_str().unwrap()]);
    let ids_left = || env.ok(&["--store", &url, "list", "--ids-only"]);

    // Nothing is idle for a day yet.
    let out = env.ok(&["--store", &url, "prune", "--idle", "1d"]);
    assert_eq!(out, "pruned 0 sessions idle for 1d\n");

    std::thread::sleep(std::time::Duration::from_millis(1_200));
    // bob-1 is written again: no longer idle for a second.
    env.ok(&["--store", &url, "chat", "--session", "bob-1", "hello"]);

    let out = env.ok(&["--store", &url, "prune", "--idle", "1s", "--dry-run"]);
    assert_eq!(
        out,
        "would prune 2 sessions idle for 1s (dry run: nothing deleted)\n"
    );
    assert_eq!(ids_left(), "alice-1\nalice-2\nbob-1\n");

    let doc: serde_json::Value = serde_json::from_str(&env.ok(&[
        "--store", &url, "--json", "prune", "--idle", "1s", "--user", "user-1",
    ]))
    .unwrap();
    assert_eq!(doc["removed"], 1, "{doc}");
    assert_eq!(doc["dry_run"], false);

    let out = env.ok(&["--store", &url, "prune", "--idle", "1s"]);
    assert_eq!(out, "pruned 1 session idle for 1s\n");
    assert_eq!(ids_left(), "bob-1\n");
}

#[test]
fn prune_needs_a_cutoff() {
    let env = Env::new();
    let url = env.sqlite("p.db");
    let run = env.run(&["--store", &url, "prune", "--dry-run"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--idle"), "{}", run.stderr);
    let run = env.run(&["--store", &url, "prune", "--idle", "soon"]);
    run.assert_code(2);
    assert!(run.stderr.contains("not a duration"), "{}", run.stderr);
}

/// Looking at sessions — `list`, `show`, `export` — is not activity: on a
/// store with a TTL, a session only looked at expires on time.
#[test]
fn looking_at_a_session_does_not_extend_its_life() {
    let env = Env::new();
    let url = format!("{}?ttl=2s", env.sqlite("ttl.db"));
    env.ok(&["--store", &url, "chat", "--session", "s", "hello"]);
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    for command in [&["list"][..], &["show", "s"], &["export"]] {
        let mut args = vec!["--store", url.as_str()];
        args.extend_from_slice(command);
        env.ok(&args);
    }
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    // 2.4 s after the chat, 1.2 s after the looks.
    assert_eq!(env.ok(&["--store", &url, "list", "--ids-only"]), "");
}
