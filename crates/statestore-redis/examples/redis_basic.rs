//! The seed's "Redis State Store → Basic Setup": a store on the server at
//! `REDIS_URL`, saving and loading one session.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p statestore-redis --example redis_basic
//! ```
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example prints"
)]

use statestore_core::{ConversationState, Expect, Message, SessionId, Store};
use statestore_redis::RedisStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("set REDIS_URL, e.g. redis://127.0.0.1:6379");
        std::process::exit(2);
    };
    // A per-run prefix keeps this example away from anything else on the server.
    let store = RedisStore::builder()
        .prefix(format!("example-basic-{}:", std::process::id()))
        .connect(&url)
        .await?;

    let id = SessionId::new("session-1")?;
    let state = ConversationState::new(id.clone())
        .with_messages([Message::user("Hello"), Message::assistant("Hi there!")]);
    let version = store.save(&state, Expect::Any).await?;
    println!("saved {id} at version {version}");

    let loaded = store.load(&id).await?.ok_or("session vanished")?;
    for msg in &loaded.messages {
        println!("{}: {}", msg.role, msg.text());
    }
    assert_eq!(loaded.messages.len(), 2);
    store.delete(&id).await?;
    Ok(())
}
