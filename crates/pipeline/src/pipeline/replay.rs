//! A turn found stored under its turn id: reading its messages back and
//! returning it as the execute's result.

use std::sync::Arc;

use statestore_core::{Appended, IdempotencyKey, Message, Role, SessionId};

use super::execute::Run;
use super::{Executed, OnDelta, Pipeline};
use crate::{Error, StreamEvent};

impl Pipeline {
    /// The messages a stored turn wrote: from `tail` (messages, position
    /// of the first, total) when they are in it, otherwise read back.
    pub(super) async fn stored_turn(
        &self,
        id: &SessionId,
        turn_id: &IdempotencyKey,
        appended: Appended,
        tail: Option<(&[Arc<Message>], u64, u64)>,
    ) -> Result<Vec<Arc<Message>>, Error> {
        let unreadable = |source| Error::TurnUnreadable {
            id: id.clone(),
            turn_id: turn_id.clone(),
            source,
        };
        let Some(range) = appended.positions() else {
            return self.stamped_reply(id, turn_id).await;
        };
        let slice = |messages: &[Arc<Message>], first: u64| -> Option<Vec<Arc<Message>>> {
            let start = usize::try_from(range.start.checked_sub(first)?).ok()?;
            let len = usize::try_from(appended.messages).ok()?;
            let end = start.checked_add(len)?;
            messages.get(start..end).map(<[Arc<Message>]>::to_vec)
        };
        if let Some((messages, first, _)) = tail
            && let Some(turn) = slice(messages, first)
        {
            return Ok(turn);
        }
        let store = &self.inner.store;
        let total = match tail {
            Some((_, _, total)) => Some(total),
            None => store
                .load_recent(id, 0)
                .await
                .map_err(|e| unreadable(Some(e)))?
                .map(|r| r.total_messages),
        };
        let Some(total) = total else {
            return Err(unreadable(None));
        };
        let n = usize::try_from(total.saturating_sub(range.start)).unwrap_or(usize::MAX);
        let recent = store
            .load_recent(id, n)
            .await
            .map_err(|e| unreadable(Some(e)))?
            .ok_or_else(|| unreadable(None))?;
        slice(&recent.messages, recent.first_position()).ok_or_else(|| unreadable(None))
    }

    /// The reply of a turn whose positions a rewrite of the history made
    /// unknown, found by its stamp ([`TURN_METADATA_KEY`](super::TURN_METADATA_KEY)):
    /// the newest assistant message naming the turn. The rest of the turn
    /// is not looked for (a trim may have cut it); without the reply,
    /// [`Error::TurnRewritten`]. Reads the whole session: a rare path.
    async fn stamped_reply(
        &self,
        id: &SessionId,
        turn_id: &IdempotencyKey,
    ) -> Result<Vec<Arc<Message>>, Error> {
        let state = self
            .inner
            .store
            .load(id)
            .await
            .map_err(|e| Error::TurnUnreadable {
                id: id.clone(),
                turn_id: turn_id.clone(),
                source: Some(e),
            })?;
        let found = state.and_then(|s| {
            s.messages
                .iter()
                .rev()
                .find(|m| {
                    m.role == Role::Assistant
                        && m.metadata()
                            .get(super::TURN_METADATA_KEY)
                            .and_then(|v| v.as_str())
                            == Some(turn_id.as_str())
                })
                .cloned()
        });
        match found {
            Some(reply) => Ok(vec![reply]),
            None => Err(Error::TurnRewritten {
                id: id.clone(),
                turn_id: turn_id.clone(),
            }),
        }
    }

    /// The result of a turn found stored under its id.
    pub(super) fn replayed(
        id: &SessionId,
        run: &Run,
        appended: Appended,
        turn: &[Arc<Message>],
        on_event: OnDelta<'_>,
        restart: bool,
    ) -> Result<Executed, Error> {
        let Some(reply) = turn.last().filter(|m| m.role == Role::Assistant) else {
            return Err(Error::TurnUnreadable {
                id: id.clone(),
                turn_id: run.turn_id.clone(),
                source: None,
            });
        };
        if let Some(f) = on_event {
            if restart {
                f(StreamEvent::Restart);
            }
            f(StreamEvent::Delta(&reply.text()));
        }
        Ok(Executed {
            reply: (**reply).clone(),
            usage: run.usage,
            discarded_usage: run.usage,
            model_calls: run.model_calls,
            version: appended.version,
            stored: usize::try_from(appended.messages).unwrap_or(turn.len()),
            context_messages: 0,
            turn_id: run.turn_id.clone(),
            replayed: true,
        })
    }
}
