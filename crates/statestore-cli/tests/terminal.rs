//! What the command prints on a terminal: stored text and what the user
//! typed never reach it with their control characters (issue 26, item 1).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use common::Env;
use statestore::{ConversationState, Expect, Message, SessionId, ToolCall};

/// An OSC sequence that retitles the terminal, a cursor move, a carriage
/// return that would overwrite the line, and a right-to-left override.
const HOSTILE: &str = "\u{1b}]2;PWNED\u{7}\u{1b}[2J\rfake\u{202e}txt";

/// No escape, bell, carriage return or reordering character in `text`.
fn assert_inert(what: &str, text: &str) {
    for c in ['\u{1b}', '\u{7}', '\r', '\u{202e}', '\u{9b}'] {
        assert!(!text.contains(c), "{what} printed {c:?} raw:\n{text}");
    }
}

#[test]
fn stored_text_and_typed_ids_are_escaped_outside_json() {
    let env = Env::new();
    let url = env.sqlite("hostile.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = statestore::open(&url).await.unwrap();
        let mut state = ConversationState::new(SessionId::new("victim").unwrap());
        state.user_id = Some(format!("user{HOSTILE}"));
        state.system_prompt = Some(format!("prompt {HOSTILE}"));
        state.metadata.insert(
            statestore::TITLE_KEY.into(),
            format!("title {HOSTILE}").into(),
        );
        state
            .messages
            .push(Message::user(format!("hello {HOSTILE}\nsecond line")).into());
        let call = ToolCall::new(format!("call{HOSTILE}"), format!("tool{HOSTILE}"), "{}");
        state
            .messages
            .push(Message::assistant("").with_tool_calls(vec![call]).into());
        store.save(&state, Expect::Absent).await.unwrap();
    });

    let shown = env.ok(&["--store", &url, "show", "victim"]);
    assert_inert("show", &shown);
    assert!(
        shown.contains(r"hello \u{1b}]2;PWNED\u{7}\u{1b}[2J\rfake\u{202e}txt"),
        "{shown}"
    );
    // Newlines and tabs in a message are kept, indented.
    assert!(shown.contains("\n                 second line"), "{shown}");
    assert!(shown.contains(r"user       user\u{1b}]2;PWNED"), "{shown}");
    assert!(shown.contains(r"system     prompt \u{1b}"), "{shown}");
    assert!(shown.contains(r"tool\u{1b}]2;PWNED"), "{shown}");

    let listed = env.ok(&["--store", &url, "list"]);
    assert_inert("list", &listed);
    assert!(listed.contains(r"title \u{1b}]2;PWNED"), "{listed}");

    // --json is JSON: its strings carry the characters, the control
    // characters escaped by JSON (a reordering character is text to it).
    let json = env.ok(&["--store", &url, "--json", "show", "victim"]);
    for c in ['\u{1b}', '\u{7}', '\r'] {
        assert!(!json.contains(c), "show --json printed {c:?} raw:\n{json}");
    }
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["user_id"], format!("user{HOSTILE}"));

    // An id the user typed, refused, is echoed escaped.
    let run = env.run(&["--store", &url, "show", &format!("bad{HOSTILE}")]);
    assert_ne!(run.code, Some(0));
    assert_inert("an error", &run.stderr);
    // (clap's plain rendering drops the escape sequences; the rest is
    // escaped by us.)
    assert!(run.stderr.contains(r"\rfake\u{202e}txt"), "{}", run.stderr);
}

