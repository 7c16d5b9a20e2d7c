//! Running the real `statestore` binary in a scratch environment.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers; each test binary uses a part"
)]

pub mod redis;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch home for one test: the default store, `HOME` and the XDG
/// directories all point into a temp dir, so no test touches the real home.
#[derive(Debug)]
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The default store's file in this environment.
    pub fn default_db(&self) -> PathBuf {
        self.dir.path().join("home/sessions.db")
    }

    /// A path in the scratch dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An `sqlite://` URL of a file in the scratch dir.
    pub fn sqlite(&self, name: &str) -> String {
        format!("sqlite://{}", self.path(name).display())
    }

    /// The binary, with a clean environment pointing into the scratch dir.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_statestore"));
        let root = self.dir.path();
        cmd.env("STATESTORE_HOME", root.join("home"))
            .env("HOME", root)
            .env("XDG_DATA_HOME", root.join("xdg"))
            .env_remove("STATESTORE_URL")
            .env_remove("STATESTORE_KEYS")
            .env_remove("STATESTORE_KEYS_FILE")
            .env_remove("STATESTORE_CONTEXT")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_MODEL")
            .env_remove("STATESTORE_LOG")
            // Telemetry only where a test asks for it.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
            .env_remove("OTEL_EXPORTER_OTLP_COMPRESSION")
            .env_remove("OTEL_TRACES_EXPORTER")
            .env_remove("OTEL_METRICS_EXPORTER")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .env_remove("OTEL_SDK_DISABLED")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the binary with `args` and returns what it did.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    /// Runs the binary with `args` and `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// Runs the binary and asserts that it succeeded; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        run.assert_code(0);
        run.stdout
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A JSON string literal.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// What one generated session holds.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Turns of user message + reply.
    pub turns: usize,
    /// Characters of each user message.
    pub text: usize,
    /// A tool call with its result in the first turn.
    pub tools: bool,
    /// A summary of the first two messages.
    pub summary: bool,
    /// A user id, metadata and a system prompt.
    pub extras: bool,
}

/// Session `id`'s line exactly as `statestore export` writes it (field
/// order, escaping, counters sorted), so a generated file can be compared
/// byte for byte with an export.
pub fn session_line(id: &str, n: u64, shape: Shape) -> String {
    let t = 1_700_000_000_000 + n * 1_000;
    let mut messages = Vec::new();
    for turn in 0..shape.turns {
        let at = t + turn as u64 * 10;
        let text: String = format!("turn {turn} of {id}: ")
            .chars()
            .chain("lorem ipsum dolor sit amet ".chars().cycle())
            .take(shape.text.max(8))
            .collect();
        messages.push(format!(
            r#"{{"role":"user","content":{},"timestamp":{at}}}"#,
            q(&text)
        ));
        if turn == 0 && shape.tools {
            messages.push(format!(
                r#"{{"role":"assistant","content":"","tool_calls":[{{"id":"call_{n}","name":"weather","arguments":{}}}],"timestamp":{}}}"#,
                q(r#"{"city":"Paris"}"#),
                at + 1
            ));
            messages.push(format!(
                r#"{{"role":"tool","content":{},"tool_call_id":"call_{n}","timestamp":{}}}"#,
                q(r#"{"celsius":21}"#),
                at + 2
            ));
        }
        messages.push(format!(
            r#"{{"role":"assistant","content":{},"timestamp":{}}}"#,
            q(&format!("reply {turn} to {id} ✓")),
            at + 3
        ));
    }
    let mut line = format!(r#"{{"id":{}"#, q(id));
    if shape.extras {
        line.push_str(&format!(r#","user_id":{}"#, q(&format!("user-{}", n % 7))));
    }
    line.push_str(&format!(r#","created_at":{t}"#));
    if shape.extras {
        line.push_str(r#","system_prompt":"You are terse.","metadata":{"plan":"pro"}"#);
    }
    let turns = shape.turns as u64;
    line.push_str(&format!(
        r#","counters":{{"completion_tokens":{},"model_calls":{},"prompt_tokens":{},"turns":{turns}}}"#,
        turns * 5,
        turns + u64::from(shape.tools),
        turns * 40
    ));
    if shape.summary {
        line.push_str(&format!(
            r#","summaries":[{{"covers":{{"start":0,"end":2}},"content":{},"created_at":{}}}]"#,
            q(&format!("{id} asked about the weather")),
            t + 999
        ));
    }
    line.push_str(&format!(r#","messages":[{}]}}"#, messages.join(",")));
    line.push('\n');
    line
}

/// The header line of a plaintext export.
pub const HEADER: &str = "{\"format\":\"statestore-export\",\"version\":2,\"encrypted\":false}\n";

/// The header line exports had before it said whether the values are
/// encrypted.
pub const UNSAID_HEADER: &str = "{\"format\":\"statestore-export\",\"version\":2}\n";

/// A whole export file of `ids` (sorted here, as export sorts them).
pub fn export_file(ids: &[String], shape: Shape) -> String {
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort();
    let mut file = String::from(HEADER);
    for (n, id) in ids.iter().enumerate() {
        file.push_str(&session_line(id, n as u64, shape));
    }
    file
}

/// `n` ids `s00000`, `s00001`, ….
pub fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i:05}")).collect()
}

/// Rich sessions: tool calls, a summary, user ids, metadata.
pub const RICH: Shape = Shape {
    turns: 3,
    text: 60,
    tools: true,
    summary: true,
    extras: true,
};
