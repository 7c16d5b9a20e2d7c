//! Selection over stored history, the token cache, summaries and
//! compaction against a real store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use context_window::{
    CharEstimate, Error, Summarizer, TokenCounter, WindowPolicy, annotate, compact, select,
    summarize_dropped,
};
use statestore_core::{
    BoxError, ConversationState, Expect, Message, SessionId, Store, Summary, ToolCall,
};
use statestore_memory::MemoryStore;

/// Counts how often text is tokenized.
#[derive(Debug, Default)]
struct Counting {
    calls: AtomicUsize,
}

impl TokenCounter for Counting {
    fn encoding(&self) -> &str {
        "counting"
    }
    fn count_text(&self, text: &str) -> usize {
        self.calls.fetch_add(1, Ordering::Relaxed);
        text.len().div_ceil(4)
    }
}

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

#[tokio::test]
async fn selecting_over_cached_history_tokenizes_nothing() {
    let counter = Counting::default();
    let store = MemoryStore::new();
    let id = sid("long");
    let history: Vec<Message> = (0..10_000)
        .map(|i| {
            let mut m = if i % 2 == 0 {
                Message::user(format!("question {i}"))
            } else {
                Message::assistant(format!("answer {i}"))
            };
            annotate(&counter, &mut m); // what the pipeline does before storing
            m
        })
        .collect();
    store.append(&id, history, Expect::Any).await.unwrap();
    let state = store.load(&id).await.unwrap().unwrap();

    counter.calls.store(0, Ordering::Relaxed);
    let policy = WindowPolicy::default().token_budget(1_000_000, 1_000);
    let window = select(&state, &policy, &counter).unwrap();
    assert_eq!(window.messages.len(), 10_000);
    assert_eq!(
        counter.calls.load(Ordering::Relaxed),
        0,
        "cached messages were re-tokenized"
    );

    // A cache made by another encoding is not trusted.
    let other = CharEstimate;
    let w = select(&state, &policy, &other).unwrap();
    assert_eq!(w.messages.len(), 10_000);
    assert!(w.tokens.unwrap() > 0);
}

/// Summaries are counted once each, not once per unit the walk passes.
#[test]
fn each_summary_is_counted_once_per_selection() {
    let counter = Counting::default();
    let messages: Vec<Message> = (0..10_000)
        .map(|i| {
            let mut m = if i % 2 == 0 {
                Message::user(format!("question {i}"))
            } else {
                Message::assistant(format!("answer {i}"))
            };
            annotate(&counter, &mut m);
            m
        })
        .collect();
    let mut state = ConversationState::new(sid("summarized"))
        .with_system_prompt("be brief")
        .with_messages(messages);
    state.summaries = (0..3)
        .map(|k| Summary::new(k * 100..(k + 1) * 100, format!("part {k}")))
        .collect();
    counter.calls.store(0, Ordering::Relaxed);
    // About half the history fits: the walk passes ~5,000 messages.
    let policy = WindowPolicy::default().token_budget(40_000, 0);
    let window = select(&state, &policy, &counter).unwrap();
    assert!(window.dropped > 1_000 && !window.messages.is_empty());
    assert_eq!(window.summaries.len(), 3);
    // The system prompt and each summary: role and text.
    assert_eq!(counter.calls.load(Ordering::Relaxed), 2 + 3 * 2);
}

