//! The seed's "Session ID Strategy": ids built from users, conversations,
//! dates and tickets — any printable string is a valid id, and ids that
//! look like keys or patterns stay isolated.
//!
//! ```text
//! cargo run -p pipeline --example session_ids
//! ```
#![allow(clippy::print_stdout, reason = "an example prints")]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pipeline::{OfflineProvider, Pipeline};
use statestore_core::{Role, SessionId};
use statestore_memory::MemoryStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pipe = Pipeline::builder(
        Arc::new(MemoryStore::new()),
        Arc::new(OfflineProvider::new()),
    )
    .build();
    let (user_id, conversation_id, ticket_id) = ("42", "9f1c", "SUP-1234");
    let day = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() / 86_400;

    let ids = [
        format!("user-{user_id}"),           // user-based
        format!("conv-{conversation_id}"),   // conversation-based
        format!("user-{user_id}-day-{day}"), // time-based
        format!("support-{ticket_id}"),      // feature-based
        format!("user-{user_id}-support"),   // descriptive
        "tenant:{acme}/user:*".to_owned(),   // looks like a key pattern: still just an id
    ];
    for id in &ids {
        let done = pipe
            .execute(id, Role::User, format!("hello from {id}"))
            .await?;
        println!("{id:<28} -> {}", done.reply.text());
    }

    // Ids that can never be valid are refused with a clear error.
    for bad in ["", "line\nbreak"] {
        match SessionId::new(bad) {
            Err(e) => println!("refused {bad:?}: {e}"),
            Ok(id) => return Err(format!("{id} should have been refused").into()),
        }
    }
    Ok(())
}
