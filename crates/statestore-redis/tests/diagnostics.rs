//! The `tracing` events an operator relies on, from a real server: a
//! command timeout, a `NOSCRIPT` reload, a `WAIT` shortfall and an unsafe
//! eviction policy are each logged, with the session id where there is one,
//! and never with the password.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis_test_server::RedisServer;
use statestore_core::{Error, Expect, Message, SessionId, Store};
use statestore_redis::RedisStore;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const PASSWORD: &str = "pw-that-must-not-be-logged";

/// One captured event: its level and its fields (`message` included).
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn message(&self) -> &str {
        self.field("message").unwrap_or_default()
    }
}

/// A subscriber that keeps every event, for the thread it is set on (the
/// tests run on current-thread runtimes, and the events come from the
/// store's own futures).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    fn events(&self) -> Vec<Captured> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Events whose message contains `text`.
    fn with_message(&self, text: &str) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|e| e.message().contains(text))
            .collect()
    }

    fn assert_no_password(&self) {
        for event in self.events() {
            assert!(
                !format!("{event:?}").contains(PASSWORD),
                "the password was logged: {event:?}"
            );
        }
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let captured = Captured {
            level: *event.metadata().level(),
            fields,
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(captured);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn acl_server() -> RedisServer {
    RedisServer::builder()
        .acl_user("app", PASSWORD, "~* +@all")
        .start()
        .unwrap()
}

#[tokio::test]
async fn a_timeout_is_a_warning_naming_the_operation_and_session() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let server = acl_server();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_millis(300))
        .connect(&server.url())
        .await
        .unwrap();
    let id = sid("slow-session");
    store
        .append(&id, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap();
    assert!(capture.with_message("did not answer in time").is_empty());

    server.pause().unwrap();
    let err = store.load(&id).await.unwrap_err();
    server.resume().unwrap();
    assert!(
        matches!(
            err,
            Error::Timeout {
                operation: "load",
                ..
            }
        ),
        "{err}"
    );
    let warnings = capture.with_message("did not answer in time");
    assert_eq!(warnings.len(), 1, "{:?}", capture.events());
    let warning = &warnings[0];
    assert_eq!(warning.level, Level::WARN);
    assert_eq!(warning.field("operation"), Some("load"));
    assert_eq!(warning.field("session"), Some(id.to_string().as_str()));
    capture.assert_no_password();
}

#[tokio::test]
async fn a_noscript_reload_is_logged_and_the_call_succeeds() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let server = acl_server();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let id = sid("reloaded");
    store
        .append(&id, vec![Message::user("one")], Expect::Any)
        .await
        .unwrap();
    assert!(
        capture.with_message("NOSCRIPT").is_empty(),
        "scripts were preloaded"
    );

    // As after a restart or failover: the server forgets every script.
    server.cli(&["SCRIPT", "FLUSH"]).unwrap();
    store
        .append(&id, vec![Message::user("two")], Expect::Any)
        .await
        .unwrap();
    let reloads = capture.with_message("NOSCRIPT");
    assert_eq!(reloads.len(), 1, "{:?}", capture.events());
    assert_eq!(reloads[0].level, Level::DEBUG);
    assert_eq!(reloads[0].field("operation"), Some("append"));
    assert_eq!(reloads[0].field("session"), Some(id.to_string().as_str()));
    // Loaded again: the next append needs no reload.
    store
        .append(&id, vec![Message::user("three")], Expect::Any)
        .await
        .unwrap();
    assert_eq!(capture.with_message("NOSCRIPT").len(), 1);
    assert_eq!(store.load(&id).await.unwrap().unwrap().messages.len(), 3);
    capture.assert_no_password();
}

#[tokio::test]
async fn a_wait_shortfall_is_a_warning_with_the_counts() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    // A server without replicas: WAIT 1 can only time out with 0.
    let server = acl_server();
    let store = RedisStore::builder()
        .wait_for_replicas(1, Duration::from_millis(50))
        .connect(&server.url())
        .await
        .unwrap();
    let id = sid("unreplicated");
    let err = store
        .append(&id, vec![Message::user("hi")], Expect::Any)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotReplicated {
                acknowledged: 0,
                required: 1,
                ..
            }
        ),
        "{err}"
    );
    let warnings = capture.with_message("fewer replicas acknowledged");
    assert_eq!(warnings.len(), 1, "{:?}", capture.events());
    let warning = &warnings[0];
    assert_eq!(warning.level, Level::WARN);
    assert_eq!(warning.field("operation"), Some("append"));
    assert_eq!(warning.field("session"), Some(id.to_string().as_str()));
    assert_eq!(warning.field("acknowledged"), Some("0"));
    assert_eq!(warning.field("required"), Some("1"));
    capture.assert_no_password();
}

#[tokio::test]
async fn an_unsafe_eviction_policy_is_a_warning_naming_the_address() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let server = RedisServer::builder()
        .acl_user("app", PASSWORD, "~* +@all")
        .config("maxmemory-policy", "allkeys-lru")
        .start()
        .unwrap();
    RedisStore::builder().connect(&server.url()).await.unwrap();
    let warnings = capture.with_message("maxmemory-policy may evict");
    assert_eq!(warnings.len(), 1, "{:?}", capture.events());
    assert_eq!(warnings[0].level, Level::WARN);
    assert_eq!(warnings[0].field("policy"), Some("allkeys-lru"));
    assert_eq!(
        warnings[0].field("address"),
        Some(format!("127.0.0.1:{}", server.port()).as_str())
    );
    capture.assert_no_password();
}
