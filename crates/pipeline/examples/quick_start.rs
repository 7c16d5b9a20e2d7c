//! The seed's Quick Start: two executions on one session id, the second
//! answered with the first in its context.
//!
//! ```text
//! cargo run -p pipeline --example quick_start
//! ```
//!
//! By default: the memory store and the deterministic offline provider (no
//! key, no network). With `REDIS_URL` set, the session lives in Redis; with
//! `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `OPENAI_MODEL`) a
//! real OpenAI-compatible model answers.
#![allow(clippy::print_stdout, reason = "an example prints its conversation")]

use std::sync::Arc;

use pipeline::{OfflineProvider, Pipeline, Provider};
use statestore_core::{Role, Store};
use statestore_memory::MemoryStore;
use statestore_redis::RedisStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Step 1: create the state store.
    let store: Arc<dyn Store> = match std::env::var("REDIS_URL") {
        Ok(url) => Arc::new(
            RedisStore::builder()
                .prefix(format!("quickstart-{}:", std::process::id()))
                .connect(&url)
                .await?,
        ),
        Err(_) => Arc::new(MemoryStore::new()),
    };
    let provider: Arc<dyn Provider> = match std::env::var("OPENAI_API_KEY") {
        Ok(_) => Arc::new(pipeline::OpenAiProvider::from_env()?),
        Err(_) => Arc::new(OfflineProvider::new()),
    };
    println!("store: {store:?}\nprovider: {}\n", provider.name());
    let pipe = Pipeline::builder(Arc::clone(&store), provider)
        .system_prompt("You are a helpful assistant. Answer in one short sentence.")
        .build();

    // Step 2: use one session id for both executions.
    let session_id = "user-123-conversation";
    for input in ["Hi, I'm Alice", "What's my name?"] {
        println!("user:      {input}");
        let result = pipe.execute(session_id, Role::User, input).await?;
        println!("assistant: {}", result.reply.text());
    }

    let id = statestore_core::SessionId::new(session_id)?;
    let state = store.load(&id).await?.ok_or("the session was not saved")?;
    println!(
        "\n(session {id}: {} messages, version {}, usage {:?})",
        state.messages.len(),
        state.version,
        state.counters
    );
    // One write per turn; usage is in the session's counters.
    assert_eq!(state.version, 2);
    assert_eq!(state.counters.get(pipeline::counters::TURNS), Some(&2));
    let last = state
        .messages
        .last()
        .map(|m| m.text().into_owned())
        .unwrap_or_default();
    if std::env::var("OPENAI_API_KEY").is_err() {
        assert_eq!(last, "Your name is Alice");
    }
    store.delete(&id).await?;
    Ok(())
}
