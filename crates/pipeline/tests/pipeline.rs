//! The session middleware on the memory store and on real Redis: the
//! seed's Quick Start, nothing stored on failure, concurrent turns, tools,
//! middleware order and usage accounting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use context_window::WindowPolicy;
use pipeline::{
    ChatRequest, ChatResponse, Concurrency, Error, ExecContext, ExecOptions, FinishReason,
    Middleware, OfflineProvider, Pipeline, Provider, StreamEvent, ToolHandler, ToolSpec, Usage,
    counters,
};
use redis_test_server::{FaultProxy, RedisServer};
use statestore_core::{
    BoxError, Expect, IdempotencyKey, Message, Role, SessionId, Store, ToolCall, WriteOutcome,
};
use statestore_memory::MemoryStore;
use statestore_redis::RedisStore;

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn quick_start(store: Arc<dyn Store>) {
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new())).build();
    let first = pipe
        .execute("user-123-conversation", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();
    assert_eq!(first.version, 1, "one write per turn");
    let second = pipe
        .execute("user-123-conversation", Role::User, "What's my name?")
        .await
        .unwrap();
    assert_eq!(second.reply.text(), "Your name is Alice");
    assert_eq!(second.context_messages, 2, "the first turn was sent");

    let id = SessionId::new("user-123-conversation").unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "Hi, I'm Alice",
            "Nice to meet you, Alice!",
            "What's my name?",
            "Your name is Alice"
        ]
    );
    assert_eq!(state.version, 2, "one write per turn");
    let counted = &state.counters;
    assert_eq!(counted[counters::TURNS], 2);
    assert_eq!(counted[counters::MODEL_CALLS], 2);
    assert_eq!(
        counted[counters::PROMPT_TOKENS],
        first.usage.prompt_tokens + second.usage.prompt_tokens
    );
    assert_eq!(
        counted[counters::COMPLETION_TOKENS],
        first.usage.completion_tokens + second.usage.completion_tokens
    );
    assert!(
        state.metadata.is_empty(),
        "usage no longer lives in metadata"
    );
    // Every stored message carries its token count: later windows count nothing.
    assert!(state.messages.iter().all(|m| m.token_count.is_some()));
}

#[tokio::test]
async fn quick_start_on_memory() {
    quick_start(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_on_redis() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    quick_start(Arc::new(store)).await;
}

/// A provider that fails, or answers, as told.
#[derive(Debug, Default)]
struct Scripted {
    replies: Mutex<Vec<Result<ChatResponse, Error>>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(mut replies: Vec<Result<ChatResponse, Error>>) -> Self {
        replies.reverse();
        Self {
            replies: Mutex::new(replies),
            requests: Mutex::default(),
        }
    }
}

fn reply(message: Message) -> Result<ChatResponse, Error> {
    Ok(ChatResponse {
        message,
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 2,
        },
        finish_reason: FinishReason::Stop,
    })
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        self.requests.lock().unwrap().push(request.clone());
        self.replies
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| reply(Message::assistant("ok")))
    }
}

#[tokio::test]
async fn a_failed_turn_stores_nothing() {
    let store = memory();
    let provider = Arc::new(Scripted::new(vec![
        reply(Message::assistant("first")),
        Err(Error::Status {
            status: 500,
            attempts: 3,
            message: "down".into(),
        }),
    ]));
    let pipe = Pipeline::builder(Arc::clone(&store), provider).build();
    pipe.execute("s", Role::User, "one").await.unwrap();
    let err = pipe.execute("s", Role::User, "two").await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err}");
    let state = store
        .load(&SessionId::new("s").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.messages.len(),
        2,
        "the failed turn left something behind"
    );
    assert!(matches!(
        pipe.execute("", Role::User, "x").await,
        Err(Error::Store(statestore_core::Error::InvalidId { .. }))
    ));
}

