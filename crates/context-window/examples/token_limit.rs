//! The seed's "Token Limit Management": fit the conversation into 4,000
//! tokens — counted exactly, with the seed's "4 characters per token"
//! estimate shown beside it.
//!
//! ```text
//! cargo run -p context-window --example token_limit
//! ```
#![allow(
    clippy::print_stdout,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    reason = "an example"
)]

use context_window::{
    CharEstimate, OpenAiEncoding, TokenCounter, WindowPolicy, annotate, count_message, exact,
    select,
};
use statestore_core::{ConversationState, Message, SessionId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter = exact(OpenAiEncoding::O200kBase);
    let samples = [
        "The quick brown fox jumps over the lazy dog, again and again, until it tires.",
        "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{v:?}\"); }",
        "会话状态存储在 Redis 中，每条消息一个元素。",
        "🦀🦀🦀 emoji 👩‍👩‍👧 and flags 🇵🇹🇯🇵",
    ];
    println!("{:>8} {:>8} {:>7}  text", "exact", "chars/4", "error");
    for text in samples {
        let exact_n = counter.count_text(text);
        let estimate = CharEstimate.count_text(text);
        let error = (estimate as f64 - exact_n as f64) / exact_n as f64 * 100.0;
        println!("{exact_n:>8} {estimate:>8} {error:>+6.0}%  {text}");
    }

    // A long conversation; each stored message carries its exact count.
    let mut messages = Vec::new();
    for i in 0..400 {
        let mut m = if i % 2 == 0 {
            Message::user(format!("Question {i}: {}", samples[i % samples.len()]))
        } else {
            Message::assistant(format!("Answer {i}: {}", samples[(i + 1) % samples.len()]))
        };
        annotate(counter, &mut m);
        messages.push(m);
    }
    let state = ConversationState::new(SessionId::new("long")?)
        .with_system_prompt("You are a concise assistant.")
        .with_messages(messages);

    // Trim to 4,000 tokens, 500 of them kept for the reply.
    let policy = WindowPolicy::default().token_budget(4_000, 500);
    let window = select(&state, &policy, counter)?;
    let by_estimate: usize = window
        .request_messages()
        .iter()
        .map(|m| count_message(&CharEstimate, m))
        .sum();
    println!(
        "\n{} of {} messages fit: {} tokens exactly (≤ 3,500); the chars/4 estimate would say {}",
        window.messages.len(),
        state.messages.len(),
        window.tokens.unwrap_or(0),
        by_estimate
    );
    assert!(window.tokens.unwrap_or(usize::MAX) <= 3_500);
    Ok(())
}
