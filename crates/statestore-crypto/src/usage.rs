//! [`key_usage`]: which keys a stored session's values are encrypted
//! under, read from the envelope headers alone (no key, no decryption).

use std::collections::BTreeMap;

use statestore_core::{ConversationState, Message};

use crate::envelope;
use crate::seal::SEALED_KEY;

/// What one stored value is, by its envelope header ([`sealed_key_id`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sealing {
    /// Encrypted under the key with this id.
    Encrypted(String),
    /// Stored unencrypted: plain text, or compressed only ([`Compressed`](crate::Compressed)).
    Plaintext,
    /// Looks sealed (the `sealed:` prefix, or a message's sealed body) but
    /// its header does not parse: damaged, or a format this build does not
    /// read.
    Malformed,
}

/// What a sealed value's text is: encrypted under which key, plaintext, or
/// malformed. Reads the envelope header only, so it needs no key and
/// cannot tell a value that would decrypt from one that would not.
///
/// ```
/// use statestore_crypto::{Sealing, sealed_key_id};
///
/// assert_eq!(sealed_key_id("hello"), Sealing::Plaintext);
/// assert_eq!(sealed_key_id("sealed:!!"), Sealing::Malformed);
/// ```
#[must_use]
pub fn sealed_key_id(text: &str) -> Sealing {
    if !envelope::is_sealed(text) {
        return Sealing::Plaintext;
    }
    let Ok(bytes) = envelope::decode_text(text) else {
        return Sealing::Malformed;
    };
    let Ok(header) = envelope::header(&bytes) else {
        return Sealing::Malformed;
    };
    // The key id follows its length, byte 3, in every envelope format;
    // the parsed header confirms it.
    let len = bytes.get(3).map_or(0, |l| usize::from(*l));
    let id = bytes
        .get(4..4 + len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default();
    if len == 0 {
        Sealing::Plaintext
    } else if header.encrypted_under(id) {
        Sealing::Encrypted(id.to_owned())
    } else {
        Sealing::Malformed
    }
}

/// How many values of stored sessions are under each key, how many are
/// plaintext, how many malformed: from [`key_usage`], summed with
/// [`KeyUsage::add`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUsage {
    /// Values encrypted under each key id.
    pub keys: BTreeMap<String, u64>,
    /// Values stored unencrypted.
    pub plaintext: u64,
    /// Values that look sealed but whose header does not parse.
    pub malformed: u64,
}

impl KeyUsage {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Self) {
        for (k, n) in &other.keys {
            *self.keys.entry(k.clone()).or_default() += n;
        }
        self.plaintext += other.plaintext;
        self.malformed += other.malformed;
    }

    /// Values encrypted, under any key.
    #[must_use]
    pub fn encrypted(&self) -> u64 {
        self.keys.values().sum()
    }

    /// Values under key `id`.
    #[must_use]
    pub fn under(&self, id: &str) -> u64 {
        self.keys.get(id).copied().unwrap_or(0)
    }

    fn count(&mut self, sealing: Sealing) {
        match sealing {
            Sealing::Encrypted(id) => *self.keys.entry(id).or_default() += 1,
            Sealing::Plaintext => self.plaintext += 1,
            Sealing::Malformed => self.malformed += 1,
        }
    }

    fn message(&mut self, m: &Message) {
        match m.metadata().get(SEALED_KEY) {
            Some(serde_json::Value::String(s)) => self.count(sealed_key_id(s)),
            Some(_) => self.malformed += 1,
            None => self.plaintext += 1,
        }
    }
}

