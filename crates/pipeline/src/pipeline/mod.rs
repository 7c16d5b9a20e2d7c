//! [`Pipeline`]: `execute(session, role, content)` — load the window, call
//! the model, save the turn.
//!
//! # One execution, in order
//!
//! Every execution is one *turn* with a turn id (an
//! [`IdempotencyKey`](statestore_core::IdempotencyKey)):
//! the caller's ([`ExecOptions::turn_id`]) or a fresh one.
//!
//! 1. **Lock** the session in this process (executions of one session run
//!    one at a time; different sessions run in parallel).
//! 2. **Load**, in one read (`load_recent_with`), what the window needs and
//!    whether this turn id already landed: the newest `n` messages when the
//!    window is bounded (by messages, or by a token budget — a message
//!    costs at least [`MIN_MESSAGE_TOKENS`], so no more than `budget / 4`
//!    messages can fit), the whole history otherwise. **If the turn already
//!    landed**, the stored turn is returned ([`Executed::replayed`]) and
//!    nothing else happens: no model call, no write.
//! 3. **Select** the window ([`context_window::select`]) over the loaded
//!    history plus the new message; build the request.
//! 4. **Middleware** `before` hooks, in the order added.
//! 5. **Call** the provider; while the reply asks for tools and a
//!    [`ToolHandler`] is set, run them, **record the turn so far** under
//!    its id (`Store::put_pending`, one write per round: see [resumable
//!    turns](#resumable-turns)), and call again (at most
//!    `max_tool_rounds` rounds; see [tool calls a turn cannot
//!    run](#tool-calls-a-turn-cannot-run)).
//! 6. **Middleware** `after` hooks, in reverse order.
//! 7. **Save**: one `append_with` of the whole turn — the new message, any
//!    tool calls and results, the reply — under the turn id, guarded by
//!    the version loaded in step 2, adding the turn's usage to the
//!    session's [`counters`] in the same atomic write.
//! 8. **Summarize** what the window dropped when a
//!    [`Summarizer`](context_window::Summarizer) is set
//!    (best effort: a failure is logged, the call still succeeds).
//!
//! On Redis that is two round trips per execute: the load and the write.
//! Nothing after the write can fail the call.
//!
//! # Exactly once: turn ids
//!
//! The store applies a turn's write at most once per turn id (it remembers
//! at least the last [`REMEMBERED_WRITES`](statestore_core::REMEMBERED_WRITES)
//! turn ids of each session). So an execute whose outcome is unknown — a
//! store timeout on the write, a crash, a lost HTTP response between your
//! client and your server — is retried **with the same turn id**: if the
//! turn landed, the retry returns it (reply included) without calling the
//! model; if it did not, the retry runs it. [`Error::write_outcome`] says
//! whether anything may have been written, and [`Error::turn_id`] gives
//! the id of a failed write when you did not choose one. The turn id names
//! the turn: a retry with the same id returns the stored turn even if its
//! content differs.
//!
//! # Resumable turns
//!
//! The load of step 2 also reads the progress an earlier run of the turn
//! recorded after its last completed tool round (for a session that does
//! not exist yet and a turn id the caller chose, in one more read). A
//! retry with the same turn id — after an error, or in another process
//! after a crash — goes on from there: the completed rounds' tools are not
//! run again, the model is not asked again for them, and their usage,
//! recorded with them, is counted in the turn's write. A restart after a
//! conflict starts over on the new history instead, reusing those tools'
//! results. [`ToolHandler::call_in`] gives each call an idempotency key
//! that is the same in every run, for side effects a crash in the middle
//! of a round could otherwise repeat.
//!
//! # Tool calls a turn cannot run
//!
//! A turn never stores tool calls without their results (an assistant
//! message with unanswered `tool_calls` makes every later request invalid).
//! When the model asks for tools after `max_tool_rounds` rounds (or with
//! `max_tool_rounds(0)`), or asks for tools with no [`ToolHandler`] set,
//! each pending call is answered with a tool message saying it was not run
//! (`"not run: tool round limit reached"` / `"not run: no tool handler"`),
//! and the model is asked once more **without tools offered**, for a final
//! reply. If that reply still carries tool calls, they are stripped: the
//! stored reply keeps its text and never carries calls (a warning is
//! logged). The extra call is counted like any other.
//!
//! # Usage
//!
//! Every model call is counted — tool rounds, the final call above, the
//! calls of attempts discarded after a conflict (see below), which were
//! paid for too, and the summarizer's (step 8: a [`ProviderSummarizer`]
//! reports its usage, and `context_window::summarize_dropped` adds it to
//! the counters in one more write, retries after a race included; it is
//! not part of [`Executed::usage`]). The write of step 7 adds the turn's
//! calls to the session's counters
//! ([`counters`]: `prompt_tokens`, `completion_tokens`, `model_calls`, and
//! `turns`, one per stored turn), read back in
//! `RecentState::counters`/`ConversationState::counters`.
//! [`Executed::usage`] reports the same totals for the execute, and
//! [`Executed::discarded_usage`] the part spent on discarded attempts. When
//! nothing is stored the spend is in no counter: [`Error::Busy`] carries
//! it; other errors lose it.
//!
//! # Concurrency policy
//!
//! The lock makes turns of one session in one process sequential. Across
//! processes (several app instances on one Redis), the version guard in
//! step 7 turns a race into a conflict: with [`Concurrency::Retry`] (the
//! default) the execution starts again from step 2 on the new history —
//! the model is called again, since its answer was based on a history
//! that is no longer current — and with [`Concurrency::Reject`] it fails
//! with [`Error::Busy`]. Either way two turns never interleave and none is
//! lost. A retried attempt never repeats a tool's side effects: a call the
//! discarded attempts already ran (the same tool with the same arguments —
//! whatever its call id, since providers make fresh ids for each reply) is
//! answered with the result it had; each such result stands in for one
//! call per attempt. A streaming caller sees [`StreamEvent::Restart`]
//! before the re-asked reply streams.
//!
//! # Failures
//!
//! Nothing is stored unless the whole turn succeeded: a provider error,
//! a middleware rejection or a tool error leaves the session exactly as
//! it was.
//!
//! # Cancellation
//!
//! Dropping an execute's future (a `tokio::select!` against Ctrl-C, a
//! timeout) before its write begins stores nothing: everything before
//! step 7 only reads, except, with tools, the record of each completed
//! tool round (`put_pending`), which stores no message and which a retry
//! with the same turn id goes on from. Dropped once the write is under way,
//! the turn may or may not have landed, as after a store timeout: retry
//! with the same turn id to find out. The `after` hooks of a
//! [`Middleware`] run last before the write, so a caller that must know
//! can mark that point with one (the `statestore chat` command stops a
//! reply on Ctrl-C only before it, and waits for the write after it).

