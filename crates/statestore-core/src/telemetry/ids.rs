//! [`ConversationIds`]: how a session id is recorded as
//! `gen_ai.conversation.id`.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::SessionId;

/// The environment variable that configures the process-wide operator key
/// for [`ConversationIds::Keyed`]: its bytes (use 32 or more random
/// characters) key the HMAC. Read once, the first time an id is recorded
/// under [`ConversationIds::Default`].
pub const TELEMETRY_KEY_ENV: &str = "STATESTORE_TELEMETRY_KEY";

/// How a session id is recorded in telemetry (`gen_ai.conversation.id`).
///
/// A session id often names a person (`user-42-support`), so the raw id is
/// recorded only when asked for. The default ([`ConversationIds::Default`])
/// is the process-wide policy: [`set_conversation_ids`] when called, else a
/// keyed hash when [`TELEMETRY_KEY_ENV`] is set, else a tag.
///
/// ```
/// use statestore_core::SessionId;
/// use statestore_core::telemetry::{ConversationIds, HashKey};
///
/// let id = SessionId::new("user-42-support")?;
/// let keyed = ConversationIds::Keyed(HashKey::new("an operator secret, 32+ chars long"));
/// let recorded = keyed.value(&id).unwrap();
/// assert_eq!(recorded.len(), 32); // 128 bits of HMAC-SHA-256, in hex
/// assert!(!recorded.contains("user"));
/// // Another service with the same key records the same value.
/// assert_eq!(keyed.value(&id), keyed.value(&id));
/// assert_eq!(ConversationIds::Omit.value(&id), None);
/// # Ok::<(), statestore_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConversationIds {
    /// The process-wide policy (see the type's documentation).
    #[default]
    Default,
    /// The session id itself. Personal data, in every trace backend the
    /// spans reach.
    Raw,
    /// HMAC-SHA-256 of the id under an operator key, 128 bits in hex: the
    /// same in every service sharing the key, so traces correlate, and not
    /// reversible without the key.
    Keyed(HashKey),
    /// 32 bits of an unkeyed hash, in hex: enough to tell sessions apart
    /// in one trace, too short to correlate reliably, and open to guessing
    /// for ids drawn from a small set. The default without a key.
    Tag,
    /// Nothing.
    Omit,
}

/// An operator key for [`ConversationIds::Keyed`]. Its `Debug` output
/// never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey(Arc<[u8]>);

impl HashKey {
    /// A key from its bytes; use 32 or more random bytes.
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        Self(Arc::from(key.as_ref()))
    }

    fn hash(&self, id: &SessionId) -> String {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(id.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        // One string, not one per byte: on every span when ids are keyed.
        let mut hex = String::with_capacity(32);
        for b in digest.iter().take(16) {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashKey({} bytes, redacted)", self.0.len())
    }
}

/// The process-wide policy behind [`ConversationIds::Default`]; `None`
/// until set or first read from the environment.
static PROCESS: RwLock<Option<ConversationIds>> = RwLock::new(None);

/// Sets the process-wide policy that [`ConversationIds::Default`] follows
/// (a [`ConversationIds::Default`] here restores the environment's).
pub fn set_conversation_ids(policy: ConversationIds) {
    let policy = match policy {
        ConversationIds::Default => from_env(),
        other => other,
    };
    *PROCESS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(policy);
}

fn from_env() -> ConversationIds {
    match std::env::var(TELEMETRY_KEY_ENV) {
        Ok(key) if !key.is_empty() => {
            if key.len() < 16 {
                tracing::warn!(
                    "{TELEMETRY_KEY_ENV} is shorter than 16 bytes: session ids hashed with it are easy to guess"
                );
            }
            ConversationIds::Keyed(HashKey::new(key))
        }
        _ => ConversationIds::Tag,
    }
}

fn process() -> ConversationIds {
    if let Some(p) = PROCESS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
    {
        return p.clone();
    }
    let mut slot = PROCESS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.get_or_insert_with(from_env).clone()
}

impl ConversationIds {
    /// What `id` is recorded as, or `None` for nothing.
    #[must_use]
    pub fn value(&self, id: &SessionId) -> Option<String> {
        match self {
            Self::Default => process().value(id),
            Self::Raw => Some(id.as_str().to_owned()),
            Self::Keyed(key) => Some(key.hash(id)),
            Self::Tag => Some(tag(id)),
            Self::Omit => None,
        }
    }
}

/// A short, stable, non-reversible tag for a session id (32 bits of
/// SipHash with fixed keys), as logs have always shown it.
#[must_use]
pub(crate) fn tag(id: &SessionId) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    format!("{:08x}", h.finish() & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hashes_are_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let id = SessionId::new("what do ya want for nothing?").unwrap();
        let v = ConversationIds::Keyed(HashKey::new("Jefe"))
            .value(&id)
            .unwrap();
        assert_eq!(v, "5bdcc146bf60754e6a042426089575c7");
        let other = ConversationIds::Keyed(HashKey::new("Jeff"))
            .value(&id)
            .unwrap();
        assert_ne!(v, other);
    }

    #[test]
    fn policies_record_what_they_say() {
        let id = SessionId::new("alice@example.com").unwrap();
        assert_eq!(
            ConversationIds::Raw.value(&id).as_deref(),
            Some("alice@example.com")
        );
        let tag = ConversationIds::Tag.value(&id).unwrap();
        assert_eq!(tag.len(), 8);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(ConversationIds::Omit.value(&id), None);
        assert!(!format!("{:?}", HashKey::new("secret-key")).contains("secret"));
    }
}
