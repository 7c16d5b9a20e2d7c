//! The seed's "Fork State" section: branch a conversation under a new id.
//!
//! ```text
//! cargo run -p statestore-memory --example fork_state
//! ```
#![allow(clippy::print_stdout, reason = "an example prints both branches")]

use statestore_core::{Error, Expect, Message, Result, SessionId, Store};
use statestore_memory::MemoryStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let store = MemoryStore::new();
    let source = SessionId::new("user-123-original")?;
    let target = SessionId::new("user-123-new-topic")?;

    store
        .append(
            &source,
            vec![
                Message::user("Plan a trip to Lisbon"),
                Message::assistant("Sure!"),
            ],
            Expect::Any,
        )
        .await?;

    // Fork creates a snapshot copy under the new id.
    store.fork(&source, &target).await?;
    store
        .append(
            &target,
            vec![Message::user("Actually, make it Porto")],
            Expect::Any,
        )
        .await?;

    for id in [&source, &target] {
        let n = store.load(id).await?.map_or(0, |s| s.messages.len());
        println!("{id}: {n} messages");
    }

    // Unlike the seed, a fork never overwrites an existing session.
    match store.fork(&source, &target).await {
        Err(Error::AlreadyExists { id }) => {
            println!("refused to overwrite {id}");
            Ok(())
        }
        Err(e) => Err(e),
        Ok(_) => Err(Error::InvalidArgument {
            id: target,
            reason: "fork overwrote an existing session".into(),
        }),
    }
}
