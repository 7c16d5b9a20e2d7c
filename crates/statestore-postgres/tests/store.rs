//! What the conformance suite does not see: how many statements a turn
//! sends, and expiry (invisible at once, reclaimed by `purge_expired`).
#![allow(clippy::unwrap_used, reason = "test code")]

use std::error::Error as StdError;
use std::time::Duration;

use pg_test_server::PgServer;
use statestore_core::{Append, Expect, IdempotencyKey, Message, SessionId, Store};
use statestore_postgres::PostgresStore;

type TestResult = Result<(), Box<dyn StdError>>;

/// The statements the server logged after byte `from` of its log.
fn statements_since(server: &PgServer, from: usize) -> Vec<String> {
    let log = server.log();
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("LOG:  execute") || l.contains("LOG:  statement:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_turn_is_two_statements() -> TestResult {
    let server = PgServer::builder()
        .fsync(false)
        .config("log_statement", "'all'")
        .start()?;
    let store = PostgresStore::builder(&server.url())?
        .pool_size(1)
        .ttl(Duration::from_secs(3600))
        .build()
        .await?;
    let id = SessionId::new("turns")?;
    let (store, id) = (&store, &id);
    let turn = |n: u32| async move {
        let key = IdempotencyKey::new(format!("turn-{n}"))?;
        let recent = store.load_recent_with(id, 20, Some(&key)).await?;
        let expect = recent.map_or(Expect::Absent, |r| Expect::Version(r.version));
        let messages = vec![Message::user("question"), Message::assistant("answer")];
        store
            .append_with(id, Append::new(messages).expect(expect).key(key))
            .await?;
        Ok::<_, statestore_core::Error>(())
    };
    // The first turn prepares the statements on the pooled connection.
    turn(0).await?;
    let from = server.log().len();
    turn(1).await?;
    let sent = statements_since(&server, from);
    // The read, the access it records (pipelined with it: the same round
    // trip) and the append's one function call.
    assert_eq!(sent.len(), 3, "{sent:#?}");
    assert!(sent[2].contains("fn_append"), "{sent:#?}");
    Ok(())
}

#[tokio::test]
async fn expired_sessions_vanish_at_once_and_purge_reclaims_them() -> TestResult {
    let server = PgServer::builder().fsync(false).start()?;
    let store = PostgresStore::builder(&server.url())?
        .ttl(Duration::from_millis(300))
        .build()
        .await?;
    for i in 0..5 {
        let id = SessionId::new(format!("s{i}"))?;
        store
            .append(&id, vec![Message::user("hi")], Expect::Any)
            .await?;
    }
    let kept = SessionId::new("kept")?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    store
        .append(&kept, vec![Message::user("hi")], Expect::Any)
        .await?;
    let gone = SessionId::new("s0")?;
    assert!(!store.exists(&gone).await?);
    assert!(store.load(&gone).await?.is_none());
    assert!(store.load_recent(&gone, 5).await?.is_none());
    // A write sees it as missing too: it starts a new session.
    assert_eq!(store.append(&gone, vec![], Expect::Absent).await?, 1);
    assert_eq!(store.purge_expired(2).await?, 4, "in batches of 2");
    assert_eq!(store.purge_expired(2).await?, 0);
    let page = store.list(&statestore_core::ListQuery::default()).await?;
    assert_eq!(page.sessions.len(), 2);
    Ok(())
}
