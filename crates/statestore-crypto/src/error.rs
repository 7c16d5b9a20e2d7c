//! The crate's one error type, and how it maps into the store's.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use statestore_core::{SessionId, WriteOutcome};

/// Which stored value of a session an error is about. Names a place, never
/// content: metadata keys are stored in the clear anyway.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The message at this position of the history (0-based).
    Message(u64),
    /// The summary at this index of the session's summaries (0-based).
    Summary(u64),
    /// The session metadata value under this key.
    Metadata(String),
    /// The session's system prompt.
    SystemPrompt,
    /// The progress recorded under this key (a turn between its tool
    /// rounds).
    Pending(String),
    /// The session's manifest: the sealed record of what the session
    /// holds, rewritten by every write through the layer.
    Manifest,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message(p) => write!(f, "message {p}"),
            Self::Summary(i) => write!(f, "summary {i}"),
            Self::Metadata(k) => write!(f, "metadata value {k:?}"),
            Self::SystemPrompt => f.write_str("the system prompt"),
            Self::Pending(k) => write!(f, "the progress of write {k:?}"),
            Self::Manifest => f.write_str("its manifest"),
        }
    }
}

/// Everything this crate can fail with.
///
/// Messages name the session, the [`Field`] and the key id involved, and
/// never contain key material or stored content. Through the [`Store`]
/// interface these errors arrive as [`statestore_core::Error::Decryption`]
/// (encrypted values) or [`statestore_core::Error::Corrupt`] (compressed
/// values), or — [`Error::NotRebound`], raised after a write —
/// [`statestore_core::Error::Backend`], with this error as their source:
/// [`Error::from_store`] finds it.
///
/// [`Store`]: statestore_core::Store
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key or key ring could not be made: wrong length, bad encoding, a
    /// bad key id, a duplicate id, no current key, an unset environment
    /// variable or an unreadable file. `source` names where it came from
    /// (`"bytes"`, `"environment variable KEYS"`, a path, with a line number).
    #[error("invalid key ({source_name}): {reason}")]
    InvalidKey {
        /// Where the key came from.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A key file that cannot be read: missing, a directory, not
    /// readable by this user. Nothing was read from it.
    #[error("cannot read key file {}: {source}", .path.display())]
    KeyFileUnreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why (`NotFound`, `PermissionDenied`, …).
        #[source]
        source: std::io::Error,
    },

    /// A key file that is not private: on Unix, its group or other users
    /// have some permission on it, or another user owns it. Nothing was
    /// read from it. Fix it as `reason` says (`chmod 600 <path>`), or read
    /// it anyway with [`KeyFileOptions::allow_insecure`](crate::KeyFileOptions::allow_insecure)
    /// (the CLI's `--allow-insecure-key-file`).
    #[error(
        "key file {} is not private: {reason}; or allow it explicitly \
         (KeyFileOptions::allow_insecure, --allow-insecure-key-file)",
        path.display()
    )]
    InsecureKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and the command that fixes it.
        reason: String,
    },

    /// The value is encrypted under a key id the key ring does not hold
    /// (removed too early, or a ring from another deployment).
    #[error(
        "session {id}: {field} is encrypted with key {key_id:?}, which the key ring does not hold"
    )]
    UnknownKey {
        /// The session.
        id: SessionId,
        /// The value.
        field: Field,
        /// The key id its envelope names.
        key_id: String,
    },

    /// The ring's key under this id is not the one that encrypted the
    /// value: the key check value in the envelope differs from the key's
    /// ([`Key::check_value`](crate::Key::check_value)). A ring from another
    /// deployment, or a key id reused for a new key — not tampering, which
    /// is [`Error::Integrity`] (unless the check value bytes themselves
    /// were changed). Envelopes of format 1 carry no check value: a wrong
    /// key there is an [`Error::Integrity`].
    #[error(
        "session {id}: {field} is encrypted with another key than the key ring's {key_id:?} \
         (its key check value differs: the same id names another key)"
    )]
    WrongKey {
        /// The session.
        id: SessionId,
        /// The value.
        field: Field,
        /// The key id its envelope names.
        key_id: String,
    },

    /// Authentication failed: the bytes were changed, or the value was
    /// moved here from another session, position or field (or, for an
    /// envelope of format 1, which has no key check value, the key under
    /// this id is not the one that encrypted it).
    #[error(
        "session {id}: {field} failed authentication under key {key_id:?} \
         (changed bytes, or a value moved from another session, position or field)"
    )]
    Integrity {
        /// The session.
        id: SessionId,
        /// The value.
        field: Field,
        /// The key id its envelope names.
        key_id: String,
    },

    /// The stored value is not an envelope this crate wrote: not base64,
    /// truncated, an unknown algorithm or compression, clear fields beside
    /// a sealed body, a body that does not decompress or parse.
    #[error("session {id}: {field} is not a valid envelope: {reason}")]
    Malformed {
        /// The session.
        id: SessionId,
        /// The value.
        field: Field,
        /// What is wrong.
        reason: String,
    },

    /// One value decompresses to more than the layer's per-value limit
    /// (`max_decompressed_bytes` of [`EncryptedBuilder`](crate::EncryptedBuilder::max_decompressed_bytes)
    /// or [`Compressed`](crate::Compressed::max_decompressed_bytes); 8 MiB by
    /// default). Refused from the size its zstd frame declares, before
    /// anything is allocated.
    #[error(
        "session {id}: {field} decompresses to more than {limit} bytes, the limit per value \
         (max_decompressed_bytes)"
    )]
    BodyTooLarge {
        /// The session.
        id: SessionId,
        /// The value.
        field: Field,
        /// The per-value limit, in bytes.
        limit: u64,
    },

    /// The values one read opens (a `load`, a `load_recent_with`, a
    /// re-encryption) together decompress to more than the layer's
    /// per-load limit (`max_decompressed_bytes_per_load`; 256 MiB by
    /// default). `field` is the value that went over.
    #[error(
        "session {id}: its values decompress to more than {limit} bytes in one read (at {field}), \
         the limit per load (max_decompressed_bytes_per_load)"
    )]
    LoadTooLarge {
        /// The session.
        id: SessionId,
        /// The value that went over the limit.
        field: Field,
        /// The per-load limit, in bytes.
        limit: u64,
    },

    /// The envelope has a format version this build does not read (written
    /// by a newer version of this crate).
    #[error(
        "session {id}: {field} uses envelope format {found}; this build reads formats 1 to {supported}"
    )]
    UnsupportedFormat {
        /// The session.
        id: SessionId,
        /// The value.
        field: Field,
        /// The format version found.
        found: u8,
        /// The newest format this build reads (and the one it writes).
        supported: u8,
    },

    /// An encrypting layer found a value stored unencrypted (written
    /// without the layer, or by a compression-only layer). Allow it while
    /// migrating with [`EncryptedBuilder::accept_plaintext`](crate::EncryptedBuilder::accept_plaintext).
    #[error("session {id}: {field} is stored unencrypted")]
    NotEncrypted {
        /// The session.
        id: SessionId,
        /// The value.
        field: Field,
    },

    /// The session does not match its manifest — the sealed record of its
    /// version, owner, message and summary counts, system prompt, metadata
    /// values and counters that every write through the layer rewrites in
    /// its own atomic step. Someone with write access to the storage cut
    /// messages off the history, removed a summary, the system prompt or a
    /// metadata value, put back an older value, changed a counter, or
    /// rolled the session's version back. Or the session has no manifest:
    /// written by an older version of this crate or without the layer
    /// (bind it: [`Encrypted::rotate_all`](crate::Encrypted::rotate_all)
    /// through a layer built with
    /// [`EncryptedBuilder::accept_plaintext`](crate::EncryptedBuilder::accept_plaintext)).
    /// Nothing is returned from such a session.
    #[error("session {id}: {reason}: the session does not match its sealed manifest")]
    Inconsistent {
        /// The session.
        id: SessionId,
        /// What differs.
        reason: String,
    },

    /// [`Encrypted::reencrypt`](crate::Encrypted::reencrypt) lost the race
    /// against other writers this many times in a row and gave up; nothing
    /// was written. Run it again (`rotate_all` resumes).
    #[error(
        "session {id}: re-encryption gave up after {attempts} conflicting writes; nothing was written"
    )]
    Busy {
        /// The session.
        id: SessionId,
        /// Attempts made.
        attempts: u32,
    },

    /// An append **was written**, at `positions`, but its messages were
    /// sealed for other positions (the session was deleted and re-created
    /// up to the same version between the layer's plan and the write), and
    /// re-sealing them where they landed failed: the store failed
    /// (`source`) or kept changing. Until they are re-bound, reads of those
    /// positions fail with [`Error::Integrity`].
    ///
    /// Do not repeat the append as a new write. Retry it with the same
    /// idempotency key through the same layer: the retry re-binds the
    /// messages, and only then returns the replay. An append without a key
    /// is re-bound by the next append to the session through this layer.
    ///
    /// Through [`Store`](statestore_core::Store) it arrives as
    /// [`statestore_core::Error::Backend`] (operation `"append"`, whose
    /// `write_outcome()` is `Unknown`: the store's error has no way to say
    /// `Written` but for replication) with this error as its source;
    /// [`Error::write_outcome`] says `Written`.
    #[error(
        "session {id}: an append was written at positions {}..{} but its messages are sealed \
         for other positions, and re-binding them failed ({reason}); reads of those positions \
         fail until a retry with the same idempotency key re-binds them",
        positions.start, positions.end
    )]
    NotRebound {
        /// The session.
        id: SessionId,
        /// Where the append's messages landed.
        positions: Range<u64>,
        /// Why re-binding failed.
        reason: String,
        /// The store's error, when it failed.
        #[source]
        source: Option<Box<statestore_core::Error>>,
    },

    /// The underlying store failed.
    #[error(transparent)]
    Store(#[from] statestore_core::Error),
}

