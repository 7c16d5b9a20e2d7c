//! The interactive `statestore chat`, driven through a pseudo-terminal
//! (rexpect): Ctrl-C, the slash commands, the history file, the banner, and
//! `--user`/`--system` stored with the session.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;

use common::Env;
use rexpect::session::{PtySession, spawn_command};

/// How long any one expected output may take before the test fails (a
/// limit on hanging, not a measure of speed).
const PATIENCE_MS: u64 = 30_000;

/// `statestore chat ARGS` on a pseudo-terminal, with `vars` set.
fn chat(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> PtySession {
    let mut cmd = env.cmd();
    cmd.arg("chat")
        .args(args)
        .env("TERM", "xterm")
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    spawn_command(cmd, Some(PATIENCE_MS)).unwrap()
}

/// Waits for the prompt.
fn prompt(p: &mut PtySession) -> String {
    p.exp_string("you> ").unwrap()
}

/// Sends `line` and returns what the chat printed before its next prompt.
fn say(p: &mut PtySession, line: &str) -> String {
    p.send_line(line).unwrap();
    prompt(p)
}

/// `/quit`, then the end of the output; the chat exited with 0.
fn quit(mut p: PtySession) -> String {
    p.send_line("/quit").unwrap();
    let rest = p.exp_eof().unwrap();
    // nix's `WaitStatus`, which rexpect does not re-export.
    let status = format!("{:?}", p.process().wait().unwrap());
    assert!(
        status.starts_with("Exited(") && status.ends_with(", 0)"),
        "the chat ended with {status}:\n{rest}"
    );
    rest
}

/// Session `id` as `show --json` prints it.
fn show(env: &Env, id: &str) -> serde_json::Value {
    let run = env.run(&["--json", "show", id]);
    run.assert_code(0);
    run.json()
}

/// The texts of session `id`'s messages.
fn texts(env: &Env, id: &str) -> Vec<String> {
    show(env, id)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A model on 127.0.0.1 speaking OpenAI's streaming API: the first request
/// gets `first` as a whole reply; every later one gets `Partial` and then
/// silence, until the client hangs up.
fn slow_model(first: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || answer(stream, (n == 0).then_some(first)));
        }
    });
    format!("http://127.0.0.1:{port}/v1")
}

/// Reads one request and answers it: `whole` as a complete reply, or
/// (`None`) one piece and then nothing.
fn answer(stream: TcpStream, whole: Option<&str>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("content-length:") {
            length = n.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let mut out = stream;
    let chunk = |out: &mut TcpStream, data: &str| {
        let event = format!("data: {data}\n\n");
        let _ = write!(out, "{:x}\r\n{event}\r\n", event.len());
        let _ = out.flush();
    };
    let delta = |text: &str| {
        serde_json::json!({
            "id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null}],
        })
        .to_string()
    };
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n"
    );
    match whole {
        Some(text) => {
            chunk(&mut out, &delta(text));
            let stop = serde_json::json!({
                "id": "c1", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
            });
            chunk(&mut out, &stop.to_string());
            chunk(&mut out, "[DONE]");
            let _ = write!(out, "0\r\n\r\n");
        }
        None => {
            chunk(&mut out, &delta("Partial"));
            // Silence until the client hangs up.
            let _ = reader.read(&mut [0; 64]);
        }
    }
}

#[test]
fn ctrl_c_during_a_streaming_reply_cancels_it_and_stores_nothing() {
    let env = Env::new();
    let url = slow_model("Hello, Alice.");
    let vars = [
        ("OPENAI_API_KEY", "sk-test-key"),
        ("OPENAI_BASE_URL", url.as_str()),
        ("OPENAI_MODEL", "slow-1"),
    ];
    let mut p = chat(&env, &["-s", "s1"], &vars);
    prompt(&mut p);
    // Ctrl-C at the prompt: how to leave.
    p.send_control('c').unwrap();
    p.exp_string("(to leave, type /quit or press Ctrl-D)")
        .unwrap();
    prompt(&mut p);
    assert!(say(&mut p, "I am Alice").contains("Hello, Alice."));
    // The second reply streams a piece, then stalls: Ctrl-C stops it.
    p.send_line("Tell me a long story").unwrap();
    p.exp_string("Partial").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("(cancelled; nothing was stored)").unwrap();
    prompt(&mut p);
    quit(p);
    let texts = texts(&env, "s1");
    assert_eq!(
        texts,
        ["I am Alice", "Hello, Alice."],
        "only the first turn"
    );
    assert_eq!(show(&env, "s1")["counters"]["turns"], 1);
}

