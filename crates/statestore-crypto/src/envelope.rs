//! The envelope: what one sealed value looks like at rest.
//!
//! ```text
//! byte  0      format version (2; 1 is still read)
//! byte  1      algorithm: 0 none (compression only), 1 XChaCha20-Poly1305
//! byte  2      compression: 0 none, 1 zstd (a frame that records its size)
//! byte  3      key id length k (0 for algorithm 0, 1..=64 otherwise)
//! 4..4+k       key id (ASCII)
//! then         4-byte key check value (algorithm 1, format 2; not in format 1)
//! then         24-byte random nonce (algorithm 1)
//! then         the body (compressed or not), encrypted, then the 16-byte tag (algorithm 1)
//! ```
//!
//! Stored as text: `sealed:` and the unpadded standard base64 of those bytes.
//!
//! The associated data of the AEAD is a domain string, the whole header
//! (format, algorithm, compression flag, key id, check value, nonce) and the value's
//! [`Binding`]: the session id and the place of the value — a message's
//! position with its clear role, token count and timestamp; a summary's
//! index with its range, token count and time; a metadata key; the system
//! prompt. Each variable-length part is length-prefixed, so no two
//! bindings encode alike. Changing any header byte, moving the value to
//! another session, position or field, or changing the clear fields it
//! travels with fails authentication.

use std::ops::Range;

use base64::Engine as _;
use chacha20poly1305::aead::{AeadCore as _, AeadInPlace as _, OsRng};
use statestore_core::{Role, SessionId, Timestamp, TokenCount};

use crate::{Error, Field, Key, KeyRing};

mod compression;

pub use compression::Compression;
pub(crate) use compression::{Limits, LoadBudget};

/// The envelope format this build writes (and the newest it reads).
pub(crate) const FORMAT: u8 = 2;
/// The first format, without a key check value: still read.
const FORMAT_1: u8 = 1;
/// How a sealed value starts when stored as text.
pub(crate) const PREFIX: &str = "sealed:";

const ALG_NONE: u8 = 0;
const ALG_XCHACHA: u8 = 1;
const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_DOMAIN: &[u8] = b"statestore-crypto/envelope\0";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// A session's epoch: random, renewed by every rewrite of its history,
/// bound into every value of the session (see `manifest.rs`).
pub(crate) type Epoch = [u8; 16];

/// Everything a value is bound to besides its [`Place`]: its session, the
/// session's owner (`user_id`), the layer's context (a tenant, say) and
/// the session's epoch. Format-1 envelopes bound the session id only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scope<'a> {
    pub(crate) id: &'a SessionId,
    pub(crate) owner: Option<&'a str>,
    pub(crate) context: &'a str,
    /// `None` for values outside the history: the manifest itself, the
    /// progress of a write; and for sessions written before epochs.
    pub(crate) epoch: Option<&'a Epoch>,
}

impl Scope<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let id = self.id.as_str().as_bytes();
        out.extend_from_slice(&(id.len() as u64).to_be_bytes());
        out.extend_from_slice(id);
        match self.owner {
            Some(owner) => {
                out.push(1);
                out.extend_from_slice(&(owner.len() as u64).to_be_bytes());
                out.extend_from_slice(owner.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.context.len() as u64).to_be_bytes());
        out.extend_from_slice(self.context.as_bytes());
        match self.epoch {
            Some(epoch) => {
                out.push(1);
                out.extend_from_slice(epoch);
            }
            None => out.push(0),
        }
    }
}

