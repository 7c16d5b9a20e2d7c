//! `statestore chat`: one conversation across separate processes, on the
//! default SQLite store and on a real Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use common::Env;
use common::redis::RedisServer;

#[test]
fn a_second_process_continues_the_conversation_on_the_default_store() {
    let env = Env::new();
    assert!(!env.default_db().exists());
    assert_eq!(
        env.ok(&["chat", "Hi, I'm Alice"]),
        "Nice to meet you, Alice!\n"
    );
    assert!(env.default_db().exists(), "the default store is created");
    assert_eq!(env.ok(&["chat", "What's my name?"]), "Your name is Alice\n");

    // Another session knows nothing of it.
    assert_eq!(
        env.ok(&["chat", "--session", "bob", "What's my name?"]),
        "I don't know your name yet.\n"
    );
    // The words of a message need no quotes; stdin works too.
    assert_eq!(
        env.ok(&["chat", "what", "is", "my", "name"]),
        "Your name is Alice\n"
    );
    let run = env.run_with_stdin(&["chat"], "I am Carol\n");
    run.assert_code(0);
    assert_eq!(run.stdout, "Nice to meet you, Carol!\n");
    assert_eq!(env.ok(&["chat", "my name?"]), "Your name is Carol\n");
}

#[test]
fn a_second_process_continues_the_conversation_on_redis() {
    let server = RedisServer::start().unwrap();
    let env = Env::new();
    let url = format!("{}?prefix=cli:", server.url());
    let first = env.run(&["--store", &url, "chat", "--session", "s-1", "Hi, I'm Alice"]);
    first.assert_code(0);
    assert_eq!(first.stdout, "Nice to meet you, Alice!\n");
    // STATESTORE_URL is the same as --store.
    let second = env
        .cmd()
        .env("STATESTORE_URL", &url)
        .args(["chat", "--session", "s-1", "What's my name?"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        "Your name is Alice\n"
    );
    assert!(
        !env.default_db().exists(),
        "nothing went to the default store"
    );
    let keys = server.cli(&["KEYS", "cli:*"]).unwrap();
    assert!(!keys.trim().is_empty(), "the session is in Redis");
}

#[test]
fn json_output_describes_the_turn() {
    let env = Env::new();
    env.ok(&["chat", "Hi, I'm Dave"]);
    let run = env.run(&["--json", "chat", "What's my name?"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["reply"], "Your name is Dave");
    assert_eq!(doc["session"], "default");
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["context_messages"], 2);
    assert!(doc["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn an_empty_message_is_a_usage_error() {
    let env = Env::new();
    let run = env.run_with_stdin(&["chat"], "  \n");
    run.assert_code(2);
    assert!(run.stderr.contains("no message"), "{}", run.stderr);
    assert!(
        !env.default_db().exists(),
        "refused before the store is made"
    );
    // On a store that exists, nothing is stored.
    env.ok(&["chat", "-s", "other", "Hi"]);
    env.run_with_stdin(&["chat"], "  \n").assert_code(2);
    assert_eq!(env.ok(&["list", "--ids-only"]), "other\n", "nothing stored");
}

#[test]
fn an_empty_message_argument_is_a_usage_error() {
    let env = Env::new();
    for empty in ["", "  ", "\t"] {
        let run = env.run(&["chat", empty]);
        run.assert_code(2);
        assert!(run.stderr.contains("no message"), "{}", run.stderr);
    }
    let run = env.run(&["chat", "--edit", " "]);
    run.assert_code(2);
    // Nor is an empty stdin a reason to store the user or the system prompt.
    let run = env.run_with_stdin(&["chat", "--user", "u", "--system", "S"], " \n");
    run.assert_code(2);
    assert!(!env.default_db().exists(), "nothing stored, no store made");
}

#[test]
fn user_and_system_prompt_are_stored_with_the_session() {
    let env = Env::new();
    let show = |id: &str| {
        let run = env.run(&["--json", "show", id]);
        run.assert_code(0);
        run.json()
    };
    env.ok(&[
        "chat",
        "-s",
        "s1",
        "--user",
        "alice",
        "--system",
        "You are terse.",
        "Hi",
    ]);
    let doc = show("s1");
    assert_eq!(doc["user_id"], "alice");
    assert_eq!(doc["system_prompt"], "You are terse.");
    assert_eq!(env.ok(&["list", "--ids-only", "--user", "alice"]), "s1\n");

    // Without them, the session keeps what it has.
    env.ok(&["chat", "-s", "s1", "again"]);
    let doc = show("s1");
    assert_eq!(doc["user_id"], "alice");
    assert_eq!(doc["system_prompt"], "You are terse.");
    assert_eq!(doc["messages"].as_array().unwrap().len(), 4);

    // Another --system replaces the stored one, and says so.
    let run = env.run(&["chat", "-s", "s1", "--system", "Be brief.", "once more"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("system prompt was replaced; it was \"You are terse.\""),
        "{}",
        run.stderr
    );
    assert_eq!(show("s1")["system_prompt"], "Be brief.");

    // Another user's session is refused before anything is sent or stored.
    let run = env.run(&["chat", "-s", "s1", "--user", "bob", "Hi"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(r#"session "s1" belongs to user "alice", not "bob""#),
        "{}",
        run.stderr
    );
    assert_eq!(show("s1")["messages"].as_array().unwrap().len(), 6);

    // A session without a user takes the one given.
    env.ok(&["chat", "-s", "s2", "Hi"]);
    env.ok(&["chat", "-s", "s2", "--user", "bob", "Hi"]);
    assert_eq!(show("s2")["user_id"], "bob");

    // A user id is validated as `list --user` validates it; --system "" is refused.
    env.run(&["chat", "--user", "a\u{1}b", "Hi"]).assert_code(2);
    env.run(&["chat", "--user", "", "Hi"]).assert_code(2);
    env.run(&["chat", "--system", "", "Hi"]).assert_code(2);
}