// Where each part lives: the builder and the configuration; the options,
// results and concurrency policy of one execute; the middleware hooks; the
// attempt loop and one attempt (steps 1 to 7); tool rounds and the
// tool-result cache; reading a stored turn back (replays); summarizing
// (step 8).
mod builder;
mod execute;
mod middleware;
mod options;
mod redo;
mod replay;
mod spans;
mod summarize;
mod title;
mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use context_window::annotate;
use statestore_core::{Content, Message, Role, SessionId, Store};

use crate::{Error, OnEvent, StreamEvent, Usage};
use builder::Config;

pub use builder::PipelineBuilder;
pub use middleware::{ExecContext, Middleware};
pub use options::{Concurrency, ExecOptions, Executed};
pub use redo::{Redo, StoredTurn, TurnRef, stored_turns};
pub use summarize::ProviderSummarizer;
pub use title::TitlePolicy;
pub use tools::{ToolContext, ToolHandler};

/// The metadata key under which a stored reply names its turn id: a retry
/// of the turn after the history was rewritten (trimmed, compacted,
/// imported) finds its reply by it. Never sent to the model.
pub const TURN_METADATA_KEY: &str = "statestore.turn";

/// The least a message can cost in a request (framing plus a role token),
/// which bounds how many messages a token budget can hold.
pub const MIN_MESSAGE_TOKENS: usize = 4;

/// The names of the session counters each stored turn adds to (see
/// [`Store::append_with`]): read them from `RecentState::counters` or
/// `ConversationState::counters`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use pipeline::{OfflineProvider, Pipeline, counters};
/// use statestore_core::{Role, SessionId, Store};
/// use statestore_memory::MemoryStore;
///
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new())).build();
/// let done = pipe.execute("costs", Role::User, "Hello").await?;
///
/// let state = store.load(&SessionId::new("costs")?).await?.ok_or("not stored")?;
/// assert_eq!(state.counters[counters::TURNS], 1);
/// assert_eq!(state.counters[counters::MODEL_CALLS], 1);
/// assert_eq!(state.counters[counters::PROMPT_TOKENS], done.usage.prompt_tokens);
/// # Ok(()) }
/// ```
pub mod counters {
    /// Prompt tokens of every model call, discarded attempts included.
    pub const PROMPT_TOKENS: &str = "prompt_tokens";
    /// Completion tokens of every model call, discarded attempts included.
    pub const COMPLETION_TOKENS: &str = "completion_tokens";
    /// Model calls (tool rounds, discarded attempts and the summarizer's
    /// included).
    pub const MODEL_CALLS: &str = "model_calls";
    /// Turns stored (one per successful execute; replays add nothing).
    pub const TURNS: &str = "turns";
}

