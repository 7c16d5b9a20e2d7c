//! The seed's "Session Cleanup" and "Context Window Management" sections:
//! load, keep the newest messages, save — made safe against concurrent turns
//! by saving with the version that was loaded.
//!
//! ```text
//! cargo run -p statestore-memory --example session_cleanup
//! ```
//!
//! Trimming stored history destroys it. To choose what to *send* to a model
//! without deleting anything, use `load_recent` (and the `context-window`
//! crate); trim only to reclaim space.
#![allow(clippy::print_stdout, reason = "an example reports what it trimmed")]

use std::time::Duration;

use statestore_core::{Error, Expect, Message, Result, SessionId, Store};
use statestore_memory::MemoryStore;

/// Keeps the newest `keep` messages of each session. A turn appended between
/// the load and the save makes the save conflict; the trim is then retried
/// on fresh state instead of silently dropping that turn.
async fn cleanup_old_sessions(store: &dyn Store, ids: &[SessionId], keep: usize) -> Result<()> {
    for id in ids {
        loop {
            let Some(mut state) = store.load(id).await? else {
                println!("{id}: no such session");
                break;
            };
            if state.messages.len() <= keep {
                break;
            }
            let before = state.messages.len();
            state.keep_last(keep);
            match store.save(&state, Expect::Version(state.version)).await {
                Ok(_) => {
                    println!("{id}: trimmed {before} -> {keep} messages");
                    break;
                }
                Err(Error::Conflict { .. }) => continue, // someone wrote meanwhile: redo
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    // Sessions idle for a day expire by themselves (sliding TTL).
    let store = MemoryStore::builder()
        .ttl(Duration::from_secs(24 * 3600))
        .build();
    let ids = [
        SessionId::new("old-session-1")?,
        SessionId::new("old-session-2")?,
    ];
    for (i, id) in ids.iter().enumerate() {
        let turns = (0..(30 + i * 10)).map(|n| Message::user(format!("message {n}")));
        store.append(id, turns.collect(), Expect::Any).await?;
    }

    cleanup_old_sessions(&store, &ids, 20).await?;

    for id in &ids {
        let state = store
            .load(id)
            .await?
            .ok_or(Error::NotFound { id: id.clone() })?;
        assert_eq!(state.messages.len(), 20);
        println!(
            "{id}: now starts at {:?}",
            state.messages.first().map(|m| m.text().into_owned())
        );
    }
    Ok(())
}
