//! TLS against a real TLS-only server (feature `tls`): `verify-full` with
//! the server's CA round-trips a turn; an untrusted CA is a typed
//! [`Error::Tls`]; without the feature, asking for TLS is a config error.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::error::Error as StdError;

use statestore_postgres::{Error, PostgresStore};

type TestResult = Result<(), Box<dyn StdError>>;

#[cfg(feature = "tls")]
mod with_tls {
    use super::*;
    use pg_test_server::PgServer;
    use statestore_core::{Append, Expect, IdempotencyKey, Message, SessionId, Store};

    fn server() -> PgServer {
        PgServer::builder()
            .fsync(false)
            .tls()
            .start()
            .expect("a TLS PostgreSQL server")
    }

    /// One keyed turn and its load, through `store`.
    async fn turn(store: &PostgresStore) -> TestResult {
        let id = SessionId::new("over-tls")?;
        let key = IdempotencyKey::new("turn-1")?;
        let recent = store.load_recent_with(&id, 20, Some(&key)).await?;
        assert!(recent.is_none());
        let messages = vec![Message::user("hello"), Message::assistant("hi")];
        store
            .append_with(&id, Append::new(messages).expect(Expect::Absent).key(key))
            .await?;
        let state = store.load(&id).await?.expect("the session");
        assert_eq!(state.messages.len(), 2);
        Ok(())
    }

    /// How many of the server's client connections use TLS.
    fn tls_connections(server: &PgServer) -> u32 {
        server
            .psql(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                  WHERE s.ssl AND a.client_addr IS NOT NULL",
            )
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn verify_full_with_the_servers_ca_round_trips_a_turn() -> TestResult {
        let server = server();
        let files = server.tls_files().expect("certificates");
        let url = format!("{}?sslmode=verify-full", server.url());
        let store = PostgresStore::builder(&url)?
            .pool_size(2)
            .tls_root_certificate(files.ca_cert_pem.clone())
            .build()
            .await?;
        turn(&store).await?;
        assert!(tls_connections(&server) >= 1);

        // The same through the URL alone, and by host name.
        let by_name = url.replace("127.0.0.1", "localhost");
        let url = format!("{by_name}&sslrootcert={}", files.ca_cert.display());
        let store = PostgresStore::builder(&url)?
            .schema("by_url")
            .build()
            .await?;
        turn(&store).await?;
        Ok(())
    }

    #[tokio::test]
    async fn an_untrusted_ca_is_refused_with_a_typed_error() -> TestResult {
        let server = server();
        let files = server.tls_files().expect("certificates");
        for mode in ["verify-full", "verify-ca", "require"] {
            let url = format!("{}?sslmode={mode}", server.url());
            let err = PostgresStore::builder(&url)?
                .tls_root_certificate(files.other_ca_cert_pem.clone())
                .build()
                .await
                .expect_err("an untrusted certificate");
            assert!(matches!(err, Error::Tls { .. }), "{mode}: {err:?}");
            assert!(err.to_string().contains("TLS handshake"), "{err}");
            assert!(!err.is_retryable(), "{err:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn verify_ca_ignores_the_name_and_verify_full_does_not() -> TestResult {
        let server = server();
        let files = server.tls_files().expect("certificates");
        // Connect to 127.0.0.1, naming a host the certificate is not for.
        let url = |mode: &str| {
            format!(
                "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode={mode}",
                server.port()
            )
        };
        let store = PostgresStore::builder(&url("verify-ca"))?
            .tls_root_certificate(files.ca_cert_pem.clone())
            .build()
            .await?;
        turn(&store).await?;
        let err = PostgresStore::builder(&url("verify-full"))?
            .tls_root_certificate(files.ca_cert_pem.clone())
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{err:?}");
        Ok(())
    }

    #[tokio::test]
    async fn require_without_roots_encrypts_and_plain_is_refused() -> TestResult {
        let server = server();
        // libpq's `require`: encrypted, the certificate not checked.
        let store = PostgresStore::builder(&format!("{}?sslmode=require", server.url()))?
            .build()
            .await?;
        turn(&store).await?;
        // The server takes TLS connections only.
        let plain = PostgresStore::builder(&format!("{}?sslmode=disable", server.url()))?
            .build()
            .await;
        assert!(plain.is_err(), "{plain:?}");
        Ok(())
    }

    #[tokio::test]
    async fn scram_binds_the_tls_channel() -> TestResult {
        let server = PgServer::builder()
            .fsync(false)
            .password("s3cret")
            .tls()
            .start()?;
        let files = server.tls_files().expect("certificates");
        // `channel_binding=require`: SCRAM-SHA-256-PLUS or no connection. A
        // wrong tls-server-end-point hash would fail the authentication.
        for mode in ["verify-full", "require"] {
            let url = format!("{}?sslmode={mode}&channel_binding=require", server.url());
            let store = PostgresStore::builder(&url)?
                .schema(&mode.replace('-', "_"))
                .tls_root_certificate(files.ca_cert_pem.clone())
                .build()
                .await?;
            turn(&store).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_unreadable_sslrootcert_is_a_config_error() -> TestResult {
        let url = "postgres://u@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
        let err = PostgresStore::builder(url)?.build().await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        Ok(())
    }
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn without_the_feature_tls_modes_are_a_config_error() -> TestResult {
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("postgres://u:secret@127.0.0.1:1/db?sslmode={mode}");
        let err = PostgresStore::builder(&url)?.build().await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{mode}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("sslmode={mode}")), "{text}");
        assert!(text.contains("`tls` feature"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
    // `prefer` (the default) and `disable` need no TLS.
    let err =
        PostgresStore::builder("postgres://u@127.0.0.1:1/db?sslmode=prefer&connect_timeout=1")?
            .build()
            .await
            .unwrap_err();
    assert!(!matches!(err, Error::Config(_)), "{err:?}");
    Ok(())
}
