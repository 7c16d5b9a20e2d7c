//! [`ConversationState`] and the values that travel with store operations.

use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    Appended, Counters, Message, Metadata, Pending, RememberedWrite, SessionId, Timestamp,
};

/// A session's version: 1 when it is created, one more after every write.
///
/// Versions are how concurrent writers avoid losing each other's updates:
/// pass the version you read as [`Expect::Version`] and a write that would
/// overwrite someone else's fails with [`Error::Conflict`](crate::Error::Conflict).
pub type Version = u64;

/// What a write requires of the session's current version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// No requirement: the write always applies (last writer wins).
    #[default]
    Any,
    /// The session must exist at exactly this version.
    Version(Version),
    /// The session must not exist (create-only).
    Absent,
}

impl Expect {
    /// Whether a session whose current version is `actual` (`None`: it does
    /// not exist) satisfies this expectation.
    #[must_use]
    pub fn admits(self, actual: Option<Version>) -> bool {
        match self {
            Self::Any => true,
            Self::Version(v) => actual == Some(v),
            Self::Absent => actual.is_none(),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::Version(v) => write!(f, "version {v}"),
            Self::Absent => f.write_str("no session"),
        }
    }
}

/// A summary that stands in for a range of older messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Positions (0-based, end exclusive) in the session's history of the
    /// messages this summary replaces.
    pub covers: Range<u64>,
    /// The summary text.
    pub content: String,
    /// Tokens the summary costs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_count: Option<u32>,
    /// When the summary was made.
    pub created_at: Timestamp,
}

impl Summary {
    /// A summary of the messages at positions `covers`.
    #[must_use]
    pub fn new(covers: Range<u64>, content: impl Into<String>) -> Self {
        Self {
            covers,
            content: content.into(),
            token_count: None,
            created_at: Timestamp::now(),
        }
    }
}

/// Everything stored for one session.
///
/// Messages are held as `Arc<Message>`: stored history is append-only, so
/// loading, forking and windowing share messages instead of copying them.
///
/// ```
/// use statestore_core::{ConversationState, Message, SessionId};
///
/// let state = ConversationState::new(SessionId::new("session-1")?)
///     .with_system_prompt("You are terse.")
///     .with_messages([Message::user("Hello"), Message::assistant("Hi there!")]);
/// assert_eq!(state.messages.len(), 2);
/// assert_eq!(state.messages[1].text(), "Hi there!");
/// # Ok::<(), statestore_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationState {
    /// The session.
    pub id: SessionId,
    /// The user the session belongs to, if any; [`ListQuery::user_id`](crate::ListQuery::user_id) filters on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The history, oldest first.
    #[serde(default)]
    pub messages: Vec<Arc<Message>>,
    /// Instructions sent before the history, kept apart from it so that no
    /// trimming ever drops them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Summaries of older messages, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summaries: Vec<Summary>,
    /// Caller-defined values (see [`Store::merge_metadata`](crate::Store::merge_metadata)).
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// Named totals (token usage, …), added to atomically by
    /// [`Append::count`](crate::Append::count); [`Store::save`](crate::Store::save)
    /// stores them as given.
    #[serde(default, skip_serializing_if = "Counters::is_empty")]
    pub counters: Counters,
    /// The keyed writes the session remembers, oldest first (see
    /// [`crate::write`]): [`Store::load`](crate::Store::load) returns them,
    /// and [`Store::save`](crate::Store::save) adds the ones the session
    /// does not remember yet ([`RememberedWrite::carried`]) — so a session
    /// copied to another store keeps its memory of writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<RememberedWrite>,
    /// The stored version; ignored by [`Store::save`](crate::Store::save),
    /// which takes an [`Expect`] instead.
    #[serde(default)]
    pub version: Version,
    /// When the session was created.
    #[serde(default)]
    pub created_at: Timestamp,
    /// When the session was last written.
    #[serde(default)]
    pub updated_at: Timestamp,
    /// When the session was last read or written.
    #[serde(default)]
    pub last_accessed_at: Timestamp,
}

impl ConversationState {
    /// An empty state for `id`, timestamped now.
    #[must_use]
    pub fn new(id: SessionId) -> Self {
        let now = Timestamp::now();
        Self {
            id,
            user_id: None,
            messages: Vec::new(),
            system_prompt: None,
            summaries: Vec::new(),
            metadata: Metadata::new(),
            counters: Counters::new(),
            writes: Vec::new(),
            version: 0,
            created_at: now,
            updated_at: now,
            last_accessed_at: now,
        }
    }

    /// Replaces the history.
    #[must_use]
    pub fn with_messages(mut self, messages: impl IntoIterator<Item = Message>) -> Self {
        self.messages = messages.into_iter().map(Arc::new).collect();
        self
    }

    /// Sets the system prompt.
    #[must_use]
    pub fn with_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Sets the owning user.
    #[must_use]
    pub fn with_user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Appends one message to the history.
    pub fn push(&mut self, message: Message) {
        self.messages.push(Arc::new(message));
    }

    /// Keeps only the newest `n` messages (the seed's manual sliding window).
    ///
    /// Summaries whose range starts before the cut are re-based so that
    /// positions keep pointing at the same messages; summaries wholly before
    /// the cut still describe dropped history and are kept.
    pub fn keep_last(&mut self, n: usize) {
        let dropped = self.messages.len().saturating_sub(n);
        if dropped == 0 {
            return;
        }
        self.messages.drain(..dropped);
        let dropped = dropped as u64;
        for s in &mut self.summaries {
            s.covers = s.covers.start.saturating_sub(dropped)..s.covers.end.saturating_sub(dropped);
        }
    }
}

/// What [`Store::load_recent`](crate::Store::load_recent) returns: the newest
/// messages and everything a context window needs, without the rest of the
/// history.
///
/// It is deliberately a different type from [`ConversationState`], so a
/// partial history can never be passed to [`Store::save`](crate::Store::save)
/// and silently truncate the stored one.
#[derive(Clone, Debug, PartialEq)]
pub struct RecentState {
    /// The session.
    pub id: SessionId,
    /// The owning user.
    pub user_id: Option<String>,
    /// The newest messages, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// Messages stored in all; `total_messages - messages.len()` is the
    /// position of `messages[0]` in the history.
    pub total_messages: u64,
    /// The system prompt.
    pub system_prompt: Option<String>,
    /// All summaries.
    pub summaries: Vec<Summary>,
    /// Caller-defined values.
    pub metadata: Metadata,
    /// Named totals.
    pub counters: Counters,
    /// What the keyed write asked about in
    /// [`Store::load_recent_with`](crate::Store::load_recent_with) did,
    /// when the session remembers it (flagged as a replay); `None` when it
    /// was not asked for or is not remembered.
    pub replay: Option<Appended>,
    /// The progress recorded under the key asked about in
    /// [`Store::load_recent_with`](crate::Store::load_recent_with)
    /// ([`Store::put_pending`](crate::Store::put_pending)), while the
    /// write under that key is not made; `None` otherwise.
    pub pending: Option<Pending>,
    /// The version these messages were read at; pass it to
    /// [`Store::append`](crate::Store::append) as [`Expect::Version`] to make
    /// a read-decide-append cycle safe against concurrent turns.
    pub version: Version,
}

impl RecentState {
    /// The position in the history of the first message held.
    #[must_use]
    pub fn first_position(&self) -> u64 {
        self.total_messages
            .saturating_sub(self.messages.len() as u64)
    }
}
