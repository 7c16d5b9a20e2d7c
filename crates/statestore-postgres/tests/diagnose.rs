//! `PostgresStore::diagnose` against a real server: `synchronous_commit`,
//! each table's size, and dead rows after deletes (partitions summed).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use pg_test_server::PgServer;
use statestore_core::{Expect, Message, SessionId, Store};
use statestore_postgres::PostgresStore;

type TestResult = Result<(), Box<dyn StdError>>;

#[tokio::test]
async fn sizes_dead_rows_and_synchronous_commit() -> TestResult {
    let server = PgServer::builder()
        .fsync(false)
        .config("synchronous_commit", "off")
        // No vacuum may reclaim the dead rows while the test looks.
        .config("autovacuum", "off")
        .start()?;
    let store = PostgresStore::builder(&server.url())?
        .schema("diag")
        .partitions(2)
        .build()
        .await?;
    for i in 0..20 {
        let id = SessionId::new(format!("s{i}"))?;
        let messages = (0..10)
            .map(|j| Message::user(format!("message {j}")))
            .collect();
        store.append(&id, messages, Expect::Absent).await?;
    }
    for i in 0..10 {
        store.delete(&SessionId::new(format!("s{i}"))?).await?;
    }

    // The statistics trail the writes by up to a second.
    let deadline = Instant::now() + Duration::from_secs(15);
    let d = loop {
        let d = store.diagnose().await?;
        let messages = d.tables.iter().find(|t| t.table == "messages").unwrap();
        if messages.dead_rows >= 100 || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(d.synchronous_commit, "off");
    assert_eq!(d.server_version, server.psql("SHOW server_version")?);
    assert_eq!(
        (d.schema.as_str(), d.prefix.as_str()),
        ("diag", "statestore_")
    );
    assert_eq!(d.partitions, Some(2));
    let names: Vec<&str> = d.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(
        names,
        [
            "schema_version",
            "sessions",
            "messages",
            "summaries",
            "writes",
            "pending"
        ]
    );
    let messages = d.tables.iter().find(|t| t.table == "messages").unwrap();
    assert_eq!(messages.qualified, "diag.statestore_messages");
    assert!(messages.total_bytes > 0, "{messages:?}");
    // Partitions summed: 100 live, 100 dead message rows in two partitions.
    assert_eq!(
        (messages.live_rows, messages.dead_rows),
        (100, 100),
        "{messages:?}"
    );
    assert!((messages.dead_ratio() - 0.5).abs() < 1e-9);
    let size: u64 = server
        .psql(
            "SELECT sum(pg_total_relation_size(relid))
               FROM pg_partition_tree('diag.statestore_messages')",
        )?
        .parse()?;
    assert_eq!(messages.total_bytes, size);

    // An unpartitioned store: the tables themselves.
    let plain = PostgresStore::builder(&server.url())?
        .schema("plain")
        .build()
        .await?;
    let id = SessionId::new("one")?;
    plain
        .append(&id, vec![Message::user("hi")], Expect::Absent)
        .await?;
    let d = plain.diagnose().await?;
    assert_eq!(d.partitions, None);
    let sessions = d.tables.iter().find(|t| t.table == "sessions").unwrap();
    let size: u64 = server
        .psql("SELECT pg_total_relation_size('plain.statestore_sessions')")?
        .parse()?;
    assert!(size > 0);
    assert_eq!(sessions.total_bytes, size);
    Ok(())
}