#[test]
fn the_newest_user_message_alone_over_budget_is_an_error_not_a_truncation() {
    let state = ConversationState::new(sid("big"))
        .with_system_prompt("be brief")
        .with_messages([Message::user("hi"), Message::user("x".repeat(4_000))]);
    let policy = WindowPolicy::default().token_budget(1_000, 200);
    match select(&state, &policy, &CharEstimate) {
        Err(Error::BudgetExceeded {
            required,
            budget: 800,
            context: 1_000,
            reserved: 200,
        }) => assert!(required > 1_000),
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
}

#[test]
fn a_tool_exchange_is_kept_whole_or_not_at_all() {
    let state = ConversationState::new(sid("tools")).with_messages([
        Message::user("weather in Paris and Oslo?"),
        Message::assistant("").with_tool_calls(vec![
            ToolCall::new("a", "weather", r#"{"city":"Paris"}"#),
            ToolCall::new("b", "weather", r#"{"city":"Oslo"}"#),
        ]),
        Message::tool("a", "21C"),
        Message::tool("b", "3C"),
        Message::assistant("Paris 21C, Oslo 3C"),
        Message::user("thanks"),
    ]);
    // Three messages would start on a tool result: the window takes fewer.
    let w = select(
        &state,
        &WindowPolicy::default().max_messages(3),
        &CharEstimate,
    )
    .unwrap();
    let texts: Vec<String> = w.messages.iter().map(|m| m.text().into_owned()).collect();
    assert_eq!(texts, ["Paris 21C, Oslo 3C", "thanks"]);
    let w = select(
        &state,
        &WindowPolicy::default().max_messages(5),
        &CharEstimate,
    )
    .unwrap();
    assert_eq!(w.messages.len(), 5);
    assert_eq!(w.messages[0].tool_calls().len(), 2);
    // By turns: the last two user turns are everything.
    let w = select(
        &state,
        &WindowPolicy::default().max_user_turns(1),
        &CharEstimate,
    )
    .unwrap();
    assert_eq!(w.messages.len(), 1);
    let w = select(
        &state,
        &WindowPolicy::default().max_user_turns(2),
        &CharEstimate,
    )
    .unwrap();
    assert_eq!(w.messages.len(), 6);
}

/// A deterministic summarizer: lists what it summarized.
struct ListingSummarizer;

#[async_trait::async_trait]
impl Summarizer for ListingSummarizer {
    async fn summarize(
        &self,
        previous: Option<&Summary>,
        messages: &[Arc<Message>],
    ) -> Result<String, BoxError> {
        let mut parts: Vec<String> = previous.map(|p| p.content.clone()).into_iter().collect();
        parts.extend(messages.iter().map(|m| m.text().into_owned()));
        Ok(parts.join(","))
    }
}

#[test]
fn unanswered_tool_calls_are_never_sent() {
    // A session as older pipelines left it when the round limit was hit:
    // one call answered, one not, then a reply that is nothing but a call.
    let state = ConversationState::new(sid("dangling")).with_messages([
        Message::user("weather?"),
        Message::assistant("Checking.").with_tool_calls(vec![
            ToolCall::new("a", "weather", "Paris"),
            ToolCall::new("b", "weather", "Oslo"),
        ]),
        Message::tool("a", "sunny"),
        Message::assistant("").with_tool_calls(vec![ToolCall::new("c", "weather", "Rome")]),
        Message::user("and now?"),
    ]);
    let budget = WindowPolicy::default().token_budget(10_000, 0);
    let w = select(&state, &budget, &CharEstimate).unwrap();
    let sent: Vec<(String, Vec<String>)> = w
        .messages
        .iter()
        .map(|m| {
            let calls = m.tool_calls().iter().map(|c| c.id.clone()).collect();
            (m.text().into_owned(), calls)
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("weather?".to_owned(), vec![]),
            ("Checking.".to_owned(), vec!["a".to_owned()]),
            ("sunny".to_owned(), vec![]),
            ("and now?".to_owned(), vec![]),
        ]
    );
    assert_eq!(w.dropped, 1, "the message with only an unanswered call");
    // The budget counts what is sent, not what is stored.
    let cost: usize = context_window::count::REPLY_PRIMING
        + w.request_messages()
            .iter()
            .map(|m| context_window::count_message(&CharEstimate, m))
            .sum::<usize>();
    assert_eq!(w.tokens, Some(cost));
    // The stored messages are unchanged.
    assert_eq!(state.messages[1].tool_calls().len(), 2);
}

#[tokio::test]
async fn summaries_replace_what_the_window_drops() {
    let store = MemoryStore::new();
    let id = sid("summarized");
    let msgs: Vec<Message> = (0..10).map(|i| Message::user(format!("m{i}"))).collect();
    store.append(&id, msgs, Expect::Any).await.unwrap();
    let policy = WindowPolicy::default().max_messages(4);

    let s = summarize_dropped(&store, &id, &policy, &CharEstimate, &ListingSummarizer)
        .await
        .unwrap()
        .expect("six messages dropped");
    assert_eq!(s.covers, 0..6);
    assert_eq!(s.content, "m0,m1,m2,m3,m4,m5");
    // Nothing new dropped: nothing to do.
    assert!(
        summarize_dropped(&store, &id, &policy, &CharEstimate, &ListingSummarizer)
            .await
            .unwrap()
            .is_none()
    );

    // Two more turns: the rolling summary continues the previous one.
    store
        .append(
            &id,
            vec![Message::user("m10"), Message::user("m11")],
            Expect::Any,
        )
        .await
        .unwrap();
    let s2 = summarize_dropped(&store, &id, &policy, &CharEstimate, &ListingSummarizer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s2.covers, 0..8);
    assert_eq!(s2.content, "m0,m1,m2,m3,m4,m5,m6,m7");

    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 12, "summarizing keeps the messages");
    let w = select(&state, &policy, &CharEstimate).unwrap();
    assert_eq!(w.summaries, [s2], "only the newest rolling summary is sent");
    assert_eq!(w.messages.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_never_loses_a_concurrent_turn() {
    let store = Arc::new(MemoryStore::new());
    let id = sid("busy");
    store
        .append(
            &id,
            (0..50).map(|i| Message::user(format!("old{i}"))).collect(),
            Expect::Any,
        )
        .await
        .unwrap();
    let writer = {
        let (store, id) = (Arc::clone(&store), id.clone());
        tokio::spawn(async move {
            for i in 0..300 {
                store
                    .append(&id, vec![Message::user(format!("new{i}"))], Expect::Any)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let policy = WindowPolicy::default().max_messages(20);
    let mut removed = 0;
    for _ in 0..30 {
        match compact(&*store, &id, &policy, &CharEstimate).await {
            Ok(Some(c)) => removed += c.removed,
            // Retries exhausted by the busy writer: nothing was changed.
            Err(Error::Store(statestore_core::Error::Conflict { .. })) => {}
            other => panic!("{other:?}"),
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    // Every "new" message is either still stored or was removed by a
    // compaction; nothing vanished otherwise, and the order is intact.
    let total = 350;
    assert_eq!(
        state.messages.len() + removed,
        total,
        "a concurrent append was lost"
    );
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(texts.last().unwrap(), "new299");
    let numbers: Vec<usize> = texts
        .iter()
        .filter_map(|t| t.strip_prefix("new").and_then(|n| n.parse().ok()))
        .collect();
    assert!(numbers.windows(2).all(|p| p[1] == p[0] + 1), "{numbers:?}");
}

#[tokio::test]
async fn compaction_keeps_summaries_meaningful() {
    let store = MemoryStore::new();
    let id = sid("trimmed");
    store
        .append(
            &id,
            (0..10).map(|i| Message::user(format!("m{i}"))).collect(),
            Expect::Any,
        )
        .await
        .unwrap();
    let policy = WindowPolicy::default().max_messages(4);
    summarize_dropped(&store, &id, &policy, &CharEstimate, &ListingSummarizer)
        .await
        .unwrap()
        .unwrap();
    let c = compact(&store, &id, &policy, &CharEstimate)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.removed, 6);
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 4);
    assert_eq!(state.summaries.len(), 1);
    assert!(
        state.summaries[0].covers.is_empty(),
        "summary of deleted messages"
    );
    // Windows still send the summary of what was deleted.
    let w = select(&state, &policy, &CharEstimate).unwrap();
    assert_eq!(w.summaries.len(), 1);
    assert_eq!(w.messages.len(), 4);
}

/// A summarizer that costs one "call" and, the first time, lets another
/// writer's turn land before its summary is stored.
struct RacedSummarizer {
    store: Arc<MemoryStore>,
    raced: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Summarizer for RacedSummarizer {
    async fn summarize(&self, _: Option<&Summary>, _: &[Arc<Message>]) -> Result<String, BoxError> {
        Ok("summary".into())
    }
    async fn summarize_counted(
        &self,
        previous: Option<&Summary>,
        messages: &[Arc<Message>],
    ) -> Result<(String, statestore_core::Counters), BoxError> {
        if !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.store
                .append(&sid("raced"), vec![Message::user("meanwhile")], Expect::Any)
                .await?;
        }
        let text = self.summarize(previous, messages).await?;
        Ok((text, [("calls".to_owned(), 1)].into()))
    }
}

/// Every summarizer call is counted in the session, the one whose summary
/// lost the race included.
#[tokio::test]
async fn every_summarizer_call_is_counted() {
    let store = Arc::new(MemoryStore::new());
    let id = sid("raced");
    let msgs: Vec<Message> = (0..10).map(|i| Message::user(format!("m{i}"))).collect();
    store.append(&id, msgs, Expect::Any).await.unwrap();
    let summarizer = RacedSummarizer {
        store: Arc::clone(&store),
        raced: false.into(),
    };
    let policy = WindowPolicy::default().max_messages(4);
    let s = summarize_dropped(&*store, &id, &policy, &CharEstimate, &summarizer)
        .await
        .unwrap()
        .expect("a summary");
    assert_eq!(s.covers, 0..7, "made again on the new history");
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(state.counters.get("calls"), Some(&2), "both calls counted");
    assert_eq!(state.messages.len(), 11, "the count wrote no message");
}
