//! Hash partitioning by session id (`PostgresStoreBuilder::partitions`):
//! the partitions exist (pg_inherits), one session's rows stay in one
//! partition of each table, and partitioning is checked on reopen.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::error::Error as StdError;

use pg_test_server::PgServer;
use statestore_core::{Expect, Message, SessionId, Store};
use statestore_postgres::{Error, PostgresStore};

type TestResult = Result<(), Box<dyn StdError>>;

const TABLES: [&str; 5] = ["sessions", "messages", "summaries", "writes", "pending"];

/// `table`'s partitions as pg_inherits lists them, each with its bounds.
fn partitions(server: &PgServer, schema: &str, table: &str) -> Vec<String> {
    let out = server
        .psql(&format!(
            "SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = '\"{schema}\".\"statestore_{table}\"'::regclass
              ORDER BY c.relname"
        ))
        .unwrap();
    out.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn partitions_are_created_used_and_checked() -> TestResult {
    let server = PgServer::builder().fsync(false).start()?;
    let url = server.url();
    let store = PostgresStore::builder(&url)?
        .schema("parted")
        .partitions(4)
        .build()
        .await?;
    assert_eq!(store.partitions(), Some(4));
    for table in TABLES {
        let found = partitions(&server, "parted", table);
        assert_eq!(found.len(), 4, "{table}: {found:?}");
        assert_eq!(
            found[3],
            format!("statestore_{table}_p3 FOR VALUES WITH (modulus 4, remainder 3)")
        );
    }

    // Sessions spread over the partitions; each one's messages stay in one.
    for i in 0..32 {
        let id = SessionId::new(format!("session-{i}"))?;
        let messages = vec![Message::user("q"), Message::assistant("a")];
        store.append(&id, messages, Expect::Absent).await?;
    }
    let used = server.psql("SELECT count(DISTINCT tableoid) FROM parted.statestore_messages")?;
    assert!(used.parse::<u32>()? > 1, "{used}");
    let spread = server.psql(
        "SELECT max(n) FROM (SELECT count(DISTINCT tableoid) AS n
                               FROM parted.statestore_messages GROUP BY session) s",
    )?;
    assert_eq!(spread, "1");
    // A session's row and its messages are in the same-numbered partition.
    let aligned = server.psql(
        "SELECT count(*) FROM parted.statestore_sessions s
           JOIN parted.statestore_messages m ON m.session = s.id
          WHERE right(s.tableoid::regclass::text, 3) <> right(m.tableoid::regclass::text, 3)",
    )?;
    assert_eq!(aligned, "0");

    // Reopening: the same count, or none asked for, opens; another is refused.
    let again = PostgresStore::builder(&url)?
        .schema("parted")
        .build()
        .await?;
    assert_eq!(again.partitions(), Some(4));
    let same = PostgresStore::builder(&url)?
        .schema("parted")
        .partitions(4)
        .build()
        .await?;
    assert_eq!(
        same.load(&SessionId::new("session-7")?)
            .await?
            .unwrap()
            .messages
            .len(),
        2
    );
    let err = PostgresStore::builder(&url)?
        .schema("parted")
        .partitions(8)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("4 hash partitions, not the 8"),
        "{err}"
    );

    // An unpartitioned store stays unpartitioned.
    let plain = PostgresStore::builder(&url)?
        .schema("plain")
        .build()
        .await?;
    assert_eq!(plain.partitions(), None);
    assert!(partitions(&server, "plain", "messages").is_empty());
    let err = PostgresStore::builder(&url)?
        .schema("plain")
        .partitions(4)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("has no partitions"), "{err}");

    // Out of range.
    for n in [0, 1025] {
        let err = PostgresStore::builder(&url)?
            .partitions(n)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{n}: {err:?}");
    }
    Ok(())
}
