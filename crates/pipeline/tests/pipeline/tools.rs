//! Tool calls: stored with the turn, the round limit, missing handlers,
//! dangling calls.

use super::*;

pub(crate) struct Weather {
    pub(crate) calls: AtomicUsize,
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
    assert_eq!(state.messages[2].tool_call_id(), Some("c1"));
}

/// Asks for a tool on every call, unless no tools are offered.
pub(crate) fn weather_call(id: &str, city: &str, text: &str) -> Result<ChatResponse, Error> {
    reply(Message::assistant(text).with_tool_calls(vec![ToolCall::new(id, "weather", city)]))
}

/// Every assistant message with tool calls in `messages` has a result for
/// each call after it.
fn every_call_answered(messages: &[Arc<Message>]) -> bool {
    messages.iter().enumerate().all(|(i, m)| {
        m.tool_calls().iter().all(|c| {
            messages[i + 1..]
                .iter()
                .any(|r| r.role == Role::Tool && r.tool_call_id() == Some(c.id.as_str()))
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
    assert!(done.reply.tool_calls().is_empty());
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
    assert_eq!(state.messages[4].tool_call_id(), Some("c2"));
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
    assert_eq!(sent[1].tool_calls().len(), 1, "the answered call stays");
    assert_eq!(sent[2].tool_call_id(), Some("a"));
}

/// Records the context each call ran in.
#[derive(Default)]
struct Payments {
    seen: Mutex<Vec<pipeline::ToolContext>>,
}

#[async_trait]
impl ToolHandler for Payments {
    fn specs(&self) -> Vec<ToolSpec> {
        Weather {
            calls: AtomicUsize::new(0),
        }
        .specs()
    }
    async fn call(&self, _: &ToolCall) -> Result<String, BoxError> {
        Err("the pipeline must call call_in".into())
    }
    async fn call_in(
        &self,
        ctx: &pipeline::ToolContext,
        call: &ToolCall,
    ) -> Result<String, BoxError> {
        self.seen.lock().unwrap().push(ctx.clone());
        Ok(format!("paid {}", call.arguments))
    }
}

/// A tool learns its session, turn and call, and a key derived from them
/// alone — the same one a retry of the turn in another process derives.
#[tokio::test]
async fn tools_run_with_their_turns_context_and_a_stable_key() {
    let provider = Arc::new(Scripted::new(vec![
        reply(Message::assistant("").with_tool_calls(vec![
            ToolCall::new("c1", "weather", "10 EUR"),
            ToolCall::new("c2", "weather", "20 EUR"),
        ])),
        reply(Message::assistant("Paid both.")),
    ]));
    let tools = Arc::new(Payments::default());
    let pipe = Pipeline::builder(memory(), provider)
        .tools(tools.clone())
        .build();
    let turn = IdempotencyKey::new("order-17").unwrap();
    let done = pipe
        .execute_with(
            "shop",
            Role::User,
            "pay",
            ExecOptions::new().turn_id(turn.clone()),
        )
        .await
        .unwrap();
    assert_eq!(done.reply.text(), "Paid both.");
    let seen = tools.seen.lock().unwrap().clone();
    let session = SessionId::new("shop").unwrap();
    assert_eq!(
        seen,
        [
            pipeline::ToolContext::new(session.clone(), turn.clone(), "c1"),
            pipeline::ToolContext::new(session, turn, "c2"),
        ]
    );
    assert_ne!(seen[0].idempotency_key, seen[1].idempotency_key);
}