async fn concurrent_turns(store: Arc<dyn Store>) {
    // Two pipelines on one store stand for two app instances: their
    // in-process locks do not see each other, so the store's versions decide.
    let a = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .concurrency(Concurrency::Retry { attempts: 100 })
        .build();
    let b = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .concurrency(Concurrency::Retry { attempts: 100 })
        .build();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let pipe = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            pipe.execute("shared", Role::User, format!("message {i}"))
                .await
        });
    }
    let (mut spent, mut calls) = (Usage::default(), 0);
    while let Some(r) = tasks.join_next().await {
        let done = r.unwrap().unwrap();
        spent += done.usage;
        calls += done.model_calls;
    }
    let state = store
        .load(&SessionId::new("shared").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages.len(), 48, "a turn was lost");
    for pair in state.messages.chunks(2) {
        assert_eq!(pair[0].role, Role::User);
        assert_eq!(pair[1].role, Role::Assistant);
        assert_eq!(
            pair[1].text(),
            format!("You said: {}", pair[0].text()),
            "turns interleaved"
        );
    }
    assert_eq!(state.counters[counters::TURNS], 24, "usage lost an update");
    // Discarded attempts are paid for, and counted, too.
    assert_eq!(state.counters[counters::MODEL_CALLS], calls);
    assert_eq!(state.counters[counters::PROMPT_TOKENS], spent.prompt_tokens);
    assert_eq!(
        state.counters[counters::COMPLETION_TOKENS],
        spent.completion_tokens
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_turns_on_memory() {
    concurrent_turns(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_turns_on_redis() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    concurrent_turns(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_reports_busy_instead_of_retrying() {
    let store = memory();
    let a = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .concurrency(Concurrency::Reject)
        .build();
    let b = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .concurrency(Concurrency::Reject)
        .build();
    let mut busy = 0;
    let mut ok = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let pipe = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { pipe.execute("contended", Role::User, "hi").await });
    }
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Busy { attempts: 1, .. }) => busy += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok + busy, 40);
    let state = store
        .load(&SessionId::new("contended").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages.len(), ok * 2, "a rejected turn was stored");
}

struct Weather {
    calls: AtomicUsize,
}

#[async_trait]
impl ToolHandler for Weather {
    fn specs(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "weather".into(),
            description: "Current weather".into(),
            parameters: serde_json::json!({"type": "object"}),
        }]
    }
    async fn call(&self, call: &ToolCall) -> Result<String, BoxError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(format!("sunny in {}", call.arguments))
    }
}

#[tokio::test]
async fn tool_calls_and_results_are_stored_with_the_turn() {
    let store = memory();
    let provider = Arc::new(Scripted::new(vec![
        reply(Message::assistant("").with_tool_calls(vec![
            ToolCall::new("c1", "weather", "Paris"),
            ToolCall::new("c2", "weather", "Oslo"),
        ])),
        reply(Message::assistant("Sunny in both.")),
    ]));
    let tools = Arc::new(Weather {
        calls: AtomicUsize::new(0),
    });
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone())
        .tools(tools.clone())
        .build();
    let done = pipe.execute("t", Role::User, "weather?").await.unwrap();
    assert_eq!(done.reply.text(), "Sunny in both.");
    assert_eq!(done.stored, 5);
    assert_eq!(done.usage.prompt_tokens, 20, "both calls counted");
    assert_eq!(tools.calls.load(Ordering::Relaxed), 2);
    let requests = provider.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].tools.len(), 1);
    let second: Vec<Role> = requests[1].messages.iter().map(|m| m.role).collect();
    assert_eq!(
        second,
        [Role::User, Role::Assistant, Role::Tool, Role::Tool]
    );
    let state = store
        .load(&SessionId::new("t").unwrap())
        .await
        .unwrap()
        .unwrap();
    let roles: Vec<Role> = state.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Tool,
            Role::Assistant
        ]
    );
    assert_eq!(state.messages[2].tool_call_id.as_deref(), Some("c1"));
}

struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    reject: bool,
}

#[async_trait]
impl Middleware for Recorder {
    async fn before(&self, ctx: &ExecContext, request: &mut ChatRequest) -> Result<(), Error> {
        self.log
            .lock()
            .unwrap()
            .push(format!("before {} #{}", self.name, ctx.attempt));
        if self.reject {
            return Err(Error::Rejected("policy".into()));
        }
        // Redaction: the model never sees the secret; the store keeps what was said.
        for m in &mut request.messages {
            if m.text().contains("secret") {
                *m = Arc::new(Message::new(
                    m.role,
                    m.text().replace("secret", "[redacted]"),
                ));
            }
        }
        Ok(())
    }
    async fn after(&self, _: &ExecContext, _: &mut ChatResponse) -> Result<(), Error> {
        self.log
            .lock()
            .unwrap()
            .push(format!("after {}", self.name));
        Ok(())
    }
}

