//! A conversation that survives restarts: each run appends one turn to a
//! session in a SQLite file and prints the whole history; the next run
//! continues where the last one stopped.
//!
//! ```text
//! cargo run -p statestore-sqlite --example survives_restart          # run it twice
//! STATESTORE_SQLITE_PATH=chat.sqlite3 cargo run -p statestore-sqlite --example survives_restart -- 4
//! ```
//!
//! The file is `$STATESTORE_SQLITE_PATH`, or `statestore-survives-restart.sqlite3`
//! in the temp dir. An optional argument is the number of messages the
//! history must hold after this run's turn (checked). Within one run the
//! example also closes the store and opens the file again — a simulated
//! restart — and checks that the turn is still there.
#![allow(clippy::print_stdout, reason = "an example prints the history")]

use statestore_core::{Append, Error, Expect, Message, Result, SessionId, Store};
use statestore_sqlite::SqliteStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let path = std::env::var_os("STATESTORE_SQLITE_PATH").map_or_else(
        || std::env::temp_dir().join("statestore-survives-restart.sqlite3"),
        std::path::PathBuf::from,
    );
    let id = SessionId::new("demo")?;
    let expected: Option<usize> = match std::env::args().nth(1) {
        Some(arg) => Some(arg.parse().map_err(|e| Error::InvalidArgument {
            id: id.clone(),
            reason: format!("the expected message count {arg:?} is not a number: {e}"),
        })?),
        None => None,
    };

    let store = SqliteStore::open(&path).await?;
    let before = store.load_recent(&id, 0).await?;
    let (version, held) = before.map_or((0, 0), |r| (r.version, r.total_messages));
    let turn = held / 2 + 1;
    let expect = if version == 0 {
        Expect::Absent
    } else {
        Expect::Version(version)
    };
    let question = format!("This is turn {turn}. Do you remember the last one?");
    println!(
        "{}: session {id} holds {held} messages (version {version})",
        path.display()
    );

    let appended = store
        .append_with(
            &id,
            Append::new([
                Message::user(question.clone()),
                Message::assistant(if turn == 1 {
                    "Nothing before this: it is our first turn.".to_owned()
                } else {
                    format!("Yes: turn {} is in the file.", turn - 1)
                }),
            ])
            .expect(expect),
        )
        .await?;
    // Dropping the last handle ends the store's threads; what `append`
    // acknowledged is already committed (synchronous=FULL).
    drop(store);

    // A restart: a new store on the same file sees the turn.
    let store = SqliteStore::open(&path).await?;
    let state = store
        .load(&id)
        .await?
        .ok_or_else(|| Error::NotFound { id: id.clone() })?;
    for (i, m) in state.messages.iter().enumerate() {
        println!("{i:>3} {:>9}: {}", m.role.to_string(), m.text());
    }
    let total = state.messages.len();
    check(
        total as u64 == held + 2,
        "the history grew by this run's turn",
    )?;
    check(
        state.version == appended.version,
        "the version survived the restart",
    )?;
    check(
        state
            .messages
            .get(total.saturating_sub(2))
            .is_some_and(|m| m.text() == question),
        "this run's question is the second-newest message",
    )?;
    if let Some(want) = expected {
        check(total == want, &format!("the history holds {want} messages"))?;
    }
    println!("ok: {total} messages after turn {turn}; run again to continue");
    Ok(())
}

fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Backend {
            operation: "survives_restart",
            source: format!("check failed: {what}").into(),
        })
    }
}
