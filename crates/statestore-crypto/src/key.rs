//! [`Key`] and [`KeyRing`]: key material, zeroized on drop, never shown.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result};

mod parse;

pub use parse::KeyFileOptions;

/// What the key check value authenticates (with the all-zero nonce).
const CHECK_DOMAIN: &[u8] = b"statestore-crypto/key-check-value\0";

/// One 256-bit XChaCha20-Poly1305 key and its id.
///
/// The id is stored in the clear in every envelope the key seals, so a
/// reader knows which key opens it: 1 to 64 ASCII letters, digits and
/// `- _ . :` (a date such as `2025-06` is a good id). The key bytes are
/// zeroized when the key is dropped and never appear in `Debug`, errors or
/// logs.
///
/// Each key also has a [check value](Key::check_value): 4 bytes derived
/// from it, stored in every envelope it seals, so a reader holding another
/// key under the same id is told [`Error::WrongKey`] rather than
/// [`Error::Integrity`].
///
/// ```
/// use statestore_crypto::Key;
///
/// let key = Key::from_bytes("2025-06", &[7u8; 32])?;
/// assert_eq!(key.id(), "2025-06");
/// assert_eq!(format!("{key:?}"), r#"Key { id: "2025-06", .. }"#);
/// assert!(Key::from_bytes("short", &[7u8; 16]).is_err());
/// // Same bytes, same check value; other bytes, (almost surely) another.
/// assert_eq!(key.check_value(), Key::from_bytes("other-id", &[7u8; 32])?.check_value());
/// assert_ne!(key.check_value(), Key::from_bytes("2025-06", &[8u8; 32])?.check_value());
/// # Ok::<(), statestore_crypto::Error>(())
/// ```
pub struct Key {
    id: String,
    bytes: Zeroizing<[u8; Key::LEN]>,
    /// [`Key::check_value`], computed once.
    check: [u8; Key::CHECK_LEN],
}

impl Key {
    /// Key length in bytes.
    pub const LEN: usize = 32;
    /// Longest key id, in bytes.
    pub const MAX_ID_LEN: usize = 64;
    /// Length of a [key check value](Key::check_value), in bytes.
    pub const CHECK_LEN: usize = 4;

    /// A key from its 32 bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when `bytes` is not 32 bytes long or `id` is
    /// not a legal key id.
    pub fn from_bytes(id: impl Into<String>, bytes: &[u8]) -> Result<Self> {
        Self::make(id.into(), bytes, "bytes")
    }

    /// A fresh random key from the operating system's generator.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when `id` is not a legal key id.
    pub fn generate(id: impl Into<String>) -> Result<Self> {
        use chacha20poly1305::KeyInit as _;
        let key =
            chacha20poly1305::XChaCha20Poly1305::generate_key(&mut chacha20poly1305::aead::OsRng);
        let mut bytes = Zeroizing::new([0u8; Self::LEN]);
        bytes.copy_from_slice(&key);
        let mut key = key;
        key.as_mut_slice().zeroize();
        let id = id.into();
        check_id(&id, "generated")?;
        Ok(Self::from_array(id, bytes))
    }

    fn make(id: String, bytes: &[u8], source: &str) -> Result<Self> {
        check_id(&id, source)?;
        if bytes.len() != Self::LEN {
            return Err(Error::InvalidKey {
                source_name: source.to_owned(),
                reason: format!(
                    "key {id:?} is {} bytes long; keys are {} bytes",
                    bytes.len(),
                    Self::LEN
                ),
            });
        }
        // Copied straight into zeroizing storage: no stray copy on the stack.
        let mut array = Zeroizing::new([0u8; Self::LEN]);
        array.copy_from_slice(bytes);
        Ok(Self::from_array(id, array))
    }

    /// A key of a checked id.
    fn from_array(id: String, bytes: Zeroizing<[u8; Self::LEN]>) -> Self {
        let check = check_value(&bytes);
        Self { id, bytes, check }
    }

    /// The key check value: the first 4 bytes of the Poly1305 tag that
    /// XChaCha20-Poly1305 under this key computes for a fixed domain
    /// string (as associated data, with an empty message) and the all-zero
    /// nonce. Envelopes (format 2) carry it after the key id, so a value
    /// sealed with another key under the same id fails with
    /// [`Error::WrongKey`], not [`Error::Integrity`]; and two processes can
    /// compare keys by their check values without showing them.
    ///
    /// It does not weaken the key: it is 32 bits of the output of a PRF
    /// keyed by the key (the tag is masked by ChaCha20 keystream of that
    /// nonce), so it says nothing about the key but whether a guess is
    /// right — which needs 2²⁵⁶ guesses either way. The all-zero nonce is
    /// never used to seal a value (those nonces are 192 random bits), and
    /// the check value is computed once per key, when it is made.
    #[must_use]
    pub fn check_value(&self) -> [u8; Self::CHECK_LEN] {
        self.check
    }