#[tokio::test]
async fn middleware_runs_in_a_documented_order_and_can_refuse() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let store = memory();
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .middleware(Arc::new(Recorder {
            name: "outer",
            log: log.clone(),
            reject: false,
        }))
        .middleware(Arc::new(Recorder {
            name: "inner",
            log: log.clone(),
            reject: false,
        }))
        .build();
    let done = pipe
        .execute("m", Role::User, "my secret plan")
        .await
        .unwrap();
    assert_eq!(done.reply.text(), "You said: my [redacted] plan");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "before outer #1",
            "before inner #1",
            "after inner",
            "after outer"
        ]
    );

    let refusing = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .middleware(Arc::new(Recorder {
            name: "guard",
            log,
            reject: true,
        }))
        .build();
    assert!(matches!(
        refusing.execute("m", Role::User, "x").await,
        Err(Error::Rejected(_))
    ));
    let state = store
        .load(&SessionId::new("m").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages.len(), 2, "a refused turn was stored");
}

#[tokio::test]
async fn a_bounded_window_sends_only_the_tail() {
    let store = memory();
    let provider = Arc::new(Scripted::new(vec![]));
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone())
        .window(WindowPolicy::default().max_messages(5))
        .system_prompt("be brief")
        .build();
    for i in 0..10 {
        pipe.execute("w", Role::User, format!("q{i}"))
            .await
            .unwrap();
    }
    let requests = provider.requests.lock().unwrap();
    let last = requests.last().unwrap();
    assert_eq!(last.messages.len(), 6, "system prompt + 5 messages");
    assert_eq!(last.messages[0].text(), "be brief");
    assert_eq!(last.messages[5].text(), "q9");
}

#[tokio::test]
async fn streaming_delivers_text_and_stores_the_whole_reply() {
    let store = memory();
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new())).build();
    let mut streamed = String::new();
    let mut done_events = 0;
    let done = pipe
        .execute_streaming(
            "s",
            Role::User,
            "stream this",
            &mut |e: StreamEvent<'_>| match e {
                StreamEvent::Delta(d) => streamed.push_str(d),
                StreamEvent::Restart => streamed.clear(),
                StreamEvent::Done => done_events += 1,
                _ => {}
            },
        )
        .await
        .unwrap();
    assert_eq!(streamed, "You said: stream this");
    assert_eq!(done_events, 1, "one Done, at the end");
    assert_eq!(done.reply.text(), streamed);
    let state = store
        .load(&SessionId::new("s").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages[1].text(), streamed);
}

// ---------------------------------------------------------------------------
// One write per turn, exactly-once turns, dangling tool calls, retries.
// ---------------------------------------------------------------------------

/// A real memory store that counts the calls made to it and can lose the
/// reply of its next `append_with` *after* the real write (a timeout on the
/// way back).
#[derive(Debug, Default)]
struct Watched {
    inner: MemoryStore,
    calls: Mutex<std::collections::BTreeMap<&'static str, usize>>,
    lose_next_reply: std::sync::atomic::AtomicBool,
}

impl Watched {
    fn count(&self, name: &'static str) {
        *self.calls.lock().unwrap().entry(name).or_default() += 1;
    }
    fn take_calls(&self) -> Vec<(&'static str, usize)> {
        std::mem::take(&mut *self.calls.lock().unwrap())
            .into_iter()
            .collect()
    }
}

