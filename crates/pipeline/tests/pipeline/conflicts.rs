//! Conflicting writers: retries run each tool call once and count every
//! model call, `Busy` reports the usage spent, a streaming caller sees
//! `Restart`.

use super::*;
use crate::tools::{Weather, weather_call};

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
    let texts = texts(&state.messages);
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
    assert_eq!(state.messages[4].tool_call_id(), Some("z7"));
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

/// A provider that adds up what it reports: what a bill must account for.
#[derive(Debug)]
struct Tally {
    inner: Arc<dyn Provider>,
    usage: Mutex<Usage>,
}

impl Tally {
    fn new(inner: Arc<dyn Provider>) -> Self {
        Self {
            inner,
            usage: Mutex::default(),
        }
    }
    fn reported(&self) -> Usage {
        *self.usage.lock().unwrap()
    }
}

#[async_trait]
impl Provider for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let response = self.inner.chat(request).await?;
        *self.usage.lock().unwrap() += response.usage;
        Ok(response)
    }
}

/// The session's token counters.
async fn counted(store: &Arc<dyn Store>, id: &str) -> Usage {
    let state = store
        .load(&SessionId::new(id).unwrap())
        .await
        .unwrap()
        .unwrap();
    Usage {
        prompt_tokens: state.counters[counters::PROMPT_TOKENS],
        completion_tokens: state.counters[counters::COMPLETION_TOKENS],
    }
}

/// Billing is exact on every path: the session's counters plus what the
/// executes report as uncounted (and `Busy`'s usage) are what the provider
/// reported — a plain turn, a turn retried after conflicts, a replay found
/// at load, the same turn run twice at once, a turn whose attempts all
/// conflicted.
#[tokio::test]
async fn counters_plus_uncounted_usage_are_what_the_provider_reported() {
    let store = memory();
    let provider = Arc::new(Tally::new(Arc::new(OfflineProvider::new())));
    let mut uncounted = Usage::default();
    let plain = Pipeline::builder(Arc::clone(&store), provider.clone()).build();
    let conflicted = Pipeline::builder(Arc::clone(&store), provider.clone())
        .middleware(Arc::new(Interloper {
            store: Arc::clone(&store),
            attempts: 2,
        }))
        .build();
    let turn = IdempotencyKey::new("t1").unwrap();

    let done = plain
        .execute("bill", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();
    assert!(!done.replayed);
    uncounted += done.uncounted_usage();
    let done = conflicted
        .execute_with(
            "bill",
            Role::User,
            "What's my name?",
            ExecOptions::new().turn_id(turn.clone()),
        )
        .await
        .unwrap();
    assert!(!done.replayed);
    assert_eq!(done.model_calls, 3, "two attempts discarded");
    uncounted += done.uncounted_usage();
    let done = plain
        .execute_with(
            "bill",
            Role::User,
            "What's my name?",
            ExecOptions::new().turn_id(turn.clone()),
        )
        .await
        .unwrap();
    assert!(done.replayed);
    uncounted += done.uncounted_usage();
    // The same turn id on two pipelines at once: one stores, one replays
    // (after paying for its own model call, which no counter holds).
    let other = Pipeline::builder(Arc::clone(&store), provider.clone()).build();
    let (a, b) = tokio::join!(
        plain.execute_with(
            "bill",
            Role::User,
            "again",
            ExecOptions::new().turn_id(IdempotencyKey::new("t2").unwrap())
        ),
        other.execute_with(
            "bill",
            Role::User,
            "again",
            ExecOptions::new().turn_id(IdempotencyKey::new("t2").unwrap())
        ),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(usize::from(a.replayed) + usize::from(b.replayed), 1);
    uncounted += a.uncounted_usage();
    uncounted += b.uncounted_usage();
    // Every attempt conflicts: Busy carries what was spent.
    let busy = Pipeline::builder(Arc::clone(&store), provider.clone())
        .concurrency(Concurrency::Retry { attempts: 2 })
        .middleware(Arc::new(Interloper {
            store: Arc::clone(&store),
            attempts: 2,
        }))
        .build();
    match busy.execute("bill", Role::User, "busy").await {
        Err(Error::Busy { usage, .. }) => uncounted += usage,
        other => panic!("{other:?}"),
    }

    let mut total = counted(&store, "bill").await;
    total += uncounted;
    assert_eq!(total, provider.reported());
    assert!(provider.reported().total() > 0);
}

/// The summarizer's model calls are counted too: with a window that drops
/// messages, every turn's summary call lands in the session's counters, so
/// counters + uncounted usage still equal what the provider reported.
#[tokio::test]
async fn the_summarizers_calls_are_counted() {
    let store = memory();
    let provider = Arc::new(Tally::new(Arc::new(OfflineProvider::new())));
    let pipe = Pipeline::builder(Arc::clone(&store), provider.clone())
        .window(WindowPolicy::default().max_messages(2))
        .summarizer(Arc::new(pipeline::ProviderSummarizer::new(
            provider.clone(),
        )))
        .build();
    let mut uncounted = Usage::default();
    let mut turns = 0;
    for text in ["Hi, I'm Alice", "What's my name?", "Thanks", "Bye"] {
        let done = pipe.execute("summed", Role::User, text).await.unwrap();
        uncounted += done.uncounted_usage();
        turns += done.model_calls;
    }
    let state = store
        .load(&SessionId::new("summed").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!state.summaries.is_empty(), "the window dropped messages");
    assert!(
        state.counters[counters::MODEL_CALLS] > turns,
        "the summarizer's calls are in model_calls: {:?}",
        state.counters
    );
    let mut total = counted(&store, "summed").await;
    total += uncounted;
    assert_eq!(total, provider.reported());
}
