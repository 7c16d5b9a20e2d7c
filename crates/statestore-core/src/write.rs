//! Writes that are safe to repeat: [`IdempotencyKey`], [`Append`],
//! [`Appended`], [`Counters`] and what an error says about a write
//! ([`WriteOutcome`]).
//!
//! # Exactly once
//!
//! A write can be sent twice without anyone meaning to: a caller retries
//! after a timeout, a client library re-sends a request whose reply was
//! lost, a pipeline retries its own write. An [`Append`] that carries an
//! [`IdempotencyKey`] is applied **at most once per session**: the store
//! remembers the key, in the same atomic step as the write, together with
//! what the write did ([`Appended`]). A repeat with the same key writes
//! nothing and returns that original outcome, flagged
//! [`Appended::replayed`] — whatever its messages or expectation, so a
//! repeat never turns into a [`Conflict`](crate::Error::Conflict).
//!
//! Every backend remembers at least the last [`REMEMBERED_WRITES`] keyed
//! writes of each session (older keys are forgotten, oldest first), for as
//! long as the session exists: deleting or expiring a session forgets its
//! keys. [`Store::load_recent_with`](crate::Store::load_recent_with) looks a
//! key up in the same read that loads a window, which is how a pipeline
//! retrying a turn finds out that the turn already landed.
//!
//! # Rewrites of the history
//!
//! [`Store::save`](crate::Store::save) replaces the history (the seed's
//! trim-by-save, a compaction, an import): positions remembered before it
//! would point at other messages. So the save, in the same atomic step,
//! marks every remembered write of the session as
//! [`Appended::rewritten`]: its key is still remembered (a repeat is still
//! a replay, never a second copy), but its [`Appended::positions`] are
//! `None`. A replay therefore never locates another write's messages.
//! `fork` does not copy remembered writes: a key repeated on the fork
//! applies there as a new write.
//!
//! # Counters
//!
//! [`Counters`] are named totals kept beside the history (the pipeline
//! keeps token usage in them). An append adds its [`Append::counters`] to
//! them in the same atomic step, without reading them first, so concurrent
//! turns never lose each other's increments and accounting costs no extra
//! round trip.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Expect, Message, Metadata, Summary, Version};

/// The fewest keyed writes per session every backend remembers.
pub const REMEMBERED_WRITES: usize = 64;

/// Named totals a session keeps, added to atomically by [`Append::count`].
pub type Counters = BTreeMap<String, u64>;

/// A caller-chosen key that makes a write apply at most once per session
/// (see the [module docs](crate::write)).
///
/// Legal keys are 1 to [`IdempotencyKey::MAX_LEN`] bytes without control
/// characters. [`IdempotencyKey::random`] makes a fresh one.
///
/// ```
/// use statestore_core::IdempotencyKey;
///
/// let key = IdempotencyKey::new("turn-7f3a")?;
/// assert_eq!(key.as_str(), "turn-7f3a");
/// assert_ne!(IdempotencyKey::random(), IdempotencyKey::random());
/// assert!(IdempotencyKey::new("").is_err());
/// # Ok::<(), statestore_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// The longest legal key, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `key` and wraps it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when `key` is empty, longer than
    /// [`IdempotencyKey::MAX_LEN`] bytes, or contains a control character.
    pub fn new(key: impl AsRef<str>) -> Result<Self, Error> {
        let key = key.as_ref();
        let reason = if key.is_empty() {
            "it is empty".to_owned()
        } else if key.len() > Self::MAX_LEN {
            format!(
                "it is {} bytes long; the limit is {}",
                key.len(),
                Self::MAX_LEN
            )
        } else if key.chars().any(char::is_control) {
            "it contains a control character".to_owned()
        } else {
            return Ok(Self(Arc::from(key)));
        };
        Err(Error::InvalidKey { reason })
    }

    /// A fresh key: 128 bits, unique across processes and calls (32 hex
    /// digits). Made from the standard library's randomly seeded hasher, a
    /// process-wide counter and the clock — unique, not secret.
    #[must_use]
    pub fn random() -> Self {
        use std::hash::{BuildHasher, RandomState};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let pid = std::process::id();
        let high = RandomState::new().hash_one((n, nanos, pid, 1u8));
        let low = RandomState::new().hash_one((n, nanos, pid, 2u8));
        Self(Arc::from(format!("{high:016x}{low:016x}")))
    }

    /// The key as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl Serialize for IdempotencyKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// One append: messages, the expectation guarding them, an optional
