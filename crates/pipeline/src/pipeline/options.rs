//! The options and the result of one execute, and the policy for turns
//! that race across processes.

use statestore_core::{IdempotencyKey, Message};

use crate::Usage;

/// What a pipeline does when a concurrent turn (from another process)
/// changed the session between load and save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Concurrency {
    /// Start the turn again on the new history, up to `attempts` times in
    /// all: the model is asked again (a streaming caller gets
    /// [`StreamEvent::Restart`](crate::StreamEvent::Restart) first), tool
    /// calls already run are not run again (see
    /// [`ToolHandler`](super::ToolHandler)), and the usage of the discarded
    /// attempts is counted with the turn ([`Executed::discarded_usage`]).
    Retry {
        /// Attempts in all, at least 1.
        attempts: u32,
    },
    /// Fail with [`Error::Busy`](crate::Error::Busy) at once.
    Reject,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self::Retry { attempts: 4 }
    }
}

/// Options of one [`Pipeline::execute_with`](super::Pipeline::execute_with).
///
/// ```
/// use pipeline::ExecOptions;
/// use statestore_core::IdempotencyKey;
///
/// let options = ExecOptions::new().turn_id(IdempotencyKey::new("order-42-msg-3")?);
/// assert_eq!(options.turn_id.map(|t| t.as_str().to_owned()).as_deref(), Some("order-42-msg-3"));
/// # Ok::<(), statestore_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct ExecOptions {
    /// The turn's id; `None` makes a fresh one ([`IdempotencyKey::random`]).
    pub turn_id: Option<IdempotencyKey>,
}

impl ExecOptions {
    /// No options: a fresh turn id.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the turn under `turn_id`: if a turn with this id is already
    /// stored in the session, it is returned instead of run again.
    pub fn turn_id(mut self, turn_id: IdempotencyKey) -> Self {
        self.turn_id = Some(turn_id);
        self
    }
}

/// The result of one [`Pipeline::execute`](super::Pipeline::execute).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Executed {
    /// The model's final reply (for a replay: the stored one).
    pub reply: Message,
    /// Tokens used by every model call of this execute: tool rounds and
    /// attempts discarded after a conflict included. When the execute
    /// stored the turn (`!replayed`), the write added exactly this to the
    /// session's counters; for a replay it is in no counter
    /// ([`Executed::uncounted_usage`]). Zero for a replay found at load.
    pub usage: Usage,
    /// The part of `usage` whose replies were thrown away: attempts
    /// discarded after a conflict, and for a replay all of `usage`.
    pub discarded_usage: Usage,
    /// Model calls made by this execute (counted like `usage`).
    pub model_calls: u64,
    /// The session's version after the turn was stored.
    pub version: u64,
    /// Messages stored by this turn (the new message, tool calls and
    /// results, the reply).
    pub stored: usize,
    /// Messages of the history sent to the model (not counting the new
    /// one); 0 for a replay.
    pub context_messages: usize,
    /// The turn's id: the one given in [`ExecOptions::turn_id`], or the
    /// one made for it.
    pub turn_id: IdempotencyKey,
    /// `true` when the turn was stored under this id by another call (an
    /// earlier execute, or one running at the same time) and is returned
    /// as stored. Never set for this execute's own write — not even when
    /// the store's client re-sent it after a dropped connection and got
    /// the store's replay back: that write is this execute's, and counted.
    pub replayed: bool,
}

impl Executed {
    /// The part of [`Executed::usage`] that is in no session counter: all
    /// of it for a replay, none otherwise. Billing is exact with the
    /// counters plus this (and [`Error::Busy`](crate::Error::Busy)'s
    /// `usage`): every token the provider reported is in exactly one.
    #[must_use]
    pub fn uncounted_usage(&self) -> Usage {
        if self.replayed {
            self.usage
        } else {
            Usage::default()
        }
    }
}
