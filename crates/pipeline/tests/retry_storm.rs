//! A model-checked retry storm: random sequences of executes — new turns
//! and retries of earlier turn ids, with and without tool rounds — mixed
//! with the seed's trim-by-save, compaction, forks and deletes, and with
//! faults injected (a write's reply lost after it applied, a failed model
//! call, a failed tool, a crash between tool rounds), checked after every
//! step against a model of what must hold:
//!
//! - no turn is stored twice, and no reply is another turn's;
//! - a turn known stored is replayed (or, after a rewrite of the history,
//!   refused as `TurnRewritten`), never run again; one known not stored runs;
//! - no tool call succeeds twice (by the key `ToolContext` derives);
//! - the session's `turns` and `model_calls` counters move exactly by what
//!   each execute reports.
//!
//! On the memory store and SQLite (`STORM_CASES` cases each, default 48),
//! and a shorter run on real Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use context_window::{CharEstimate, WindowPolicy};
use pipeline::{
    ChatRequest, ChatResponse, Error, ExecOptions, FinishReason, Pipeline, Provider, ToolContext,
    ToolHandler, ToolSpec, Usage, counters,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis_test_server::RedisServer;
use statestore_core::{
    Append, Appended, BoxError, ConversationState, Expect, IdempotencyKey, ListPage, ListQuery,
    Message, Metadata, Pending, RecentState, Result as StoreResult, Role, SessionId, Store,
    ToolCall, Version, WriteOutcome,
};

/// What goes wrong in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// The turn's write applies, its reply is lost (a timeout).
    LostReply,
    /// The next model call fails.
    FailModel,
    /// The next tool call fails.
    FailTool,
    /// The process "dies" at the model call after the first tool round:
    /// the execute is dropped there.
    Crash,
}

#[derive(Clone, Debug)]
enum Op {
    /// Turn `turn` (its id `t<turn>`), asking for `rounds` tool rounds.
    Exec {
        turn: u8,
        rounds: u8,
        fault: Fault,
    },
    /// The seed's trim: load, keep the newest `n`, save.
    Trim(u8),
    /// `context_window::compact` to a window of 4 messages.
    Compact,
    /// Fork to a new session and go on there.
    Fork,
    Delete,
}

fn op() -> impl Strategy<Value = Op> {
    let fault = prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::LostReply),
        1 => Just(Fault::FailModel),
        1 => Just(Fault::FailTool),
        1 => Just(Fault::Crash),
    ];
    prop_oneof![
        10 => (0u8..6, 0u8..3, fault).prop_map(|(turn, rounds, fault)| Op::Exec { turn, rounds, fault }),
        1 => (1u8..6).prop_map(Op::Trim),
        1 => Just(Op::Compact),
        1 => Just(Op::Fork),
        1 => Just(Op::Delete),
    ]
}

/// The faults armed for the current step, shared by the store, the model
/// and the tool.
#[derive(Debug, Default)]
struct Faults {
    lose_reply: AtomicBool,
    fail_model: AtomicBool,
    fail_tool: AtomicBool,
    crash: AtomicBool,
    crashed: tokio::sync::Notify,
}

impl Faults {
    fn arm(&self, fault: Fault) {
        self.lose_reply
            .store(fault == Fault::LostReply, Ordering::SeqCst);
        self.fail_model
            .store(fault == Fault::FailModel, Ordering::SeqCst);
        self.fail_tool
            .store(fault == Fault::FailTool, Ordering::SeqCst);
        self.crash.store(fault == Fault::Crash, Ordering::SeqCst);
    }
}

/// A model whose answers depend on the turn alone: the newest user message
/// `t<n> r<k>` asks for `k` tool rounds (call ids `c<round>`), then the
/// reply `reply to t<n>`.
#[derive(Debug)]
struct Planner {
    faults: Arc<Faults>,
}

