//! `statestore::open` on PostgreSQL: `postgres://` and `postgresql://` URLs
//! against a throwaway server (one, with a password, for the whole file),
//! the facade's options observed on the server, libpq's passed through.
#![cfg(feature = "postgres")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pg_test_server::PgServer;
use statestore::{Backend, Expect, Message, OpenError, Options, SessionId, Store};

/// The password of the shared server: no error or Debug output may show it.
const SECRET: &str = "hunter2-pg-secret";

fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        PgServer::builder()
            .password(SECRET)
            .fsync(false)
            .start()
            .expect("PostgreSQL starts")
    })
}

async fn round_trip(store: &Arc<dyn Store>, id: &str) {
    let id = SessionId::new(id).unwrap();
    store
        .append(&id, vec![Message::user("hello")], Expect::Absent)
        .await
        .unwrap();
    let state = store.load(&id).await.unwrap().expect("saved");
    assert_eq!(state.messages[0].text(), "hello");
}

async fn open_err(url: &str) -> OpenError {
    match statestore::open(url).await {
        Ok(store) => panic!("{url} opened: {store:?}"),
        Err(e) => e,
    }
}

fn assert_hidden(text: &str) {
    assert!(!text.contains(SECRET), "the password shows: {text}");
}

#[tokio::test]
async fn prefix_schema_and_ttl_reach_the_server() {
    let server = server();
    let url = format!("{}?prefix=x_&schema=s&ttl=30m", server.url());
    let backend = statestore::open_backend(&url, Options::new())
        .await
        .unwrap();
    assert_hidden(&format!("{backend:?}"));
    let Backend::Postgres(store) = backend else {
        panic!("not a PostgresStore: {backend:?}");
    };
    assert_eq!(store.schema(), "s");
    assert_eq!(store.prefix(), "x_");
    assert_eq!(store.ttl(), Some(Duration::from_secs(1800)));
    let store: Arc<dyn Store> = Arc::new(store);
    round_trip(&store, "s1").await;

    let tables = server
        .psql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 's' ORDER BY 1",
        )
        .unwrap();
    assert!(
        tables.lines().any(|t| t == "x_sessions") && tables.lines().all(|t| t.starts_with("x_")),
        "{tables}"
    );
    let expiry = server
        .psql("SELECT expires_at - last_accessed_at FROM s.x_sessions WHERE id = 's1'")
        .unwrap();
    assert_eq!(
        expiry, "1800000",
        "expires_at is last access + 30 min, in ms"
    );

    // The same tables through a postgresql:// URL.
    let again = statestore::open(&format!(
        "{}?schema=s&prefix=x_",
        server.url().replacen("postgres://", "postgresql://", 1)
    ))
    .await
    .unwrap();
    let state = again
        .load(&SessionId::new("s1").unwrap())
        .await
        .unwrap()
        .expect("the session written through postgres://");
    assert_eq!(state.messages.len(), 1);
}

#[tokio::test]
async fn options_apply_and_the_url_wins() {
    let server = server();
    let options = Options::new()
        .prefix("opt_")
        .ttl(Duration::from_secs(60))
        .timeout(Duration::from_secs(5));
    let url = format!("{}?schema=o&ttl=2h&pool_size=2", server.url());
    let Backend::Postgres(store) = statestore::open_backend(&url, options).await.unwrap() else {
        panic!("not a PostgresStore");
    };
    assert_eq!(store.prefix(), "opt_");
    assert_eq!(store.ttl(), Some(Duration::from_secs(7200)));
    assert_eq!(store.statement_timeout(), Duration::from_secs(5));
    assert_eq!(store.pool_size(), 2);
}

#[tokio::test]
async fn partitions_reach_the_migration() {
    let server = server();
    let url = format!("{}?schema=parted&partitions=3", server.url());
    let Backend::Postgres(store) = statestore::open_backend(&url, Options::new())
        .await
        .unwrap()
    else {
        panic!("not a PostgresStore");
    };
    assert_eq!(store.partitions(), Some(3));
    let found = server
        .psql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'parted.statestore_messages'::regclass")
        .unwrap();
    assert_eq!(found, "3");
    let e = open_err(&format!("{}?schema=parted&partitions=0", server.url())).await;
    assert!(matches!(e, OpenError::Postgres { .. }), "{e:?}");
    let e = open_err(&format!("{}?schema=parted&partitions=some", server.url())).await;
    assert!(matches!(e, OpenError::InvalidOption { .. }), "{e:?}");
}

