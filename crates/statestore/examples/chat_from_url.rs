//! The seed's Quick Start, written as an application would: one dependency
//! (`statestore`), the backend chosen by a URL.
//!
//! ```text
//! cargo run -p statestore --features openai --example chat_from_url
//! STATESTORE_URL=sqlite://chat.db cargo run -p statestore --features openai,sqlite --example chat_from_url
//! ```
//!
//! The store is `STATESTORE_URL`, else `REDIS_URL` (with a key prefix of its
//! own), else `memory://`. The model is the deterministic offline provider
//! (no key, no network), or with `OPENAI_API_KEY` (optionally
//! `OPENAI_BASE_URL`, `OPENAI_MODEL`) a real OpenAI-compatible one.
#![allow(clippy::print_stdout, reason = "an example prints its conversation")]

use std::sync::Arc;

use statestore::pipeline::{OfflineProvider, OpenAiProvider, Pipeline, Provider, counters};
use statestore::window::WindowPolicy;
use statestore::{Options, Role, SessionId};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Step 1: open the state store the configuration names.
    let (url, options) = match (std::env::var("STATESTORE_URL"), std::env::var("REDIS_URL")) {
        (Ok(url), _) => (url, Options::new()),
        // A prefix of its own, so the example never touches anyone's keys.
        (Err(_), Ok(url)) => (
            url,
            Options::new().prefix(format!("quickstart-{}:", std::process::id())),
        ),
        (Err(_), Err(_)) => ("memory://".to_owned(), Options::new()),
    };
    let store = statestore::open_with(&url, options).await?;
    let provider: Arc<dyn Provider> = match std::env::var("OPENAI_API_KEY") {
        Ok(_) => Arc::new(OpenAiProvider::from_env()?),
        Err(_) => Arc::new(OfflineProvider::new()),
    };
    println!("store: {store:?}\nprovider: {}\n", provider.name());
    let pipe = Pipeline::builder(Arc::clone(&store), provider)
        .system_prompt("You are a helpful assistant. Answer in one short sentence.")
        .window(WindowPolicy::default().max_messages(20))
        .build();

    // Step 2: use one session id for both executions.
    let id = SessionId::new(format!("user-123-conversation-{}", std::process::id()))?;
    for input in ["Hi, I'm Alice", "What's my name?"] {
        println!("user:      {input}");
        let result = pipe.execute(id.as_str(), Role::User, input).await?;
        println!("assistant: {}", result.reply.text());
    }

    let state = store.load(&id).await?.ok_or("the session was not saved")?;
    println!(
        "\n(session {id}: {} messages, version {}, usage {:?})",
        state.messages.len(),
        state.version,
        state.counters
    );
    // One write per turn; usage is in the session's counters.
    assert_eq!(state.version, 2);
    assert_eq!(state.counters.get(counters::TURNS), Some(&2));
    if std::env::var("OPENAI_API_KEY").is_err() {
        let last = state.messages.last().map(|m| m.text().into_owned());
        assert_eq!(last.as_deref(), Some("Your name is Alice"));
    }
    store.delete(&id).await?;
    Ok(())
}
