//! Tampering with what the backend holds gives typed errors naming the
//! session, the value and the key id — never a panic, never a value
//! silently dropped: ciphertexts swapped between sessions, positions and
//! fields (through the store underneath, and by hand with Redis commands),
//! changed clear fields, a wrong key, a missing key id, a truncated
//! envelope, an unknown format version, plaintext where ciphertext belongs.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod support;

use std::sync::Arc;

use statestore_core::{
    ConversationState, Error as StoreError, Expect, Message, Metadata, Role, SessionId, Store,
    Summary,
};
use statestore_crypto::{Encrypted, Error, Field};
use support::{ring, sid};

const SEALED_KEY: &str = "statestore.sealed";

/// A session with two messages, two summaries, two metadata values and a
/// prompt, written through `layer`.
async fn seed(layer: &Encrypted, id: &SessionId) {
    let mut state = ConversationState::new(id.clone())
        .with_system_prompt("prompt")
        .with_messages([Message::user("first"), Message::user("second")]);
    state.summaries = vec![Summary::new(0..1, "s0"), Summary::new(0..2, "s1")];
    state.metadata.insert("a".into(), "va".into());
    state.metadata.insert("b".into(), "vb".into());
    layer.save(&state, Expect::Any).await.unwrap();
}

use support::refused as typed;

fn assert_integrity(e: &Error, field: Field) {
    assert!(
        matches!(e, Error::Integrity { field: f, key_id, .. } if *f == field && key_id == "k1"),
        "{e:?}"
    );
}

async fn raw(inner: &Arc<dyn Store>, id: &SessionId) -> ConversationState {
    inner.load(id).await.unwrap().unwrap()
}

async fn put(inner: &Arc<dyn Store>, state: &ConversationState) {
    inner.save(state, Expect::Any).await.unwrap();
}

async fn swaps_give_integrity_errors(inner: Arc<dyn Store>) {
    let layer = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    let (a, b) = (sid("a"), sid("b"));
    seed(&layer, &a).await;
    seed(&layer, &b).await;
    let good_a = raw(&inner, &a).await;
    let good_b = raw(&inner, &b).await;

    // A message copied from session a to the same position of session b.
    let mut state = good_b.clone();
    state.messages[0] = Arc::clone(&good_a.messages[0]);
    put(&inner, &state).await;
    assert_integrity(&typed(layer.load(&b).await, &b), Field::Message(0));
    assert_integrity(
        &typed(layer.load_recent(&b, 2).await, &b),
        Field::Message(0),
    );

    // Two positions swapped.
    let mut state = good_b.clone();
    state.messages.swap(0, 1);
    put(&inner, &state).await;
    assert_integrity(&typed(layer.load(&b).await, &b), Field::Message(0));
    // The newest message alone is checked at its own position too.
    assert_integrity(
        &typed(layer.load_recent(&b, 1).await, &b),
        Field::Message(1),
    );

    // A role flipped from user to system (roles are clear, but bound).
    let mut state = good_b.clone();
    let mut m = (*state.messages[1]).clone();
    m.role = Role::System;
    state.messages[1] = Arc::new(m);
    put(&inner, &state).await;
    assert_integrity(
        &typed(layer.load_recent(&b, 1).await, &b),
        Field::Message(1),
    );

    // Summaries swapped; a summary's range changed.
    let mut state = good_b.clone();
    state.summaries.swap(0, 1);
    put(&inner, &state).await;
    assert_integrity(&typed(layer.load(&b).await, &b), Field::Summary(0));
    let mut state = good_b.clone();
    state.summaries[1].covers = 1..2;
    put(&inner, &state).await;
    assert_integrity(&typed(layer.load(&b).await, &b), Field::Summary(1));

    // Metadata values swapped between keys.
    let mut state = good_b.clone();
    let va = state.metadata["a"].clone();
    let vb = state.metadata["b"].clone();
    state.metadata.insert("a".into(), vb);
    state.metadata.insert("b".into(), va);
    put(&inner, &state).await;
    assert_integrity(
        &typed(layer.load(&b).await, &b),
        Field::Metadata("a".into()),
    );

    // A summary's ciphertext as the system prompt; a metadata value too.
    let mut state = good_b.clone();
    state.system_prompt = Some(state.summaries[0].content.clone());
    put(&inner, &state).await;
    assert_integrity(&typed(layer.load(&b).await, &b), Field::SystemPrompt);
    let mut state = good_b.clone();
    state.system_prompt = state.metadata["a"].as_str().map(str::to_owned);
    put(&inner, &state).await;
    assert_integrity(
        &typed(layer.load_recent(&b, 0).await, &b),
        Field::SystemPrompt,
    );

    // Clear text beside a sealed body.
    let mut state = good_b.clone();
    let mut m = (*state.messages[0]).clone();
    m.content = "injected".into();
    state.messages[0] = Arc::new(m);
    put(&inner, &state).await;
    assert!(matches!(
        typed(layer.load(&b).await, &b),
        Error::Malformed {
            field: Field::Message(0),
            ..
        }
    ));

    // Restored, everything reads again; session a was never affected.
    put(&inner, &good_b).await;
    assert_eq!(layer.load(&b).await.unwrap().unwrap().messages.len(), 2);
    assert_eq!(
        layer.load(&a).await.unwrap().unwrap().messages[1].text(),
        "second"
    );

    // A fork re-binds to the target: its ciphertext is not the source's.
    layer.fork(&a, &sid("a2")).await.unwrap();
    let forked = raw(&inner, &sid("a2")).await;
    assert_ne!(forked.messages[0], good_a.messages[0]);
    assert_eq!(
        layer.load(&sid("a2")).await.unwrap().unwrap().messages[0].text(),
        "first"
    );
}

