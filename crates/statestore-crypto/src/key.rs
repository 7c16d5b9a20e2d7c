//! [`Key`] and [`KeyRing`]: key material, zeroized on drop, never shown.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result};

/// One 256-bit XChaCha20-Poly1305 key and its id.
///
/// The id is stored in the clear in every envelope the key seals, so a
/// reader knows which key opens it: 1 to 64 ASCII letters, digits and
/// `- _ . :` (a date such as `2025-06` is a good id). The key bytes are
/// zeroized when the key is dropped and never appear in `Debug`, errors or
/// logs.
///
/// ```
/// use statestore_crypto::Key;
///
/// let key = Key::from_bytes("2025-06", &[7u8; 32])?;
/// assert_eq!(key.id(), "2025-06");
/// assert_eq!(format!("{key:?}"), r#"Key { id: "2025-06", .. }"#);
/// assert!(Key::from_bytes("short", &[7u8; 16]).is_err());
/// # Ok::<(), statestore_crypto::Error>(())
/// ```
pub struct Key {
    id: String,
    bytes: Zeroizing<[u8; Key::LEN]>,
}

impl Key {
    /// Key length in bytes.
    pub const LEN: usize = 32;
    /// Longest key id, in bytes.
    pub const MAX_ID_LEN: usize = 64;

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
        Ok(Self { id, bytes })
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
        Ok(Self { id, bytes: array })
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
        Zeroizing::new(format!("{} base64:{}", self.id, encoded.as_str()))
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

fn check_id(id: &str, source: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    let reason = if id.is_empty() {
        "the key id is empty".to_owned()
    } else if id.len() > Key::MAX_ID_LEN {
        format!(
            "the key id is {} bytes long; the limit is {}",
            id.len(),
            Key::MAX_ID_LEN
        )
    } else if !id.chars().all(legal) {
        format!("key id {id:?} has characters other than ASCII letters, digits and - _ . :")
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        source_name: source.to_owned(),
        reason,
    })
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

    /// A ring from its text format: one key per line, `#` comments and
    /// blank lines ignored; each line is
    ///
    /// ```text
    /// <key id> <key> [current]
    /// ```
    ///
    /// where `<key>` is `base64:` and the standard base64 of 32 bytes, or
    /// `hex:` and 64 hex digits. Exactly one line ends with `current`.
    /// Lines may also be separated by `;` (for environment variables).
    ///
    /// ```
    /// use statestore_crypto::KeyRing;
    ///
    /// let ring = KeyRing::parse(
    ///     "# rotated in June
    ///      2025-06 base64:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI= current
    ///      2025-01 hex:0101010101010101010101010101010101010101010101010101010101010101",
    /// )?;
    /// assert_eq!(ring.current_id(), "2025-06");
    /// assert!(ring.contains("2025-01"));
    /// # Ok::<(), statestore_crypto::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] naming the line, never its key.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_from(text, "text")
    }

    /// A ring from the environment variable `var`, in the
    /// [text format](KeyRing::parse) (`;` separates keys).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when the variable is unset, not Unicode, or
    /// not a valid ring.
    pub fn from_env(var: &str) -> Result<Self> {
        let source = format!("environment variable {var}");
        let text = Zeroizing::new(std::env::var(var).map_err(|e| Error::InvalidKey {
            source_name: source.clone(),
            reason: e.to_string(),
        })?);
        Self::parse_from(&text, &source)
    }

    /// A ring from a file in the [text format](KeyRing::parse). On Unix, a
    /// file that others than its owner can read is logged as a warning.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when the file cannot be read or is not a
    /// valid ring.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| Error::InvalidKey {
                    source_name: source.clone(),
                    reason: e.to_string(),
                })?,
            );
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %source,
                    "the key file can be read by other users than its owner; chmod 600 it"
                );
            }
        }
        Self::parse_from(&text, &source)
    }

    fn parse_from(text: &str, source: &str) -> Result<Self> {
        let mut current: Option<Key> = None;
        let mut others = Vec::new();
        let lines = text.split(['\n', ';']).enumerate();
        for (n, line) in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = if text.contains('\n') {
                format!("{source}, line {}", n + 1)
            } else {
                format!("{source}, entry {}", n + 1)
            };
            let mut words = line.split_whitespace();
            let (Some(id), Some(material)) = (words.next(), words.next()) else {
                return Err(Error::InvalidKey {
                    source_name: at,
                    reason: "expected `<key id> base64:<key>` or `<key id> hex:<key>`".into(),
                });
            };
            let is_current = match (words.next(), words.next()) {
                (None, _) => false,
                (Some("current"), None) => true,
                _ => {
                    return Err(Error::InvalidKey {
                        source_name: at,
                        reason: "only `current` may follow the key".into(),
                    });
                }
            };
            let bytes = decode_material(material).map_err(|reason| Error::InvalidKey {
                source_name: at.clone(),
                reason: format!("key {id:?}: {reason}"),
            })?;
            let key = Key::make(id.to_owned(), &bytes, &at)?;
            if is_current {
                if current.is_some() {
                    return Err(Error::InvalidKey {
                        source_name: at,
                        reason: "a second key is marked current".into(),
                    });
                }
                current = Some(key);
            } else {
                others.push((key, at));
            }
        }
        let Some(current) = current else {
            return Err(Error::InvalidKey {
                source_name: source.to_owned(),
                reason: "no key is marked current".into(),
            });
        };
        let mut ring = Self::new(current);
        for (key, at) in others {
            ring = ring.insert(key, false, &at)?;
        }
        Ok(ring)
    }
}

