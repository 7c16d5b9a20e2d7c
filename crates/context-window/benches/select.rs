//! Window selection over 10,000 stored messages whose token counts are
//! cached (annotated when they were stored), so selection tokenizes nothing.
//!
//! ```text
//! cargo bench -p context-window --bench select
//! ```
//!
//! The target's group measures [`select_borrowed`], the selection as the
//! pipeline makes it (the window borrowed from the history, the request
//! built from it); the second group measures [`select`], which also clones
//! every message sent into an owned `Window`.
//!
//! The history is a chat with a tool exchange every tenth turn (an
//! assistant message with two tool calls and both results), which is what
//! selection has to keep together.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use context_window::{
    CharEstimate, History, TokenCounter, WindowPolicy, annotate, select, select_borrowed,
};
use criterion::{Criterion, criterion_group, criterion_main};
use statestore_core::{Message, ToolCall};

const MESSAGES: usize = 10_000;

/// [`CharEstimate`] that counts how often it is asked: the check that
/// selection used the cached counts.
#[derive(Debug, Default)]
struct Counting(AtomicUsize);

impl TokenCounter for Counting {
    fn encoding(&self) -> &str {
        CharEstimate.encoding()
    }
    fn count_text(&self, text: &str) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed);
        CharEstimate.count_text(text)
    }
}

/// `n` messages, each annotated with `counter`'s count.
fn history(n: usize) -> Vec<Arc<Message>> {
    let mut out = Vec::with_capacity(n);
    let mut turn = 0;
    while out.len() < n {
        out.push(Message::user(format!(
            "Question {turn}: could you look at the figures from last week again?"
        )));
        if turn % 10 == 9 {
            let calls = vec![
                ToolCall::new(format!("call-{turn}-a"), "lookup", r#"{"week": 12}"#),
                ToolCall::new(format!("call-{turn}-b"), "lookup", r#"{"week": 13}"#),
            ];
            out.push(Message::assistant("").with_tool_calls(calls));
            out.push(Message::tool(
                format!("call-{turn}-a"),
                "revenue 1,204; costs 877",
            ));
            out.push(Message::tool(
                format!("call-{turn}-b"),
                "revenue 1,311; costs 902",
            ));
        }
        out.push(Message::assistant(format!(
            "Answer {turn}: revenue went up by about nine percent while costs rose less."
        )));
        turn += 1;
    }
    out.truncate(n);
    out.into_iter()
        .map(|mut m| {
            annotate(&CharEstimate, &mut m);
            Arc::new(m)
        })
        .collect()
}

fn selection(c: &mut Criterion) {
    let messages = history(MESSAGES);
    let total: usize = messages
        .iter()
        .map(|m| m.token_count.as_ref().map_or(0, |t| t.tokens as usize))
        .sum();
    let history = History {
        system_prompt: Some("You are a helpful assistant."),
        summaries: &[],
        messages: &messages,
        first_position: 0,
    };
    let policies = [
        // Every message fits: the whole history is scanned and sent.
        (
            "budget fits all",
            WindowPolicy::default().token_budget(total + 1_000, 0),
        ),
        // A 128k context: scanning stops where the budget runs out.
        (
            "128k budget",
            WindowPolicy::default().token_budget(128_000, 4_000),
        ),
        // What the pipeline does: a message cap and a budget.
        (
            "20 messages + 128k budget",
            WindowPolicy::default()
                .max_messages(20)
                .token_budget(128_000, 4_000),
        ),
    ];
    let mut group = c.benchmark_group("context-window/select over 10,000 cached messages");
    for (name, policy) in policies {
        // Check the setup once: a window, and no message tokenized (only
        // the system prompt's role and text are counted).
        let counter = Counting::default();
        let window = select_borrowed(history, &policy, &counter).unwrap();
        assert!(!window.is_empty());
        assert!(
            counter.0.load(Ordering::Relaxed) <= 2,
            "selection tokenized messages"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(select_borrowed(black_box(history), &policy, &CharEstimate).unwrap())
            });
        });
    }
    group.finish();
    let mut group =
        c.benchmark_group("context-window/select into an owned Window, 10,000 cached messages");
    for (name, policy) in policies {
        group.bench_function(name, |b| {
            b.iter(|| black_box(select(black_box(history), &policy, &CharEstimate).unwrap()));
        });
    }
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