#[async_trait]
impl Store for Watched {
    async fn load(
        &self,
        id: &SessionId,
    ) -> statestore_core::Result<Option<statestore_core::ConversationState>> {
        self.count("load");
        self.inner.load(id).await
    }
    async fn load_recent(
        &self,
        id: &SessionId,
        n: usize,
    ) -> statestore_core::Result<Option<statestore_core::RecentState>> {
        self.count("load_recent");
        self.inner.load_recent(id, n).await
    }
    async fn load_recent_with(
        &self,
        id: &SessionId,
        n: usize,
        lookup: Option<&IdempotencyKey>,
    ) -> statestore_core::Result<Option<statestore_core::RecentState>> {
        self.count("load_recent_with");
        self.inner.load_recent_with(id, n, lookup).await
    }
    async fn save(
        &self,
        state: &statestore_core::ConversationState,
        expect: Expect,
    ) -> statestore_core::Result<u64> {
        self.count("save");
        self.inner.save(state, expect).await
    }
    async fn append(
        &self,
        id: &SessionId,
        messages: Vec<Message>,
        expect: Expect,
    ) -> statestore_core::Result<u64> {
        self.count("append");
        self.inner.append(id, messages, expect).await
    }
    async fn append_with(
        &self,
        id: &SessionId,
        append: statestore_core::Append,
    ) -> statestore_core::Result<statestore_core::Appended> {
        self.count("append_with");
        let appended = self.inner.append_with(id, append).await?;
        if self.lose_next_reply.swap(false, Ordering::SeqCst) {
            return Err(statestore_core::Error::Timeout {
                operation: "append",
                after: std::time::Duration::from_secs(2),
            });
        }
        Ok(appended)
    }
    async fn fork(&self, source: &SessionId, target: &SessionId) -> statestore_core::Result<u64> {
        self.count("fork");
        self.inner.fork(source, target).await
    }
    async fn delete(&self, id: &SessionId) -> statestore_core::Result<bool> {
        self.count("delete");
        self.inner.delete(id).await
    }
    async fn exists(&self, id: &SessionId) -> statestore_core::Result<bool> {
        self.count("exists");
        self.inner.exists(id).await
    }
    async fn list(
        &self,
        query: &statestore_core::ListQuery,
    ) -> statestore_core::Result<statestore_core::ListPage> {
        self.count("list");
        self.inner.list(query).await
    }
    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: statestore_core::Metadata,
        expect: Expect,
    ) -> statestore_core::Result<u64> {
        self.count("merge_metadata");
        self.inner.merge_metadata(id, patch, expect).await
    }
    async fn add_summary(
        &self,
        id: &SessionId,
        summary: statestore_core::Summary,
        expect: Expect,
    ) -> statestore_core::Result<u64> {
        self.count("add_summary");
        self.inner.add_summary(id, summary, expect).await
    }
    async fn touch(&self, id: &SessionId) -> statestore_core::Result<bool> {
        self.count("touch");
        self.inner.touch(id).await
    }
}

/// The offline provider, counting the calls it answers.
#[derive(Debug, Default)]
struct Counted {
    inner: OfflineProvider,
    calls: AtomicUsize,
}

#[async_trait]
impl Provider for Counted {
    fn name(&self) -> &str {
        "counted"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.chat(request).await
    }
}

#[tokio::test]
async fn an_execute_is_one_load_and_one_write() {
    let store = Arc::new(Watched::default());
    for policy in [
        WindowPolicy::default().max_messages(4),
        WindowPolicy::default().token_budget(10_000, 100),
        WindowPolicy::default(),
    ] {
        let pipe = Pipeline::builder(store.clone(), Arc::new(OfflineProvider::new()))
            .window(policy)
            .build();
        for i in 0..4 {
            pipe.execute("counted", Role::User, format!("turn {i}"))
                .await
                .unwrap();
            assert_eq!(
                store.take_calls(),
                [("append_with", 1), ("load_recent_with", 1)],
                "{policy:?}, turn {i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_is_two_round_trips_on_redis() {
    // Needs the Redis store's keyed, counting `append_with`.
    let server = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::builder().connect(&server.url()).await.unwrap());
    let pipe = Pipeline::builder(store, Arc::new(OfflineProvider::new())).build();
    pipe.execute("rt", Role::User, "warm up").await.unwrap();
    for i in 0..3 {
        server.reset_stats().unwrap();
        pipe.execute("rt", Role::User, format!("turn {i}"))
            .await
            .unwrap();
        let mut stats = server.command_stats().unwrap();
        // The measurement's own commands.
        stats.retain(|name, _| !matches!(name.as_str(), "info" | "config|resetstat" | "config"));
        // Commands a script runs are counted too: keep those only a client
        // sends (each one a round trip).
        let client: Vec<(String, u64)> = stats
            .into_iter()
            .filter(|(name, _)| {
                matches!(
                    name.as_str(),
                    "evalsha"
                        | "eval"
                        | "script|load"
                        | "multi"
                        | "exec"
                        | "watch"
                        | "scan"
                        | "ping"
                        | "hello"
                        | "select"
                        | "auth"
                        | "client|setinfo"
                )
            })
            .collect();
        assert_eq!(client, [("evalsha".to_owned(), 2)], "turn {i}");
    }
}

#[tokio::test]
async fn a_turn_whose_write_reply_was_lost_is_retried_with_its_id_and_stored_once() {
    let store = Arc::new(Watched::default());
    let provider = Arc::new(Counted::default());
    let pipe = Pipeline::builder(store.clone(), provider.clone()).build();
    pipe.execute("lost", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();

    store.lose_next_reply.store(true, Ordering::SeqCst);
    let err = pipe
        .execute("lost", Role::User, "What's my name?")
        .await
        .unwrap_err();
    assert_eq!(err.write_outcome(), WriteOutcome::Unknown, "{err}");
    assert!(err.is_transient());
    let turn_id = err
        .turn_id()
        .expect("an unknown outcome names its turn")
        .clone();
    assert!(err.to_string().contains(turn_id.as_str()), "{err}");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);

    let retried = pipe
        .execute_with(
            "lost",
            Role::User,
            "What's my name?",
            ExecOptions::new().turn_id(turn_id.clone()),
        )
        .await
        .unwrap();
    assert!(retried.replayed);
    assert_eq!(retried.turn_id, turn_id);
    assert_eq!(retried.reply.text(), "Your name is Alice");
    assert_eq!(retried.stored, 2);
    assert_eq!(retried.usage, Usage::default(), "nothing spent on a replay");
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        2,
        "the model was asked again"
    );

    let state = store
        .inner
        .load(&SessionId::new("lost").unwrap())
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "Hi, I'm Alice",
            "Nice to meet you, Alice!",
            "What's my name?",
            "Your name is Alice"
        ],
        "the turn is stored once"
    );
    assert_eq!(state.counters[counters::TURNS], 2);
    assert_eq!(retried.version, state.version);

    // A new turn id is a new turn.
    let again = pipe
        .execute("lost", Role::User, "What's my name?")
        .await
        .unwrap();
    assert!(!again.replayed);
    assert_ne!(again.turn_id, turn_id);
}

