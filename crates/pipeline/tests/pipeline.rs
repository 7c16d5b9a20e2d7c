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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use context_window::WindowPolicy;
use pipeline::{
    ChatRequest, ChatResponse, Concurrency, Error, ExecContext, FinishReason, Middleware,
    OfflineProvider, Pipeline, Provider, StreamEvent, ToolHandler, ToolSpec, Usage,
};
use statestore_core::{BoxError, Message, Role, SessionId, Store, ToolCall};
use statestore_memory::MemoryStore;
use statestore_redis::RedisStore;
use statestore_redis::testing::RedisServer;

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn quick_start(store: Arc<dyn Store>) {
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new())).build();
    let first = pipe
        .execute("user-123-conversation", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();
    assert_eq!(first.version, 2, "append + usage");
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
    let usage = &state.metadata["usage"];
    assert_eq!(usage["calls"], 2);
    assert_eq!(
        usage["prompt_tokens"].as_u64().unwrap(),
        first.usage.prompt_tokens + second.usage.prompt_tokens
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
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
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
    assert_eq!(state.metadata["usage"]["calls"], 24, "usage lost an update");
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