#[test]
fn slash_commands_are_handled_here_and_never_sent_or_stored() {
    let env = Env::new();
    let mut p = chat(&env, &["-s", "s1"], &[]);
    prompt(&mut p);
    let said = say(&mut p, "/hlep");
    assert!(
        said.contains("unknown command /hlep; /help lists them"),
        "{said}"
    );
    let help = say(&mut p, "/help");
    for command in ["/session", "/new", "/quit", "//TEXT"] {
        assert!(help.contains(command), "{help}");
    }
    let said = say(&mut p, "/session");
    assert!(said.contains("session \"s1\" on sqlite://"), "{said}");
    assert!(say(&mut p, "Hi, I'm Alice").contains("Nice to meet you, Alice!"));
    // `//` sends a message that starts with `/`.
    say(&mut p, "//tmp is full");
    let said = say(&mut p, "/new");
    let fresh = said
        .split("statestore chat -s ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("no new id in {said}"))
        .to_owned();
    assert!(said.contains(&format!("new session \"{fresh}\"")), "{said}");
    assert!(say(&mut p, "What's my name?").contains("I don't know your name yet."));
    quit(p);
    let stored = texts(&env, "s1");
    assert_eq!(
        stored.iter().step_by(2).collect::<Vec<_>>(),
        ["Hi, I'm Alice", "/tmp is full"],
        "{stored:?}"
    );
    assert_eq!(texts(&env, &fresh).first().unwrap(), "What's my name?");
    let ids = env.ok(&["list", "--ids-only"]);
    assert_eq!(ids.lines().count(), 2, "{ids}");

    // /exit and /q leave too; a session left without a message is not stored.
    for leave in ["/exit", "/q"] {
        let mut p = chat(&env, &["-s", "untouched"], &[]);
        prompt(&mut p);
        p.send_line(leave).unwrap();
        p.exp_eof().unwrap();
    }
    assert_eq!(env.ok(&["list", "--ids-only"]).lines().count(), 2);
}

#[test]
fn the_history_is_kept_across_runs_beside_the_default_store() {
    let env = Env::new();
    let mut p = chat(&env, &[], &[]);
    prompt(&mut p);
    say(&mut p, "remember this line");
    quit(p);
    let file = env.path("home/chat_history");
    let kept = std::fs::read_to_string(&file).unwrap();
    assert!(kept.contains("remember this line"), "{kept}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its owner reads it: {mode:o}");
    }
    // The next run recalls it: up arrow twice (`/quit`, then the line).
    let mut p = chat(&env, &[], &[]);
    prompt(&mut p);
    p.send("\x1b[A\x1b[A").unwrap();
    p.send_line("").unwrap();
    prompt(&mut p);
    quit(p);
    let texts = texts(&env, "default");
    assert_eq!(
        texts.iter().step_by(2).collect::<Vec<_>>(),
        ["remember this line", "remember this line"]
    );

    // A history that cannot be read is a warning, never a failure.
    let env = Env::new();
    std::fs::create_dir_all(env.path("home/chat_history")).unwrap();
    let mut p = chat(&env, &[], &[]);
    let before = prompt(&mut p);
    assert!(
        before.contains("warning: cannot read the chat history"),
        "{before}"
    );
    let said = say(&mut p, "Hi, I'm Bea");
    assert!(said.contains("Nice to meet you, Bea!"), "{said}");
    assert!(
        said.contains("warning: cannot save the chat history"),
        "{said}"
    );
    quit(p);

    // Another store: the history still lives in the data directory, which
    // is not made for it alone.
    let env = Env::new();
    let store = env.sqlite("other.db");
    let mut p = chat(&env, &["--store", &store], &[]);
    prompt(&mut p);
    say(&mut p, "Hi");
    quit(p);
    assert!(
        !env.path("home").exists(),
        "no directory made for the history"
    );
}

#[test]
fn the_banner_names_the_model_and_its_endpoint_without_secrets() {
    let env = Env::new();
    let mut p = chat(
        &env,
        &[],
        &[
            ("OPENAI_API_KEY", "sk-very-secret-key"),
            ("OPENAI_BASE_URL", "http://bob:hunter2@127.0.0.1:9/v1"),
            ("OPENAI_MODEL", "my-model"),
        ],
    );
    let banner = prompt(&mut p);
    assert!(
        banner.contains("model my-model from openai at http://bob:***@127.0.0.1:9/v1"),
        "{banner}"
    );
    assert!(
        banner.contains("session \"default\" (new) on sqlite://"),
        "{banner}"
    );
    let all = banner + &quit(p);
    assert!(
        !all.contains("hunter2") && !all.contains("sk-very"),
        "{all}"
    );

    let env = Env::new();
    let mut p = chat(&env, &[], &[("OPENAI_API_KEY", "sk-x")]);
    let banner = prompt(&mut p);
    assert!(
        banner.contains("model gpt-4o-mini from openai at https://api.openai.com/v1"),
        "{banner}"
    );
    quit(p);

    let env = Env::new();
    let mut p = chat(&env, &[], &[]);
    assert!(prompt(&mut p).contains("the offline model"));
    quit(p);
}

#[test]
fn user_and_system_prompt_are_stored_with_the_first_message() {
    let env = Env::new();
    let args = ["-s", "s1", "--user", "alice", "--system", "You are terse."];
    // Left before any message: nothing is stored.
    let mut p = chat(&env, &args, &[]);
    prompt(&mut p);
    quit(p);
    assert_eq!(env.ok(&["list", "--ids-only"]), "");
    let mut p = chat(&env, &args, &[]);
    prompt(&mut p);
    say(&mut p, "Hi, I'm Alice");
    say(&mut p, "/new");
    say(&mut p, "Hi again");
    quit(p);
    let doc = show(&env, "s1");
    assert_eq!(doc["user_id"], "alice");
    assert_eq!(doc["system_prompt"], "You are terse.");
    let mine = env.ok(&["list", "--ids-only", "--user", "alice"]);
    assert_eq!(mine.lines().count(), 2, "/new's session too: {mine}");
}
