//! The seed's "Multi-User Chat": two users' conversations saved and loaded
//! independently on one Redis.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p statestore-redis --example multi_user_chat
//! ```
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example prints"
)]

use statestore_core::{ConversationState, Expect, ListQuery, Message, SessionId, Store};
use statestore_redis::RedisStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("set REDIS_URL, e.g. redis://127.0.0.1:6379");
        std::process::exit(2);
    };
    let store = RedisStore::builder()
        .prefix(format!("example-chat-{}:", std::process::id()))
        .connect(&url)
        .await?;

    // User 1 and user 2: separate sessions.
    for (user, said) in [
        ("alice", "My favorite color is blue"),
        ("bob", "I love pizza"),
    ] {
        let state = ConversationState::new(SessionId::new(format!("user-{user}"))?)
            .with_user_id(user)
            .with_messages([Message::user(said)]);
        store.save(&state, Expect::Any).await?;
    }

    // Load each user's state independently.
    for user in ["alice", "bob"] {
        let id = SessionId::new(format!("user-{user}"))?;
        let loaded = store.load(&id).await?.ok_or("missing session")?;
        let first = loaded.messages.first().map(|m| m.text().into_owned());
        println!("{user}: {} message(s): {first:?}", loaded.messages.len());
    }

    // And find a user's sessions, newest first, without KEYS or SCAN.
    let page = store.list(&ListQuery::for_user("alice").recent()).await?;
    let ids: Vec<_> = page.ids().collect();
    println!("alice's sessions: {ids:?}");
    assert_eq!(ids.len(), 1);

    for id in store.list(&ListQuery::default()).await?.into_ids() {
        store.delete(&id).await?;
    }
    Ok(())
}
