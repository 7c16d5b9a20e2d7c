//! Decompression has a budget: a value may not decompress to more than
//! the per-value limit, nor the values of one read to more than the
//! per-load limit — checked from the sizes zstd frames declare, before
//! anything is allocated. Bombs (small values that expand hugely) are
//! planted straight into the store underneath.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod support;

use std::sync::Arc;

use base64::Engine as _;
use statestore_core::{
    ConversationState, Error as StoreError, Expect, Message, Metadata, Store, WriteOutcome,
};
use statestore_crypto::{Compressed, Compression, Encrypted, Error, Field};
use support::{memory, ring, sid};

const SEALED_KEY: &str = "statestore.sealed";
const MIB: u64 = 1 << 20;

/// An unencrypted envelope (what `Compressed` writes) of zstd `frame`.
fn compressed_value(frame: &[u8]) -> String {
    let mut bytes = vec![2, 0, 1, 0];
    bytes.extend_from_slice(frame);
    format!(
        "sealed:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    )
}

/// A zstd frame of a message body of exactly `size` bytes:
/// `{"content":"xxx…"}`.
fn body_frame(size: u64) -> Vec<u8> {
    let text = "x".repeat(usize::try_from(size).unwrap() - 14);
    let body = serde_json::to_vec(&serde_json::json!({ "content": text })).unwrap();
    assert_eq!(body.len() as u64, size);
    zstd::bulk::compress(&body, 1).unwrap()
}

/// A zstd frame declaring `size` bytes of zeros, compressed as written.
fn zeros_frame(size: u64) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    encoder.set_pledged_src_size(Some(size)).unwrap();
    encoder.include_contentsize(true).unwrap();
    let chunk = vec![0u8; 1 << 16];
    for _ in 0..size / chunk.len() as u64 {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.finish().unwrap()
}

/// Session `s` in `inner`: 1,000 messages, each the compressed `value`.
async fn plant(inner: &Arc<dyn Store>, value: &str) {
    let messages = (0..1000).map(|_| {
        let mut m = Message::user("");
        m.metadata_mut().insert(SEALED_KEY.into(), value.into());
        m
    });
    let state = ConversationState::new(sid("s")).with_messages(messages);
    inner.save(&state, Expect::Any).await.unwrap();
}

/// The crate error under a store error, checked to name session `s` and
/// to have written nothing.
fn typed(e: &StoreError) -> &Error {
    assert_eq!(e.write_outcome(), WriteOutcome::NotWritten);
    let typed = Error::from_store(e).unwrap_or_else(|| panic!("untyped: {e:?}"));
    assert_eq!(typed.session(), Some(&sid("s")));
    typed
}

#[tokio::test]
async fn a_thousand_bombs_in_one_session_exhaust_the_read_budget() {
    let inner = memory();
    let frame = body_frame(MIB);
    assert!(frame.len() < 200, "{} bytes", frame.len());
    plant(&inner, &compressed_value(&frame)).await;
    let layer = Compressed::new(Arc::clone(&inner)).max_decompressed_bytes_per_load(32 * MIB);
    let e = layer.load(&sid("s")).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    // 32 values of exactly 1 MiB fit; the 33rd does not.
    assert!(
        matches!(
            typed(&e),
            Error::LoadTooLarge { field: Field::Message(32), limit, .. } if *limit == 32 * MIB
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains('s'), "{e}");
    let e = layer.load_recent(&sid("s"), 1000).await.unwrap_err();
    assert!(matches!(typed(&e), Error::LoadTooLarge { .. }), "{e:?}");
    // Each read has its own budget: a window within it reads, twice.
    for _ in 0..2 {
        let recent = layer.load_recent(&sid("s"), 30).await.unwrap().unwrap();
        assert_eq!(recent.messages.len(), 30);
    }
}

#[tokio::test]
async fn a_thousand_bombs_over_the_value_limit_fail_at_the_first() {
    let inner = memory();
    // 60 MiB each: within the 64 MiB the previous release accepted, so it
    // would have allocated 60 GB.
    let frame = zeros_frame(60 * MIB);
    assert!(frame.len() < 8 << 10, "{} bytes", frame.len());
    plant(&inner, &compressed_value(&frame)).await;
    let e = Compressed::new(Arc::clone(&inner))
        .load(&sid("s"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            typed(&e),
            Error::BodyTooLarge { field: Field::Message(0), limit, .. }
                if *limit == Compression::DEFAULT_MAX_DECOMPRESSED_BYTES
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_value_just_over_the_value_limit_fails_one_just_under_opens() {
    let cap = Compression::DEFAULT_MAX_DECOMPRESSED_BYTES;
    let inner = memory();
    // A writer allowed more compresses what a default reader refuses.
    let writer = Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
        .compression(Compression::zstd())
        .max_decompressed_bytes(2 * cap)
        .build();
    let reader = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    for (size, opens) in [(cap, true), (cap - 1, true), (cap + 1, false)] {
        let prompt = "p".repeat(usize::try_from(size).unwrap());
        let state = ConversationState::new(sid("s")).with_system_prompt(prompt);
        writer.save(&state, Expect::Any).await.unwrap();
        let stored = inner.load(&sid("s")).await.unwrap().unwrap();
        assert!(stored.system_prompt.unwrap().len() < 4096, "compressed");
        match reader.load(&sid("s")).await {
            Ok(read) if opens => {
                assert_eq!(read.unwrap().system_prompt.unwrap().len() as u64, size);
            }
            Err(e) if !opens => {
                assert!(matches!(e, StoreError::Decryption { .. }), "{e:?}");
                assert!(
                    matches!(
                        typed(&e),
                        Error::BodyTooLarge { field: Field::SystemPrompt, limit, .. } if *limit == cap
                    ),
                    "{e:?}"
                );
            }
            other => panic!("{size} bytes: {other:?}"),
        }
    }
    // The reader's own write of that prompt is not compressed: it reads it.
    let prompt = "p".repeat(usize::try_from(cap + 1).unwrap());
    let own = Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
        .compression(Compression::zstd())
        .build();
    own.save(
        &ConversationState::new(sid("s")).with_system_prompt(prompt),
        Expect::Any,
    )
    .await
    .unwrap();
    assert!(reader.load(&sid("s")).await.unwrap().is_some());
}

#[tokio::test]
async fn sealed_bombs_in_metadata_exhaust_an_encrypted_read_budget() {
    let inner = memory();
    let writer = Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
        .compression(Compression::zstd())
        .build();
    let id = sid("s");
    writer
        .save(&ConversationState::new(id.clone()), Expect::Absent)
        .await
        .unwrap();
    // 1,000 values of 64 KiB (as JSON), a few dozen bytes each stored.
    let value = serde_json::Value::String("v".repeat((64 << 10) - 2));
    for batch in 0..10 {
        let patch: Metadata = (0..100)
            .map(|i| (format!("k{:04}", batch * 100 + i), value.clone()))
            .collect();
        writer
            .merge_metadata(&id, patch, Expect::Any)
            .await
            .unwrap();
    }
    let raw = inner.load(&id).await.unwrap().unwrap();
    assert!(
        raw.metadata
            .iter()
            .filter(|(k, _)| !k.starts_with("statestore.manifest."))
            .all(|(_, v)| v.as_str().unwrap().len() < 200)
    );
    let reader = Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
        .max_decompressed_bytes_per_load(16 * MIB)
        .build();
    let e = reader.load(&id).await.unwrap_err();
    assert!(
        matches!(
            typed(&e),
            Error::LoadTooLarge { field: Field::Metadata(_), limit, .. } if *limit == 16 * MIB
        ),
        "{e:?}"
    );
    // Within the default budget (64 MiB of 256), it reads.
    let all = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    assert_eq!(all.load(&id).await.unwrap().unwrap().metadata.len(), 1000);
}