/// The [`KeyUsage`] of a session as the store holds it (loaded from the
/// store underneath an [`Encrypted`](crate::Encrypted) layer, not through
/// it): its messages, summaries, system prompt and metadata values —
/// the layer's manifest among them, which needs its key like any other
/// value — each counted once. Reads headers only: no key ring needed.
///
/// ```
/// use std::sync::Arc;
/// use statestore_core::{Expect, Message, SessionId, Store};
/// use statestore_crypto::{Encrypted, Key, KeyRing, key_usage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = Arc::new(statestore_memory::MemoryStore::new());
/// let store = Encrypted::new(backend.clone(), KeyRing::new(Key::from_bytes("k1", &[1; 32])?));
/// let id = SessionId::new("s")?;
/// store.append(&id, vec![Message::user("hi"), Message::assistant("hello")], Expect::Any).await?;
/// let usage = key_usage(&backend.load(&id).await?.ok_or("written")?);
/// // Two messages and the session's manifest.
/// assert_eq!((usage.under("k1"), usage.plaintext), (3, 0));
/// # Ok(()) }
/// ```
#[must_use]
pub fn key_usage(state: &ConversationState) -> KeyUsage {
    let mut usage = KeyUsage::default();
    for m in &state.messages {
        usage.message(m);
    }
    for s in &state.summaries {
        usage.count(sealed_key_id(&s.content));
    }
    if let Some(p) = &state.system_prompt {
        usage.count(sealed_key_id(p));
    }
    for v in state.metadata.values() {
        usage.count(match v {
            serde_json::Value::String(s) => sealed_key_id(s),
            _ => Sealing::Plaintext,
        });
    }
    usage
}

#[cfg(test)]
mod tests {
    use statestore_core::{SessionId, Summary};

    use super::*;
    use crate::envelope::{Limits, Place, Scope, Sealer};
    use crate::{Compression, Key, KeyRing};

    fn sealed(keys: Option<&KeyRing>, compression: Compression) -> String {
        let id = SessionId::new("s").unwrap_or_else(|_| unreachable!());
        let scope = Scope {
            id: &id,
            owner: None,
            context: "",
            epoch: None,
        };
        let sealer = Sealer {
            keys,
            compression,
            limits: Limits::default(),
        };
        sealer.seal(
            "some words ".repeat(40).as_bytes(),
            &scope,
            &Place::SystemPrompt,
        )
    }

    #[test]
    fn headers_say_the_key_without_decrypting() {
        let ring =
            KeyRing::new(Key::from_bytes("k-9", &[9; 32]).unwrap_or_else(|_| unreachable!()));
        let text = sealed(Some(&ring), Compression::none());
        assert_eq!(sealed_key_id(&text), Sealing::Encrypted("k-9".into()));
        // Compressed only: not encrypted.
        assert_eq!(
            sealed_key_id(&sealed(None, Compression::zstd().threshold(1))),
            Sealing::Plaintext
        );
        assert_eq!(sealed_key_id("sealed:AQE"), Sealing::Malformed);
        assert_eq!(sealed_key_id(&text[..24]), Sealing::Malformed);
        assert_eq!(sealed_key_id("plain words"), Sealing::Plaintext);

        let id = SessionId::new("s").unwrap_or_else(|_| unreachable!());
        let mut state = ConversationState::new(id);
        state.push(Message::user("clear"));
        let mut m = Message::assistant("");
        m.metadata_mut()
            .insert(SEALED_KEY.into(), text.clone().into());
        state.push(m);
        let mut bad = Message::assistant("");
        bad.metadata_mut().insert(SEALED_KEY.into(), 7.into());
        state.push(bad);
        state.system_prompt = Some(text.clone());
        state.metadata.insert("plan".into(), text.clone().into());
        state.metadata.insert("n".into(), 3.into());
        state.summaries.push(Summary::new(0..1, "sealed:###"));
        let usage = key_usage(&state);
        assert_eq!(usage.under("k-9"), 3);
        assert_eq!((usage.plaintext, usage.malformed), (2, 2));
        let mut sum = usage.clone();
        sum.add(&usage);
        assert_eq!((sum.encrypted(), sum.plaintext, sum.malformed), (6, 4, 4));
    }
}