/// idempotency key and counter increments — all applied in one atomic step
/// by [`Store::append_with`](crate::Store::append_with).
///
/// ```
/// use statestore_core::{Append, Expect, IdempotencyKey, Message};
///
/// let turn = Append::new([Message::user("Hi"), Message::assistant("Hello!")])
///     .expect(Expect::Version(4))
///     .key(IdempotencyKey::new("turn-1")?)
///     .count("prompt_tokens", 12)
///     .count("completion_tokens", 3);
/// assert_eq!(turn.counters["prompt_tokens"], 12);
/// # Ok::<(), statestore_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
#[must_use]
pub struct Append {
    /// The messages, appended in order.
    pub messages: Vec<Message>,
    /// What the session's version must be (default: any).
    pub expect: Expect,
    /// Applies the append at most once per session.
    pub key: Option<IdempotencyKey>,
    /// Added to the session's [`Counters`] with the messages.
    pub counters: Counters,
    /// Merged into the session's metadata with the messages, as
    /// [`Store::merge_metadata`](crate::Store::merge_metadata) merges (a
    /// `null` value removes the key): a title set by a session's first
    /// turn, or a layer's own record of the session, lands with the turn or
    /// not at all. A replay merges nothing.
    pub metadata: Metadata,
}

impl Append {
    /// Appends `messages` with no expectation, key or counters.
    pub fn new(messages: impl IntoIterator<Item = Message>) -> Self {
        Self {
            messages: messages.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Guards the append with `expect`.
    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// Makes the append idempotent under `key`.
    pub fn key(mut self, key: IdempotencyKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Adds `delta` to counter `name` (summed if named twice).
    pub fn count(mut self, name: impl Into<String>, delta: u64) -> Self {
        let total = self.counters.entry(name.into()).or_insert(0);
        *total = total.saturating_add(delta);
        self
    }

    /// Sets metadata `key` to `value` with the messages (`null` removes
    /// the key); see [`Append::metadata`].
    pub fn merge_metadata(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }
}

/// One summary added by [`Store::add_summary_with`](crate::Store::add_summary_with):
/// the summary, the expectation guarding it, and metadata merged in the
/// same atomic step.
///
/// ```
/// use statestore_core::{AddSummary, Expect, Summary};
///
/// let add = AddSummary::new(Summary::new(0..10, "They met; Alice likes tea."))
///     .expect(Expect::Version(12))
///     .merge_metadata("topic", "tea".into());
/// assert_eq!(add.metadata["topic"], "tea");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
#[must_use]
pub struct AddSummary {
    /// The summary, added after the session's others.
    pub summary: Summary,
    /// What the session's version must be (default: any).
    pub expect: Expect,
    /// Merged into the session's metadata with the summary, as
    /// [`Store::merge_metadata`](crate::Store::merge_metadata) merges.
    pub metadata: Metadata,
}

impl AddSummary {
    /// Adds `summary` with no expectation and no metadata.
    pub fn new(summary: Summary) -> Self {
        Self {
            summary,
            expect: Expect::Any,
            metadata: Metadata::new(),
        }
    }

    /// Guards the write with `expect`.
    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// Sets metadata `key` to `value` with the summary (`null` removes
    /// the key).
    pub fn merge_metadata(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }
}

/// How [`Store::save_with`](crate::Store::save_with) saves: the
/// expectation guarding it, and whether it keeps the session's clocks.
///
/// ```
/// use statestore_core::{Expect, Save};
///
/// let rekey = Save::new().expect(Expect::Version(7)).keep_clocks();
/// assert!(rekey.keep_clocks);
/// assert_eq!(Save::default().expect, Expect::Any);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct Save {
    /// What the session's version must be (default: any).
    pub expect: Expect,
    /// A maintenance write — re-encryption under a new key, a migration of
    /// the storage format — that replaces the content exactly as a plain
    /// save does but is not an access: the conversation did not change, so
    /// its retention must not. The session keeps its `updated_at`, its
    /// `last_accessed_at` and its expiry time (the TTL clock is not
    /// restarted; a session without expiry stays without). The version
    /// still moves on, so writers guarded by the old one see the change.
    /// When the session does not exist the save creates it as a plain
    /// save does: it has no clocks to keep. Default: off.
    pub keep_clocks: bool,
}

impl Save {
    /// A plain save: any version, clocks restarted as by any write.
    pub fn new() -> Self {
        Self::default()
    }

    /// Guards the save with `expect`.
    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// Makes it a maintenance write that keeps the session's clocks (see
    /// [`Save::keep_clocks`](Save#structfield.keep_clocks)).
    pub fn keep_clocks(mut self) -> Self {
        self.keep_clocks = true;
        self
    }
}

/// What an [`Append`] did — returned by the write and, for a repeat of a
/// keyed write, remembered and returned again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Appended {
    /// The session's version after the write.
    pub version: Version,
    /// The position in the history of the first message written.
    pub first_position: u64,
    /// How many messages were written.
    pub messages: u64,
    /// `true` when this is a repeat of a write already applied under the
    /// same key: nothing was written now.
    #[serde(default)]
    pub replayed: bool,
    /// `true` when the session's history was rewritten
    /// ([`Store::save`](crate::Store::save): a trim, a compaction, an
    /// import) after this write: its messages may have moved or gone, so
    /// `first_position` no longer locates them and
    /// [`Appended::positions`] is `None`. The write still counts as
    /// applied: a repeat of its key stays a replay.
    #[serde(default)]
    pub rewritten: bool,
}

impl Appended {
    /// The outcome of a write applied now.
    #[must_use]
    pub fn new(version: Version, first_position: u64, messages: u64) -> Self {
        Self {
            version,
            first_position,
            messages,
            replayed: false,
            rewritten: false,
        }
    }