    /// The key's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as one line of the [key ring text format](KeyRing::parse)
    /// (`<id> base64:<key>`), for writing a new key into a key file. The
    /// returned string is zeroized when dropped.
    #[must_use]
    pub fn to_line(&self) -> Zeroizing<String> {
        let encoded =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_slice()));
        // Allocated once at its final size: `format!` may grow (and so
        // copy and free) its buffer.
        let mut line = Zeroizing::new(String::with_capacity(
            self.id.len() + " base64:".len() + encoded.len(),
        ));
        line.push_str(&self.id);
        line.push_str(" base64:");
        line.push_str(&encoded);
        line
    }

    pub(crate) fn cipher(&self) -> chacha20poly1305::XChaCha20Poly1305 {
        use chacha20poly1305::KeyInit as _;
        // The cipher keeps its own copy of the key and zeroizes it on drop.
        chacha20poly1305::XChaCha20Poly1305::new(self.bytes.as_slice().into())
    }

    /// Whether two keys hold the same bytes.
    fn same_bytes(&self, other: &Self) -> bool {
        // Not secret-dependent timing that matters here: only used when a
        // ring is built, to refuse one id with two different keys.
        self.bytes.as_slice() == other.bytes.as_slice()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn check_value(bytes: &[u8; Key::LEN]) -> [u8; Key::CHECK_LEN] {
    use chacha20poly1305::KeyInit as _;
    use chacha20poly1305::aead::AeadInPlace as _;
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(bytes.into());
    let nonce = chacha20poly1305::XNonce::default();
    let mut check = [0u8; Key::CHECK_LEN];
    // Encrypting nothing cannot fail (only bodies over 256 GiB do).
    if let Ok(tag) = cipher.encrypt_in_place_detached(&nonce, CHECK_DOMAIN, &mut []) {
        for (c, t) in check.iter_mut().zip(tag) {
            *c = t;
        }
    }
    check
}

/// Why `id` is not a legal key id, if it is not. Never quotes the id: a
/// malformed line's first field may be key material.
fn id_problem(id: &str) -> Option<String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if id.is_empty() {
        Some("the key id is empty".to_owned())
    } else if id.len() > Key::MAX_ID_LEN {
        Some(format!(
            "the key id is {} bytes long; the limit is {}",
            id.len(),
            Key::MAX_ID_LEN
        ))
    } else if !id.chars().all(legal) {
        Some("the key id has characters other than ASCII letters, digits and - _ . :".to_owned())
    } else {
        None
    }
}

fn check_id(id: &str, source: &str) -> Result<()> {
    match id_problem(id) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidKey {
            source_name: source.to_owned(),
            reason,
        }),
    }
}

/// The keys a layer may use: every key in the ring can decrypt, the
/// current one encrypts.
///
/// Rotation is adding a new current key and keeping the old one for
/// decryption until [`Encrypted::rotate_all`](crate::Encrypted::rotate_all)
/// moved every session to the new key; then the old key can be dropped.
/// Cloning is cheap (the keys are shared, and zeroized when the last clone
/// is dropped). `Debug` shows key ids only.
///
/// ```
/// use statestore_crypto::{Key, KeyRing};
///
/// let ring = KeyRing::new(Key::from_bytes("2025-06", &[2u8; 32])?)
///     .with_old_key(Key::from_bytes("2025-01", &[1u8; 32])?)?;
/// assert_eq!(ring.current_id(), "2025-06");
/// assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["2025-01", "2025-06"]);
/// assert_eq!(
///     format!("{ring:?}"),
///     r#"KeyRing { current: "2025-06", keys: ["2025-01", "2025-06"] }"#
/// );
/// # Ok::<(), statestore_crypto::Error>(())
/// ```
#[derive(Clone)]
pub struct KeyRing {
    current: Arc<Key>,
    keys: Arc<BTreeMap<String, Arc<Key>>>,
}

impl KeyRing {
    /// A ring holding one key, which encrypts.
    #[must_use]
    pub fn new(current: Key) -> Self {
        let current = Arc::new(current);
        let keys = BTreeMap::from([(current.id.clone(), Arc::clone(&current))]);
        Self {
            current,
            keys: Arc::new(keys),
        }
    }

    /// Adds a key that decrypts but does not encrypt (an older one).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when the ring already holds a different key
    /// under the same id (an id must always mean one key: envelopes name
    /// their key by id alone). The same key twice is accepted.
    pub fn with_old_key(self, key: Key) -> Result<Self> {
        self.insert(key, false, "bytes")
    }

    /// The same ring with `key` as the current one (added if missing):
    /// new writes are encrypted with it; every other key still decrypts.
    ///
    /// # Errors
    ///
    /// As [`KeyRing::with_old_key`].
    pub fn with_current_key(self, key: Key) -> Result<Self> {
        self.insert(key, true, "bytes")
    }

    fn insert(self, key: Key, current: bool, source: &str) -> Result<Self> {
        let mut keys = (*self.keys).clone();
        let key = match keys.get(&key.id) {
            Some(existing) if existing.same_bytes(&key) => Arc::clone(existing),
            Some(_) => {
                return Err(Error::InvalidKey {
                    source_name: source.to_owned(),
                    reason: format!("key id {:?} names two different keys", key.id),
                });
            }
            None => {
                let key = Arc::new(key);
                keys.insert(key.id.clone(), Arc::clone(&key));
                key
            }
        };
        Ok(Self {
            current: if current { key } else { self.current },
            keys: Arc::new(keys),
        })
    }

    /// The same ring without the key `id` (after a rotation finished).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when `id` is the current key.
    pub fn without_key(self, id: &str) -> Result<Self> {
        if id == self.current.id {
            return Err(Error::InvalidKey {
                source_name: "bytes".to_owned(),
                reason: format!("key {id:?} is the current key and cannot be removed"),
            });
        }
        let mut keys = (*self.keys).clone();
        keys.remove(id);
        Ok(Self {
            current: self.current,
            keys: Arc::new(keys),
        })
    }

    /// The id of the key that encrypts.
    #[must_use]
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Every key id in the ring, in order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether the ring holds a key with this id.
    #[must_use]
    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    pub(crate) fn current(&self) -> &Key {
        &self.current
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Key> {
        self.keys.get(id).map(|k| &**k)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current.id)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}