/// `usage` and `model_calls` as increments of the session [`counters`] a
/// turn adds to (all but `turns`).
fn usage_counters(usage: Usage, model_calls: u64) -> statestore_core::Counters {
    statestore_core::Counters::from([
        (counters::PROMPT_TOKENS.to_owned(), usage.prompt_tokens),
        (
            counters::COMPLETION_TOKENS.to_owned(),
            usage.completion_tokens,
        ),
        (counters::MODEL_CALLS.to_owned(), model_calls),
    ])
}

/// Session middleware around a provider. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Config>,
    /// Per-session execution locks (entries die with their last user).
    locks: Arc<Mutex<HashMap<SessionId, Weak<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("store", &self.inner.store)
            .field("provider", &self.inner.provider)
            .field("policy", &self.inner.policy)
            .field("concurrency", &self.inner.concurrency)
            .finish_non_exhaustive()
    }
}

/// The streaming callback, where one is given.
type OnDelta<'a> = Option<&'a mut OnEvent<'a>>;

/// Lends the callback to one provider call without giving it away.
fn reborrow<'b>(f: &'b mut OnDelta<'_>) -> OnDelta<'b> {
    match f {
        Some(f) => Some(&mut **f),
        None => None,
    }
}

impl Pipeline {
    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    fn session_lock(&self, id: &SessionId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, weak| weak.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id.clone(), Arc::downgrade(&lock));
        lock
    }

    /// Runs one turn: `content` from `role` (usually [`Role::User`]) on
    /// session `session_id` — the seed's `ExecuteWithContext`. The turn
    /// gets a fresh id; use [`Pipeline::execute_with`] to choose it (and
    /// to retry a turn whose outcome is unknown).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] for an invalid id or a failed load, provider
    /// errors, [`Error::Window`] when the new message does not fit the
    /// budget, [`Error::Busy`] when concurrent turns kept winning,
    /// [`Error::Save`] when the write failed. Only a failed write can have
    /// stored anything: see [`Error::write_outcome`].
    pub async fn execute(
        &self,
        session_id: &str,
        role: Role,
        content: impl Into<Content>,
    ) -> Result<Executed, Error> {
        self.execute_with(session_id, role, content, ExecOptions::new())
            .await
    }

    /// [`Pipeline::execute`] with `options`, chiefly the turn id: a turn
    /// id already stored in the session returns the stored turn (with
    /// [`Executed::replayed`] set) without calling the model.
    ///
    /// # Errors
    ///
    /// As [`Pipeline::execute`].
    pub async fn execute_with(
        &self,
        session_id: &str,
        role: Role,
        content: impl Into<Content>,
        options: ExecOptions,
    ) -> Result<Executed, Error> {
        let id = SessionId::new(session_id)?;
        let mut message = Message::new(role, content);
        annotate(&*self.inner.counter, &mut message);
        self.execute_message(id, message, options.turn_id, None)
            .await
    }

    /// Like [`Pipeline::execute`], streaming the reply's text to `on_event`
    /// as it arrives and ending with [`StreamEvent::Done`]; the complete
    /// reply is stored at the end, exactly as with `execute`. If a
    /// concurrent turn forces a retry (see [`Concurrency`]), the model is
    /// asked again: [`StreamEvent::Restart`] says to discard the text shown
    /// so far, and the new reply streams from the start (use
    /// [`Concurrency::Reject`] where a restarted stream is unwelcome).
    ///
    /// # Errors
    ///
    /// As [`Pipeline::execute`].
    pub async fn execute_streaming(
        &self,
        session_id: &str,
        role: Role,
        content: impl Into<Content>,
        on_event: &mut OnEvent<'_>,
    ) -> Result<Executed, Error> {
        self.execute_streaming_with(session_id, role, content, ExecOptions::new(), on_event)
            .await
    }

    /// [`Pipeline::execute_streaming`] with `options` (see
    /// [`Pipeline::execute_with`]). A replayed turn's stored reply is
    /// delivered as one [`StreamEvent::Delta`].
    ///
    /// # Errors
    ///
    /// As [`Pipeline::execute`].
    pub async fn execute_streaming_with(
        &self,
        session_id: &str,
        role: Role,
        content: impl Into<Content>,
        options: ExecOptions,
        on_event: &mut OnEvent<'_>,
    ) -> Result<Executed, Error> {
        let id = SessionId::new(session_id)?;
        let mut message = Message::new(role, content);
        annotate(&*self.inner.counter, &mut message);
        let result = self
            .execute_message(id, message, options.turn_id, Some(&mut *on_event))
            .await;
        if result.is_ok() {
            on_event(StreamEvent::Done);
        }
        result
    }
}
