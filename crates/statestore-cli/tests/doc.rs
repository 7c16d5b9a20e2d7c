//! The doc is a test: every command example of `docs/cli.md` is run here,
//! in the order the page shows them, and what it printed is compared with
//! what the page says it prints. The page cannot drift from the program.
//!
//! # What counts as an example
//!
//! A fenced ```` ```text ```` block whose lines start with `$ ` is a
//! transcript: each `$ COMMAND` line is run with `bash -c` (so pipes,
//! redirections and shell helpers such as `head`, `grep` or `sed` work as
//! on the page), and the lines under it, up to the next `$ `, are what it
//! prints: stdout and stderr interleaved as a terminal shows them (the
//! shell's stderr is its stdout), then `[exit N]` when the exit code is not
//! 0. Blocks without a `$ ` line (a config snippet, a line quoted alone) are
//! prose, not examples.
//!
//! The expected text is matched with [snapbox]'s wildcards: `[..]` within a
//! line (a turn id, a timestamp, a duration), `...` on a line of its own for
//! lines left out. The page uses them only where the output is not the same
//! from run to run.
//!
//! Two HTML comments, invisible on the rendered page, steer the run:
//!
//! - `<!-- not run: WHY -->` right before a block leaves that block out
//!   (the interactive chat needs a terminal: `tests/interactive.rs` drives
//!   it; the shell-completion installs write into the shell's directories).
//! - `<!-- run: COMMANDS -->` runs `COMMANDS` at that point, unchecked but
//!   required to succeed: the setup an example needs that the page's story
//!   does not show (a fresh store, a key file from another deployment, a
//!   session changed behind the store's back).
//!
//! # The scratch world
//!
//! One temporary directory for the whole page, so the state carries over
//! from example to example as the page's story does. It is the working
//! directory (holding a copy of `docs/examples/`, the files the page
//! imports), `HOME`, and `STATESTORE_HOME` is its `home/`, so the default
//! store is `home/sessions.db`. The environment is cleared: no
//! `OPENAI_API_KEY` (the offline model answers), no `STATESTORE_*`,
//! `NO_COLOR=1`, `TZ=UTC`, umask 022; `PATH` starts with the directory of
//! the `statestore` binary under test. The directory's path is shown as
//! `/tmp/demo` in the compared output.
//!
//! The page's Redis servers, `redis://127.0.0.1:6390` (AOF, fsync every
//! second) and `redis://127.0.0.1:6391` (`allkeys-lru` under a 64 MiB limit, no
//! persistence),
//! are real servers started for this test on free ports; the port is
//! swapped into each command and back in its output, so the page keeps
//! readable fixed ports.
//!
//! # Why not trycmd
//!
//! `trycmd` runs markdown transcripts too, but each in a fresh sandbox of
//! its own files, and it cannot start the Redis servers the page talks to
//! or rewrite their ports; it also runs the binary directly, without a
//! shell, so the page's pipes and `head`/`grep` lines would not run. A small
//! harness over snapbox's matching does all of that in a page of code.
//!
//! # Updating the page
//!
//! `SNAPSHOTS=overwrite cargo test -p statestore-cli --test doc` writes
//! what each differing command printed into `docs/cli.md`, keeping the
//! wildcards that still match (snapbox aligns line by line: where lines
//! were added or removed, a block loses its wildcards). Review the diff,
//! and put back `[..]` where a value changes from run to run.
//!
//! Besides the binary and `redis-server`, the page's commands need `bash`,
//! coreutils, `grep`, `sed`, `openssl` (key files) and `sqlite3` (one
//! session changed behind the store's back).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::redis::RedisServer;
use snapbox::{Assert, Data};

/// The page, from this crate's directory.
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
/// The files the page uses, copied into the working directory.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/examples");
/// How the scratch directory is shown on the page.
const SHOWN_ROOT: &str = "/tmp/demo";