/// User ids are held to the rules of session ids, on the command line and
/// in an imported file.
#[test]
fn user_ids_are_validated_like_session_ids() {
    let env = Env::new();
    let url = env.sqlite("users.db");
    let run = env.run(&["--store", &url, "list", "--user", &format!("u{HOSTILE}")]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_inert("a usage error", &run.stderr);
    assert!(
        run.stderr.contains("a user id is 1 to 512 bytes"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.run(&["--store", &url, "list", "--user", ""]).code,
        Some(2)
    );

    let file = env.path("users.jsonl");
    let line = serde_json::json!({
        "id": "s1", "user_id": format!("u{HOSTILE}"), "created_at": 1, "messages": []
    });
    std::fs::write(&file, format!("{}{line}\n", common::HEADER)).unwrap();
    let run = env.run(&["--store", &url, "import", file.to_str().unwrap()]);
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert_inert("an import error", &run.stderr);
    assert!(run.stderr.contains("a user id is"), "{}", run.stderr);
    assert_eq!(env.ok(&["--store", &url, "list", "--ids-only"]), "");
}

/// A URL that cannot name a server is a usage error (exit 2), said as
/// such, not "is the server running" (exit 1); so is an empty one.
#[test]
fn bad_store_urls_are_usage_errors() {
    let env = Env::new();
    for url in [
        "redis://",
        "redis://h:notaport",
        "redis://:6379",
        "postgres://",
        "",
    ] {
        let run = env.run(&["--store", url, "list"]);
        assert_eq!(run.code, Some(2), "{url:?}: {}", run.stderr);
        assert!(
            !run.stderr.contains("is the server running"),
            "{url:?}: {}",
            run.stderr
        );
    }
    let run = env.run(&["--store", "redis://h:notaport", "list"]);
    assert!(
        run.stderr.contains("is not a number from 1 to 65535"),
        "{}",
        run.stderr
    );
    // The default store is not created by a refused command.
    assert!(!common::exists(&env.default_db()));
}

/// Commands that read never create a store: a missing SQLite file is an
/// error naming it (exit 1), and nothing is left behind — not the file, its
/// `-wal`/`-shm`, nor the default store's directory. Only `chat`,
/// `import` and `migrate --to` create one.
#[test]
fn reading_never_creates_a_store() {
    let env = Env::new();
    let typo = env.path("typo.db");
    let url = format!("sqlite://{}", typo.display());
    let commands: [&[&str]; 7] = [
        &["list"],
        &["show", "x"],
        &["stats"],
        &["export"],
        &["delete", "x"],
        &["trim", "x", "--keep", "1"],
        &["doctor"],
    ];
    for args in commands {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        let run = env.run(&all);
        assert_ne!(run.code, Some(0), "{args:?}: {}", run.stdout);
        assert!(
            run.stderr.contains(&typo.display().to_string())
                || run.stdout.contains(&typo.display().to_string()),
            "{args:?}: {}{}",
            run.stdout,
            run.stderr
        );
        for suffix in ["", "-wal", "-shm"] {
            let file = env.path(&format!("typo.db{suffix}"));
            assert!(
                !common::exists(&file),
                "{args:?} created {}",
                file.display()
            );
        }
    }
    let run = env.run(&["--store", &url, "list"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("no store is there"), "{}", run.stderr);

    // An empty file is no store either, and is left empty.
    let empty = env.path("empty.db");
    std::fs::write(&empty, "").unwrap();
    let empty_url = format!("sqlite://{}", empty.display());
    for args in [&["doctor"][..], &["list"], &["show", "x"]] {
        let mut all = vec!["--store", empty_url.as_str()];
        all.extend_from_slice(args);
        let run = env.run(&all);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stdout);
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains("is an empty file, not a database"),
            "{args:?}: {said}"
        );
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "{args:?}");
        for suffix in ["-wal", "-shm"] {
            assert!(
                !common::exists(&env.path(&format!("empty.db{suffix}"))),
                "{args:?}"
            );
        }
    }

    // A mistyped STATESTORE_HOME: said, not "no sessions".
    let run = env.run(&["list"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stderr.contains("sessions.db"), "{}", run.stderr);
    assert!(!common::exists(env.default_db().parent().unwrap()));

    let run = env.run(&["migrate", "--from", &url, "--to", &env.sqlite("to.db")]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(!common::exists(&typo));

    // chat, import and migrate's target create.
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, common::export_file(&["s1".to_owned()], common::RICH)).unwrap();
    env.ok(&["--store", &url, "import", seed.to_str().unwrap()]);
    assert!(common::exists(&typo));
    env.ok(&["migrate", "--from", &url, "--to", &env.sqlite("to.db")]);
    assert_eq!(
        env.ok(&["--store", &env.sqlite("to.db"), "list", "--ids-only"]),
        "s1\n"
    );
}

/// With `--json`, an error is one JSON object on stderr — `error`, `hint`,
/// `write_outcome`, `exit_code` — and `list --ids-only` has the shape of
/// the full listing (issue 26, item 12).
#[test]
fn json_errors_and_one_list_shape() {
    let env = Env::new();
    let url = env.sqlite("json.db");
    let seed = env.path("seed.jsonl");
    std::fs::write(
        &seed,
        common::export_file(&["a".to_owned(), "b".to_owned()], common::RICH),
    )
    .unwrap();
    env.ok(&["--store", &url, "import", seed.to_str().unwrap()]);

    let ids: serde_json::Value =
        serde_json::from_str(&env.ok(&["--store", &url, "--json", "list", "--ids-only"])).unwrap();
    let full: serde_json::Value =
        serde_json::from_str(&env.ok(&["--store", &url, "--json", "list"])).unwrap();
    assert_eq!(ids["total"], full["total"]);
    let id_of = |doc: &serde_json::Value| -> Vec<serde_json::Value> {
        doc["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].clone())
            .collect()
    };
    assert_eq!(id_of(&ids), id_of(&full));
    assert_eq!(
        id_of(&ids),
        [serde_json::json!("a"), serde_json::json!("b")]
    );

    // A read that fails: no write_outcome.
    let run = env.run(&["--store", &url, "--json", "show", "missing"]);
    assert_eq!(run.code, Some(1));
    let err: serde_json::Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert!(err["error"].as_str().unwrap().contains("missing"), "{err}");
    assert!(err["hint"].is_string(), "{err}");
    assert_eq!(err["write_outcome"], serde_json::Value::Null);
    assert_eq!(err["exit_code"], 1);
    assert!(run.stdout.is_empty());
    // A write refused before it was made: not_written.
    let run = env.run(&["--store", &url, "--json", "fork", "missing", "copy"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let err: serde_json::Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(err["write_outcome"], "not_written", "{err}");
    // A usage error the command found: exit 2, in JSON too.
    let run = env.run(&["--store", "redis://h:x", "--json", "list"]);
    let err: serde_json::Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(err["exit_code"], 2, "{err}");
}

/// STATESTORE_LOG is checked: an unknown level is a warning line, and the
/// command runs at the default.
#[test]
fn log_levels_are_checked() {
    let env = Env::new();
    let url = env.sqlite("log.db");
    let run = {
        let mut cmd = env.cmd();
        cmd.args(["--store", &url, "list"])
            .env("STATESTORE_LOG", "verbose");
        common::Run::from(cmd.output().unwrap())
    };
    assert!(
        run.stderr
            .starts_with("warning: STATESTORE_LOG=\"verbose\" is not one of"),
        "{}",
        run.stderr
    );
}

/// An export whose reader closes the pipe early fails, saying how much
/// reached it: a backup cut short must not look complete (issue 26, item
/// 4; `list | head` stays quiet, as before).
#[test]
fn an_export_cut_short_fails_loudly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let env = Env::new();
    let url = env.sqlite("big.db");
    let ids = common::numbered(400);
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, common::export_file(&ids, common::RICH)).unwrap();
    env.ok(&["--store", &url, "import", seed.to_str().unwrap()]);
    assert!(
        std::fs::metadata(&seed).unwrap().len() > 256 * 1024,
        "more than a pipe holds"
    );

    let mut cmd = env.cmd();
    cmd.args(["--store", &url, "export"]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("statestore-export"), "{first}");
    drop(out);
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the export was cut short"), "{stderr}");
    assert!(stderr.contains("of 400 sessions"), "{stderr}");
}

/// `import` of a compressed, database or binary file says what the file
/// is and that nothing was imported, before opening the store (issue 26,
/// item 15).
#[test]
fn import_says_what_a_wrong_file_is() {
    let env = Env::new();
    let url = env.sqlite("import.db");
    let export = common::export_file(&["a".to_owned()], common::RICH);
    for (name, bytes, says) in [
        (
            "x.jsonl.gz",
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0],
            "a gzip-compressed file",
        ),
        (
            "x.zst",
            vec![0x28, 0xb5, 0x2f, 0xfd, 0],
            "a zstd-compressed file",
        ),
        (
            "x.db",
            b"SQLite format 3\0rest".to_vec(),
            "an SQLite database",
        ),
        ("x.bin", vec![b'{', 0, 0xff, 0xfe, b'}'], "a binary file"),
    ] {
        let file = env.path(name);
        std::fs::write(&file, bytes).unwrap();
        let run = env.run(&["--store", &url, "import", file.to_str().unwrap()]);
        assert_eq!(run.code, Some(1), "{name}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains("nothing was imported"),
            "{name}: {}",
            run.stderr
        );
        assert!(
            !common::exists(&env.path("import.db")),
            "{name}: the store was created"
        );
    }
    // A real export still imports (and creates the store).
    let file = env.path("ok.jsonl");
    std::fs::write(&file, export).unwrap();
    env.ok(&["--store", &url, "import", file.to_str().unwrap()]);
    assert_eq!(env.ok(&["--store", &url, "list", "--ids-only"]), "a\n");
}

/// `migrate` knows one SQLite file under two spellings (issue 26, item 15).
#[test]
fn migrate_compares_files_not_spellings() {
    let env = Env::new();
    let url = env.sqlite("same.db");
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, common::export_file(&["a".to_owned()], common::RICH)).unwrap();
    env.ok(&["--store", &url, "import", seed.to_str().unwrap()]);
    let dir = env.path("");
    let other = format!("sqlite://{}/./sub/../same.db", dir.display());
    std::fs::create_dir(env.path("sub")).unwrap();
    let run = env.run(&["migrate", "--from", &url, "--to", &other]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("the same store"), "{}", run.stderr);
}

