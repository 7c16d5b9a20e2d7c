//! `export` and `import`: byte-identical round trips on SQLite and Redis,
//! idempotent re-imports, conflicts, bad files, and flat memory for
//! 10,000 sessions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::time::Instant;

use common::redis::RedisServer;
use common::{Env, HEADER, RICH, Shape, export_file, numbered, session_line};

/// Ids that would break a careless key scheme or file format.
fn hostile_ids() -> Vec<String> {
    let mut ids = numbered(12);
    ids.extend(
        [
            "with space",
            "a:b{c}*?[x]",
            "ü/../x",
            "quote\"d\\",
            "user-123:conv/{7}",
            "😀",
        ]
        .map(str::to_owned),
    );
    ids
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn export_import_export_is_byte_identical_on_sqlite_and_redis() {
    let env = Env::new();
    let seed = env.path("seed.jsonl");
    let expected = export_file(&hostile_ids(), RICH);
    std::fs::write(&seed, &expected).unwrap();
    let a = env.sqlite("a.db");
    let seed_arg = seed.to_str().unwrap();

    let out = env.ok(&["--store", &a, "import", seed_arg]);
    assert_eq!(
        out,
        "imported 18 sessions from ".to_owned()
            + seed_arg
            + ": 18 written, 0 already there and equal, 0 conflicts\n"
    );
    let e1 = env.path("e1.jsonl");
    env.ok(&["--store", &a, "export", "-o", e1.to_str().unwrap()]);
    assert_eq!(read(&e1), expected, "export wrote what was imported");
    assert_eq!(env.ok(&["--store", &a, "export"]), expected, "stdout too");

    // Importing the same file again changes nothing.
    let out = env.ok(&["--store", &a, "import", seed_arg]);
    assert!(
        out.ends_with(": 0 written, 18 already there and equal, 0 conflicts\n"),
        "{out}"
    );
    assert_eq!(env.ok(&["--store", &a, "export"]), expected);

    // Through Redis: the same bytes come back.
    let server = RedisServer::start().unwrap();
    let r = format!("{}?prefix=t:", server.url());
    env.ok(&["--store", &r, "import", e1.to_str().unwrap()]);
    let e2 = env.path("e2.jsonl");
    env.ok(&["--store", &r, "export", "-o", e2.to_str().unwrap()]);
    assert_eq!(read(&e2), expected, "Redis round trip");
    let out = env.ok(&["--store", &r, "--json", "import", e2.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["written"], 0);
    assert_eq!(doc["unchanged"], 18);

    // One user's sessions only.
    let alice = env.ok(&["--store", &a, "export", "--user", "user-3"]);
    let lines: Vec<&str> = alice.lines().collect();
    assert_eq!(lines[0].to_owned() + "\n", HEADER);
    assert!(lines.len() > 1);
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(r#""user_id":"user-3""#))
    );
}

#[test]
fn conflicts_are_reported_and_never_overwritten() {
    let env = Env::new();
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, export_file(&numbered(3), RICH)).unwrap();
    let seed = seed.to_str().unwrap();
    let a = env.sqlite("a.db");
    env.ok(&["--store", &a, "import", seed]);
    // s00001 moves on: a new turn.
    env.ok(&[
        "--store",
        &a,
        "chat",
        "--session",
        "s00001",
        "Hi, I'm Alice",
    ]);
    let before = env.ok(&["--store", &a, "export"]);

    let run = env.run(&["--store", &a, "import", seed]);
    run.assert_code(1);
    assert!(
        run.stdout
            .ends_with(": 0 written, 2 already there and equal, 1 conflict\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains(r#"conflict: session "s00001" exists with different content"#),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--ignore-conflicts"), "{}", run.stderr);
    assert_eq!(
        env.ok(&["--store", &a, "export"]),
        before,
        "nothing overwritten"
    );

    let run = env.run(&["--store", &a, "import", "--ignore-conflicts", seed]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("s00001"),
        "still reported: {}",
        run.stderr
    );
}

#[test]
fn a_corrupt_line_stops_the_import_at_its_line() {
    let env = Env::new();
    let a = env.sqlite("a.db");
    let ids = numbered(5);
    let shape = Shape {
        turns: 1,
        text: 20,
        tools: false,
        summary: false,
        extras: false,
    };
    let line = |i: usize| session_line(&ids[i], i as u64, shape);

    // Line 5 is not JSON: lines 2-4 are imported, nothing from line 5 on.
    let file = env.path("bad.jsonl");
    let text = format!(
        "{HEADER}{}{}{}{{\"id\":\"s9\", oops\n{}",
        line(0),
        line(1),
        line(2),
        line(3)
    );
    std::fs::write(&file, text).unwrap();
    let run = env.run(&["--store", &a, "import", file.to_str().unwrap()]);
    run.assert_code(1);
    assert!(run.stderr.contains("line 5 of"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("3 sessions before it: 3 written, 0 already there and equal"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.ok(&["--store", &a, "list", "--ids-only"]),
        "s00000\ns00001\ns00002\n"
    );

    // Fixed, the file imports the rest; what was imported is left alone.
    let fixed = format!("{HEADER}{}{}{}{}", line(0), line(1), line(2), line(3));
    std::fs::write(&file, fixed).unwrap();
    let out = env.ok(&["--store", &a, "import", file.to_str().unwrap()]);
    assert!(
        out.ends_with(": 1 written, 3 already there and equal, 0 conflicts\n"),
        "{out}"
    );

    // A truncated last line, an unknown field, an invalid id, a session
    // that is not an object: each names its line, and that session is not
    // imported at all.
    let half = &line(4)[..40];
    for (bad, what) in [
        (half.to_owned(), "truncated"),
        (
            line(4).replacen('{', "{\"surprise\":1,", 1),
            "unknown field",
        ),
        (
            line(4).replacen("s00004", "bell\u{7}", 1),
            "control character",
        ),
        ("[1,2,3]\n".to_owned(), "an array"),
    ] {
        let b = env.sqlite(&format!("b-{}.db", what.replace(' ', "-")));
        std::fs::write(&file, format!("{HEADER}{}{bad}", line(0))).unwrap();
        let run = env.run(&["--store", &b, "import", file.to_str().unwrap()]);
        run.assert_code(1);
        assert!(run.stderr.contains("line 3 of"), "{what}: {}", run.stderr);
        assert_eq!(
            env.ok(&["--store", &b, "list", "--ids-only"]),
            "s00000\n",
            "{what}: only the session before it"
        );
    }
}

#[test]
fn files_that_are_not_exports_are_refused_before_anything_is_written() {
    let env = Env::new();
    let a = env.path("never.db");
    let url = format!("sqlite://{}", a.display());
    let file = env.path("f.jsonl");
    let newer = "{\"format\":\"statestore-export\",\"version\":4}\n".to_owned()
        + &session_line("x", 0, RICH);
    for (content, says) in [
        (
            newer.as_str(),
            "export format version 4; this statestore reads up to version 3",
        ),
        ("{\"id\":\"x\"}\n", "its first line is not the header"),
        (
            "{\"format\":\"statestore-export\",\"version\":3}\n",
            "version 3 is an encrypted export's",
        ),
        ("hello\n", "its first line is not the header"),
        ("", "it is empty"),
    ] {
        std::fs::write(&file, content).unwrap();
        let run = env.run(&["--store", &url, "import", file.to_str().unwrap()]);
        run.assert_code(1);
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
        assert!(
            run.stderr.contains("Nothing was imported")
                || run.stderr.contains("nothing was imported")
        );
        assert!(!a.exists(), "the store was not even opened");
    }
    let run = env.run(&[
        "--store",
        &url,
        "import",
        env.path("missing.jsonl").to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(run.stderr.contains("cannot open"), "{}", run.stderr);
}

/// The peak resident memory the binary reported (`STATESTORE_REPORT_PEAK_RSS`).
fn peak_kib(env: &Env, args: &[&str]) -> u64 {
    let out = env
        .cmd()
        .env("STATESTORE_REPORT_PEAK_RSS", "1")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak reported: {stderr}"))
}

/// Export and import hold a bounded number of sessions, not the file: the
/// peak memory with 10,000 sessions is about that with 1,000 (the sorted
/// ids, about 50 bytes a session, are what grows).
///
/// Measured inside the binary (`VmHWM` of `/proc/self/status` at exit, a
/// high-water mark over the whole run) rather than by the test: a test
/// cannot read a child's peak once it has exited, and rustix offers no
/// `getrusage`.
#[test]
fn ten_thousand_sessions_stream_in_flat_memory() {
    let env = Env::new();
    // About 1 KB a session: 10 MB for 10,000.
    let shape = Shape {
        turns: 1,
        text: 500,
        tools: true,
        summary: true,
        extras: false,
    };
    let big = export_file(&numbered(10_000), shape);
    let small: String = big.split_inclusive('\n').take(1_001).collect();
    let (big_file, small_file) = (env.path("big.jsonl"), env.path("small.jsonl"));
    std::fs::write(&big_file, &big).unwrap();
    std::fs::write(&small_file, &small).unwrap();
    // On Redis, where the process holds nothing but what is in flight (an
    // SQLite store's page caches grow with the file up to their limits,
    // which would blur the comparison).
    let server = RedisServer::start().unwrap();
    let (s1, s10) = (
        format!("{}?prefix=small:", server.url()),
        format!("{}?prefix=big:", server.url()),
    );

    let import_small = peak_kib(
        &env,
        &["--store", &s1, "import", small_file.to_str().unwrap()],
    );
    let export_small = peak_kib(
        &env,
        &[
            "--store",
            &s1,
            "export",
            "-o",
            env.path("o1").to_str().unwrap(),
        ],
    );
    let started = Instant::now();
    let import_big = peak_kib(
        &env,
        &["--store", &s10, "import", big_file.to_str().unwrap()],
    );
    let import_time = started.elapsed();
    let started = Instant::now();
    let out = env.path("o10.jsonl");
    let export_big = peak_kib(
        &env,
        &["--store", &s10, "export", "-o", out.to_str().unwrap()],
    );
    let export_time = started.elapsed();
    assert!(read(&out) == big, "10,000 sessions exported as imported");
    assert_eq!(read(&env.path("o1")), small);

    let added_kib = (big.len() - small.len()) as u64 / 1024;
    eprintln!(
        "10,000 sessions, {} MiB: import {import_time:?} (peak {import_big} KiB; 1,000: \
         {import_small} KiB), export {export_time:?} (peak {export_big} KiB; 1,000: \
         {export_small} KiB)",
        big.len() / (1024 * 1024)
    );
    for (what, small, big) in [
        ("import", import_small, import_big),
        ("export", export_small, export_big),
    ] {
        // Nine times the sessions more: the peak grows by less than a
        // quarter of the data added (holding it would take more than all of it).
        assert!(
            big.saturating_sub(small) < added_kib / 4,
            "{what}: {big} KiB for 10,000 sessions, {small} KiB for 1,000; {added_kib} KiB added"
        );
    }
}

/// Export format version 1 (before remembered writes) still imports.
#[test]
fn version_one_files_still_import() {
    let env = Env::new();
    let file = env.path("v1.jsonl");
    let v1 = export_file(&numbered(3), RICH).replacen("\"version\":2", "\"version\":1", 1);
    std::fs::write(&file, &v1).unwrap();
    let a = env.sqlite("a.db");
    let out = env.ok(&["--store", &a, "import", file.to_str().unwrap()]);
    assert!(
        out.ends_with(": 3 written, 0 already there and equal, 0 conflicts\n"),
        "{out}"
    );
    assert_eq!(
        env.ok(&["--store", &a, "export"]),
        export_file(&numbered(3), RICH)
    );
}

/// A turn stored on SQLite, moved to Redis and back by export and import:
/// its turn id comes along, so a retry of it after either cutover is a
/// replay, not a second copy.
#[test]
fn remembered_writes_move_with_their_sessions_sqlite_redis_sqlite() {
    use statestore::{Append, IdempotencyKey, Message, SessionId};

    let env = Env::new();
    let a = env.sqlite("a.db");
    let b = env.sqlite("b.db");
    let server = RedisServer::start().unwrap();
    let r = format!("{}?prefix=m:", server.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = SessionId::new("moved").unwrap();
    let turn = || {
        Append::new([Message::user("Hi"), Message::assistant("Hello!")])
            .key(IdempotencyKey::new("turn-7").unwrap())
    };
    let retry = |url: &str| {
        rt.block_on(async {
            let store = statestore::open(url).await.unwrap();
            let again = store.append_with(&id, turn()).await.unwrap();
            let state = store.load(&id).await.unwrap().unwrap();
            (again.replayed, again.messages, state.messages.len())
        })
    };
    rt.block_on(async {
        let store = statestore::open(&a).await.unwrap();
        store.append_with(&id, turn()).await.unwrap();
    });

    let e1 = env.path("e1.jsonl");
    env.ok(&["--store", &a, "export", "-o", e1.to_str().unwrap()]);
    let line = read(&e1);
    assert!(
        line.contains(r#""writes":[{"key":"turn-7","messages":2}]"#),
        "{line}"
    );
    env.ok(&["--store", &r, "import", e1.to_str().unwrap()]);
    assert_eq!(retry(&r), (true, 2, 2), "a retry on Redis after the move");

    let e2 = env.path("e2.jsonl");
    env.ok(&["--store", &r, "export", "-o", e2.to_str().unwrap()]);
    assert_eq!(read(&e2), line, "the same line from Redis");
    env.ok(&["--store", &b, "import", e2.to_str().unwrap()]);
    assert_eq!(
        retry(&b),
        (true, 2, 2),
        "a retry on SQLite after moving back"
    );
    // Re-importing is still "equal": the writes compare too.
    let out = env.ok(&["--store", &b, "import", e2.to_str().unwrap()]);
    assert!(
        out.ends_with(": 0 written, 1 already there and equal, 0 conflicts\n"),
        "{out}"
    );
}

/// The operator's reads are maintenance reads: on a store with a TTL,
/// `show`, `stats`, `export`, `keys usage`, `migrate` (its source) and a
/// re-`import` (its comparing reads) leave every session's
/// `last_accessed_at`, and so its expiry, where it was.
#[test]
fn operator_reads_do_not_extend_retention() {
    let env = Env::new();
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, export_file(&numbered(3), RICH)).unwrap();
    let a = format!("{}?ttl=1h", env.sqlite("a.db"));
    let seed_arg = seed.to_str().unwrap();
    env.ok(&["--store", &a, "import", seed_arg]);
    let accessed = || {
        numbered(3)
            .iter()
            .map(|id| {
                env.run(&["--store", &a, "--json", "show", id]).json()["last_accessed_at"].clone()
            })
            .collect::<Vec<_>>()
    };
    let before = accessed();
    assert!(before.iter().all(|t| !t.is_null()), "{before:?}");
    std::thread::sleep(std::time::Duration::from_millis(30));
    let b = env.sqlite("b.db");
    for args in [
        vec!["stats"],
        vec!["export"],
        vec!["keys", "usage"],
        vec!["import", seed_arg],
        vec!["migrate", "--from", &a, "--to", &b],
        vec!["show", "s00000"],
    ] {
        let mut all = vec!["--store", &a];
        all.extend(args);
        env.ok(&all);
    }
    assert_eq!(
        accessed(),
        before,
        "an operator's read moved last_accessed_at"
    );
    let shown = env.ok(&["--store", &a, "show", "s00001"]);
    assert!(
        shown.contains("after the last access (") && shown.contains("looking does not restart"),
        "{shown}"
    );
}

/// Ctrl-C during `export -o` stops it, exits 130, and leaves neither the
/// file asked for nor the temporary one. The export is caught mid-way: it
/// is stopped (SIGSTOP) as soon as its temporary file appears, sent
/// SIGINT, and continued.
#[test]
fn an_interrupted_export_leaves_no_file() {
    use rustix::process::{Pid, Signal, kill_process};
    let env = Env::new();
    let file = env.path("in.jsonl");
    std::fs::write(&file, export_file(&numbered(5_000), RICH)).unwrap();
    env.ok(&["import", file.to_str().unwrap()]);
    let out_dir = env.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("backup.jsonl");
    let mut child = env
        .cmd()
        .args(["export", "-o", dest.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_child(&child);
    let entries = || std::fs::read_dir(&out_dir).unwrap().count();
    while entries() == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before its file appeared"
        );
        std::thread::yield_now();
    }
    kill_process(pid, Signal::STOP).unwrap();
    assert!(
        child.try_wait().unwrap().is_none() && !dest.exists(),
        "the export finished before it could be interrupted"
    );
    kill_process(pid, Signal::INT).unwrap();
    kill_process(pid, Signal::CONT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: the export stopped after"),
        "{stderr}"
    );
    assert!(stderr.contains("is left as it was"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