/// One thing to do, in page order.
#[derive(Debug)]
enum Step {
    /// A hidden `<!-- run: … -->`: must succeed, output not compared.
    Setup { line: usize, script: String },
    /// A `$ COMMAND` and the lines under it.
    Example {
        /// 1-based line of the `$ ` in the page.
        line: usize,
        command: String,
        /// 0-based range of the expected lines in the page.
        expected: std::ops::Range<usize>,
    },
}

/// The steps of the page `text`.
fn parse(text: &str) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    let mut skip_next_block = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some(rest) = line.strip_prefix("<!-- not run:") {
            assert!(
                rest.trim_end().ends_with("-->"),
                "docs/cli.md:{}: a `not run` marker is one line",
                i + 1
            );
            skip_next_block = Some(i + 1);
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("<!-- run:") {
            let start = i + 1;
            let mut script = String::new();
            let mut rest = rest.to_owned();
            loop {
                if let Some(body) = rest.trim_end().strip_suffix("-->") {
                    script.push_str(body);
                    break;
                }
                script.push_str(&rest);
                script.push('\n');
                i += 1;
                assert!(
                    i < lines.len(),
                    "docs/cli.md:{start}: unclosed `run` comment"
                );
                rest = lines[i].to_owned();
            }
            steps.push(Step::Setup {
                line: start,
                script,
            });
            i += 1;
            continue;
        }
        let Some(lang) = line.strip_prefix("```") else {
            i += 1;
            continue;
        };
        // A fence: find its end.
        let body_start = i + 1;
        let mut end = body_start;
        while end < lines.len() && !lines[end].trim_start().starts_with("```") {
            end += 1;
        }
        let body = body_start..end;
        i = end + 1;
        let skipped = skip_next_block.take();
        let is_transcript = matches!(lang.trim(), "text" | "console")
            && lines[body.clone()].iter().any(|l| l.starts_with("$ "));
        if !is_transcript {
            assert!(
                skipped.is_none(),
                "docs/cli.md:{}: `not run` before a block that is not a transcript",
                skipped.unwrap_or_default()
            );
            continue;
        }
        if skipped.is_some() {
            continue;
        }
        assert!(
            lines[body_start].starts_with("$ "),
            "docs/cli.md:{}: a transcript starts with a `$ ` line",
            body_start + 1
        );
        let mut j = body_start;
        while j < end {
            let command = lines[j].strip_prefix("$ ").unwrap().to_owned();
            let from = j + 1;
            j = from;
            while j < end && !lines[j].starts_with("$ ") {
                j += 1;
            }
            steps.push(Step::Example {
                line: from,
                command,
                expected: from..j,
            });
        }
    }
    steps
}

/// The scratch world the page's commands run in.
struct World {
    root: tempfile::TempDir,
    /// The page's port, and the one of the server standing in for it.
    ports: Vec<(u16, u16)>,
    /// Kept running until the test ends.
    _servers: Vec<RedisServer>,
}

impl World {
    fn new(page: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(EXAMPLES).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), root.path().join(entry.file_name())).unwrap();
        }
        let mut ports = Vec::new();
        let mut servers = Vec::new();
        // Started only when the page uses them.
        if page.contains("127.0.0.1:6390") {
            let server = RedisServer::builder()
                .config("appendonly", "yes")
                .config("appendfsync", "everysec")
                .start()
                .unwrap();
            ports.push((6390, server.port()));
            servers.push(server);
        }
        if page.contains("127.0.0.1:6391") {
            let server = RedisServer::builder()
                .config("maxmemory", "64mb")
                .config("maxmemory-policy", "allkeys-lru")
                .start()
                .unwrap();
            ports.push((6391, server.port()));
            servers.push(server);
        }
        Self {
            root,
            ports,
            _servers: servers,
        }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// Runs `script` with `bash -c`; what it printed (stdout and stderr
    /// interleaved, as the page shows them) and its exit code.
    fn run(&self, script: &str) -> (String, i32) {
        let mut script = script.to_owned();
        for (shown, real) in &self.ports {
            script = script.replace(&format!("127.0.0.1:{shown}"), &format!("127.0.0.1:{real}"));
        }
        let bin: PathBuf = Path::new(env!("CARGO_BIN_EXE_statestore"))
            .parent()
            .unwrap()
            .to_owned();
        let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .unwrap();
        let root = self.path();
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("exec 2>&1; umask 022\n{script}"))
            .current_dir(root)
            .env_clear()
            .env("PATH", path)
            .env("HOME", root)
            .env("STATESTORE_HOME", root.join("home"))
            .env("NO_COLOR", "1")
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        for shown_as in [root.to_owned(), root.canonicalize().unwrap()] {
            text = text.replace(shown_as.to_str().unwrap(), SHOWN_ROOT);
        }
        for (shown, real) in &self.ports {
            text = text.replace(&format!("127.0.0.1:{real}"), &format!("127.0.0.1:{shown}"));
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            writeln!(text, "[exit {code}]").unwrap();
        }
        (text, code)
    }
}