fn decode_material(material: &str) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    if let Some(b64) = material.strip_prefix("base64:") {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Zeroizing::new)
            .map_err(|_| "not valid standard base64".to_owned())
    } else if let Some(hex) = material.strip_prefix("hex:") {
        if hex.len() % 2 != 0 {
            return Err("an odd number of hex digits".into());
        }
        let mut out = Zeroizing::new(Vec::with_capacity(hex.len() / 2));
        for pair in hex.as_bytes().chunks(2) {
            let digit = |b: u8| (b as char).to_digit(16);
            match pair {
                [hi, lo] => match (digit(*hi), digit(*lo)) {
                    (Some(h), Some(l)) => out.push(u8::try_from(h * 16 + l).unwrap_or(0)),
                    _ => return Err("not hex digits".into()),
                },
                _ => return Err("an odd number of hex digits".into()),
            }
        }
        Ok(out)
    } else {
        Err("the key must start with `base64:` or `hex:`".into())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    const B64: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    #[test]
    fn errors_never_show_key_material() {
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA==";
        for text in [
            format!("k1 base64:{secret} current"),
            format!("k1 hex:{secret} current"),
            format!("k1 {secret} current"),
            format!("k1 base64:{B64} current extra"),
            format!("k1 base64:{B64}"),
            format!("k1 base64:{B64} current\nk1 hex:{} ", "01".repeat(32)),
            format!("bad id! base64:{B64} current"),
        ] {
            let e = KeyRing::parse(&text).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret) && !shown.contains(B64), "{shown}");
        }
    }

    #[test]
    fn semicolons_separate_entries_and_one_id_is_one_key() {
        let ring = KeyRing::parse(&format!(
            "a base64:{B64}; b hex:{} current",
            "01".repeat(32)
        ))
        .unwrap();
        assert_eq!(ring.current_id(), "b");
        assert!(ring.contains("a"));
        let same = ring
            .clone()
            .with_old_key(Key::from_bytes("a", &[2; 32]).unwrap())
            .unwrap();
        assert_eq!(same.key_ids().count(), 2);
        assert!(
            ring.clone()
                .with_old_key(Key::from_bytes("a", &[3; 32]).unwrap())
                .is_err()
        );
        assert!(ring.clone().without_key("b").is_err());
        assert!(!ring.without_key("a").unwrap().contains("a"));
    }

    #[test]
    fn a_key_line_round_trips() {
        let key = Key::generate("2025-06").unwrap();
        let line = key.to_line();
        let ring = KeyRing::parse(&format!("{} current", line.as_str())).unwrap();
        assert!(ring.current().same_bytes(&key));
    }
}