#[async_trait]
impl Provider for Planner {
    fn name(&self) -> &str {
        "planner"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let at = request
            .messages
            .iter()
            .rposition(|m| m.role == Role::User)
            .expect("a user message");
        let text = request.messages[at].text().into_owned();
        let (turn, rounds) = text.split_once(' ').expect("t<n> r<k>");
        let rounds: usize = rounds.trim_start_matches('r').parse().expect("r<k>");
        let done = request.messages[at..]
            .iter()
            .filter(|m| m.role == Role::Tool)
            .count();
        if done == 1 && self.faults.crash.swap(false, Ordering::SeqCst) {
            self.faults.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        if self.faults.fail_model.swap(false, Ordering::SeqCst) {
            return Err(Error::Transport("the model is unreachable".into()));
        }
        let message = if done < rounds {
            Message::assistant("").with_tool_calls(vec![ToolCall::new(
                format!("c{done}"),
                "note",
                turn,
            )])
        } else {
            Message::assistant(format!("reply to {turn}"))
        };
        Ok(ChatResponse {
            message,
            usage: Usage {
                prompt_tokens: 7,
                completion_tokens: 3,
            },
            finish_reason: FinishReason::Stop,
        })
    }
}

/// A tool with a side effect: successful runs per (session, key).
#[derive(Debug)]
struct Note {
    faults: Arc<Faults>,
    ledger: Mutex<HashMap<(SessionId, String), u32>>,
}

#[async_trait]
impl ToolHandler for Note {
    fn specs(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "note".into(),
            description: "Notes something down".into(),
            parameters: serde_json::json!({"type": "object"}),
        }]
    }
    async fn call(&self, _: &ToolCall) -> Result<String, BoxError> {
        Err("called without its context".into())
    }
    async fn call_in(&self, ctx: &ToolContext, call: &ToolCall) -> Result<String, BoxError> {
        if self.faults.fail_tool.swap(false, Ordering::SeqCst) {
            return Err("the tool failed".into());
        }
        let mut ledger = self.ledger.lock().unwrap();
        let runs = ledger
            .entry((ctx.session_id.clone(), ctx.idempotency_key.clone()))
            .or_default();
        *runs += 1;
        assert_eq!(
            *runs, 1,
            "tool call {} of {} ran twice",
            call.id, ctx.turn_id
        );
        Ok(format!("noted {}", call.arguments))
    }
}

/// A real store whose next keyed write can lose its reply after applying.
#[derive(Debug)]
struct Lossy {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
}

#[async_trait]
impl Store for Lossy {
    async fn load_with(
        &self,
        id: &SessionId,
        options: statestore_core::Load,
    ) -> StoreResult<Option<ConversationState>> {
        self.inner.load_with(id, options).await
    }
    async fn load_recent_as(
        &self,
        id: &SessionId,
        read: statestore_core::Recent,
    ) -> StoreResult<Option<RecentState>> {
        self.inner.load_recent_as(id, read).await
    }
    async fn save_with(
        &self,
        state: &ConversationState,
        options: statestore_core::Save,
    ) -> StoreResult<Version> {
        self.inner.save_with(state, options).await
    }
    async fn append_with(&self, id: &SessionId, append: Append) -> StoreResult<Appended> {
        let keyed = append.key.is_some();
        let done = self.inner.append_with(id, append).await?;
        if keyed && self.faults.lose_reply.swap(false, Ordering::SeqCst) {
            return Err(statestore_core::Error::Timeout {
                operation: "append",
                after: std::time::Duration::from_secs(1),
            });
        }
        Ok(done)
    }
    async fn fork(&self, source: &SessionId, target: &SessionId) -> StoreResult<Version> {
        self.inner.fork(source, target).await
    }
    async fn delete_with(
        &self,
        id: &SessionId,
        options: statestore_core::Delete,
    ) -> StoreResult<bool> {
        self.inner.delete_with(id, options).await
    }
    async fn exists(&self, id: &SessionId) -> StoreResult<bool> {
        self.inner.exists(id).await
    }
    async fn list(&self, query: &ListQuery) -> StoreResult<ListPage> {
        self.inner.list(query).await
    }
    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> StoreResult<Version> {
        self.inner.merge_metadata(id, patch, expect).await
    }
    async fn add_summary_with(
        &self,
        id: &SessionId,
        add: statestore_core::AddSummary,
    ) -> StoreResult<Version> {
        self.inner.add_summary_with(id, add).await
    }
    async fn touch(&self, id: &SessionId) -> StoreResult<bool> {
        self.inner.touch(id).await
    }
    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> StoreResult<()> {
        self.inner.put_pending(id, key, pending).await
    }
    async fn load_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Pending>> {
        self.inner.load_pending(id, key).await
    }
}