/// Arms a [`FaultProxy`] in the last hook before the turn's write, so the
/// write is the request whose reply is lost.
struct LoseTheWriteReply {
    proxy: Arc<FaultProxy>,
    armed: AtomicBool,
}

#[async_trait]
impl Middleware for LoseTheWriteReply {
    async fn after(&self, _ctx: &ExecContext, _response: &mut ChatResponse) -> Result<(), Error> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.proxy.drop_next_reply();
        }
        Ok(())
    }
}

/// The same failure on real Redis: a proxy between the store and the
/// server lets the turn's write through and drops the connection before
/// its reply. The caller retries with the turn id: one stored turn, one
/// model call, the same reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_write_reply_is_lost_on_redis_is_retried_with_its_id_and_stored_once() {
    let server = RedisServer::start().unwrap();
    let proxy = Arc::new(FaultProxy::start(server.port()).await.unwrap());
    let store = RedisStore::builder()
        .response_timeout(std::time::Duration::from_secs(5))
        .connect(&proxy.url())
        .await
        .unwrap();
    let provider = Arc::new(Counted::default());
    let lose = Arc::new(LoseTheWriteReply {
        proxy: Arc::clone(&proxy),
        armed: AtomicBool::new(false),
    });
    let pipe = Pipeline::builder(Arc::new(store), provider.clone())
        .middleware(lose.clone())
        .build();
    pipe.execute("lost", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();

    lose.armed.store(true, Ordering::SeqCst);
    let turn_id = IdempotencyKey::random();
    let options = || ExecOptions::new().turn_id(turn_id.clone());
    let err = pipe
        .execute_with("lost", Role::User, "What's my name?", options())
        .await
        .unwrap_err();
    assert_eq!(proxy.dropped_replies(), 1, "the write's reply was lost");
    assert_eq!(err.write_outcome(), WriteOutcome::Unknown, "{err}");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.turn_id(), Some(&turn_id));
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);

    // Retry with the same turn id until the store answers again.
    let mut retried = None;
    for _ in 0..100 {
        match pipe
            .execute_with("lost", Role::User, "What's my name?", options())
            .await
        {
            Ok(done) => {
                retried = Some(done);
                break;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let retried = retried.expect("the store answered again");
    assert!(
        retried.replayed,
        "the turn had landed: replayed, not run again"
    );
    assert_eq!(retried.reply.text(), "Your name is Alice");
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        2,
        "no second model call"
    );

    let direct = RedisStore::builder().connect(&server.url()).await.unwrap();
    let state = direct
        .load(&SessionId::new("lost").unwrap())
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "Hi, I'm Alice",
            "Nice to meet you, Alice!",
            "What's my name?",
            "Your name is Alice"
        ],
        "the turn is stored exactly once"
    );
    assert_eq!(state.counters[counters::TURNS], 2);
    assert_eq!(state.counters[counters::MODEL_CALLS], 2);
    assert_eq!(retried.version, state.version);
}

