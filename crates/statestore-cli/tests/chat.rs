//! `statestore chat`: one conversation across separate processes, on the
//! default SQLite store and on a real Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
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
    assert_eq!(env.ok(&["list", "--ids-only"]), "", "nothing stored");
}