#[tokio::test]
async fn swapped_ciphertexts_fail_on_memory() {
    swaps_give_integrity_errors(support::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_ciphertexts_fail_on_sqlite() {
    swaps_give_integrity_errors(Arc::new(support::Sqlite::open().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_ciphertexts_fail_on_redis() {
    let server = support::redis_server();
    swaps_give_integrity_errors(support::redis_store(&server.url()).await).await;
}

/// By hand, on the server: `LSET` a message list element of one session
/// into another's, and `HSET` one metadata field's value into another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edited_redis_keys_fail() {
    let server = support::redis_server();
    let url = server.url();
    let inner: Arc<dyn Store> = Arc::new(
        statestore_redis::RedisStore::builder()
            .prefix("app:")
            .connect(&url)
            .await
            .unwrap(),
    );
    let layer = Encrypted::new(inner, ring("k1", 1));
    seed(&layer, &sid("x")).await;
    seed(&layer, &sid("y")).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let cmd = |args: &[&str]| {
        let mut c = redis::cmd(args[0]);
        args[1..].iter().for_each(|a| {
            c.arg(*a);
        });
        c
    };
    let from_x: String = cmd(&["LINDEX", "app:{x}:m", "1"])
        .query_async(&mut con)
        .await
        .unwrap();
    let () = cmd(&["LSET", "app:{y}:m", "1", &from_x])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_integrity(
        &typed(layer.load_recent(&sid("y"), 1).await, &sid("y")),
        Field::Message(1),
    );

    let b: String = cmd(&["HGET", "app:{x}:d", "b"])
        .query_async(&mut con)
        .await
        .unwrap();
    let () = cmd(&["HSET", "app:{x}:d", "a", &b])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_integrity(
        &typed(layer.load(&sid("x")).await, &sid("x")),
        Field::Metadata("a".into()),
    );
}

/// The message at position 0 of `id`, as stored, with its sealed text
/// replaced by `edit(text)`.
async fn edit_sealed(inner: &Arc<dyn Store>, id: &SessionId, edit: impl Fn(&str) -> String) {
    let mut state = raw(inner, id).await;
    let mut m = (*state.messages[0]).clone();
    let text = m.metadata()[SEALED_KEY].as_str().unwrap().to_owned();
    m.metadata_mut()
        .insert(SEALED_KEY.into(), edit(&text).into());
    state.messages[0] = Arc::new(m);
    put(inner, &state).await;
}

fn envelope(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = text.strip_prefix("sealed:").unwrap();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64)
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "sealed:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    )
}

#[tokio::test]
async fn wrong_key_missing_key_truncation_and_unknown_format_are_typed() {
    let inner = support::memory();
    let layer = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    let id = sid("s");
    layer
        .append(&id, vec![Message::user("hello")], Expect::Any)
        .await
        .unwrap();
    let good = raw(&inner, &id).await;

    // The right id, other bytes: the key check value tells it, naming k1
    // (not an Integrity: nothing was tampered with) — first on the
    // manifest, which every read opens first.
    let wrong = Encrypted::new(Arc::clone(&inner), ring("k1", 9));
    let e = typed(wrong.load(&id).await, &id);
    assert!(
        matches!(&e, Error::WrongKey { key_id, field: Field::Manifest, .. } if key_id == "k1"),
        "{e:?}"
    );
    assert_eq!(e.key_id(), Some("k1"));
    let store_error = wrong.load(&id).await.unwrap_err();
    assert!(
        matches!(&store_error, StoreError::Decryption { key_id: Some(k), .. } if k == "k1"),
        "{store_error:?}"
    );
    assert!(
        store_error.to_string().contains("its manifest"),
        "{store_error}"
    );
    // The right key, a changed body byte: Integrity.
    let mut flipped = envelope(good.messages[0].metadata()[SEALED_KEY].as_str().unwrap());
    let last = flipped.len() - 20;
    flipped[last] ^= 1;
    edit_sealed(&inner, &id, |_| text(&flipped)).await;
    assert_integrity(&typed(layer.load(&id).await, &id), Field::Message(0));
    put(&inner, &good).await;
    // A ring without k1.
    let other = Encrypted::new(Arc::clone(&inner), ring("k2", 1));
    let e = typed(other.load(&id).await, &id);
    assert!(
        matches!(&e, Error::UnknownKey { key_id, field: Field::Manifest, .. } if key_id == "k1"),
        "{e:?}"
    );
    let store_error = other.load(&id).await.unwrap_err();
    assert!(
        matches!(&store_error, StoreError::Decryption { key_id: Some(k), .. } if k == "k1"),
        "{store_error:?}"
    );
    assert!(store_error.to_string().contains("\"k1\""), "{store_error}");

    // Truncated anywhere: never a panic, always a typed error.
    let full = envelope(good.messages[0].metadata()[SEALED_KEY].as_str().unwrap());
    for len in 0..full.len() {
        edit_sealed(&inner, &id, |_| text(&full[..len])).await;
        let e = typed(layer.load(&id).await, &id);
        assert!(
            matches!(e, Error::Malformed { .. } | Error::Integrity { .. }),
            "truncated to {len}: {e:?}"
        );
    }
    // Not base64.
    edit_sealed(&inner, &id, |t| format!("{t}!")).await;
    assert!(matches!(
        typed(layer.load(&id).await, &id),
        Error::Malformed { .. }
    ));
    // A format version from the future.
    let mut future = full.clone();
    future[0] = 3;
    edit_sealed(&inner, &id, |_| text(&future)).await;
    let e = typed(layer.load(&id).await, &id);
    assert!(
        matches!(
            e,
            Error::UnsupportedFormat {
                found: 3,
                supported: 2,
                ..
            }
        ),
        "{e:?}"
    );

    // Plaintext where ciphertext belongs: refused, unless migrating.
    put(
        &inner,
        &ConversationState::new(id.clone()).with_messages([Message::user("plain")]),
    )
    .await;
    assert!(matches!(
        typed(layer.load(&id).await, &id),
        Error::NotEncrypted {
            field: Field::Message(0),
            ..
        }
    ));
    let migrating = Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
        .accept_plaintext(true)
        .build();
    assert_eq!(
        migrating.load(&id).await.unwrap().unwrap().messages[0].text(),
        "plain"
    );
    let mut patch = Metadata::new();
    patch.insert("plain".into(), serde_json::json!({"clear": true}));
    inner.merge_metadata(&id, patch, Expect::Any).await.unwrap();
    assert!(matches!(
        typed(layer.load_recent(&id, 0).await, &id),
        Error::NotEncrypted {
            field: Field::Metadata(_),
            ..
        }
    ));

    // Restored: reads again.
    put(&inner, &good).await;
    assert_eq!(
        layer.load(&id).await.unwrap().unwrap().messages[0].text(),
        "hello"
    );
}

#[tokio::test]
async fn errors_never_show_content_or_key_material() {
    let inner = support::memory();
    let layer = Encrypted::new(Arc::clone(&inner), ring("k1", 0x5a));
    let id = sid("s");
    layer
        .append(&id, vec![Message::user("TOP-SECRET-CONTENT")], Expect::Any)
        .await
        .unwrap();
    let wrong = Encrypted::new(inner, ring("k1", 0x5b));
    let e = wrong.load(&id).await.unwrap_err();
    let shown = format!("{e} {e:?} {wrong:?}");
    assert!(!shown.contains("TOP-SECRET-CONTENT"), "{shown}");
    assert!(
        !shown.contains("90, 90, 90") && !shown.contains("5a5a"),
        "{shown}"
    );
}
