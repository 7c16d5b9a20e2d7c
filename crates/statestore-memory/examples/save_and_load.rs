//! The seed's "Save and Load" and "Multi-User" sections on the memory store.
//!
//! ```text
//! cargo run -p statestore-memory --example save_and_load
//! ```
#![allow(clippy::print_stdout, reason = "an example prints what it loaded")]

use statestore_core::{ConversationState, Error, Expect, Message, Result, SessionId, Store};
use statestore_memory::MemoryStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let store = MemoryStore::new();

    // Save state manually.
    let id = SessionId::new("session-1")?;
    let state = ConversationState::new(id.clone())
        .with_messages([Message::user("Hello"), Message::assistant("Hi there!")]);
    let version = store.save(&state, Expect::Any).await?;
    println!("saved {id} at version {version}");

    // Load it back. A missing session is `None`, not an error.
    let loaded = store
        .load(&id)
        .await?
        .ok_or(Error::NotFound { id: id.clone() })?;
    for msg in &loaded.messages {
        println!("{}: {}", msg.role, msg.text());
    }

    // Separate users, separate sessions.
    for (user, said) in [
        ("alice", "My favorite color is blue"),
        ("bob", "I love pizza"),
    ] {
        let state = ConversationState::new(SessionId::new(format!("user-{user}"))?)
            .with_user_id(user)
            .with_messages([Message::user(said)]);
        store.save(&state, Expect::Absent).await?;
    }
    for user in ["alice", "bob"] {
        let id = SessionId::new(format!("user-{user}"))?;
        let n = store.load(&id).await?.map_or(0, |s| s.messages.len());
        println!("{user}: {n} message(s)");
        assert_eq!(n, 1);
    }
    Ok(())
}
