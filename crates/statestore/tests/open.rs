//! `statestore::open` on the schemes that need no server, its URL errors,
//! and the errors of schemes whose feature is compiled out (those tests run
//! when `cargo xtask ci` tests this crate with `--no-default-features`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::Arc;

use statestore::{Expect, Message, OpenError, SessionId, Store};

/// Saves a message through `store` and reads it back.
#[allow(dead_code, reason = "unused when no backend is compiled in")]
async fn round_trip(store: &Arc<dyn Store>, id: &str) {
    let id = SessionId::new(id).unwrap();
    store
        .append(&id, vec![Message::user("hello")], Expect::Absent)
        .await
        .unwrap();
    let state = store.load(&id).await.unwrap().expect("saved");
    assert_eq!(state.messages.len(), 1);
    assert_eq!(state.messages[0].text(), "hello");
}

async fn open_err(url: &str) -> OpenError {
    match statestore::open(url).await {
        Ok(store) => panic!("{url} opened: {store:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn malformed_urls_say_what_is_wrong() {
    let e = open_err("memory").await;
    assert!(matches!(e, OpenError::InvalidUrl { .. }), "{e:?}");
    assert!(e.to_string().contains("expected scheme://"), "{e}");

    let e = open_err("mysql://u:hunter2@db/x").await;
    assert!(
        matches!(&e, OpenError::UnknownScheme { scheme, .. } if scheme == "mysql"),
        "{e:?}"
    );
    assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
}

#[cfg(feature = "memory")]
mod memory {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn opens_and_round_trips() {
        let store = statestore::open("memory://").await.unwrap();
        round_trip(&store, "s").await;
        // Each open is a new, empty store.
        let other = statestore::open("MEMORY://").await.unwrap();
        assert!(!other.exists(&SessionId::new("s").unwrap()).await.unwrap());
    }

    #[tokio::test]
    async fn ttl_expires_idle_sessions() {
        let store = statestore::open("memory://?ttl=150ms").await.unwrap();
        let forever = statestore::open("memory://").await.unwrap();
        round_trip(&store, "s").await;
        round_trip(&forever, "s").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let id = SessionId::new("s").unwrap();
        assert!(store.load(&id).await.unwrap().is_none(), "expired");
        assert!(forever.load(&id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn options_ttl_applies_and_the_url_wins() {
        let options = statestore::Options::new()
            .ttl(Duration::from_millis(150))
            .prefix("ignored-in-memory:");
        let from_options = statestore::open_with("memory://", options.clone())
            .await
            .unwrap();
        let url_wins = statestore::open_with("memory://?ttl=1h", options)
            .await
            .unwrap();
        round_trip(&from_options, "s").await;
        round_trip(&url_wins, "s").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let id = SessionId::new("s").unwrap();
        assert!(from_options.load(&id).await.unwrap().is_none());
        assert!(url_wins.load(&id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn max_sessions_evicts_the_least_recently_used() {
        let store = statestore::open("memory://?max_sessions=2").await.unwrap();
        for id in ["a", "b", "c"] {
            round_trip(&store, id).await;
        }
        let exists = |id: &'static str| {
            let store = Arc::clone(&store);
            async move { store.exists(&SessionId::new(id).unwrap()).await.unwrap() }
        };
        assert!(!exists("a").await, "a was evicted");
        assert!(exists("b").await && exists("c").await);
    }

    #[tokio::test]
    async fn bad_options_are_named() {
        for (url, option, says) in [
            ("memory://?ttl=30x", "ttl", "not a duration"),
            ("memory://?ttl=0", "ttl", "zero"),
            ("memory://?ttl=1h&ttl=2h", "ttl", "twice"),
            ("memory://?ttl", "ttl", "no value"),
            (
                "memory://?max_sessions=many",
                "max_sessions",
                "whole number",
            ),
            ("memory://?max_sessions=0", "max_sessions", "at least 1"),
            ("memory://?prefix=a", "prefix", "take: ttl, max_sessions"),
            ("memory://?password=hunter2", "password", "unknown option"),
        ] {
            let e = open_err(url).await;
            let text = e.to_string();
            assert!(
                matches!(&e, OpenError::InvalidOption { option: o, .. } if o == option),
                "{url}: {e:?}"
            );
            assert!(text.contains(says), "{url}: {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        let e = open_err("memory://somewhere").await;
        assert!(e.to_string().contains("no host or path"), "{e}");
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn absolute_paths_open_percent_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat log.db");
        let dir_str = dir.path().to_str().unwrap();
        assert!(dir_str.starts_with('/'));
        // sqlite:// + "/tmp/…": three slashes, an absolute path.
        let url = format!("sqlite://{dir_str}/chat%20log.db");
        let store = statestore::open(&url).await.unwrap();
        round_trip(&store, "s").await;
        drop(store);
        assert!(path.exists(), "{} was not created", path.display());
        // A second open sees the first one's data: it is the same file.
        let again = statestore::open(&url).await.unwrap();
        assert!(again.exists(&SessionId::new("s").unwrap()).await.unwrap());
    }

    #[tokio::test]
    async fn relative_paths_are_relative_to_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        // "../" up to the root from the working directory, then the temp dir.
        let ups = "../".repeat(cwd.components().count());
        let relative = format!(
            "{ups}{}",
            dir.path().to_str().unwrap().trim_start_matches('/')
        );
        let url = format!("sqlite://{relative}/chat.db");
        assert!(!url.starts_with("sqlite:///"));
        let store = statestore::open(&url).await.unwrap();
        round_trip(&store, "s").await;
        assert!(dir.path().join("chat.db").exists());
    }

    #[tokio::test]
    async fn ttl_expires_idle_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("sqlite://{}", dir.path().to_str().unwrap());
        let store = statestore::open(&format!("{base}/a.db?ttl=150ms"))
            .await
            .unwrap();
        let forever = statestore::open(&format!("{base}/b.db")).await.unwrap();
        round_trip(&store, "s").await;
        round_trip(&forever, "s").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let id = SessionId::new("s").unwrap();
        assert!(store.load(&id).await.unwrap().is_none(), "expired");
        assert!(forever.load(&id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn sync_sets_the_synchronous_pragma() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("sqlite://{}", dir.path().to_str().unwrap());
        let normal = statestore::open(&format!("{base}/n.db?sync=normal"))
            .await
            .unwrap();
        let full = statestore::open(&format!("{base}/f.db?sync=FULL"))
            .await
            .unwrap();
        let default = statestore::open(&format!("{base}/d.db")).await.unwrap();
        // The writer's connection is private; the store reports its setting.
        assert!(
            format!("{normal:?}").contains("synchronous: Normal"),
            "{normal:?}"
        );
        assert!(
            format!("{full:?}").contains("synchronous: Full"),
            "{full:?}"
        );
        assert!(format!("{default:?}").contains("synchronous: Full"));
        let e = open_err(&format!("{base}/x.db?sync=off")).await;
        assert!(e.to_string().contains("not one of: full, normal"), "{e}");
    }

    #[tokio::test]
    async fn timeout_bounds_the_wait_for_a_locked_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        let url = format!("sqlite://{}?timeout=200ms", path.to_str().unwrap());
        let store = statestore::open(&url).await.unwrap();
        round_trip(&store, "s").await;
        // Another connection (as another process would) holds the write lock.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        let err = store
            .append(
                &SessionId::new("s").unwrap(),
                vec![Message::user("blocked")],
                Expect::Any,
            )
            .await
            .expect_err("the file is locked");
        assert!(
            matches!(err, statestore::Error::Timeout { after, .. } if after == Duration::from_millis(200)),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        other.execute_batch("ROLLBACK").unwrap();
    }

    #[tokio::test]
    async fn bad_paths_and_options_are_named() {
        let e = open_err("sqlite://").await;
        assert!(e.to_string().contains("needs a file path"), "{e}");
        let e = open_err("sqlite://a%zz.db").await;
        assert!(matches!(e, OpenError::InvalidUrl { .. }), "{e:?}");
        let e = open_err("sqlite://x.db?prefix=a").await;
        assert!(e.to_string().contains("take: ttl, sync, timeout"), "{e}");
        let e = open_err("sqlite:///nonexistent-dir-for-statestore/x.db").await;
        assert!(matches!(e, OpenError::Open { .. }), "{e:?}");
    }
}

/// With a backend compiled out, its scheme names the feature to enable.
mod compiled_out {
    #[allow(unused_imports, reason = "unused when every backend is compiled in")]
    use super::*;

    #[allow(dead_code, reason = "unused when every backend is compiled in")]
    async fn assert_needs(url: &str, feature: &str) {
        let e = open_err(url).await;
        assert!(
            matches!(&e, OpenError::FeatureDisabled { feature: f, .. } if *f == feature),
            "{url}: {e:?}"
        );
        let text = e.to_string();
        assert!(text.contains(&format!("`{feature}` feature")), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[cfg(not(feature = "memory"))]
    #[tokio::test]
    async fn memory() {
        assert_needs("memory://", "memory").await;
    }

    #[cfg(not(feature = "sqlite"))]
    #[tokio::test]
    async fn sqlite() {
        assert_needs("sqlite://data/chat.db", "sqlite").await;
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn redis() {
        assert_needs("redis://u:hunter2@localhost:6379", "redis").await;
    }

    #[cfg(not(feature = "redis-tls"))]
    #[tokio::test]
    async fn rediss() {
        assert_needs("rediss://u:hunter2@localhost:6379", "redis-tls").await;
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn postgres() {
        assert_needs("postgres://u:hunter2@localhost:5432/db", "postgres").await;
        assert_needs("postgresql://u:hunter2@localhost/db?schema=s", "postgres").await;
    }

    #[cfg(not(feature = "redis-cluster"))]
    #[tokio::test]
    async fn redis_cluster() {
        assert_needs("redis+cluster://u:hunter2@a:1,b:2", "redis-cluster").await;
    }
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn open_backend_returns_the_concrete_store() {
    let backend = statestore::open_backend("memory://", statestore::Options::new())
        .await
        .unwrap();
    assert!(matches!(backend, statestore::Backend::Memory(_)));
    round_trip(&backend.into_store(), "concrete").await;
}

#[test]
fn redact_url_hides_passwords() {
    assert_eq!(
        statestore::redact_url("redis://app:hunter2@h:6379?prefix=x"),
        "redis://app:***@h:6379"
    );
}
