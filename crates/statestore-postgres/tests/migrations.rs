//! Migrations against real PostgreSQL servers (pg-test-server): what they
//! create, concurrent connects, newer and altered schemas, side-by-side
//! stores, hostile names, and passwords kept out of Debug and errors.

use std::error::Error as StdError;
use std::time::Duration;

use pg_test_server::PgServer;
use statestore_postgres::{Error, PostgresStore, SCHEMA_VERSION};
use tokio_postgres::{Client, NoTls};

type TestResult = Result<(), Box<dyn StdError>>;

fn server() -> pg_test_server::Result<PgServer> {
    PgServer::builder().fsync(false).start()
}

async fn client(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The store's tables in `schema` whose names start with `prefix`, sorted.
async fn tables(
    c: &Client,
    schema: &str,
    prefix: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = $1 AND starts_with(table_name, $2) ORDER BY 1",
            &[&schema, &prefix],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn version_rows(c: &Client, table: &str) -> Result<i64, tokio_postgres::Error> {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map(|r| r.get(0))
}

#[tokio::test]
async fn migrations_create_every_table_and_index() -> TestResult {
    let server = server()?;
    let store = PostgresStore::connect(&server.url()).await?;
    assert_eq!((store.schema(), store.prefix()), ("public", "statestore_"));
    let c = client(&server.url()).await?;
    let expected: Vec<String> = [
        "messages",
        "pending",
        "schema_version",
        "sessions",
        "summaries",
        "writes",
    ]
    .iter()
    .map(|t| format!("statestore_{t}"))
    .collect();
    assert_eq!(tables(&c, "public", "statestore_").await?, expected);
    let indexes: Vec<String> = c
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for index in [
        "sessions_by_user",
        "sessions_by_expiry",
        "writes_by_seq",
        "pending_by_expiry",
        "messages_pkey",
    ] {
        let name = format!("statestore_{index}");
        assert!(indexes.contains(&name), "{name} not in {indexes:?}");
    }
    let jsonb: Vec<String> = c
        .query(
            "SELECT column_name::text FROM information_schema.columns
              WHERE table_name = 'statestore_sessions' AND data_type = 'jsonb' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(jsonb, ["counters", "metadata"]);
    let version: i32 = c
        .query_one("SELECT max(version) FROM statestore_schema_version", &[])
        .await?
        .get(0);
    assert_eq!(u32::try_from(version)?, SCHEMA_VERSION);
    // Connecting again finds it current and changes nothing.
    PostgresStore::connect(&server.url()).await?;
    assert_eq!(
        version_rows(&c, "statestore_schema_version").await?,
        i64::from(SCHEMA_VERSION)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_connects_migrate_exactly_once() -> TestResult {
    let server = server()?;
    let url = server.url();
    let connects: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::builder(&url)?.pool_size(1).build().await })
        })
        .collect();
    for connect in connects {
        connect.await??;
    }
    let c = client(&url).await?;
    assert_eq!(
        version_rows(&c, "statestore_schema_version").await?,
        i64::from(SCHEMA_VERSION)
    );
    assert_eq!(tables(&c, "public", "statestore_").await?.len(), 6);
    Ok(())
}

#[tokio::test]
async fn a_newer_schema_in_the_database_is_refused() -> TestResult {
    let server = server()?;
    PostgresStore::connect(&server.url()).await?;
    server.psql("INSERT INTO statestore_schema_version (version) VALUES (99)")?;
    let err = PostgresStore::connect(&server.url())
        .await
        .err()
        .ok_or("connected")?;
    assert!(
        matches!(err, Error::UnsupportedSchema { found: 99, supported } if supported == SCHEMA_VERSION),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn altered_tables_are_corrupt_naming_what_differs() -> TestResult {
    let server = server()?;
    PostgresStore::connect(&server.url()).await?;
    let cases = [
        (
            "ALTER TABLE statestore_sessions DROP COLUMN summary_count",
            "ALTER TABLE statestore_sessions ADD COLUMN summary_count bigint NOT NULL DEFAULT 0",
            "column public.statestore_sessions.summary_count is missing",
        ),
        (
            "ALTER TABLE statestore_messages ALTER COLUMN position TYPE integer",
            "ALTER TABLE statestore_messages ALTER COLUMN position TYPE bigint",
            "column public.statestore_messages.position is integer, not bigint",
        ),
        (
            "ALTER TABLE statestore_writes ADD COLUMN surprise text",
            "ALTER TABLE statestore_writes DROP COLUMN surprise",
            "column public.statestore_writes.surprise was added",
        ),
        (
            "DROP INDEX statestore_sessions_by_expiry",
            "CREATE INDEX statestore_sessions_by_expiry ON statestore_sessions (expires_at) WHERE expires_at IS NOT NULL",
            "index public.statestore_sessions_by_expiry is missing",
        ),
        (
            "ALTER TABLE statestore_pending RENAME TO pending_elsewhere",
            "ALTER TABLE pending_elsewhere RENAME TO statestore_pending",
            "table public.statestore_pending is missing",
        ),
    ];
    for (alter, undo, what) in cases {
        server.psql(alter)?;
        let err = PostgresStore::connect(&server.url())
            .await
            .err()
            .ok_or(alter)?;
        match &err {
            Error::Corrupt { what: found } => assert!(found.contains(what), "{found} vs {what}"),
            other => panic!("{alter}: {other:?}"),
        }
        server.psql(undo)?;
        PostgresStore::connect(&server.url()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn stores_in_other_schemas_and_prefixes_do_not_interfere() -> TestResult {
    let server = server()?;
    let url = server.url();
    let a = PostgresStore::builder(&url)?
        .schema("tenant_a")
        .build()
        .await?;
    let b = PostgresStore::builder(&url)?
        .schema("tenant_a")
        .prefix("b_")
        .build()
        .await?;
    let c = PostgresStore::builder(&url)?
        .schema("tenant_c")
        .prefix("")
        .build()
        .await?;
    assert_eq!(
        (a.prefix(), b.prefix(), c.prefix()),
        ("statestore_", "b_", "")
    );
    let pg = client(&url).await?;
    assert_eq!(tables(&pg, "tenant_a", "statestore_").await?.len(), 6);
    assert_eq!(tables(&pg, "tenant_a", "b_").await?.len(), 6);
    assert_eq!(tables(&pg, "tenant_c", "").await?.len(), 6);
    assert!(tables(&pg, "public", "").await?.is_empty());
    // Damage to one store leaves the others connecting.
    server.psql("ALTER TABLE tenant_a.b_summaries DROP COLUMN body")?;
    let err = PostgresStore::builder(&url)?
        .schema("tenant_a")
        .prefix("b_")
        .build()
        .await;
    assert!(matches!(err, Err(Error::Corrupt { .. })), "{err:?}");
    PostgresStore::builder(&url)?
        .schema("tenant_a")
        .build()
        .await?;
    PostgresStore::builder(&url)?
        .schema("tenant_c")
        .prefix("")
        .build()
        .await?;
    Ok(())
}

#[tokio::test]
async fn hostile_schema_and_prefix_names_are_taken_literally() -> TestResult {
    let server = server()?;
    server.psql("CREATE TABLE x (v int); INSERT INTO x VALUES (1)")?;
    let schema = r#"s"; DROP TABLE x; --"#;
    let prefix = "'; DROP TABLE x; --\"";
    let store = PostgresStore::builder(&server.url())?
        .schema(schema)
        .prefix(prefix)
        .build()
        .await?;
    assert_eq!((store.schema(), store.prefix()), (schema, prefix));
    assert_eq!(server.psql("SELECT v FROM x")?, "1");
    let pg = client(&server.url()).await?;
    let found = tables(&pg, schema, prefix).await?;
    assert_eq!(found.len(), 6, "{found:?}");
    assert!(found.contains(&format!("{prefix}sessions")));
    // Again: found current through the same quoting.
    PostgresStore::builder(&server.url())?
        .schema(schema)
        .prefix(prefix)
        .build()
        .await?;
    Ok(())
}

#[tokio::test]
async fn passwords_stay_out_of_debug_and_errors() -> TestResult {
    let secret = "s3cr3t-Pa55";
    let server = PgServer::builder().password(secret).fsync(false).start()?;
    let store = PostgresStore::builder(&server.url())?
        .statement_timeout(Duration::from_secs(5))
        .build()
        .await?;
    assert!(!format!("{store:?}").contains(secret));
    let builder = PostgresStore::builder(&server.url())?;
    assert!(!format!("{builder:?}").contains(secret));

    let wrong = server.url().replace(secret, "wrong-Pa55");
    let err = PostgresStore::connect(&wrong)
        .await
        .err()
        .ok_or("connected")?;
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("wrong-Pa55"), "{text}");
    }
    let bad = format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/postgres?bogus=1",
        server.port()
    );
    let err = PostgresStore::connect(&bad)
        .await
        .err()
        .ok_or("connected")?;
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(secret), "{text}");
    }
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() -> TestResult {
    let mut server = server()?;
    let url = server.url();
    server.stop()?;
    let err = PostgresStore::connect(&url)
        .await
        .err()
        .ok_or("connected")?;
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.write_outcome(), statestore_core::WriteOutcome::Unknown);
    Ok(())
}