/// The place a value is bound to (with its session id).
#[derive(Clone, Debug)]
pub(crate) enum Place<'a> {
    Message {
        position: u64,
        role: Role,
        token_count: Option<&'a TokenCount>,
        timestamp: Option<Timestamp>,
    },
    Summary {
        index: u64,
        covers: Range<u64>,
        token_count: Option<u32>,
        created_at: Timestamp,
    },
    Metadata(&'a str),
    SystemPrompt,
    /// The progress of the write under this key (`Store::put_pending`).
    Pending(&'a str),
    /// The session's manifest.
    Manifest,
}

impl Place<'_> {
    pub(crate) fn field(&self) -> Field {
        match self {
            Self::Message { position, .. } => Field::Message(*position),
            Self::Summary { index, .. } => Field::Summary(*index),
            Self::Metadata(k) => Field::Metadata((*k).to_owned()),
            Self::SystemPrompt => Field::SystemPrompt,
            Self::Pending(k) => Field::Pending((*k).to_owned()),
            Self::Manifest => Field::Manifest,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u64).to_be_bytes());
            out.extend_from_slice(b);
        }
        match self {
            Self::Message {
                position,
                role,
                token_count,
                timestamp,
            } => {
                out.push(1);
                out.extend_from_slice(&position.to_be_bytes());
                bytes(out, role.as_str().as_bytes());
                match token_count {
                    Some(t) => {
                        out.push(1);
                        bytes(out, t.encoding.as_bytes());
                        out.extend_from_slice(&t.tokens.to_be_bytes());
                    }
                    None => out.push(0),
                }
                match timestamp {
                    Some(t) => {
                        out.push(1);
                        out.extend_from_slice(&t.as_unix_millis().to_be_bytes());
                    }
                    None => out.push(0),
                }
            }
            Self::Summary {
                index,
                covers,
                token_count,
                created_at,
            } => {
                out.push(2);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&covers.start.to_be_bytes());
                out.extend_from_slice(&covers.end.to_be_bytes());
                match token_count {
                    Some(t) => {
                        out.push(1);
                        out.extend_from_slice(&t.to_be_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(&created_at.as_unix_millis().to_be_bytes());
            }
            Self::Metadata(key) => {
                out.push(3);
                bytes(out, key.as_bytes());
            }
            Self::SystemPrompt => out.push(4),
            Self::Pending(key) => {
                out.push(5);
                bytes(out, key.as_bytes());
            }
            Self::Manifest => out.push(6),
        }
    }
}

/// What went wrong opening an envelope, before the session and field are
/// attached ([`Fault::at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    Malformed(String),
    Format(u8),
    UnknownKey(String),
    WrongKey(String),
    Integrity(String),
    NotEncrypted,
    /// A format-1 value (bound to its session and place only) where its
    /// session's epoch binds every value.
    Unbound,
    /// Over the per-value limit (the limit).
    BodyTooLarge(u64),
    /// Over the read's budget (its limit).
    LoadTooLarge(u64),
}

impl Fault {
    pub(crate) fn at(self, id: &SessionId, field: Field) -> Error {
        let id = id.clone();
        match self {
            Self::Malformed(reason) => Error::Malformed { id, field, reason },
            Self::Format(found) => Error::UnsupportedFormat {
                id,
                field,
                found,
                supported: FORMAT,
            },
            Self::UnknownKey(key_id) => Error::UnknownKey { id, field, key_id },
            Self::WrongKey(key_id) => Error::WrongKey { id, field, key_id },
            Self::Integrity(key_id) => Error::Integrity { id, field, key_id },
            Self::NotEncrypted => Error::NotEncrypted { id, field },
            Self::Unbound => Error::Malformed {
                id,
                field,
                reason: "it was sealed in format 1, before owners and histories were bound, \
                         in a session whose values are all bound"
                    .into(),
            },
            Self::BodyTooLarge(limit) => Error::BodyTooLarge { id, field, limit },
            Self::LoadTooLarge(limit) => Error::LoadTooLarge { id, field, limit },
        }
    }
}

/// A parsed envelope header.
#[derive(Debug)]
pub(crate) struct Header<'a> {
    format: u8,
    algorithm: u8,
    codec: u8,
    key_id: &'a str,
    /// The key check value (format 2 and later).
    check: Option<&'a [u8]>,
    nonce: &'a [u8],
    /// Header length in bytes.
    len: usize,
}

impl Header<'_> {
    /// Whether the envelope is encrypted under `key_id`.
    pub(crate) fn encrypted_under(&self, key_id: &str) -> bool {
        self.algorithm == ALG_XCHACHA && self.key_id == key_id
    }

    /// Whether the envelope is encrypted under `key_id` in this build's
    /// format.
    pub(crate) fn current_under(&self, key_id: &str) -> bool {
        self.format == FORMAT && self.encrypted_under(key_id)
    }
}