#[tokio::test]
async fn a_replayed_turn_outside_the_window_is_read_back_and_streamed() {
    let store = memory();
    let provider = Arc::new(Counted::default());
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone())
        .window(WindowPolicy::default().max_messages(2))
        .build();
    let key = IdempotencyKey::new("turn-1").unwrap();
    let first = pipe
        .execute_with(
            "old",
            Role::User,
            "I'm Bob",
            ExecOptions::new().turn_id(key.clone()),
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    for i in 0..5 {
        pipe.execute("old", Role::User, format!("more {i}"))
            .await
            .unwrap();
    }
    assert_eq!(provider.calls.load(Ordering::SeqCst), 6);

    let mut events = Vec::new();
    let replayed = pipe
        .execute_streaming_with(
            "old",
            Role::User,
            "I'm Bob",
            ExecOptions::new().turn_id(key),
            &mut |e: StreamEvent<'_>| events.push(format!("{e:?}")),
        )
        .await
        .unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.reply, first.reply);
    assert_eq!(replayed.reply.text(), "Nice to meet you, Bob!");
    assert_eq!(replayed.version, first.version);
    assert_eq!(
        events,
        [r#"Delta("Nice to meet you, Bob!")"#, "Done"],
        "the stored reply is streamed"
    );
    assert_eq!(provider.calls.load(Ordering::SeqCst), 6, "no model call");
    let state = store
        .load(&SessionId::new("old").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages.len(), 12);
}

/// Asks for a tool on every call, unless no tools are offered.
fn weather_call(id: &str, city: &str, text: &str) -> Result<ChatResponse, Error> {
    reply(Message::assistant(text).with_tool_calls(vec![ToolCall::new(id, "weather", city)]))
}

/// Every assistant message with tool calls in `messages` has a result for
/// each call after it.
fn every_call_answered(messages: &[Arc<Message>]) -> bool {
    messages.iter().enumerate().all(|(i, m)| {
        m.tool_calls.iter().all(|c| {
            messages[i + 1..]
                .iter()
                .any(|r| r.role == Role::Tool && r.tool_call_id.as_deref() == Some(c.id.as_str()))
        })
    })
}

#[tokio::test]
async fn tool_calls_past_the_round_limit_are_answered_and_a_final_reply_asked_without_tools() {
    let store = memory();
    let provider = Arc::new(Scripted::new(vec![
        weather_call("c1", "Paris", ""),
        weather_call("c2", "Oslo", ""),
        // Asked without tools, the model still asks for one: stripped.
        weather_call("c3", "Rome", "Paris is sunny."),
        reply(Message::assistant("next")),
    ]));
    let tools = Arc::new(Weather {
        calls: AtomicUsize::new(0),
    });
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone())
        .tools(tools.clone())
        .max_tool_rounds(1)
        .build();
    let done = pipe.execute("limit", Role::User, "weather?").await.unwrap();
    assert_eq!(done.reply.text(), "Paris is sunny.");
    assert!(done.reply.tool_calls.is_empty());
    assert_eq!(done.model_calls, 3);
    assert_eq!(tools.calls.load(Ordering::Relaxed), 1, "one round ran");

    let requests = provider.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[1].tools.len(), 1);
    assert!(
        requests[2].tools.is_empty(),
        "the final call offers no tools"
    );
    assert!(every_call_answered(&requests[2].messages));

    let state = store
        .load(&SessionId::new("limit").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(every_call_answered(&state.messages));
    let roles: Vec<Role> = state.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Assistant,
            Role::Tool,
            Role::Assistant
        ]
    );
    assert_eq!(state.messages[2].text(), "sunny in Paris");
    assert_eq!(state.messages[4].tool_call_id.as_deref(), Some("c2"));
    assert_eq!(
        state.messages[4].text(),
        "not run: tool round limit reached"
    );
    assert_eq!(state.counters[counters::MODEL_CALLS], 3);

    // The next turn's request is valid.
    pipe.execute("limit", Role::User, "thanks").await.unwrap();
    let requests = provider.requests.lock().unwrap().clone();
    assert!(every_call_answered(&requests[3].messages));
}

