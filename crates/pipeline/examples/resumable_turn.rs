//! Resumable turns: a process is killed (SIGKILL) in the middle of a
//! turn's tool loop; another process retries the turn with its turn id and
//! goes on from the last completed round. Every tool call ran exactly once,
//! and the stored turn is the one an uninterrupted run stores.
//!
//! On a SQLite file, and on Redis too when `REDIS_URL` is set (CI sets it):
//!
//! ```text
//! cargo run -p pipeline --example resumable_turn
//! ```
#![allow(clippy::print_stdout, reason = "an example prints")]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pipeline::{
    ChatRequest, ChatResponse, Error, ExecOptions, FinishReason, Pipeline, Provider, ToolContext,
    ToolHandler, ToolSpec, Usage, counters,
};
use statestore_core::{BoxError, IdempotencyKey, Message, Role, SessionId, Store, ToolCall};

/// Tool rounds the model asks for before its answer.
const ROUNDS: usize = 3;
/// The child process stops answering when asked for this round's reply.
const HANG_AT: usize = 2;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// A model that calls tool `count` once per round, `ROUNDS` times, then
/// answers; call ids depend on the round only, so every process asks the
/// same. With `hang`, it tells the parent (the marker file) and never
/// answers once `HANG_AT` rounds are done: the moment to kill it.
#[derive(Debug)]
struct Planner {
    hang: Option<PathBuf>,
}

#[async_trait]
impl Provider for Planner {
    fn name(&self) -> &str {
        "planner"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let done = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .count();
        if let Some(marker) = &self.hang
            && done == HANG_AT
        {
            // Rounds 1 and 2 are recorded by now: hang until killed.
            let _ = std::fs::write(marker, "ready");
            std::future::pending::<()>().await;
        }
        let message = if done < ROUNDS {
            let call = ToolCall::new(format!("call_{done}"), "count", format!("{{\"n\":{done}}}"));
            Message::assistant("").with_tool_calls(vec![call])
        } else {
            Message::assistant(format!("Counted to {ROUNDS}."))
        };
        Ok(ChatResponse {
            message,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 2,
            },
            finish_reason: FinishReason::Stop,
        })
    }
}

/// A tool with a side effect: each run appends its call id and its
/// idempotency key to a ledger file (synced), as a payment would.
struct Ledger {
    path: PathBuf,
}

#[async_trait]
impl ToolHandler for Ledger {
    fn specs(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "count".into(),
            description: "Counts one".into(),
            parameters: serde_json::json!({"type": "object"}),
        }]
    }

    async fn call(&self, _: &ToolCall) -> Result<String, BoxError> {
        Err("called without its context".into())
    }

    async fn call_in(&self, ctx: &ToolContext, call: &ToolCall) -> Result<String, BoxError> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(file, "{} {}", call.id, ctx.idempotency_key)?;
        file.sync_all()?;
        Ok(format!("counted {}", call.arguments))
    }
}

/// The lines of a ledger.
fn ledger(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn open(url: &str) -> Result<Arc<dyn Store>> {
    Ok(match url.strip_prefix("sqlite://") {
        Some(path) => Arc::new(statestore_sqlite::SqliteStore::open(path).await?),
        None => Arc::new(
            statestore_redis::RedisStore::builder()
                .prefix("resumable:")
                .connect(url)
                .await?,
        ),
    })
}

/// One turn, `turn-1` of session `id`, on the store at `url`.
async fn run_turn(url: &str, id: &str, ledger: &Path, hang: Option<PathBuf>) -> Result<()> {
    let pipe = Pipeline::builder(open(url).await?, Arc::new(Planner { hang }))
        .tools(Arc::new(Ledger {
            path: ledger.to_path_buf(),
        }))
        .build();
    let options = ExecOptions::new().turn_id(IdempotencyKey::new("turn-1")?);
    let done = pipe
        .execute_with(id, Role::User, "Count to three", options)
        .await?;
    println!(
        "  {id}: {:?} ({} messages stored)",
        done.reply.text(),
        done.stored
    );
    Ok(())
}

/// What a stored turn says: roles, texts and tool calls, without the
/// timestamps and token counts that differ from run to run.
fn shape(messages: &[Arc<Message>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let calls: Vec<String> = m
                .tool_calls()
                .iter()
                .map(|c| format!("{}({})", c.name, c.arguments))
                .collect();
            format!("{} {:?} {calls:?} {:?}", m.role, m.text(), m.tool_call_id())
        })
        .collect()
}

async fn crash_and_resume(url: &str, dir: &Path) -> Result<()> {
    println!("{url}");
    let (crashed, reference) = (dir.join("crashed.ledger"), dir.join("reference.ledger"));
    let marker = dir.join("marker");
    for file in [&crashed, &reference, &marker] {
        let _ = std::fs::remove_file(file);
    }

    // The first process, killed between tool rounds 2 and 3.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env("RESUMABLE_CHILD", url)
        .arg(&crashed)
        .arg(&marker)
        .spawn()?;
    let started = Instant::now();
    while !marker.exists() {
        if started.elapsed() > Duration::from_secs(60) || child.try_wait()?.is_some() {
            let _ = child.kill();
            return Err("the child never reached the tool loop's middle".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill()?; // SIGKILL: no destructor, no flush, nothing after this
    child.wait()?;
    let before = ledger(&crashed);
    println!("  killed after {} tool calls", before.len());
    assert_eq!(before.len(), HANG_AT, "{before:?}");

    // Another process (here, this one) retries the turn with its turn id.
    run_turn(url, "crashed", &crashed, None).await?;
    let after = ledger(&crashed);
    let ids: Vec<&str> = after.iter().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(ids, ["call_0", "call_1", "call_2"], "each call ran once");

    // The same turn, never interrupted.
    run_turn(url, "reference", &reference, None).await?;
    let store = open(url).await?;
    let load = |id: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .load(&SessionId::new(id)?)
                .await?
                .ok_or_else(|| Box::<dyn std::error::Error>::from("not stored"))
        }
    };
    let (crashed, reference) = (load("crashed").await?, load("reference").await?);
    assert_eq!(shape(&crashed.messages), shape(&reference.messages));
    assert_eq!(
        crashed.messages.len(),
        2 + 2 * ROUNDS,
        "the turn is stored once"
    );
    // Every model call was counted once: the killed process's completed
    // rounds through the recorded progress, the hung call not at all.
    assert_eq!(crashed.counters, reference.counters);
    assert_eq!(
        crashed.counters.get(counters::MODEL_CALLS),
        Some(&(1 + ROUNDS as u64))
    );
    for id in ["crashed", "reference"] {
        store.delete(&SessionId::new(id)?).await?;
    }
    println!("  resumed: each tool call ran once; the stored turn equals an uninterrupted one");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    if let Ok(url) = std::env::var("RESUMABLE_CHILD") {
        let mut args = std::env::args_os().skip(1);
        let (Some(ledger), Some(marker)) = (args.next(), args.next()) else {
            return Err("usage: RESUMABLE_CHILD=url resumable_turn LEDGER MARKER".into());
        };
        run_turn(&url, "crashed", Path::new(&ledger), Some(marker.into())).await?;
        return Err("the child was meant to be killed".into());
    }
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("turns.db").display());
    crash_and_resume(&sqlite, dir.path()).await?;
    if let Ok(redis) = std::env::var("REDIS_URL") {
        crash_and_resume(&redis, dir.path()).await?;
    }
    Ok(())
}