/// Whether `text` is a sealed value's text form.
pub(crate) fn is_sealed(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// The envelope bytes of a sealed value's text.
pub(crate) fn decode_text(text: &str) -> Result<Vec<u8>, Fault> {
    let b64 = text
        .strip_prefix(PREFIX)
        .ok_or_else(|| Fault::Malformed(format!("it does not start with {PREFIX:?}")))?;
    B64.decode(b64)
        .map_err(|_| Fault::Malformed("it is not valid base64".into()))
}

/// Parses the header of envelope `bytes`.
pub(crate) fn header(bytes: &[u8]) -> Result<Header<'_>, Fault> {
    let truncated = || Fault::Malformed(format!("truncated at {} bytes", bytes.len()));
    let [format, algorithm, codec, key_len, rest @ ..] = bytes else {
        // A format byte alone still says which format it claims.
        return match bytes.first() {
            Some(&f) if !matches!(f, FORMAT_1 | FORMAT) => Err(Fault::Format(f)),
            _ => Err(truncated()),
        };
    };
    if !matches!(*format, FORMAT_1 | FORMAT) {
        return Err(Fault::Format(*format));
    }
    if !matches!(*codec, CODEC_NONE | CODEC_ZSTD) {
        return Err(Fault::Malformed(format!("unknown compression {codec}")));
    }
    let key_len = usize::from(*key_len);
    match *algorithm {
        ALG_NONE => {
            if key_len != 0 {
                return Err(Fault::Malformed("a key id on an unencrypted value".into()));
            }
            Ok(Header {
                format: *format,
                algorithm: ALG_NONE,
                codec: *codec,
                key_id: "",
                check: None,
                nonce: &[],
                len: 4,
            })
        }
        ALG_XCHACHA => {
            if key_len == 0 {
                return Err(Fault::Malformed("an empty key id".into()));
            }
            let check_len = if *format == FORMAT_1 {
                0
            } else {
                Key::CHECK_LEN
            };
            let nonce_at = key_len + check_len;
            let (Some(key_id), Some(check), Some(nonce)) = (
                rest.get(..key_len),
                rest.get(key_len..nonce_at),
                rest.get(nonce_at..nonce_at + NONCE_LEN),
            ) else {
                return Err(truncated());
            };
            let key_id = std::str::from_utf8(key_id)
                .map_err(|_| Fault::Malformed("the key id is not UTF-8".into()))?;
            let len = 4 + nonce_at + NONCE_LEN;
            if bytes.len() < len + TAG_LEN {
                return Err(truncated());
            }
            Ok(Header {
                format: *format,
                algorithm: ALG_XCHACHA,
                codec: *codec,
                key_id,
                check: (check_len > 0).then_some(check),
                nonce,
                len,
            })
        }
        other => Err(Fault::Malformed(format!("unknown algorithm {other}"))),
    }
}

/// The associated data of a value with `header`: format 1 bound the
/// session id and place; format 2 binds the whole [`Scope`].
fn associated_data(header: &[u8], scope: &Scope<'_>, place: &Place<'_>) -> Vec<u8> {
    let id = scope.id.as_str().as_bytes();
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + header.len() + id.len() + 96);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(&(header.len() as u64).to_be_bytes());
    aad.extend_from_slice(header);
    if header.first() == Some(&FORMAT_1) {
        aad.extend_from_slice(&(id.len() as u64).to_be_bytes());
        aad.extend_from_slice(id);
    } else {
        scope.encode(&mut aad);
    }
    place.encode(&mut aad);
    aad
}

/// Seals and opens values for one session: encryption with the current
/// key of a ring (or none: compression only), compression per
/// [`Compression`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sealer<'a> {
    pub(crate) keys: Option<&'a KeyRing>,
    pub(crate) compression: Compression,
    pub(crate) limits: Limits,
}