#[tokio::test]
async fn tool_calls_with_no_handler_or_no_rounds_are_answered_not_run() {
    for (with_handler, expected) in [
        (false, "not run: no tool handler"),
        (true, "not run: tool round limit reached"),
    ] {
        let store = memory();
        let provider = Arc::new(Scripted::new(vec![
            weather_call("c1", "Paris", "Let me look."),
            reply(Message::assistant("I cannot look it up.")),
        ]));
        let tools = Arc::new(Weather {
            calls: AtomicUsize::new(0),
        });
        let mut builder = Pipeline::builder(Arc::clone(&store), provider.clone());
        if with_handler {
            builder = builder.tools(tools.clone()).max_tool_rounds(0);
        }
        let done = builder
            .build()
            .execute("none", Role::User, "weather?")
            .await
            .unwrap();
        assert_eq!(done.reply.text(), "I cannot look it up.", "{expected}");
        assert_eq!(tools.calls.load(Ordering::Relaxed), 0);
        let requests = provider.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 2);
        assert!(requests[1].tools.is_empty());
        let state = store
            .load(&SessionId::new("none").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.messages.len(), 4, "{expected}");
        assert_eq!(state.messages[1].text(), "Let me look.");
        assert_eq!(state.messages[2].text(), expected);
        assert!(every_call_answered(&state.messages));
    }
}

#[tokio::test]
async fn a_session_with_dangling_tool_calls_recovers() {
    // What older versions stored when the round limit was hit.
    let store = memory();
    let id = SessionId::new("poisoned").unwrap();
    store
        .append(
            &id,
            vec![
                Message::user("weather?"),
                Message::assistant("Checking.").with_tool_calls(vec![
                    ToolCall::new("a", "weather", "Paris"),
                    ToolCall::new("b", "weather", "Oslo"),
                ]),
                Message::tool("a", "sunny in Paris"),
            ],
            Expect::Any,
        )
        .await
        .unwrap();
    let provider = Arc::new(Scripted::new(vec![]));
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone()).build();
    pipe.execute("poisoned", Role::User, "and now?")
        .await
        .unwrap();
    let requests = provider.requests.lock().unwrap().clone();
    let sent = &requests[0].messages;
    assert!(every_call_answered(sent), "{sent:?}");
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[1].text(), "Checking.");
    assert_eq!(sent[1].tool_calls.len(), 1, "the answered call stays");
    assert_eq!(sent[2].tool_call_id.as_deref(), Some("a"));
}

/// Another app instance's turn landing between this attempt's load and its
/// write, in the first `attempts` attempts.
struct Interloper {
    store: Arc<dyn Store>,
    attempts: u32,
}

#[async_trait]
impl Middleware for Interloper {
    async fn before(&self, ctx: &ExecContext, _: &mut ChatRequest) -> Result<(), Error> {
        if ctx.attempt <= self.attempts {
            self.store
                .append(
                    &ctx.session_id,
                    vec![Message::user("from another instance")],
                    Expect::Any,
                )
                .await?;
        }
        Ok(())
    }
}

/// Counts runs per (call id, arguments).
#[derive(Default)]
struct Ledger {
    runs: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl ToolHandler for Ledger {
    fn specs(&self) -> Vec<ToolSpec> {
        Weather {
            calls: AtomicUsize::new(0),
        }
        .specs()
    }
    async fn call(&self, call: &ToolCall) -> Result<String, BoxError> {
        self.runs
            .lock()
            .unwrap()
            .push((call.id.clone(), call.arguments.clone()));
        Ok(format!("sent to {}", call.arguments))
    }
}

#[tokio::test]
async fn conflict_retries_run_each_tool_call_once_and_count_every_model_call() {
    let store = memory();
    let provider = Arc::new(Scripted::new(vec![
        // Attempt 1, discarded.
        weather_call("c1", "Paris", ""),
        reply(Message::assistant("a1")),
        // Attempt 2 asks again under the same id, discarded.
        weather_call("c1", "Paris", ""),
        reply(Message::assistant("a2")),
        // Attempt 3: fresh ids (as real providers make), one call new.
        reply(Message::assistant("").with_tool_calls(vec![
            ToolCall::new("z7", "weather", "Paris"),
            ToolCall::new("z8", "weather", "Oslo"),
        ])),
        reply(Message::assistant("Sent both.")),
    ]));
    let tools = Arc::new(Ledger::default());
    let pipe = Pipeline::builder(Arc::clone(&store), provider)
        .tools(tools.clone())
        .middleware(Arc::new(Interloper {
            store: Arc::clone(&store),
            attempts: 2,
        }))
        .build();
    let done = pipe.execute("mail", Role::User, "send").await.unwrap();
    assert_eq!(done.reply.text(), "Sent both.");
    assert_eq!(
        *tools.runs.lock().unwrap(),
        [
            ("c1".to_owned(), "Paris".to_owned()),
            ("z8".to_owned(), "Oslo".to_owned())
        ],
        "a tool call ran again on a retry"
    );
    // Six model calls at 10 + 2 tokens each; four of them discarded.
    assert_eq!(done.model_calls, 6);
    assert_eq!(done.usage.prompt_tokens, 60);
    assert_eq!(done.usage.completion_tokens, 12);
    assert_eq!(done.discarded_usage.prompt_tokens, 40);
    let state = store
        .load(&SessionId::new("mail").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.counters[counters::MODEL_CALLS], 6);
    assert_eq!(state.counters[counters::PROMPT_TOKENS], 60);
    assert_eq!(state.counters[counters::COMPLETION_TOKENS], 12);
    assert_eq!(state.counters[counters::TURNS], 1);
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "from another instance",
            "from another instance",
            "send",
            "",
            "sent to Paris",
            "sent to Oslo",
            "Sent both."
        ]
    );
    assert_eq!(state.messages[4].tool_call_id.as_deref(), Some("z7"));
}

