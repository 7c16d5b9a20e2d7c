//! Behaviour specific to the memory store: sliding TTL, LRU bound, the
//! reaper, size limits and structural sharing.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::time::Duration;

use statestore_core::codec::Limits;
use statestore_core::{ConversationState, Error, Expect, Message, SessionId, Store};
use statestore_memory::MemoryStore;
use tokio::time::advance;

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

async fn create(store: &MemoryStore, id: &str) {
    store
        .append(&sid(id), vec![Message::user(id)], Expect::Absent)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn ttl_slides_on_every_access() {
    let store = MemoryStore::builder().ttl(Duration::from_secs(60)).build();
    create(&store, "active").await;
    create(&store, "idle").await;

    advance(Duration::from_secs(40)).await;
    assert!(store.load(&sid("active")).await.unwrap().is_some());
    advance(Duration::from_secs(40)).await;
    // 80 s since creation, 40 s since the last read.
    assert!(store.load(&sid("active")).await.unwrap().is_some());
    assert!(
        !store.exists(&sid("idle")).await.unwrap(),
        "idle session outlived its TTL"
    );
    assert!(store.load(&sid("idle")).await.unwrap().is_none());

    // Writes and load_recent and touch count as accesses too; exists does not.
    for step in 0..3 {
        advance(Duration::from_secs(50)).await;
        let id = sid("active");
        match step {
            0 => assert!(store.touch(&id).await.unwrap()),
            1 => assert!(store.load_recent(&id, 1).await.unwrap().is_some()),
            _ => {
                store
                    .append(&id, vec![Message::user("x")], Expect::Any)
                    .await
                    .unwrap();
            }
        }
    }
    advance(Duration::from_secs(59)).await;
    assert!(store.exists(&sid("active")).await.unwrap());
    advance(Duration::from_secs(2)).await;
    assert!(!store.exists(&sid("active")).await.unwrap());

    // An expired session is gone: create-only succeeds and starts over.
    let v = store
        .append(&sid("active"), vec![Message::user("again")], Expect::Absent)
        .await
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(
        store
            .load(&sid("active"))
            .await
            .unwrap()
            .unwrap()
            .messages
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn expired_sessions_are_swept_without_a_background_thread() {
    let store = MemoryStore::builder().ttl(Duration::from_secs(10)).build();
    for i in 0..100 {
        create(&store, &format!("s{i}")).await;
    }
    assert_eq!(store.len(), 100);
    advance(Duration::from_secs(11)).await;
    create(&store, "new").await;
    // Creating a session sweeps a bounded batch of expired ones...
    assert!(store.len() < 100, "creation swept nothing");
    assert!(store.len() > 1, "creation swept an unbounded batch");
    // ...and purge_expired the rest.
    let removed = store.purge_expired();
    assert_eq!(store.len(), 1);
    assert!(removed > 0);
    assert!(store.exists(&sid("new")).await.unwrap());
    let listed = store.list(&Default::default()).await.unwrap().into_ids();
    assert_eq!(listed, [sid("new")]);
}

#[tokio::test(start_paused = true)]
async fn reaper_removes_expired_sessions_and_shuts_down() {
    let store = MemoryStore::builder().ttl(Duration::from_secs(10)).build();
    let reaper = store.spawn_reaper(Duration::from_secs(1));
    for i in 0..50 {
        create(&store, &format!("s{i}")).await;
    }
    advance(Duration::from_secs(12)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.len(), 0, "the reaper did not run");
    reaper.shutdown().await;
    create(&store, "after").await;
    advance(Duration::from_secs(12)).await;
    tokio::task::yield_now().await;
    assert_eq!(store.len(), 1, "a shut-down reaper still ran");
}

#[tokio::test]
async fn lru_bound_evicts_the_least_recently_used() {
    let store = MemoryStore::builder().max_sessions(3).build();
    for id in ["a", "b", "c"] {
        create(&store, id).await;
    }
    // Reading `a` makes `b` the least recently used.
    store.load(&sid("a")).await.unwrap();
    create(&store, "d").await;
    assert_eq!(store.len(), 3);
    assert!(
        !store.exists(&sid("b")).await.unwrap(),
        "b should have been evicted"
    );
    for id in ["a", "c", "d"] {
        assert!(store.exists(&sid(id)).await.unwrap(), "{id} was evicted");
    }
    // Writes count as use too.
    store
        .append(&sid("c"), vec![Message::user("x")], Expect::Any)
        .await
        .unwrap();
    create(&store, "e").await;
    assert!(!store.exists(&sid("a")).await.unwrap());
    assert!(store.exists(&sid("c")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lru_bound_holds_under_concurrent_creation() {
    let store = MemoryStore::builder().max_sessions(100).build();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0..500 {
                let id = sid(&format!("t{t}-{i}"));
                store
                    .append(&id, vec![Message::user("x")], Expect::Any)
                    .await
                    .unwrap();
                // May be None already: 100 newer sessions can land meanwhile.
                store.load_recent(&id, 1).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(store.len(), 100);
    let listed = store
        .list(&statestore_core::ListQuery::default().with_limit(1000))
        .await
        .unwrap()
        .into_ids();
    assert_eq!(listed.len(), 100);
    for id in listed {
        let state = store
            .load(&id)
            .await
            .unwrap()
            .expect("listed sessions load");
        assert_eq!(state.messages.len(), 1);
    }
}

#[tokio::test]
async fn size_limits_reject_and_write_nothing() {
    let store = MemoryStore::builder()
        .limits(
            Limits::none()
                .with_max_message_bytes(1_000)
                .with_max_messages(5),
        )
        .build();
    let id = sid("limited");
    store
        .append(&id, vec![Message::user("small")], Expect::Any)
        .await
        .unwrap();

    let huge = Message::user("x".repeat(2_000));
    let err = store
        .append(&id, vec![Message::user("ok"), huge.clone()], Expect::Any)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { what, limit: 1_000, .. } if what == "message 2 of 2"),
        "{err}"
    );
    let state = ConversationState::new(id.clone()).with_messages([huge]);
    assert!(matches!(
        store.save(&state, Expect::Any).await,
        Err(Error::TooLarge { .. })
    ));

    let many: Vec<Message> = (0..5).map(|i| Message::user(i.to_string())).collect();
    assert!(matches!(
        store.append(&id, many, Expect::Any).await,
        Err(Error::TooLarge { .. })
    ));

    let after = store.load(&id).await.unwrap().unwrap();
    assert_eq!(after.messages.len(), 1);
    assert_eq!(after.version, 1);
    // Other sessions are unaffected.
    assert!(!store.exists(&sid("other")).await.unwrap());
}

#[tokio::test]
async fn reads_and_forks_share_messages_instead_of_copying() {
    let store = MemoryStore::new();
    let id = sid("shared");
    let history: Vec<Message> = (0..1_000).map(|i| Message::user(format!("m{i}"))).collect();
    store.append(&id, history, Expect::Any).await.unwrap();

    let a = store.load(&id).await.unwrap().unwrap();
    let b = store.load(&id).await.unwrap().unwrap();
    let recent = store.load_recent(&id, 10).await.unwrap().unwrap();
    store.fork(&id, &sid("copy")).await.unwrap();
    let fork = store.load(&sid("copy")).await.unwrap().unwrap();
    for i in 0..1_000 {
        assert!(
            Arc::ptr_eq(&a.messages[i], &b.messages[i]),
            "load deep-copied message {i}"
        );
        assert!(
            Arc::ptr_eq(&a.messages[i], &fork.messages[i]),
            "fork deep-copied message {i}"
        );
    }
    for (j, m) in recent.messages.iter().enumerate() {
        assert!(Arc::ptr_eq(m, &a.messages[990 + j]));
    }
    // Two loads, one fork, one tail and the store itself hold each of the last ten.
    assert_eq!(Arc::strong_count(&a.messages[999]), 6);
    assert_eq!(Arc::strong_count(&a.messages[0]), 5);
}

/// Every field of a message comes back as it was appended: through
/// `load`, `load_recent`, `fork` and `save`.
#[tokio::test]
async fn every_field_round_trips() {
    use statestore_core::{ContentPart, ImageUrl, Role, Timestamp, TokenCount, ToolCall};

    let mut metadata = statestore_core::Metadata::new();
    metadata.insert("k".into(), serde_json::json!({"nested": [1, 2]}));
    let full = |role: Role, content: statestore_core::Content| {
        Message::new(role, content)
            .with_name("alice")
            .with_tool_calls(vec![
                ToolCall::new("c1", "lookup", r#"{"q":1}"#),
                ToolCall::new("c2", "fetch", "{}"),
            ])
            .with_tool_call_id("c0")
            .with_metadata_map(metadata.clone())
            .with_timestamp(Some(Timestamp::from(
                std::time::UNIX_EPOCH + Duration::from_millis(1_234),
            )))
            .with_token_count(TokenCount::new("o200k_base", 42))
    };
    let mut sent = vec![
        full(Role::Assistant, "text and everything".into()),
        full(
            Role::User,
            vec![
                ContentPart::text("a part"),
                ContentPart::ImageUrl {
                    image_url: ImageUrl {
                        url: "https://example.com/a.png".into(),
                        detail: Some("low".into()),
                    },
                },
            ]
            .into(),
        ),
        full(Role::Tool, String::new().into()),
        full(Role::User, Vec::<ContentPart>::new().into()),
    ];
    // Bare messages too: no timestamp, no count, empty text.
    let mut bare = Message::user("");
    bare.timestamp = None;
    sent.push(bare.clone());
    let mut counted = Message::system("counted");
    counted.token_count = Some(TokenCount {
        encoding: "cl100k_base".into(),
        tokens: 7,
    });
    sent.push(counted);
    let store = MemoryStore::new();
    let id = sid("full");
    store.append(&id, sent.clone(), Expect::Any).await.unwrap();
    let check = |state: &ConversationState| {
        let stored: Vec<Message> = state.messages[..sent.len()]
            .iter()
            .map(|m| (**m).clone())
            .collect();
        assert_eq!(stored, sent);
    };
    check(&store.load(&id).await.unwrap().unwrap());
    let after: Vec<Message> = (0..100).map(|i| Message::user(format!("m{i}"))).collect();
    store.append(&id, after, Expect::Any).await.unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    check(&state);
    let recent = store.load_recent(&id, 106).await.unwrap().unwrap();
    assert_eq!(recent.messages, state.messages);
    store.fork(&id, &sid("full-copy")).await.unwrap();
    check(&store.load(&sid("full-copy")).await.unwrap().unwrap());
    // Saved back, the state is the same again.
    store.save(&state, Expect::Any).await.unwrap();
    check(&store.load(&id).await.unwrap().unwrap());
}

/// Appended text is stored without the spare capacity it was built with,
/// and stays equal to what was appended.
#[tokio::test]
async fn appended_text_is_stored_without_spare_capacity() {
    use statestore_core::{Content, ContentPart, ToolCall};

    fn roomy(s: &str) -> String {
        let mut t = String::with_capacity(1_000);
        t.push_str(s);
        t
    }
    let store = MemoryStore::new();
    let id = sid("roomy");
    let mut call = ToolCall::new("c1", "lookup", "");
    call.arguments = roomy(r#"{"q":"x"}"#);
    let sent = vec![
        Message::user(roomy("a question")),
        Message::user(vec![ContentPart::text(roomy("a part"))]),
        Message::assistant("").with_tool_calls(vec![call]),
    ];
    // (A clone would be exact already: the roomy originals are appended.)
    let expected = sent.clone();
    store.append(&id, sent, Expect::Any).await.unwrap();
    let stored = store.load(&id).await.unwrap().unwrap();
    let stored: Vec<Message> = stored.messages.iter().map(|m| (**m).clone()).collect();
    assert_eq!(stored, expected);

    let state = store.load(&id).await.unwrap().unwrap();
    let Content::Text(text) = &state.messages[0].content else {
        panic!("text content expected");
    };
    assert_eq!(text.capacity(), text.len());
    let Content::Parts(parts) = &state.messages[1].content else {
        panic!("parts expected");
    };
    let ContentPart::Text { text } = &parts[0] else {
        panic!("a text part expected");
    };
    assert_eq!(text.capacity(), text.len());
    let arguments = &state.messages[2].tool_calls()[0].arguments;
    assert_eq!(arguments.capacity(), arguments.len());
}

/// A maintenance save (`Save::keep_clocks`) is no access: the session
/// expires when it would have without it; after a plain save it lives on.
#[tokio::test(start_paused = true)]
async fn a_maintenance_save_keeps_the_expiry() {
    use statestore_core::Save;
    let store = MemoryStore::builder().ttl(Duration::from_secs(60)).build();
    create(&store, "kept").await;
    create(&store, "plain").await;
    advance(Duration::from_secs(40)).await;
    for (id, save) in [
        ("kept", Save::new().expect(Expect::Version(1)).keep_clocks()),
        ("plain", Save::new().expect(Expect::Version(1))),
    ] {
        let state = ConversationState::new(sid(id)).with_messages([Message::user("re-sealed")]);
        assert_eq!(store.save_with(&state, save).await.unwrap(), 2);
    }
    // Checked without reading (a read is an access).
    advance(Duration::from_secs(21)).await;
    assert!(
        !store.exists(&sid("kept")).await.unwrap(),
        "a maintenance save restarted the TTL"
    );
    assert!(store.exists(&sid("plain")).await.unwrap());
    advance(Duration::from_secs(40)).await;
    assert!(!store.exists(&sid("plain")).await.unwrap());

    // The timestamps stay too.
    create(&store, "stamps").await;
    let id = sid("stamps");
    let before_stamps = store.load(&id).await.unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let state = ConversationState::new(id.clone()).with_messages([Message::user("x")]);
    store
        .save_with(&state, Save::new().keep_clocks())
        .await
        .unwrap();
    let after = store.load(&id).await.unwrap().unwrap();
    assert_eq!(after.updated_at, before_stamps.updated_at);
    assert_eq!(after.version, 2);
}

/// A maintenance read (`Load::keep_clocks`) is no access: the session
/// expires when it would have without it, and the read reports the last
/// access before it; after a plain read it lives on.
#[tokio::test(start_paused = true)]
async fn a_maintenance_read_keeps_the_expiry() {
    use statestore_core::Load;
    let store = MemoryStore::builder().ttl(Duration::from_secs(60)).build();
    create(&store, "peeked").await;
    create(&store, "read").await;
    let created = store
        .load_with(&sid("peeked"), Load::new().keep_clocks())
        .await
        .unwrap()
        .unwrap();
    advance(Duration::from_secs(40)).await;
    std::thread::sleep(Duration::from_millis(5));
    let peeked = store
        .load_with(&sid("peeked"), Load::new().keep_clocks())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peeked.last_accessed_at, created.last_accessed_at);
    assert_eq!(peeked.messages.len(), 1);
    let read = store.load(&sid("read")).await.unwrap().unwrap();
    assert!(read.last_accessed_at > created.last_accessed_at);
    // Checked without reading (a plain read is an access).
    advance(Duration::from_secs(21)).await;
    assert!(
        !store.exists(&sid("peeked")).await.unwrap(),
        "a maintenance read restarted the TTL"
    );
    assert!(
        store
            .load_with(&sid("peeked"), Load::new().keep_clocks())
            .await
            .unwrap()
            .is_none(),
        "an expired session reads as absent"
    );
    assert!(
        store.exists(&sid("read")).await.unwrap(),
        "a plain read restarts the TTL"
    );
    advance(Duration::from_secs(40)).await;
    assert!(!store.exists(&sid("read")).await.unwrap());
}
