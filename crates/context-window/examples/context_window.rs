//! The seed's "Context Window Management": keep only the recent messages.
//!
//! ```text
//! cargo run -p context-window --example context_window
//! ```
//!
//! The seed trims stored history (`state.Messages = state.Messages[len-10:]`
//! then `Save`), destroying it, and can cut a tool call from its results.
//! Here selection chooses what to *send* and leaves the store alone;
//! `compact` is the explicit, version-safe "trim and save" when space must
//! be reclaimed.
#![allow(clippy::print_stdout, clippy::indexing_slicing, reason = "an example")]

use context_window::{CharEstimate, WindowPolicy, compact, select};
use statestore_core::{Expect, Message, SessionId, Store, ToolCall};
use statestore_memory::MemoryStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let conversation_id = SessionId::new("conv-42")?;
    let mut history = Vec::new();
    for i in 0..8 {
        history.push(Message::user(format!("question {i}")));
        history.push(Message::assistant(format!("answer {i}")));
    }
    history.push(Message::user("What's the weather in Lisbon?"));
    history.push(Message::assistant("").with_tool_calls(vec![ToolCall::new(
        "call_1",
        "weather",
        r#"{"city":"Lisbon"}"#,
    )]));
    history.push(Message::tool("call_1", "24C, clear"));
    history.push(Message::assistant("24C and clear."));
    history.push(Message::user("Thanks!"));
    history.push(Message::assistant("You're welcome."));
    store.append(&conversation_id, history, Expect::Any).await?;

    // Load existing state.
    let state = store
        .load(&conversation_id)
        .await?
        .ok_or("no such conversation")?;

    // Keep only recent messages (sliding window), without touching the store.
    let max_messages = 10;
    let window = select(
        &state,
        &WindowPolicy::default().max_messages(max_messages),
        &CharEstimate,
    )?;
    println!(
        "stored: {} messages; sending the last {}:",
        state.messages.len(),
        window.messages.len()
    );
    for m in &window.messages {
        println!("  {:>9}: {}", m.role.as_str(), m.text());
    }

    // The seed's slice of the last 4 would start on the tool result
    // "24C, clear" — a request OpenAI rejects (HTTP 400). The window keeps
    // the call and its result together, so it takes 3.
    let naive = &state.messages[state.messages.len() - 4..];
    assert!(naive[0].tool_call_id().is_some());
    let narrow = select(
        &state,
        &WindowPolicy::default().max_messages(4),
        &CharEstimate,
    )?;
    let texts: Vec<String> = narrow
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    println!(
        "
with room for 4 messages: {texts:?}"
    );
    assert_eq!(texts, ["24C and clear.", "Thanks!", "You're welcome."]);

    // The seed's "Save trimmed state", when space must really be reclaimed:
    // version-guarded, so a turn appended meanwhile is never lost.
    let done = compact(
        &store,
        &conversation_id,
        &WindowPolicy::default().max_messages(max_messages),
        &CharEstimate,
    )
    .await?
    .ok_or("no such conversation")?;
    println!(
        "\ncompacted: removed {} messages, now at version {}",
        done.removed, done.version
    );
    let after = store
        .load(&conversation_id)
        .await?
        .ok_or("no such conversation")?;
    assert_eq!(after.messages.len(), window.messages.len());
    Ok(())
}
