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