/// What the model knows of one turn id in the current session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// Stored; `rewritten` once a save replaced the history since.
    Stored { rewritten: bool },
}

/// `turns` and `model_calls` of the session (0 when it does not exist).
async fn counted(store: &dyn Store, id: &SessionId) -> (u64, u64) {
    let counters = store
        .load(id)
        .await
        .unwrap()
        .map(|s| s.counters)
        .unwrap_or_default();
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    (get(counters::TURNS), get(counters::MODEL_CALLS))
}

/// Runs `ops` on a fresh session of `store` and checks every step.
async fn storm(store: Arc<dyn Store>, ops: Vec<Op>) {
    let faults = Arc::new(Faults::default());
    let store: Arc<dyn Store> = Arc::new(Lossy {
        inner: store,
        faults: Arc::clone(&faults),
    });
    let tools = Arc::new(Note {
        faults: Arc::clone(&faults),
        ledger: Mutex::default(),
    });
    let pipe = Pipeline::builder(
        Arc::clone(&store),
        Arc::new(Planner {
            faults: Arc::clone(&faults),
        }),
    )
    .tools(tools.clone())
    .build();
    let mut session = SessionId::new("storm").unwrap();
    let mut forks = 0;
    let mut known: BTreeMap<u8, Known> = BTreeMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        let before = counted(&*store, &session).await;
        match op {
            Op::Exec {
                turn,
                rounds,
                fault,
            } => {
                faults.arm(fault);
                // Turns of a fork are its own (it remembers no turn ids of
                // the source, whose turns it holds): named apart.
                let name = format!("t{turn}-g{forks}");
                let turn_id = IdempotencyKey::new(&name).unwrap();
                let exec = pipe.execute_with(
                    session.as_str(),
                    Role::User,
                    format!("{name} r{rounds}"),
                    ExecOptions::new().turn_id(turn_id),
                );
                let crashed = faults.crashed.notified();
                tokio::pin!(exec, crashed);
                let outcome = tokio::select! {
                    r = &mut exec => Some(r),
                    () = &mut crashed => None, // the execute is dropped here
                };
                faults.arm(Fault::None);
                let after = counted(&*store, &session).await;
                let delta = (after.0 - before.0, after.1 - before.1);
                let was = known.get(&turn).copied();
                let at = format!("step {step}: {op:?}, known {was:?}");
                match outcome {
                    None => {
                        assert_eq!(was, None, "{at}: a stored turn ran again");
                        assert_eq!(delta, (0, 0), "{at}: a crashed turn wrote");
                    }
                    Some(Ok(done)) => {
                        assert_eq!(done.reply.text(), format!("reply to {name}"), "{at}");
                        match was {
                            // After a rewrite, found by the reply's stamp.
                            Some(Known::Stored { .. }) => {
                                assert!(done.replayed, "{at}: {done:?}");
                                assert_eq!(delta, (0, 0), "{at}: a replay counted");
                            }
                            None => {
                                assert!(!done.replayed, "{at}: an unknown turn replayed");
                                assert_eq!(delta, (1, done.model_calls), "{at}");
                                known.insert(turn, Known::Stored { rewritten: false });
                            }
                        }
                    }
                    Some(Err(e)) => match (was, &e) {
                        (Some(Known::Stored { rewritten: true }), Error::TurnRewritten { .. }) => {
                            assert_eq!(e.write_outcome(), WriteOutcome::Written);
                        }
                        (None, Error::Save { .. }) if fault == Fault::LostReply => {
                            assert_eq!(e.write_outcome(), WriteOutcome::Unknown, "{at}");
                            assert_eq!(delta.0, 1, "{at}: the lost write applied once");
                            known.insert(turn, Known::Stored { rewritten: false });
                        }
                        (None, Error::Transport(_)) if fault == Fault::FailModel => {
                            assert_eq!(delta, (0, 0), "{at}");
                        }
                        (None, Error::Tool { .. }) if fault == Fault::FailTool => {
                            assert_eq!(delta, (0, 0), "{at}");
                        }
                        _ => panic!("{at}: unexpected {e}"),
                    },
                }
            }
            Op::Trim(n) => {
                if let Some(mut state) = store.load(&session).await.unwrap() {
                    state.keep_last(usize::from(n));
                    store
                        .save(&state, Expect::Version(state.version))
                        .await
                        .unwrap();
                    for k in known.values_mut() {
                        *k = Known::Stored { rewritten: true };
                    }
                }
            }
            Op::Compact => {
                let policy = WindowPolicy::default().max_messages(4);
                let compacted = context_window::compact(&*store, &session, &policy, &CharEstimate)
                    .await
                    .unwrap();
                // A compaction that removes nothing saves nothing.
                if compacted.is_some_and(|c| c.removed > 0) {
                    for k in known.values_mut() {
                        *k = Known::Stored { rewritten: true };
                    }
                }
            }
            Op::Fork => {
                if store.exists(&session).await.unwrap() {
                    forks += 1;
                    let target = SessionId::new(format!("storm-fork-{forks}")).unwrap();
                    store.fork(&session, &target).await.unwrap();
                    assert_eq!(counted(&*store, &target).await, before, "a fork's counters");
                    // The fork remembers no turn ids: its turns are new.
                    session = target;
                    known.clear();
                }
            }
            Op::Delete => {
                store.delete(&session).await.unwrap();
                known.clear();
                tools
                    .ledger
                    .lock()
                    .unwrap()
                    .retain(|(s, _), _| *s != session);
            }
        }
        // No turn is stored twice.
        if let Some(state) = store.load(&session).await.unwrap() {
            let mut seen = HashMap::new();
            for m in state.messages.iter().filter(|m| m.role == Role::User) {
                let text = m.text();
                let turn = text.split(' ').next().unwrap_or_default().to_owned();
                *seen.entry(turn).or_insert(0) += 1;
            }
            assert!(
                seen.values().all(|n| *n == 1),
                "step {step}: a turn stored twice: {seen:?}"
            );
        }
    }
}

