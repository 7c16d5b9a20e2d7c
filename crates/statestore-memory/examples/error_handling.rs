//! The seed's "Error Handling" section: fall back to a fresh state when a
//! load fails, retry transient save failures with backoff, and — what the
//! seed cannot do — reload and redo on a version conflict instead of
//! overwriting someone else's turn.
//!
//! ```text
//! cargo run -p statestore-memory --example error_handling
//! ```
#![allow(clippy::print_stdout, reason = "an example reports what happened")]

use std::time::Duration;

use statestore_core::codec::Limits;
use statestore_core::{ConversationState, Error, Expect, Message, Result, SessionId, Store};
use statestore_memory::MemoryStore;

/// Load, or start fresh when the store cannot answer (the seed's pattern).
async fn load_or_fresh(store: &dyn Store, id: &SessionId) -> ConversationState {
    match store.load(id).await {
        Ok(Some(state)) => state,
        Ok(None) => ConversationState::new(id.clone()),
        Err(e) => {
            println!("state load failed, starting fresh: {e}");
            ConversationState::new(id.clone())
        }
    }
}

/// Saves with retries on transient errors only (unavailable, timeout).
/// Conflicts and size errors are not retried as-is: retrying cannot fix them.
async fn save_with_retry(
    store: &dyn Store,
    state: &ConversationState,
    expect: Expect,
    max_retries: u32,
) -> Result<u64> {
    let mut attempt = 0;
    loop {
        match store.save(state, expect).await {
            Err(e) if e.is_transient() && attempt < max_retries => {
                attempt += 1;
                println!("save failed (attempt {attempt}/{max_retries}): {e}");
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            }
            other => return other,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let store = MemoryStore::builder()
        .limits(Limits::none().with_max_message_bytes(4 * 1024))
        .build();
    let id = SessionId::new("user-123-support")?;

    let mut state = load_or_fresh(&store, &id).await;
    state.push(Message::user("Hello"));
    let expect = if state.version == 0 {
        Expect::Absent
    } else {
        Expect::Version(state.version)
    };
    let v = save_with_retry(&store, &state, expect, 3).await?;
    println!("saved version {v}");

    // Someone else appends a turn; our stale save is refused, not applied.
    store
        .append(
            &id,
            vec![Message::user("from another replica")],
            Expect::Any,
        )
        .await?;
    state.push(Message::user("stale write"));
    match save_with_retry(&store, &state, Expect::Version(v), 3).await {
        Err(Error::Conflict { actual, .. }) => {
            println!("conflict: the session moved on to version {actual:?}; reload and redo")
        }
        other => println!("unexpected: {other:?}"),
    }

    // An oversized message is refused with a clear error and nothing is written.
    let big = Message::user("x".repeat(10_000));
    match store.append(&id, vec![big], Expect::Any).await {
        Err(e @ Error::TooLarge { .. }) => println!("refused: {e}"),
        other => println!("unexpected: {other:?}"),
    }
    let n = store.load(&id).await?.map_or(0, |s| s.messages.len());
    println!("session holds {n} messages");
    assert_eq!(n, 2);
    Ok(())
}
