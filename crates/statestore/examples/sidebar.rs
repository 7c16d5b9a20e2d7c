//! A chat product's session list, on SQLite: each user's conversations
//! newest first with their titles, a page at a time; a branch from an
//! earlier turn; retention that deletes what sat idle.
//!
//! ```text
//! cargo run -p statestore --features sqlite,pipeline --example sidebar
//! ```
//!
//! The store is a SQLite file in a fresh temporary directory (removed at
//! the end); the model is the deterministic offline provider.
#![allow(clippy::print_stdout, reason = "an example prints what it lists")]
// The pipeline's futures, nested in `main`'s, are deep for rustc's layout queries.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::Duration;

use statestore::pipeline::{OfflineProvider, Pipeline, TitlePolicy};
use statestore::{ListQuery, PruneQuery, SessionId, Timestamp};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("statestore-sidebar-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir).await;
    std::fs::remove_dir_all(&dir)?;
    result
}

async fn run(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let url = format!("sqlite://{}", dir.join("chats.db").display());
    let store = statestore::open(&url).await?;
    // Every new session is titled by its first message, cut to 32 characters.
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .title(TitlePolicy::FirstMessage { max_chars: 32 })
        .build();

    for (session, user, first) in [
        (
            "c1",
            "alice",
            "Plan a weekend in Oslo for two people in May",
        ),
        ("c2", "bob", "Explain the borrow checker"),
        ("c3", "alice", "Draft a polite reply to my landlord"),
        ("c4", "alice", "What wine goes with salmon?"),
    ] {
        // The owner is set before the first turn (the sidebar lists by user).
        let mut state = statestore::ConversationState::new(SessionId::new(session)?);
        state.user_id = Some(user.to_owned());
        store.save(&state, statestore::Expect::Absent).await?;
        pipe.execute(session, statestore::Role::User, first).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // alice goes back to her first conversation: it moves to the top.
    pipe.execute("c1", statestore::Role::User, "And if it rains?")
        .await?;

    // The sidebar: alice's sessions, newest first, two per page.
    println!("alice's conversations, newest first:");
    let mut query = ListQuery::for_user("alice")
        .recent()
        .with_limit(2)
        .with_count();
    let mut shown = Vec::new();
    loop {
        let page = store.list(&query).await?;
        for s in &page.sessions {
            let title = s.title.as_deref().unwrap_or("(untitled)");
            println!("  {:<4} {title}", s.id.as_str());
            shown.push(s.id.as_str().to_owned());
        }
        match page.next_cursor {
            Some(cursor) => query = query.after(Some(cursor)),
            None => break,
        }
    }
    assert_eq!(shown, ["c1", "c4", "c3"], "the newest activity first");

    // A branch of c1 after its first turn, to try another way.
    let branch = SessionId::new("c1-take-2")?;
    store.fork_at(&SessionId::new("c1")?, &branch, 2).await?;
    let copied = store.load(&branch).await?.map_or(0, |s| s.messages.len());
    println!("branched c1 after its first turn into {branch}: {copied} messages");
    assert_eq!(copied, 2);

    // Retention, measured as if 31 days had passed: everything idle for
    // 30 days goes — first a dry run, then for real.
    let later = Timestamp::from_unix_millis(Timestamp::now().as_unix_millis() + 31 * 86_400_000);
    let idle = PruneQuery::idle_for(Duration::from_secs(30 * 86_400)).as_of(later);
    let would = store.prune(&idle.clone().dry_run()).await?;
    let pruned = store.prune(&idle).await?;
    println!(
        "pruned {} idle sessions (the dry run counted {})",
        pruned.removed, would.removed
    );
    assert_eq!((would.removed, pruned.removed), (5, 5));
    assert!(store.list(&ListQuery::new()).await?.sessions.is_empty());
    Ok(())
}
