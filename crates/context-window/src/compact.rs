//! Changing stored history on purpose: summarizing what windows drop, and
//! the seed's "trim and save", both safe against concurrent turns.
//!
//! Selection ([`select`](crate::select)) never changes what is stored.
//! These two operations do, explicitly:
//!
//! - [`summarize_dropped`] asks a [`Summarizer`] for a rolling summary of
//!   the messages the window drops that no summary covers yet, and stores
//!   it with `add_summary`. Messages stay stored; windows afterwards send
//!   the summary instead of them.
//! - [`compact`] deletes the messages before the window (the seed's
//!   "keep the last N and save"). It saves with the version it loaded, so a
//!   turn appended meanwhile makes the save conflict instead of being
//!   lost; it then reloads and tries again.

use std::sync::Arc;

use async_trait::async_trait;
use statestore_core::{
    Append, BoxError, ConversationState, Counters, Error as StoreError, Expect, Message, SessionId,
    Store, Summary,
};

use crate::select::{History, WindowPolicy, select};
use crate::{Error, TokenCounter};

/// How many times a compaction reloads after a concurrent write.
const ATTEMPTS: usize = 5;

/// Turns dropped messages into a summary (the pipeline implements it with
/// a model).
#[async_trait]
pub trait Summarizer: Send + Sync {
    /// A summary of `previous` (the latest summary so far, if any) followed
    /// by `messages`.
    async fn summarize(
        &self,
        previous: Option<&Summary>,
        messages: &[Arc<Message>],
    ) -> Result<String, BoxError>;

    /// [`Summarizer::summarize`], and what the call cost as counter
    /// increments (a model's: its tokens and one model call, under the
    /// names the session counts them by), which [`summarize_dropped`] adds
    /// to the session's counters. The default reports no cost.
    async fn summarize_counted(
        &self,
        previous: Option<&Summary>,
        messages: &[Arc<Message>],
    ) -> Result<(String, Counters), BoxError> {
        Ok((self.summarize(previous, messages).await?, Counters::new()))
    }
}

/// Summarizes the messages that `policy`'s window drops and no summary
/// covers yet, and stores the result as a summary covering everything from
/// the first message to the window's start. Returns it, or `None` when
/// nothing needed summarizing (or the session does not exist).
///
/// What every summarizer call cost ([`Summarizer::summarize_counted`]) —
/// calls whose summary lost a race with a concurrent write and was made
/// again included — is added to the session's counters afterwards, in one
/// more write, whether or not a summary was stored.
///
/// # Errors
///
/// [`Error::Summarizer`] when the summarizer fails (nothing is stored),
/// [`Error::Store`] on store errors, and selection errors.
pub async fn summarize_dropped(
    store: &dyn Store,
    id: &SessionId,
    policy: &WindowPolicy,
    counter: &dyn TokenCounter,
    summarizer: &dyn Summarizer,
) -> Result<Option<Summary>, Error> {
    let mut cost = Counters::new();
    let result = summarize_until_stored(store, id, policy, counter, summarizer, &mut cost).await;
    if !cost.is_empty() {
        let mut append = Append::new([]);
        for (name, delta) in cost {
            append = append.count(name, delta);
        }
        // Counted even when the summary failed: the calls were paid for.
        if let Err(e) = store.append_with(id, append).await {
            tracing::warn!(error = %e, "the summarizer's usage could not be counted");
        }
    }
    result
}

/// [`summarize_dropped`] but for counting: adds each call's cost to `cost`.
async fn summarize_until_stored(
    store: &dyn Store,
    id: &SessionId,
    policy: &WindowPolicy,
    counter: &dyn TokenCounter,
    summarizer: &dyn Summarizer,
    cost: &mut Counters,
) -> Result<Option<Summary>, Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Some(state) = store.load(id).await? else {
            return Ok(None);
        };
        let window = select(&state, policy, counter)?;
        let previous = state
            .summaries
            .iter()
            .filter(|s| s.covers.start == 0)
            .max_by_key(|s| s.covers.end);
        let covered = previous.map_or(0, |s| s.covers.end);
        if window.first_position <= covered {
            return Ok(None);
        }
        let from = usize::try_from(covered).unwrap_or(usize::MAX);
        let to = usize::try_from(window.first_position).unwrap_or(usize::MAX);
        let dropped = state.messages.get(from..to).unwrap_or_default();
        let (content, spent) = summarizer
            .summarize_counted(previous, dropped)
            .await
            .map_err(Error::Summarizer)?;
        for (name, delta) in spent {
            let total = cost.entry(name).or_insert(0);
            *total = total.saturating_add(delta);
        }
        let summary = Summary::new(0..window.first_position, content);
        match store
            .add_summary(id, summary.clone(), Expect::Version(state.version))
            .await
        {
            Ok(_) => return Ok(Some(summary)),
            Err(StoreError::Conflict { .. }) if attempts < ATTEMPTS => {
                tracing::debug!(attempts, "summary raced a write; retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Messages deleted.
    pub removed: usize,
    /// The session's version afterwards.
    pub version: u64,
}

/// Deletes the messages before `policy`'s window from the stored history —
/// the seed's "trim and save" — without splitting a tool call from its
/// results and without losing a turn appended concurrently (the save is
/// guarded by the version loaded; on conflict it reloads and redoes).
/// Summaries are kept, re-based so their positions still point at the same
/// messages; a summary of only deleted messages ends up with an empty
/// range, meaning "messages no longer stored", and windows keep sending it.
///
/// Returns `None` when the session does not exist.
///
/// # Errors
///
/// [`Error::Store`] on store errors (including a conflict that persisted
/// through every retry), and selection errors.
pub async fn compact(
    store: &dyn Store,
    id: &SessionId,
    policy: &WindowPolicy,
    counter: &dyn TokenCounter,
) -> Result<Option<Compacted>, Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Some(mut state) = store.load(id).await? else {
            return Ok(None);
        };
        let window = select(History::from(&state), policy, counter)?;
        let removed = usize::try_from(window.first_position).unwrap_or(usize::MAX);
        if removed == 0 {
            return Ok(Some(Compacted {
                removed: 0,
                version: state.version,
            }));
        }
        trim_front(&mut state, removed);
        match store.save(&state, Expect::Version(state.version)).await {
            Ok(version) => return Ok(Some(Compacted { removed, version })),
            Err(StoreError::Conflict { .. }) if attempts < ATTEMPTS => {
                tracing::debug!(attempts, "compaction raced a write; retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Drops the first `n` messages and re-bases the summaries.
fn trim_front(state: &mut ConversationState, n: usize) {
    let keep = state.messages.len().saturating_sub(n);
    state.keep_last(keep);
}