#[tokio::test]
async fn libpq_options_pass_through() {
    let server = server();
    let url = format!(
        "{}?application_name=facade%20test&schema=app&connect_timeout=5",
        server.url()
    );
    let store = statestore::open(&url).await.unwrap();
    round_trip(&store, "a1").await;
    // The pooled connection stays open, under the name the URL gave it.
    let names = server
        .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'facade test'")
        .unwrap();
    assert_ne!(names, "0", "no connection named by the URL");
}

#[tokio::test]
async fn bad_options_are_named_without_the_password() {
    let base = format!("postgres://postgres:{SECRET}@127.0.0.1:1/db");
    for (query, option) in [
        ("bogus=1", "bogus"),
        ("ttl=soon", "ttl"),
        ("timeout=0s", "timeout"),
        ("pool_size=0", "pool_size"),
        ("pool_size=many", "pool_size"),
        ("prefix=a&prefix=b", "prefix"),
    ] {
        let e = open_err(&format!("{base}?{query}")).await;
        assert!(
            matches!(&e, OpenError::InvalidOption { option: o, .. } if o == option),
            "{query}: {e:?}"
        );
        let text = e.to_string();
        assert!(text.contains(&format!("`{option}`")), "{text}");
        assert_hidden(&format!("{text} {e:?}"));
    }
    let e = open_err(&format!("{base}?bogus=1")).await.to_string();
    assert!(
        e.contains("prefix, schema, ttl") && e.contains("sslmode"),
        "{e}"
    );

    // A value tokio-postgres refuses.
    let e = open_err(&format!("{base}?sslmode=sometimes")).await;
    assert!(matches!(e, OpenError::Postgres { .. }), "{e:?}");
    assert_hidden(&format!("{e} {e:?}"));
}

#[tokio::test]
async fn connection_failures_hide_the_password() {
    let server = server();
    // Refused: nothing listens on port 1.
    let e = open_err(&format!(
        "postgres://postgres:{SECRET}@127.0.0.1:1/postgres?timeout=2s"
    ))
    .await;
    assert!(matches!(e, OpenError::Postgres { .. }), "{e:?}");
    assert_eq!(e.url(), "postgres://postgres:***@127.0.0.1:1/postgres");
    assert_hidden(&format!("{e} {e:?}"));

    // The wrong password for a live server.
    let wrong = server.url().replace(SECRET, "not-the-password");
    assert_ne!(wrong, server.url());
    let e = open_err(&wrong).await;
    assert!(matches!(e, OpenError::Postgres { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("not-the-password"), "{e:?}");
}

/// `sslmode=verify-full` with `sslrootcert=` (or the CA in `Options`)
/// against a TLS-only server; an untrusted CA is refused.
#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn verify_full_over_tls_opens_and_refuses_an_untrusted_ca() {
    let server = PgServer::builder()
        .password(SECRET)
        .fsync(false)
        .tls()
        .start()
        .expect("a TLS PostgreSQL server");
    let files = server.tls_files().expect("certificates");
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url(),
        files.ca_cert.display()
    );
    let store = statestore::open(&url).await.unwrap();
    round_trip(&store, "tls-url").await;

    let url = format!("{}?sslmode=verify-full&schema=opts", server.url());
    let options = Options::new().tls_root_certificate(files.ca_cert_pem.clone());
    let store = statestore::open_with(&url, options).await.unwrap();
    round_trip(&store, "tls-options").await;

    let options = Options::new().tls_root_certificate(files.other_ca_cert_pem.clone());
    let e = statestore::open_with(&url, options).await.unwrap_err();
    assert!(matches!(e, OpenError::Postgres { .. }), "{e:?}");
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    assert_hidden(&format!("{e} {e:?}"));
}

/// Without `postgres-tls`, asking for TLS says which feature to enable.
#[cfg(not(feature = "postgres-tls"))]
#[tokio::test]
async fn sslmode_require_without_the_feature_names_it() {
    let url = format!("postgres://postgres:{SECRET}@127.0.0.1:1/postgres?sslmode=require");
    let e = open_err(&url).await;
    assert!(matches!(e, OpenError::Postgres { .. }), "{e:?}");
    assert!(e.to_string().contains("postgres-tls"), "{e}");
    assert_hidden(&format!("{e} {e:?}"));
}