#[tokio::test]
async fn busy_reports_the_usage_it_spent() {
    let store = memory();
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(Scripted::new(vec![])))
        .concurrency(Concurrency::Retry { attempts: 3 })
        .middleware(Arc::new(Interloper {
            store: Arc::clone(&store),
            attempts: u32::MAX,
        }))
        .build();
    let err = pipe.execute("busy", Role::User, "hi").await.unwrap_err();
    let Error::Busy {
        attempts, usage, ..
    } = err
    else {
        panic!("{err}");
    };
    assert_eq!(attempts, 3);
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 30,
            completion_tokens: 6
        }
    );
    assert_eq!(err.write_outcome(), WriteOutcome::NotWritten);
}

#[tokio::test]
async fn a_streaming_caller_sees_restart_before_the_reasked_reply() {
    let store = memory();
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .middleware(Arc::new(Interloper {
            store: Arc::clone(&store),
            attempts: 1,
        }))
        .build();
    let mut events = Vec::new();
    let done = pipe
        .execute_streaming("restart", Role::User, "hello", &mut |e: StreamEvent<'_>| {
            events.push(format!("{e:?}"));
        })
        .await
        .unwrap();
    assert_eq!(
        events,
        [
            r#"Delta("You said: hello")"#,
            "Restart",
            r#"Delta("You said: hello")"#,
            "Done"
        ]
    );
    assert_eq!(done.model_calls, 2);
}

/// Runs the same turn (same turn id) on another app instance between this
/// attempt's load and its write, once.
struct Twin {
    other: Pipeline,
    ran: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Middleware for Twin {
    async fn before(&self, ctx: &ExecContext, _: &mut ChatRequest) -> Result<(), Error> {
        if !self.ran.swap(true, Ordering::SeqCst) {
            let done = self
                .other
                .execute_with(
                    ctx.session_id.as_str(),
                    Role::User,
                    "hi",
                    ExecOptions::new().turn_id(ctx.turn_id.clone()),
                )
                .await?;
            assert!(!done.replayed);
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_same_turn_run_twice_at_once_is_stored_once() {
    let store = memory();
    let other = Pipeline::builder(
        Arc::clone(&store),
        Arc::new(Scripted::new(vec![reply(Message::assistant(
            "from the twin",
        ))])),
    )
    .build();
    let pipe = Pipeline::builder(
        Arc::clone(&store),
        Arc::new(Scripted::new(vec![reply(Message::assistant("from here"))])),
    )
    .middleware(Arc::new(Twin {
        other,
        ran: std::sync::atomic::AtomicBool::new(false),
    }))
    .build();
    let mut events = Vec::new();
    let done = pipe
        .execute_streaming_with(
            "twice",
            Role::User,
            "hi",
            ExecOptions::new().turn_id(IdempotencyKey::new("t-1").unwrap()),
            &mut |e: StreamEvent<'_>| events.push(format!("{e:?}")),
        )
        .await
        .unwrap();
    assert!(done.replayed);
    assert_eq!(done.reply.text(), "from the twin", "the stored turn wins");
    assert_eq!(done.model_calls, 1);
    assert_eq!(done.discarded_usage, done.usage, "its spend stored nowhere");
    assert_eq!(
        events,
        [
            r#"Delta("from here")"#,
            "Restart",
            r#"Delta("from the twin")"#,
            "Done"
        ]
    );
    let state = store
        .load(&SessionId::new("twice").unwrap())
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(texts, ["hi", "from the twin"]);
    assert_eq!(state.counters[counters::TURNS], 1);
}
