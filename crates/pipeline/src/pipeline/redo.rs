//! Going back to a turn: [`Pipeline::regenerate`] asks the model again for
//! a turn's message, [`Pipeline::edit`] replaces the message and asks
//! again — in place (a [`Store::rewind`](statestore_core::Store::rewind)
//! to the turn's start, then a new turn), or as a branch into a new
//! session ([`Store::fork_at`](statestore_core::Store::fork_at)) that
//! leaves the original untouched.
//!
//! **Turns are found in the stored messages.** Every reply the pipeline
//! stores is stamped with its turn id
//! ([`TURN_METADATA_KEY`](super::TURN_METADATA_KEY)); a turn is the
//! messages after the previous stamped reply up to and including its own
//! ([`stored_turns`]). So a turn is addressed by its id or by its index
//! among the stored turns ([`TurnRef`]), whatever wrote the messages.
//!
//! **Retries.** The new turn runs under [`Redo::turn_id`] when given: a
//! retry with the same id finds that turn stored and returns it (a
//! replay), without rewinding again. The rewind is guarded by the version
//! read, so a turn stored meanwhile makes it fail with
//! [`Error::Store`]`(Conflict)`, having changed nothing; the original turn
//! was taken away by the rewind, so a retry of *it* is
//! [`Error::TurnRewound`].

use std::sync::Arc;

use statestore_core::{
    Content, Expect, IdempotencyKey, Message, Recent, SessionId, rewind::was_rewound,
};

use super::{ExecOptions, Executed, Pipeline, TURN_METADATA_KEY};
use crate::Error;

/// A stored turn, addressed by its id or its index (0: the first turn the
/// stored history holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnRef {
    /// The turn with this id ([`Executed::turn_id`]).
    Id(IdempotencyKey),
    /// The turn at this index among the stored turns.
    Index(usize),
    /// The last turn stored.
    Last,
}

/// Where a turn sits in the stored history.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredTurn {
    /// Its id, from its reply's stamp.
    pub id: IdempotencyKey,
    /// Its index among the stored turns.
    pub index: usize,
    /// The position of its first message.
    pub start: u64,
    /// The position after its reply.
    pub end: u64,
}

/// The turns of a stored history (`first_position`: the position of
/// `messages[0]`), from the stamps on their replies.
#[must_use]
pub fn stored_turns(messages: &[Arc<Message>], first_position: u64) -> Vec<StoredTurn> {
    let mut turns = Vec::new();
    let mut start = first_position;
    for (i, m) in messages.iter().enumerate() {
        let Some(id) = m
            .metadata()
            .get(TURN_METADATA_KEY)
            .and_then(|v| v.as_str())
            .and_then(|s| IdempotencyKey::new(s).ok())
        else {
            continue;
        };
        let end = first_position + i as u64 + 1;
        turns.push(StoredTurn {
            id,
            index: turns.len(),
            start,
            end,
        });
        start = end;
    }
    turns
}

/// How [`Pipeline::regenerate`] and [`Pipeline::edit`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct Redo {
    /// Branch into this new session instead of rewinding in place.
    pub into: Option<SessionId>,
    /// The new turn's id (see the module docs on retries).
    pub turn_id: Option<IdempotencyKey>,
}

impl Redo {
    /// In place, under a fresh turn id.
    pub fn new() -> Self {
        Self::default()
    }

    /// Into a new session `into`, leaving the original untouched.
    pub fn into(mut self, into: SessionId) -> Self {
        self.into = Some(into);
        self
    }

    /// Runs the new turn under `turn_id`.
    pub fn turn_id(mut self, turn_id: IdempotencyKey) -> Self {
        self.turn_id = Some(turn_id);
        self
    }
}

impl Pipeline {
    /// Asks the model again for `turn`'s message: the turn and everything
    /// after it are taken away (or left in place, with [`Redo::into`]) and
    /// the same message runs as a new turn.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTurn`] when the session holds no such turn;
    /// [`Error::Store`] for a failed read or rewind (a conflict when a
    /// turn landed meanwhile: nothing changed); then as
    /// [`Pipeline::execute`].
    pub async fn regenerate(
        &self,
        session: &str,
        turn: TurnRef,
        redo: Redo,
    ) -> Result<Executed, Error> {
        self.redo(session, turn, None, redo).await
    }

    /// Replaces `turn`'s message with `content` and asks the model: as
    /// [`Pipeline::regenerate`], with the new message.
    ///
    /// # Errors
    ///
    /// As [`Pipeline::regenerate`].
    pub async fn edit(
        &self,
        session: &str,
        turn: TurnRef,
        content: impl Into<Content>,
        redo: Redo,
    ) -> Result<Executed, Error> {
        self.redo(session, turn, Some(content.into()), redo).await
    }

    async fn redo(
        &self,
        session: &str,
        turn: TurnRef,
        content: Option<Content>,
        redo: Redo,
    ) -> Result<Executed, Error> {
        let id = SessionId::new(session)?;
        let target = redo.into.clone().unwrap_or_else(|| id.clone());
        let options = match &redo.turn_id {
            Some(turn_id) => ExecOptions::new().turn_id(turn_id.clone()),
            None => ExecOptions::new(),
        };
        let store = &self.inner.store;
        // A retry of a redo whose new turn is stored: that turn, replayed.
        if let Some(turn_id) = &redo.turn_id {
            let peek = Recent::new(0).lookup(Some(turn_id.clone())).keep_clocks();
            if let Some(seen) = store.load_recent_as(&target, peek).await?
                && seen.replay.is_some()
                && !was_rewound(&seen.metadata, turn_id)
            {
                let message = content.unwrap_or_else(|| Content::from(""));
                return self
                    .execute_with(
                        target.as_str(),
                        statestore_core::Role::User,
                        message,
                        options,
                    )
                    .await;
            }
        }
        let state = store
            .load(&id)
            .await?
            .ok_or_else(|| Error::Store(statestore_core::Error::NotFound { id: id.clone() }))?;
        let turns = stored_turns(&state.messages, 0);
        let found = match &turn {
            TurnRef::Id(key) => turns.iter().find(|t| &t.id == key),
            TurnRef::Index(i) => turns.get(*i),
            TurnRef::Last => turns.last(),
        };
        let Some(found) = found else {
            return Err(Error::NoSuchTurn {
                id,
                turn: match turn {
                    TurnRef::Id(key) => format!("turn with id {}", key.as_str()),
                    TurnRef::Index(i) => format!("turn at index {i}"),
                    TurnRef::Last => "stored turn".to_owned(),
                },
            });
        };
        let first = usize::try_from(found.start)
            .ok()
            .and_then(|i| state.messages.get(i))
            .ok_or_else(|| Error::NoSuchTurn {
                id: id.clone(),
                turn: format!("turn at index {}", found.index),
            })?;
        let role = first.role;
        let content = content.unwrap_or_else(|| first.content.clone());
        match &redo.into {
            Some(into) => {
                store.fork_at(&id, into, found.start).await?;
            }
            None => {
                store
                    .rewind(&id, found.start, Expect::Version(state.version))
                    .await?;
            }
        }
        self.execute_with(target.as_str(), role, content, options)
            .await
    }
}
