//! `show` on a terminal goes through a pager (`STATESTORE_PAGER`, `PAGER`,
//! `less`); piped, or with `--json`, it does not. The terminal is a real
//! pseudo-terminal, made by util-linux's `script`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::process::Command;

use common::{Env, RICH, export_file, numbered};

/// `args` run by the binary with its stdout on a pseudo-terminal, in the
/// environment of `env` plus `vars`; returns what reached the terminal.
fn on_a_terminal(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> String {
    let base = env.cmd();
    let mut line = String::from(env!("CARGO_BIN_EXE_statestore"));
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    cmd.current_dir(env.dir.path());
    cmd.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.env("PATH", std::env::var_os("PATH").unwrap());
    cmd.env("TERM", "xterm");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn show_pages_on_a_terminal_and_not_when_piped() {
    let env = Env::new();
    let file = env.path("in.jsonl");
    std::fs::write(&file, export_file(&numbered(1), RICH)).unwrap();
    env.ok(&["import", file.to_str().unwrap()]);
    let paged = env.path("paged.txt");
    let pager = format!("cat > '{}'", paged.display());

    // On a terminal: the pager gets the session, the terminal nothing of it.
    let screen = on_a_terminal(&env, &["show", "s00000"], &[("STATESTORE_PAGER", &pager)]);
    let text = std::fs::read_to_string(&paged).unwrap();
    assert!(text.contains("reply 2 to s00000"), "{text}");
    assert!(!screen.contains("reply 2 to s00000"), "{screen}");
    std::fs::remove_file(&paged).unwrap();

    // PAGER is the fallback, and LESS is set for it unless set already.
    let pager_env = format!(
        "echo \"LESS=$LESS\" > '{}'; cat > /dev/null",
        paged.display()
    );
    on_a_terminal(&env, &["show", "s00000"], &[("PAGER", &pager_env)]);
    assert_eq!(std::fs::read_to_string(&paged).unwrap(), "LESS=FRX\n");
    on_a_terminal(
        &env,
        &["show", "s00000"],
        &[("PAGER", &pager_env), ("LESS", "-S")],
    );
    assert_eq!(std::fs::read_to_string(&paged).unwrap(), "LESS=-S\n");
    std::fs::remove_file(&paged).unwrap();

    // `cat` or empty: no pager; --json: no pager.
    for (vars, json) in [
        (&[("PAGER", "cat")][..], false),
        (
            &[("STATESTORE_PAGER", ""), ("PAGER", pager.as_str())][..],
            false,
        ),
        (&[("STATESTORE_PAGER", pager.as_str())][..], true),
    ] {
        let args: &[&str] = if json {
            &["--json", "show", "s00000"]
        } else {
            &["show", "s00000"]
        };
        let screen = on_a_terminal(&env, args, vars);
        assert!(screen.contains("reply 2 to s00000"), "{vars:?}: {screen}");
        assert!(!paged.exists(), "{vars:?}: paged");
    }

    // Piped: no pager, whatever PAGER says.
    let run = env
        .cmd()
        .env("STATESTORE_PAGER", &pager)
        .args(["show", "s00000"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&run.stdout).contains("reply 2 to s00000"));
    assert!(!paged.exists(), "paged while piped");
}
