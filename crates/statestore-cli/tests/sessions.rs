//! `list`, `show`, `fork`, `delete`, `trim`, `compact`, `stats` and
//! `doctor` on SQLite and on Redis; bad ids, unreachable stores, exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use common::redis::RedisServer;
use common::{Env, RICH, export_file};

/// Every session command on the store at `url`, seeded by import.
fn commands_on(env: &Env, url: &str) {
    let ids: Vec<String> = ["alice-1", "alice-2", "bob-1"].map(str::to_owned).to_vec();
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, export_file(&ids, RICH)).unwrap();
    env.ok(&["--store", url, "import", seed.to_str().unwrap()]);
    let ok = |args: &[&str]| {
        let mut all = vec!["--store", url];
        all.extend_from_slice(args);
        env.ok(&all)
    };

    // list: a table, sorted by id; --json; --limit; --user.
    let table = ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines[1].starts_with("alice-1  ") && lines[3].starts_with("bob-1"),
        "{table}"
    );
    assert!(lines[1].contains("user-0"), "{table}");
    let doc: serde_json::Value = serde_json::from_str(&ok(&["--json", "list"])).unwrap();
    assert_eq!(doc["total"], 3);
    assert_eq!(doc["sessions"][0]["messages"], 8);
    assert_eq!(doc["sessions"][0]["counters"]["turns"], 3);
    let run = env.run(&["--store", url, "list", "--limit", "1", "--ids-only"]);
    assert_eq!(run.stdout, "alice-1\n");
    assert!(
        run.stderr.contains("1 of 3 sessions shown"),
        "{}",
        run.stderr
    );
    assert_eq!(ok(&["list", "--ids-only", "--user", "user-2"]), "bob-1\n");

    // show: tool calls paired with their results, summaries, usage.
    let shown = ok(&["show", "alice-1"]);
    for part in [
        "session    alice-1",
        "user       user-0",
        "version    1",
        "expires    never",
        "messages   8",
        "usage      prompt_tokens 120, completion_tokens 15, model_calls 4, turns 3",
        "system     You are terse.",
        r#"metadata   {"plan":"pro"}"#,
        "alice-1 asked about the weather",
        r#"calls weather({"city":"Paris"}) [call_0]"#,
        r#"→ #2 {"celsius":21}"#,
        "#7    assistant  reply 2 to alice-1 ✓",
    ] {
        assert!(shown.contains(part), "{part:?} missing from:\n{shown}");
    }
    assert!(
        !shown.contains("#2    tool"),
        "the result is shown under its call:\n{shown}"
    );
    let last = ok(&["show", "alice-1", "--last", "2"]);
    assert!(last.contains("messages   8 (the last 2 shown)"), "{last}");
    assert!(!last.contains("#5 "), "{last}");
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&["--json", "show", "alice-1", "--last", "1"])).unwrap();
    assert_eq!(doc["total_messages"], 8);
    assert_eq!(doc["messages"][0]["position"], 7);

    // fork: a copy at version 1; the target must not exist.
    assert_eq!(
        ok(&["fork", "alice-1", "alice-1-copy"]),
        "forked \"alice-1\" to \"alice-1-copy\" (version 1)\n"
    );
    let run = env.run(&["--store", url, "fork", "alice-1", "alice-2"]);
    run.assert_code(1);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);

    // trim: keeps the newest, never splitting the tool call from its result.
    assert_eq!(
        ok(&["trim", "alice-1-copy", "--keep", "5"]),
        "removed 3 messages from \"alice-1-copy\"; 5 remain (version 2)\n"
    );
    let out = ok(&["trim", "alice-1", "--keep", "6"]);
    // Position 2 is the tool result of position 1: both go, or both stay.
    assert!(out.starts_with("removed 3 messages"), "{out}");

    // compact: the dropped part summarized (offline: extracted), then deleted.
    let out = ok(&["compact", "alice-2", "--keep", "2"]);
    assert!(out.contains("summarized messages #0..#5"), "{out}");
    assert!(
        out.contains("removed 6 messages from \"alice-2\"; 2 remain"),
        "{out}"
    );
    let shown = ok(&["show", "alice-2"]);
    assert!(shown.contains("of deleted messages"), "{shown}");
    // A rolling summary: the older one (of #0..#1, the tool call) and the
    // messages after it, extracted.
    assert!(
        shown.contains(
            "    alice-2 asked about the weather\n    assistant: reply 0 to alice-2 ✓\n    user: turn 1 of alice-2"
        ),
        "{shown}"
    );

    // stats: totals.
    let doc: serde_json::Value = serde_json::from_str(&ok(&["--json", "stats"])).unwrap();
    assert_eq!(doc["sessions"], 4);
    assert_eq!(doc["users"], 3);
    assert_eq!(doc["messages"], 5 + 5 + 2 + 8);
    assert_eq!(doc["counters"]["turns"], 12);
    assert!(doc["bytes"].as_u64().unwrap() > 1_000);
    let table = ok(&["stats"]);
    assert!(table.contains("sessions           4"), "{table}");

    // delete: several at once; a missing one is reported, exit 1.
    let run = env.run(&["--store", url, "delete", "alice-1-copy", "nope"]);
    run.assert_code(1);
    assert_eq!(run.stdout, "deleted \"alice-1-copy\"\n");
    assert!(
        run.stderr
            .contains(r#"not found (nothing deleted for them): "nope""#),
        "{}",
        run.stderr
    );
    assert_eq!(ok(&["list", "--ids-only"]), "alice-1\nalice-2\nbob-1\n");

    // show of a missing session.
    let run = env.run(&["--store", url, "show", "nope"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("session \"nope\" not found"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("statestore list"), "{}", run.stderr);
}

#[test]
fn every_session_command_works_on_sqlite() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    commands_on(&env, &url);
}

#[test]
fn every_session_command_works_on_redis() {
    let server = RedisServer::start().unwrap();
    let env = Env::new();
    commands_on(&env, &format!("{}?prefix=app:", server.url()));
}

#[test]
fn invalid_session_ids_are_usage_errors() {
    let env = Env::new();
    for args in [
        vec!["show", ""],
        vec!["show", "bell\u{7}"],
        vec!["delete", "ok", "tab\there"],
        vec!["chat", "--session", "", "hi"],
        vec!["fork", "a", &*Box::leak("x".repeat(513).into_boxed_str())],
    ] {
        let run = env.run(&args);
        run.assert_code(2);
        assert!(
            run.stderr.contains("a session id is 1 to 512 bytes"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(!env.default_db().exists(), "nothing was opened");
}

#[test]
fn an_unreachable_store_is_exit_1_with_a_next_step_and_no_password() {
    let env = Env::new();
    let stores = [
        (
            "redis://app:hunter2@127.0.0.1:1/0?connect_timeout=200ms",
            "redis://app:***@127.0.0.1:1/0",
        ),
        (
            "postgres://app:hunter2@127.0.0.1:1/db?timeout=1s",
            "postgres://app:***@127.0.0.1:1/db",
        ),
    ];
    for (url, shown) in stores {
        for cmd in [&["list"][..], &["chat", "hi"], &["doctor"], &["export"]] {
            let mut args = vec!["--store", url];
            args.extend_from_slice(cmd);
            let run = env.run(&args);
            run.assert_code(1);
            assert!(run.stderr.contains(shown), "{cmd:?}: {}", run.stderr);
            assert!(run.stderr.contains("hint:"), "{cmd:?}: {}", run.stderr);
            assert!(
                !run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"),
                "{cmd:?}"
            );
        }
    }
    // A bad URL is a usage error.
    let run = env.run(&["--store", "mysql://x", "list"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("unknown store URL scheme"),
        "{}",
        run.stderr
    );
    // A file that is not a store.
    let not_db = env.path("text.db");
    std::fs::write(
        &not_db,
        "just text, not a database, long enough to be read as one?",
    )
    .unwrap();
    let run = env.run(&["--store", &format!("sqlite://{}", not_db.display()), "list"]);
    run.assert_code(1);
    assert!(run.stderr.contains("cannot open"), "{}", run.stderr);
}

#[test]
fn help_has_an_example_for_every_command() {
    let env = Env::new();
    let top = env.ok(&["--help"]);
    assert!(top.contains("Exit codes: 0 done; 1 failed"), "{top}");
    assert!(
        top.contains(&env.default_db().display().to_string()),
        "the default store is named:\n{top}"
    );
    for cmd in [
        "chat",
        "list",
        "show",
        "fork",
        "delete",
        "trim",
        "compact",
        "stats",
        "export",
        "import",
        "migrate",
        "doctor",
        "rotate-keys",
    ] {
        let help = env.ok(&[cmd, "--help"]);
        assert!(
            help.contains("Example"),
            "{cmd} --help has no example:\n{help}"
        );
        assert!(
            help.contains(&format!("statestore {cmd}")) || help.contains("statestore --store"),
            "{cmd}:\n{help}"
        );
    }
    // The store URL's value never shows in help.
    let help = env
        .cmd()
        .env("STATESTORE_URL", "redis://app:hunter2@h:1")
        .arg("--help")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("hunter2"));
}

#[test]
fn doctor_checks_sqlite() {
    let env = Env::new();
    env.ok(&["chat", "hello"]);
    let out = env.ok(&["doctor"]);
    for part in [
        "ok    connect",
        "ok    schema        3",
        "ok    journal mode  wal",
        "ok    durability    full",
        "ok    integrity     integrity_check ok",
        "1 session",
    ] {
        assert!(out.contains(part), "{part:?} missing:\n{out}");
    }
    let doc: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "doctor"])).unwrap();
    assert_eq!(doc["ok"], true);
    let normal = env.ok(&[
        "--store",
        &format!("sqlite://{}?sync=normal", env.default_db().display()),
        "doctor",
    ]);
    assert!(normal.contains("warn  durability    normal"), "{normal}");
}

#[test]
fn doctor_judges_redis_settings() {
    let env = Env::new();
    let good = RedisServer::builder().appendonly_always().start().unwrap();
    let out = env.ok(&["--store", &good.url(), "doctor"]);
    for part in [
        "ok    server",
        "ok    eviction     noeviction",
        "ok    persistence  AOF, appendfsync always",
    ] {
        assert!(out.contains(part), "{part:?} missing:\n{out}");
    }

    // Without a memory limit nothing is evicted: a warning, not a failure.
    let unlimited = RedisServer::builder()
        .config("maxmemory-policy", "allkeys-lru")
        .start()
        .unwrap();
    let run = env.run(&["--store", &unlimited.url(), "doctor"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("warn  eviction     allkeys-lru") && run.stdout.contains("maxmemory 0"),
        "{}",
        run.stdout
    );
    // What the store warns of at connect is said as the command's own
    // warnings are, not as a log line.
    let run = env.run(&["--store", &unlimited.url(), "list"]);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("warning: ")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);

    let risky = RedisServer::builder()
        .config("maxmemory-policy", "allkeys-lru")
        .config("maxmemory", "100mb")
        .start()
        .unwrap();
    let run = env.run(&["--store", &risky.url(), "doctor"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("FAIL  eviction     allkeys-lru"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("CONFIG SET maxmemory-policy noeviction"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("warn  persistence  none"),
        "{}",
        run.stdout
    );
    let doc = env
        .run(&["--store", &risky.url(), "--json", "doctor"])
        .json();
    assert_eq!(doc["ok"], false);

    // A TTL makes volatile-* policies unsafe too.
    let volatile = RedisServer::builder()
        .config("maxmemory-policy", "volatile-lru")
        .config("maxmemory", "100mb")
        .start()
        .unwrap();
    env.ok(&["--store", &volatile.url(), "doctor"]);
    let run = env.run(&["--store", &format!("{}?ttl=1h", volatile.url()), "doctor"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("FAIL  eviction     volatile-lru"),
        "{}",
        run.stdout
    );
}