    /// The same outcome, flagged as a replay.
    #[must_use]
    pub fn replay(self) -> Self {
        Self {
            replayed: true,
            ..self
        }
    }

    /// The same outcome, not flagged as a replay: for a backend whose
    /// client re-sent one call, so that the replay it got back is the
    /// outcome of that very call.
    #[must_use]
    pub fn applied_now(self) -> Self {
        Self {
            replayed: false,
            ..self
        }
    }

    /// The same outcome, flagged as overtaken by a rewrite of the history
    /// (see [`Appended::rewritten`]).
    #[must_use]
    pub fn rewritten(self) -> Self {
        Self {
            rewritten: true,
            ..self
        }
    }

    /// The positions of the messages written, in the session's current
    /// history; `None` when a rewrite of the history since the write
    /// ([`Appended::rewritten`]) means they are no longer known.
    #[must_use]
    pub fn positions(&self) -> Option<std::ops::Range<u64>> {
        (!self.rewritten)
            .then(|| self.first_position..self.first_position.saturating_add(self.messages))
    }
}

/// A keyed write a session remembers: its key and what it did, as a
/// repeat of the key would return it (see the [module docs](crate::write)).
///
/// [`ConversationState::writes`](crate::ConversationState::writes) lists
/// them, oldest first, so that a session moved to another store (export
/// and import, migrate) keeps its memory of writes: a turn retried after
/// the move is a replay there, not a second copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RememberedWrite {
    /// The write's key.
    pub key: IdempotencyKey,
    /// What the write did.
    pub outcome: Appended,
}

impl RememberedWrite {
    /// The write under `key` that did `outcome`.
    #[must_use]
    pub fn new(key: IdempotencyKey, outcome: Appended) -> Self {
        Self { key, outcome }
    }

    /// What a store that did not make this write remembers of it when a
    /// [`Store::save`](crate::Store::save) carries it in: its message count
    /// only — the version and positions were the old history's
    /// ([`Appended::rewritten`], version 0).
    #[must_use]
    pub fn carried(&self) -> Appended {
        Appended::new(0, 0, self.outcome.messages)
            .rewritten()
            .replay()
    }
}

/// What a keyed write still to be made has done so far — for the
/// pipeline, a turn's messages after each completed tool round and the
/// usage spent on them — kept by [`Store::put_pending`](crate::Store::put_pending)
/// so that a retry of the turn, in any process, resumes where the last
/// one stopped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pending {
    /// The messages made so far, in order.
    pub messages: Vec<Message>,
    /// What was spent on them, as counter increments.
    #[serde(default, skip_serializing_if = "Counters::is_empty")]
    pub counters: Counters,
}

impl Pending {
    /// Progress of `messages`, having spent `counters`.
    #[must_use]
    pub fn new(messages: Vec<Message>, counters: Counters) -> Self {
        Self { messages, counters }
    }
}

/// What a failed call says about its write (see [`Error::write_outcome`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// Nothing was written: retrying (with a new key or none) is safe.
    NotWritten,
    /// The write may or may not have been applied (a timeout, a dropped
    /// connection): retry **with the same idempotency key**, or re-read
    /// before retrying a write without one.
    Unknown,
    /// The write was applied, but something after it failed (for example
    /// too few replicas acknowledged it): do not repeat it as a new write.
    Written,
}

impl WriteOutcome {
    /// `not_written`, `unknown` or `written`: as telemetry records it
    /// (`statestore.write_outcome`) and the CLI prints it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotWritten => "not_written",
            Self::Unknown => "unknown",
            Self::Written => "written",
        }
    }
}