impl Sealer<'_> {
    /// The envelope bytes of `body`, bound to `scope` and `place`.
    pub(crate) fn seal_bytes(&self, body: &[u8], scope: &Scope<'_>, place: &Place<'_>) -> Vec<u8> {
        // A body over the per-value limit is stored as it is: what this
        // layer writes, it can read.
        let packed = match self.compression.for_place(place) {
            Some((level, threshold))
                if body.len() >= threshold && body.len() as u64 <= self.limits.per_value =>
            {
                compression::compress(body, level)
            }
            _ => None,
        };
        let (codec, payload) = match &packed {
            Some(p) => (CODEC_ZSTD, p.as_slice()),
            None => (CODEC_NONE, body),
        };
        let Some(keys) = self.keys else {
            let mut out = Vec::with_capacity(4 + payload.len());
            out.extend_from_slice(&[FORMAT, ALG_NONE, codec, 0]);
            out.extend_from_slice(payload);
            return out;
        };
        let key = keys.current();
        let key_id = key.id().as_bytes();
        let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let header_len = 4 + key_id.len() + Key::CHECK_LEN + NONCE_LEN;
        let mut out = Vec::with_capacity(header_len + payload.len() + TAG_LEN);
        // Key ids are checked to be 1..=64 bytes when a key is made.
        let key_len = u8::try_from(key_id.len()).unwrap_or(u8::MAX);
        out.extend_from_slice(&[FORMAT, ALG_XCHACHA, codec, key_len]);
        out.extend_from_slice(key_id);
        out.extend_from_slice(&key.check_value());
        out.extend_from_slice(&nonce);
        let aad = associated_data(&out, scope, place);
        out.extend_from_slice(payload);
        let (_, text) = out.split_at_mut(header_len);
        match key.cipher().encrypt_in_place_detached(&nonce, &aad, text) {
            Ok(tag) => out.extend_from_slice(&tag),
            // Only for bodies over 256 GiB, which no store accepts.
            Err(_) => out.truncate(header_len),
        }
        out
    }

    /// The text form of [`Sealer::seal_bytes`].
    pub(crate) fn seal(&self, body: &[u8], scope: &Scope<'_>, place: &Place<'_>) -> String {
        let bytes = self.seal_bytes(body, scope, place);
        let mut text = String::with_capacity(PREFIX.len() + bytes.len() * 4 / 3 + 4);
        text.push_str(PREFIX);
        B64.encode_string(&bytes, &mut text);
        text
    }

    /// The body of envelope `bytes` bound to `scope` and `place`.
    /// `plaintext_ok`: whether an unencrypted envelope is acceptable (and,
    /// outside sessions with an epoch, a format-1 one).
    pub(crate) fn open_bytes(
        &self,
        bytes: &[u8],
        scope: &Scope<'_>,
        place: &Place<'_>,
        plaintext_ok: bool,
    ) -> Result<Vec<u8>, Fault> {
        let header = header(bytes)?;
        if header.format == FORMAT_1
            && header.algorithm == ALG_XCHACHA
            && (scope.epoch.is_some() || !plaintext_ok)
        {
            return Err(Fault::Unbound);
        }
        let (head, rest) = bytes.split_at(header.len);
        let packed = if header.algorithm == ALG_XCHACHA {
            let key = match self.keys.and_then(|k| k.get(header.key_id)) {
                Some(key) => key,
                None => return Err(Fault::UnknownKey(header.key_id.to_owned())),
            };
            // Told apart before decrypting: another key under this id is
            // not tampering. (The check value is authenticated with the
            // rest of the header when it matches.)
            if header.check.is_some_and(|c| c != key.check_value()) {
                return Err(Fault::WrongKey(header.key_id.to_owned()));
            }
            let (text, tag) = rest.split_at(rest.len() - TAG_LEN);
            let mut body = text.to_vec();
            let aad = associated_data(head, scope, place);
            key.cipher()
                .decrypt_in_place_detached(header.nonce.into(), &aad, &mut body, tag.into())
                .map_err(|_| Fault::Integrity(header.key_id.to_owned()))?;
            body
        } else {
            if self.keys.is_some() && !plaintext_ok {
                return Err(Fault::NotEncrypted);
            }
            rest.to_vec()
        };
        match header.codec {
            CODEC_ZSTD => compression::decompress(&packed, self.limits),
            _ => Ok(packed),
        }
    }

    /// [`Sealer::open_bytes`] of a value's text form.
    pub(crate) fn open(
        &self,
        text: &str,
        scope: &Scope<'_>,
        place: &Place<'_>,
        plaintext_ok: bool,
    ) -> Result<Vec<u8>, Fault> {
        self.open_bytes(&decode_text(text)?, scope, place, plaintext_ok)
    }
}

#[cfg(test)]
mod tests;