type MakeStore = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>>>>>;

fn run_storm(cases: u32, make: MakeStore) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..30), |ops| {
            rt.block_on(async { storm(make().await, ops).await });
            Ok(())
        })
        .unwrap();
}

fn cases(default: u32) -> u32 {
    std::env::var("STORM_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

#[test]
fn retry_storm_on_memory() {
    run_storm(
        cases(48),
        Box::new(|| {
            Box::pin(async { Arc::new(statestore_memory::MemoryStore::new()) as Arc<dyn Store> })
        }),
    );
}

#[test]
fn retry_storm_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let dir = Arc::new(dir.path().to_path_buf());
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    run_storm(
        cases(48),
        Box::new(move || {
            let path = dir.join(format!("storm-{}.db", n.fetch_add(1, Ordering::SeqCst)));
            Box::pin(async move {
                Arc::new(
                    statestore_sqlite::SqliteStore::builder()
                        .synchronous(statestore_sqlite::Synchronous::Normal)
                        .open(path)
                        .await
                        .unwrap(),
                ) as Arc<dyn Store>
            })
        }),
    );
}

#[test]
fn retry_storm_on_redis() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    run_storm(
        cases(12),
        Box::new(move || {
            let prefix = format!("storm{}:", n.fetch_add(1, Ordering::SeqCst));
            let url = url.clone();
            Box::pin(async move {
                Arc::new(
                    statestore_redis::RedisStore::builder()
                        .prefix(prefix)
                        .connect(&url)
                        .await
                        .unwrap(),
                ) as Arc<dyn Store>
            })
        }),
    );
}