/// `rotate-keys --resume-from` takes only a cursor a run printed.
#[test]
fn a_resume_cursor_is_checked() {
    let env = Env::new();
    let url = env.sqlite("keys.db");
    let run = env.run(&["--store", &url, "rotate-keys", "--resume-from", "garbage"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("not a cursor"), "{}", run.stderr);
    let run = env.run(&["--store", &url, "rotate-keys", "--resume-from", "r:1:x"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

/// A missing key file is said to be missing, not an invalid key.
#[test]
fn a_missing_key_file_is_not_found() {
    let env = Env::new();
    let missing = env.path("no-such-keys");
    let run = env.run(&[
        "--keys",
        missing.to_str().unwrap(),
        "--store",
        "memory://",
        "list",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    assert!(!run.stderr.contains("invalid key"), "{}", run.stderr);
}

/// Completion scripts for every shell, the manual page, and a version
/// that names the commit, the backends and SQLite (issue 26, item 16).
#[test]
fn completions_man_page_and_version() {
    let env = Env::new();
    for (shell, says) in [
        ("bash", "_statestore()"),
        ("zsh", "#compdef statestore"),
        ("fish", "complete -c statestore"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[statestore]"),
    ] {
        let script = env.ok(&["completions", shell]);
        assert!(script.contains(says), "{shell}: {script}");
        assert!(script.contains("rotate-keys"), "{shell}");
    }
    assert_eq!(env.run(&["completions", "tcsh"]).code, Some(2));
    let page = env.ok(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH statestore"),
        "{page}"
    );
    assert!(page.contains("rotate\\-keys"), "{page}");
    let version = env.ok(&["--version"]);
    assert!(
        version.starts_with(&format!(
            "statestore {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    for part in [
        "backends: memory, sqlite, redis",
        "postgres",
        "features: ",
        "SQLite 3.",
    ] {
        assert!(version.contains(part), "{part}: {version}");
    }
    assert_eq!(
        env.ok(&["-V"]),
        format!("statestore {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// The short flags people reach for: `-n` for `--limit`, `-u` for
/// `--user` (issue 26, item 17).
#[test]
fn short_flags() {
    let env = Env::new();
    let url = env.sqlite("short.db");
    let seed = env.path("seed.jsonl");
    let ids: Vec<String> = ["a", "b", "c"].map(str::to_owned).to_vec();
    std::fs::write(&seed, common::export_file(&ids, common::RICH)).unwrap();
    env.ok(&["--store", &url, "import", seed.to_str().unwrap()]);
    assert_eq!(
        env.ok(&["--store", &url, "list", "--ids-only", "-n", "2"]),
        "a\nb\n"
    );
    assert_eq!(
        env.ok(&["--store", &url, "list", "--ids-only", "-u", "user-1"]),
        "b\n"
    );
    assert_eq!(
        env.ok(&["--store", &url, "list", "--ids-only", "-u", "user-1"]),
        env.ok(&["--store", &url, "list", "--ids-only", "--user", "user-1"])
    );
}

/// The URL forms and the default store are explained once, in the top
/// level's help; each subcommand says in one line what --store takes, lists
/// the global options apart from its own, and hides those it ignores.
#[test]
fn subcommand_help_is_short_and_shows_only_what_applies() {
    let env = Env::new();
    let top = env.ok(&["--help"]);
    assert!(top.contains("$STATESTORE_HOME/sessions.db"), "{top}");
    for cmd in ["list", "show", "export", "chat"] {
        for flag in ["-h", "--help"] {
            let help = env.ok(&[cmd, flag]);
            assert!(!help.contains("$STATESTORE_HOME"), "{cmd} {flag}: {help}");
            assert!(help.contains("Global options:"), "{cmd} {flag}: {help}");
            let store = help.lines().filter(|l| l.contains("--store")).count();
            assert_eq!(store, 1, "{cmd} {flag}: {help}");
            // Its own options come before the global ones.
            let own = help.find("--help").unwrap();
            assert!(own < help.find("Global options:").unwrap(), "{cmd}: {help}");
        }
    }
    let completions = env.ok(&["completions", "--help"]);
    for ignored in ["--store", "--keys", "--context", "--json", "Global options"] {
        assert!(!completions.contains(ignored), "{ignored}: {completions}");
    }
    let migrate = env.ok(&["migrate", "--help"]);
    assert!(!migrate.contains("--store"), "{migrate}");
    assert!(migrate.contains("--keys"), "{migrate}");
    // Hidden is not refused: a global option still parses everywhere.
    assert!(
        env.ok(&["completions", "bash", "--json"])
            .contains("statestore")
    );
    assert!(
        env.ok(&["--store", "memory://", "list", "--ids-only"])
            .is_empty()
    );
    assert!(
        env.ok(&["list", "--store", "memory://", "--ids-only"])
            .is_empty()
    );
}

/// `show` ends no line in spaces, an empty message's included.
#[test]
fn show_lines_end_without_spaces() {
    let env = Env::new();
    let file = env.path("empty-reply.jsonl");
    let line = r#"{"id":"e","created_at":1700000000000,"messages":[{"role":"user","content":"hi","timestamp":1700000000000},{"role":"assistant","content":"","timestamp":1700000000001}]}"#;
    std::fs::write(&file, format!("{}{line}\n", common::HEADER)).unwrap();
    env.ok(&["import", file.to_str().unwrap()]);
    let shown = env.ok(&["show", "e"]);
    assert!(shown.contains("#1    assistant\n"), "{shown}");
    for l in shown.lines() {
        assert_eq!(l, l.trim_end(), "{shown}");
    }
}
