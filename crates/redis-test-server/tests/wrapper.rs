//! `ServerBuilder::wrapper`: redis-server started under another command
//! (valgrind in `cargo xtask bench --server-work`; a shell here).

use std::error::Error;
use std::io;

use redis_test_server::RedisServer;

type TestResult = Result<(), Box<dyn Error>>;

/// A wrapper that leaves a file in its working directory, then `exec`s the
/// server in its own process, as valgrind runs its guest.
const SHELL_WRAPPER: [&str; 4] = ["sh", "-c", "echo wrapped > wrapper.txt; exec \"$@\"", "sh"];

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(key)?.strip_prefix(':'))
}

#[test]
fn a_wrapped_server_runs_in_its_directory_with_the_wrapper_pid() -> TestResult {
    let mut server = RedisServer::builder().wrapper(SHELL_WRAPPER).start()?;
    assert_eq!(server.cli(&["PING"])?, "PONG");
    let written = std::fs::read_to_string(server.dir().join("wrapper.txt"))?;
    assert_eq!(written.trim(), "wrapped");
    let pid = server.pid().ok_or("no pid")?;
    let info = server.cli(&["INFO", "server"])?;
    assert_eq!(field(&info, "process_id"), Some(pid.to_string().as_str()));
    // A restart runs the wrapper again.
    server.cli(&["SET", "k", "v"])?;
    server.restart()?;
    assert_eq!(server.cli(&["PING"])?, "PONG");
    assert_ne!(server.pid(), Some(pid));
    Ok(())
}

#[test]
fn a_missing_wrapper_is_named() {
    let err = RedisServer::builder()
        .wrapper(["valgrind-that-is-not-installed", "--tool=callgrind"])
        .start()
        .err();
    let err = err.as_ref().map(|e| (e.kind(), e.to_string()));
    let Some((io::ErrorKind::NotFound, message)) = err else {
        panic!("expected NotFound, got {err:?}");
    };
    assert!(
        message.contains("valgrind-that-is-not-installed") && message.contains("wrapper"),
        "{message}"
    );
}

#[test]
fn an_empty_wrapper_program_is_refused() {
    let err = RedisServer::builder().wrapper([""]).start().err();
    assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
}

#[test]
fn no_wrapper_runs_the_server_directly() -> TestResult {
    let server = RedisServer::builder()
        .wrapper(Vec::<String>::new())
        .start()?;
    assert_eq!(server.cli(&["PING"])?, "PONG");
    assert!(!server.dir().join("wrapper.txt").exists());
    Ok(())
}
