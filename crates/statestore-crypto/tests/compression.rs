//! Compression before encryption is a choice: `Encrypted` compresses
//! nothing by default, chosen roles when told; `Compressed` compresses.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

mod support;

use std::sync::Arc;

use base64::Engine as _;
use statestore_core::{ConversationState, Expect, Message, Store, Summary};
use statestore_crypto::{Compressed, Compression, Encrypted};
use support::{memory, ring, sid};

const SEALED_KEY: &str = "statestore.sealed";

/// The compression byte of a sealed value's envelope.
fn codec(sealed: &str) -> u8 {
    let b64 = sealed.strip_prefix("sealed:").unwrap();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64)
        .unwrap()[2]
}

fn long(what: &str) -> String {
    format!("{what}: the same sentence, said again. ").repeat(60)
}

/// A session with a long message of each role, a long prompt, summary and
/// metadata value.
fn state() -> ConversationState {
    let mut state = ConversationState::new(sid("s"))
        .with_system_prompt(long("prompt"))
        .with_messages([
            Message::user(long("user")),
            Message::assistant(long("assistant")),
            Message::tool("call-1", long("tool")),
            Message::system(long("system")),
        ]);
    state.summaries = vec![Summary::new(0..2, long("summary"))];
    state.metadata.insert("notes".into(), long("notes").into());
    state
}

/// The compression byte of every sealed value of the stored session:
/// messages in order, then the prompt, the summary, the metadata value.
async fn codecs(inner: &Arc<dyn Store>) -> Vec<u8> {
    let raw = inner.load(&sid("s")).await.unwrap().unwrap();
    let mut out: Vec<u8> = raw
        .messages
        .iter()
        .map(|m| codec(m.metadata()[SEALED_KEY].as_str().unwrap()))
        .collect();
    out.push(codec(raw.system_prompt.as_deref().unwrap()));
    out.push(codec(&raw.summaries[0].content));
    out.push(codec(raw.metadata["notes"].as_str().unwrap()));
    out
}

#[tokio::test]
async fn the_encrypting_layer_compresses_nothing_by_default() {
    let inner = memory();
    let layer = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    layer.save(&state(), Expect::Absent).await.unwrap();
    assert_eq!(codecs(&inner).await, [0; 7]);
    let inner = memory();
    let built = Encrypted::builder(Arc::clone(&inner), ring("k1", 1)).build();
    built.save(&state(), Expect::Absent).await.unwrap();
    assert_eq!(codecs(&inner).await, [0; 7]);
    assert_eq!(
        built.load(&sid("s")).await.unwrap().unwrap().messages[1].text(),
        long("assistant")
    );
}

#[tokio::test]
async fn compression_per_role_compresses_those_messages_only() {
    use statestore_core::Role;
    let inner = memory();
    let layer = Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
        .compression(Compression::zstd().roles(&[Role::Assistant, Role::Tool]))
        .build();
    layer.save(&state(), Expect::Absent).await.unwrap();
    // user, assistant, tool, system; prompt, summary, metadata.
    assert_eq!(codecs(&inner).await, [0, 1, 1, 0, 0, 0, 0]);
    // Everything reads back, by this layer and by one that does not
    // compress (what it finds compressed, it decompresses).
    let plain = Encrypted::new(Arc::clone(&inner), ring("k1", 1));
    for reader in [&layer, &plain] {
        let read = reader.load(&sid("s")).await.unwrap().unwrap();
        assert_eq!(read.messages[2].text(), long("tool"));
        assert_eq!(read.system_prompt.as_deref(), Some(long("prompt").as_str()));
    }
    // Every value, when asked for explicitly.
    let inner = memory();
    Encrypted::builder(Arc::clone(&inner), ring("k1", 1))
        .compression(Compression::zstd())
        .build()
        .save(&state(), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(codecs(&inner).await, [1; 7]);
}

#[tokio::test]
async fn the_compressing_layer_still_compresses_by_default() {
    let inner = memory();
    let layer = Compressed::new(Arc::clone(&inner));
    layer.save(&state(), Expect::Absent).await.unwrap();
    let raw = inner.load(&sid("s")).await.unwrap().unwrap();
    for m in &raw.messages {
        assert_eq!(codec(m.metadata()[SEALED_KEY].as_str().unwrap()), 1);
    }
    assert_eq!(codec(raw.system_prompt.as_deref().unwrap()), 1);
    assert_eq!(codec(&raw.summaries[0].content), 1);
    // Metadata is left as it is by a compression-only layer.
    assert_eq!(raw.metadata["notes"], long("notes"));
    assert_eq!(
        layer.load(&sid("s")).await.unwrap().unwrap().messages[0].text(),
        long("user")
    );
}
