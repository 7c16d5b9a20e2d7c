//! Two processes, one conversation on PostgreSQL: this process takes turn
//! 1, then starts a copy of itself that takes turn 2 of the same session,
//! then takes turn 3 — each reading the history the others wrote. Every
//! turn is keyed, so a retry of a turn (here: turn 2 again, as after a
//! crash before the reply) is a replay, never a duplicate.
//!
//! ```text
//! DATABASE_URL=postgres://user:password@127.0.0.1:5432/db \
//!     cargo run -p statestore-postgres --example postgres_chat
//! ```
//!
//! The URL is `$DATABASE_URL`, else `$POSTGRES_URL`. The tables live in the
//! schema `statestore_example` (created if missing); the session is deleted
//! at the end.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example prints"
)]

use std::process::Command;

use statestore_core::{Append, Appended, Expect, IdempotencyKey, Message, SessionId, Store};
use statestore_postgres::PostgresStore;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let Some(url) = ["DATABASE_URL", "POSTGRES_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok())
    else {
        eprintln!(
            "set DATABASE_URL (or POSTGRES_URL), e.g. postgres://user:password@127.0.0.1:5432/db"
        );
        std::process::exit(2);
    };
    let store = PostgresStore::builder(&url)?
        .schema("statestore_example")
        .pool_size(2)
        .build()
        .await?;
    let me = std::process::id();

    // The copy this process starts: `postgres_chat turn <n> <session>`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, n, session] = args.as_slice()
        && command == "turn"
    {
        let id = SessionId::new(session.as_str())?;
        take_turn(&store, &id, n.parse()?, me).await?;
        return Ok(());
    }

    let id = SessionId::new(format!("postgres-chat-{me}"))?;
    take_turn(&store, &id, 1, me).await?;

    // Another process continues the same conversation.
    let status = Command::new(std::env::current_exe()?)
        .args(["turn", "2", id.as_str()])
        .status()?;
    if !status.success() {
        return Err(format!("the second process failed: {status}").into());
    }

    // Retrying turn 2 here (its reply was lost, say) writes nothing.
    let again = take_turn(&store, &id, 2, me).await?;
    assert!(again.replayed, "a keyed retry is a replay");

    take_turn(&store, &id, 3, me).await?;

    let state = store.load(&id).await?.ok_or("the session is missing")?;
    println!("[{me}] the whole conversation:");
    for m in &state.messages {
        println!("    {:>9}: {}", m.role.to_string(), m.text());
    }
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(texts.len(), 6, "three turns, each written once");
    let (asked, answered) = (texts.get(2).ok_or("turn 2")?, texts.get(3).ok_or("turn 2")?);
    assert!(asked.starts_with("turn 2") && !asked.ends_with(&format!("process {me}")));
    assert!(answered.contains("after 2 messages"), "{answered}");
    store.delete(&id).await?;
    Ok(())
}

/// One keyed turn: read the recent window (and whether this turn was
/// already written), answer, append with the version read.
async fn take_turn(store: &PostgresStore, id: &SessionId, n: u32, me: u32) -> Result<Appended> {
    let key = IdempotencyKey::new(format!("turn-{n}"))?;
    let recent = store.load_recent_with(id, 20, Some(&key)).await?;
    if let Some(done) = recent.as_ref().and_then(|r| r.replay) {
        println!(
            "[{me}] turn {n} was already written (version {}): nothing to do",
            done.version
        );
        return Ok(done);
    }
    let (expect, seen) = recent.map_or((Expect::Absent, 0), |r| {
        (Expect::Version(r.version), r.total_messages)
    });
    let question = format!("turn {n}, asked by process {me}");
    // A model would answer here, with the window as its context.
    let answer = format!("answer to turn {n}, after {seen} messages");
    let appended = store
        .append_with(
            id,
            Append::new([Message::user(question), Message::assistant(answer)])
                .expect(expect)
                .key(key),
        )
        .await?;
    println!(
        "[{me}] turn {n}: saw {seen} messages, now version {}",
        appended.version
    );
    Ok(appended)
}
