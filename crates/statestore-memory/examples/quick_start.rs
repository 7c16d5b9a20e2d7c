//! The seed's Quick Start on the memory store: two executions on one session
//! id, the second answered with the first in its context.
//!
//! ```text
//! cargo run -p statestore-memory --example quick_start
//! ```
//!
//! Each "execution" is what the pipeline crate automates: load the recent
//! window, call the model, append the user message and the reply in one
//! atomic write guarded by the version that was read. The model here is a
//! deterministic offline stand-in (no key, no network).
#![allow(clippy::print_stdout, reason = "an example prints its conversation")]

use std::sync::Arc;

use statestore_core::{Expect, Message, Result, Role, SessionId, Store};
use statestore_memory::MemoryStore;

/// A deterministic offline model: remembers a name introduced with "I'm …".
fn offline_model(context: &[Arc<Message>], input: &str) -> String {
    let name = context
        .iter()
        .filter(|m| m.role == Role::User)
        .find_map(|m| {
            let text = m.text();
            let rest = text.split("I'm ").nth(1)?;
            Some(rest.trim_end_matches(['.', '!']).to_owned())
        });
    match (input.contains("my name"), name) {
        (true, Some(name)) => format!("Your name is {name}"),
        (true, None) => "I don't know your name yet.".to_owned(),
        (false, _) => "Nice to meet you!".to_owned(),
    }
}

/// One pipeline execution: load, call the model, save.
async fn execute(store: &dyn Store, id: &SessionId, role: Role, content: &str) -> Result<String> {
    let recent = store.load_recent(id, 20).await?;
    let (context, expect) = match recent {
        Some(r) => (r.messages, Expect::Version(r.version)),
        None => (Vec::new(), Expect::Absent),
    };
    let reply = offline_model(&context, content);
    store
        .append(
            id,
            vec![
                Message::new(role, content),
                Message::assistant(reply.as_str()),
            ],
            expect,
        )
        .await?;
    Ok(reply)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let store = MemoryStore::new();
    let session_id = SessionId::new("user-123-conversation")?;

    for input in ["Hi, I'm Alice", "What's my name?"] {
        println!("user:      {input}");
        let reply = execute(&store, &session_id, Role::User, input).await?;
        println!("assistant: {reply}");
    }

    let state = store
        .load(&session_id)
        .await?
        .ok_or(statestore_core::Error::NotFound {
            id: session_id.clone(),
        })?;
    println!(
        "(session {session_id}: {} messages, version {})",
        state.messages.len(),
        state.version
    );
    assert_eq!(
        state
            .messages
            .last()
            .map(|m| m.text().into_owned())
            .as_deref(),
        Some("Your name is Alice")
    );
    Ok(())
}