impl Error {
    /// The session the error is about, when it is about one.
    #[must_use]
    pub fn session(&self) -> Option<&SessionId> {
        match self {
            Self::UnknownKey { id, .. }
            | Self::WrongKey { id, .. }
            | Self::Integrity { id, .. }
            | Self::BodyTooLarge { id, .. }
            | Self::LoadTooLarge { id, .. }
            | Self::Malformed { id, .. }
            | Self::UnsupportedFormat { id, .. }
            | Self::NotEncrypted { id, .. }
            | Self::Busy { id, .. }
            | Self::Inconsistent { id, .. }
            | Self::NotRebound { id, .. } => Some(id),
            Self::InvalidKey { .. }
            | Self::KeyFileUnreadable { .. }
            | Self::InsecureKeyFile { .. }
            | Self::Store(_) => None,
        }
    }

    /// The key id the error is about, when it names one.
    #[must_use]
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { key_id, .. }
            | Self::WrongKey { key_id, .. }
            | Self::Integrity { key_id, .. } => Some(key_id),
            _ => None,
        }
    }

    /// The stored value the error is about, when it is about one.
    #[must_use]
    pub fn field(&self) -> Option<&Field> {
        match self {
            Self::Inconsistent { .. } => Some(&Field::Manifest),
            Self::UnknownKey { field, .. }
            | Self::WrongKey { field, .. }
            | Self::Integrity { field, .. }
            | Self::BodyTooLarge { field, .. }
            | Self::LoadTooLarge { field, .. }
            | Self::Malformed { field, .. }
            | Self::UnsupportedFormat { field, .. }
            | Self::NotEncrypted { field, .. } => Some(field),
            _ => None,
        }
    }

    /// What this error says about the write that failed: a store error
    /// keeps the store's answer (a `Timeout` of a re-encryption's save is
    /// `Unknown`: it may have been applied); [`Error::NotRebound`] was
    /// `Written`; every other error of this crate is raised before anything
    /// is written.
    #[must_use]
    pub fn write_outcome(&self) -> WriteOutcome {
        match self {
            Self::Store(e) => e.write_outcome(),
            Self::NotRebound { .. } => WriteOutcome::Written,
            _ => WriteOutcome::NotWritten,
        }
    }

    /// The error of this crate a store error carries as its source, if any:
    /// how a caller of [`Store`](statestore_core::Store) methods on a layer
    /// tells a missing key from a wrong key from tampered bytes.
    ///
    /// ```
    /// # use statestore_crypto::Error;
    /// # fn check(e: &statestore_core::Error) {
    /// match Error::from_store(e) {
    ///     Some(Error::UnknownKey { key_id, .. }) => eprintln!("add key {key_id} back to the ring"),
    ///     Some(Error::WrongKey { key_id, .. }) => {
    ///         eprintln!("the ring's key {key_id} is not the one that encrypted this")
    ///     }
    ///     Some(Error::Integrity { .. }) => eprintln!("changed or moved bytes"),
    ///     _ => {}
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn from_store(error: &statestore_core::Error) -> Option<&Self> {
        let source = match error {
            statestore_core::Error::Decryption {
                source: Some(s), ..
            }
            | statestore_core::Error::Corrupt {
                source: Some(s), ..
            }
            | statestore_core::Error::Backend { source: s, .. } => s,
            _ => return None,
        };
        source.downcast_ref::<Self>()
    }

    /// Into the store's error: encryption failures become
    /// [`statestore_core::Error::Decryption`], failures of a
    /// compression-only layer [`statestore_core::Error::Corrupt`], both with
    /// `self` as their source; [`Error::NotRebound`] a
    /// [`statestore_core::Error::Backend`] of the append.
    pub(crate) fn into_store(self, encrypted: bool) -> statestore_core::Error {
        if matches!(self, Self::NotRebound { .. }) {
            return statestore_core::Error::Backend {
                operation: "append",
                source: Box::new(self),
            };
        }
        let (Some(id), Some(field)) = (self.session().cloned(), self.field().cloned()) else {
            return match self {
                Self::Store(e) => e,
                other => statestore_core::Error::Backend {
                    operation: "encryption layer",
                    source: Box::new(other),
                },
            };
        };
        if encrypted {
            statestore_core::Error::Decryption {
                id,
                key_id: self.key_id().map(str::to_owned),
                detail: field.to_string(),
                source: Some(Box::new(self)),
            }
        } else {
            statestore_core::Error::corrupt(&id, format!("{field} cannot be decompressed"), self)
        }
    }
}

/// `Result<T, statestore_crypto::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