#[test]
fn every_example_of_the_cli_page_prints_what_the_page_shows() {
    let page = std::fs::read_to_string(DOC).unwrap();
    let lines: Vec<&str> = page.lines().collect();
    let steps = parse(&page);
    let examples = steps
        .iter()
        .filter(|s| matches!(s, Step::Example { .. }))
        .count();
    assert!(
        examples > 50,
        "only {examples} examples found in docs/cli.md"
    );

    let world = World::new(&page);
    let assert = Assert::new().normalize_paths(false);
    let overwrite = std::env::var("SNAPSHOTS").is_ok_and(|v| v == "overwrite");
    let mut failures = Vec::new();
    let mut rewrites = Vec::new();
    for step in &steps {
        match step {
            Step::Setup { line, script } => {
                let (out, code) = world.run(script);
                assert_eq!(
                    code, 0,
                    "docs/cli.md:{line}: the setup failed:\n{script}\n{out}"
                );
            }
            Step::Example {
                line,
                command,
                expected,
            } => {
                let (actual, _) = world.run(command);
                let mut want = lines[expected.clone()].join("\n");
                if !want.is_empty() {
                    want.push('\n');
                }
                let (normalized, _) =
                    assert.normalize(Data::text(actual.clone()), Data::text(want.clone()));
                let shown = normalized.render().unwrap_or_default();
                if shown != want {
                    let diff = assert
                        .try_eq(
                            Some(&"what it printed"),
                            Data::text(actual),
                            Data::text(want),
                        )
                        .err()
                        .map_or_else(|| "(no diff)".to_owned(), |e| e.to_string());
                    failures.push(format!(
                        "docs/cli.md:{line}: `$ {command}` printed something else:\n{diff}"
                    ));
                    rewrites.push((expected.clone(), shown));
                }
            }
        }
    }
    if overwrite && !rewrites.is_empty() {
        let mut new: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        for (range, shown) in rewrites.iter().rev() {
            new.splice(range.clone(), shown.lines().map(str::to_owned));
        }
        let mut text = new.join("\n");
        text.push('\n');
        std::fs::write(DOC, text).unwrap();
        eprintln!(
            "SNAPSHOTS=overwrite: rewrote {} examples of docs/cli.md",
            rewrites.len()
        );
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of the {examples} examples of docs/cli.md differ (later ones may follow from earlier ones; \
         `SNAPSHOTS=overwrite` writes what they printed into the page):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The page spells out `trip.jsonl`'s session line: it is that line.
#[test]
fn the_format_example_is_the_example_file() {
    let page = std::fs::read_to_string(DOC).unwrap();
    let marker = "<!-- tests/doc.rs checks this block against the second line of docs/examples/trip.jsonl -->";
    let (_, after) = page
        .split_once(marker)
        .expect("the marker before the format's example");
    let block = after
        .trim_start()
        .strip_prefix("```json\n")
        .and_then(|b| b.split_once("\n```"))
        .expect("a ```json block right after the marker")
        .0;
    let file = std::fs::read_to_string(format!("{EXAMPLES}/trip.jsonl")).unwrap();
    let line = file.lines().nth(1).expect("a session line");
    let shown: serde_json::Value = serde_json::from_str(block).unwrap();
    let real: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        shown, real,
        "docs/cli.md's example of the format is not trip.jsonl's session"
    );
}
