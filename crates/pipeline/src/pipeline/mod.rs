//! [`Pipeline`]: `execute(session, role, content)` — load the window, call
//! the model, save the turn.
//!
//! # One execution, in order
//!
//! Every execution is one *turn* with a turn id (an [`IdempotencyKey`]):
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
//!    [`ToolHandler`] is set, run them and call again (at most
//!    `max_tool_rounds` rounds; see [tool calls a turn cannot
//!    run](#tool-calls-a-turn-cannot-run)).
//! 6. **Middleware** `after` hooks, in reverse order.
//! 7. **Save**: one `append_with` of the whole turn — the new message, any
//!    tool calls and results, the reply — under the turn id, guarded by
//!    the version loaded in step 2, adding the turn's usage to the
//!    session's [`counters`] in the same atomic write.
//! 8. **Summarize** what the window dropped when a [`Summarizer`] is set
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
//! Every model call is counted — tool rounds, the final call above, and
//! the calls of attempts discarded after a conflict (see below), which were
//! paid for too. The write of step 7 adds them to the session's counters
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use async_trait::async_trait;
use context_window::{History, Summarizer, TokenCounter, Window, WindowPolicy, annotate, select};
use statestore_core::{
    Append, Appended, BoxError, Content, Error as StoreError, Expect, IdempotencyKey, Message,
    Role, SessionId, Store, Summary, ToolCall,
};
use tracing::Instrument;

use crate::{ChatRequest, ChatResponse, Error, OnEvent, Provider, StreamEvent, ToolSpec, Usage};

/// The least a message can cost in a request (framing plus a role token),
/// which bounds how many messages a token budget can hold.
pub const MIN_MESSAGE_TOKENS: usize = 4;

/// What answers a tool call the round limit left unrun.
const NOT_RUN_LIMIT: &str = "not run: tool round limit reached";
/// What answers a tool call when no [`ToolHandler`] is set.
const NOT_RUN_NO_HANDLER: &str = "not run: no tool handler";

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
    /// Model calls (tool rounds and discarded attempts included).
    pub const MODEL_CALLS: &str = "model_calls";
    /// Turns stored (one per successful execute; replays add nothing).
    pub const TURNS: &str = "turns";
}

/// What a pipeline does when a concurrent turn (from another process)
/// changed the session between load and save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Concurrency {
    /// Start the turn again on the new history, up to `attempts` times in
    /// all: the model is asked again (a streaming caller gets
    /// [`StreamEvent::Restart`] first), tool calls already run are not run
    /// again (see [`ToolHandler`]), and the usage of the discarded attempts
    /// is counted with the turn ([`Executed::discarded_usage`]).
    Retry {
        /// Attempts in all, at least 1.
        attempts: u32,
    },
    /// Fail with [`Error::Busy`] at once.
    Reject,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self::Retry { attempts: 4 }
    }
}

/// What a middleware sees of the execution.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExecContext {
    /// The session.
    pub session_id: SessionId,
    /// The turn's id (the same in every attempt).
    pub turn_id: IdempotencyKey,
    /// 1 for the first attempt, more after concurrency retries.
    pub attempt: u32,
}

/// Hooks around the provider call: logging, redaction, metrics, guards.
///
/// `before` hooks run in the order middleware was added, `after` hooks in
/// reverse order (like nested wrappers). A hook returning an error stops
/// the execution; nothing is stored.
#[async_trait]
pub trait Middleware: Send + Sync {
    /// Sees (and may change) the request before it is sent.
    async fn before(&self, _ctx: &ExecContext, _request: &mut ChatRequest) -> Result<(), Error> {
        Ok(())
    }

    /// Sees (and may change) the reply before it is stored.
    async fn after(&self, _ctx: &ExecContext, _response: &mut ChatResponse) -> Result<(), Error> {
        Ok(())
    }
}

/// Runs the tools a model asks for.
///
/// Within one execute a call is run at most once: when a concurrent turn
/// forces a retry ([`Concurrency::Retry`]), a call the discarded attempts
/// already ran — the same tool with the same arguments, whatever its call
/// id, since providers make fresh ids for each reply — is answered with
/// the result it had; each such result stands in for one call per attempt.
#[async_trait]
pub trait ToolHandler: Send + Sync {
    /// The tools offered to the model.
    fn specs(&self) -> Vec<ToolSpec>;

    /// Runs one call; the returned text becomes the tool message.
    async fn call(&self, call: &ToolCall) -> Result<String, BoxError>;
}

/// Options of one [`Pipeline::execute_with`].
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

/// The result of one [`Pipeline::execute`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Executed {
    /// The model's final reply (for a replay: the stored one).
    pub reply: Message,
    /// Tokens used by every model call of this execute: tool rounds and
    /// attempts discarded after a conflict included; what the write added
    /// to the session's counters. Zero for a replay found at load.
    pub usage: Usage,
    /// The part of `usage` spent on attempts discarded after a conflict
    /// (for a replay: all of `usage`, which is in no counter).
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
    /// `true` when the turn was already stored under this id and was
    /// returned as stored, without calling the model.
    pub replayed: bool,
}

/// Configures a [`Pipeline`]; from [`Pipeline::builder`].
#[must_use]
pub struct PipelineBuilder {
    config: Config,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("provider", &self.config.provider)
            .field("policy", &self.config.policy)
            .finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// The context window (default: the last 50 messages).
    pub fn window(mut self, policy: WindowPolicy) -> Self {
        self.config.policy = policy;
        self
    }

    /// The token counter for the window's budget and the per-message cache
    /// (default: exact `o200k_base` counts, `context_window::exact`; use
    /// `OpenAiEncoding::for_model` for other OpenAI models, or
    /// [`CharEstimate`](context_window::CharEstimate) for a free estimate).
    pub fn token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.config.counter = counter;
        self
    }

    /// Summarizes what the window drops, after each turn that drops more.
    pub fn summarizer(mut self, summarizer: Arc<dyn Summarizer>) -> Self {
        self.config.summarizer = Some(summarizer);
        self
    }

    /// Adds a middleware (see [`Middleware`] for the order).
    pub fn middleware(mut self, middleware: Arc<dyn Middleware>) -> Self {
        self.config.middleware.push(middleware);
        self
    }

    /// Tools the model may call, run between provider calls. Without a
    /// handler, calls the model asks for anyway are answered "not run: no
    /// tool handler" and the model is asked once more without tools.
    pub fn tools(mut self, tools: Arc<dyn ToolHandler>) -> Self {
        self.config.tools = Some(tools);
        self
    }

    /// Most rounds of tool calls run in one turn (default 8). Calls the
    /// model asks for past the limit are answered "not run: tool round
    /// limit reached" and the model is asked once more, without tools, for
    /// its final reply — a turn never stores unanswered calls. `0` runs no
    /// tools at all.
    pub fn max_tool_rounds(mut self, rounds: usize) -> Self {
        self.config.max_tool_rounds = rounds;
        self
    }

    /// What to do when another process's turn lands first.
    pub fn concurrency(mut self, policy: Concurrency) -> Self {
        self.config.concurrency = policy;
        self
    }

    /// A system prompt for sessions that have none stored.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.config.system_prompt = Some(prompt.into());
        self
    }

    /// Default sampling temperature.
    pub fn temperature(mut self, t: f32) -> Self {
        self.config.temperature = Some(t);
        self
    }

    /// Default most tokens to generate.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.config.max_tokens = Some(n);
        self
    }

    /// Builds the pipeline.
    #[must_use]
    pub fn build(self) -> Pipeline {
        Pipeline {
            inner: Arc::new(self.config),
            locks: Arc::default(),
        }
    }
}

/// Session middleware around a provider. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Config>,
    /// Per-session execution locks (entries die with their last user).
    locks: Arc<Mutex<HashMap<SessionId, Weak<tokio::sync::Mutex<()>>>>>,
}

/// Everything a pipeline is configured with.
struct Config {
    store: Arc<dyn Store>,
    provider: Arc<dyn Provider>,
    policy: WindowPolicy,
    counter: Arc<dyn TokenCounter>,
    summarizer: Option<Arc<dyn Summarizer>>,
    middleware: Vec<Arc<dyn Middleware>>,
    tools: Option<Arc<dyn ToolHandler>>,
    max_tool_rounds: usize,
    concurrency: Concurrency,
    system_prompt: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
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

/// A short, stable, non-reversible tag for a session id in logs.
fn log_tag(id: &SessionId) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    format!("{:08x}", h.finish() & 0xffff_ffff)
}

/// Loaded history: what the window is chosen from.
struct Loaded {
    messages: Vec<Arc<Message>>,
    first_position: u64,
    total: u64,
    system_prompt: Option<String>,
    summaries: Vec<Summary>,
    expect: Expect,
    /// What the turn's earlier write did, when it already landed.
    replay: Option<Appended>,
}

/// One execute's running state, kept across attempts.
struct Run {
    turn_id: IdempotencyKey,
    /// Every model call's usage so far.
    usage: Usage,
    /// Model calls so far.
    model_calls: u64,
    /// Tool calls run so far.
    tools: ToolRuns,
}

/// A tool call that ran, with its result.
struct ToolRun {
    id: String,
    name: String,
    arguments: String,
    output: String,
    /// The attempt that ran it.
    attempt: u32,
}

/// The tool calls one execute has run, so that a retried attempt does not
/// run them again.
#[derive(Default)]
struct ToolRuns {
    done: Vec<ToolRun>,
}

impl ToolRuns {
    /// The result of `call` in `attempt`: a stored one when this call id
    /// already ran with the same tool and arguments, or when a discarded
    /// attempt made the same call and its result is not yet used in this
    /// attempt (`reused`); otherwise the handler runs it.
    async fn run(
        &mut self,
        handler: &dyn ToolHandler,
        call: &ToolCall,
        attempt: u32,
        reused: &mut Vec<usize>,
    ) -> Result<String, Error> {
        let found = self
            .done
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                r.name == call.name
                    && r.arguments == call.arguments
                    && (r.id == call.id || (r.attempt < attempt && !reused.contains(i)))
            })
            .min_by_key(|(_, r)| r.id != call.id)
            .map(|(i, r)| (i, r.output.clone()));
        if let Some((i, output)) = found {
            tracing::debug!(tool = %call.name, "tool call already ran in this execute: result reused");
            reused.push(i);
            return Ok(output);
        }
        let output = handler.call(call).await.map_err(|source| Error::Tool {
            name: call.name.clone(),
            source,
        })?;
        self.done.push(ToolRun {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            output: output.clone(),
            attempt,
        });
        Ok(output)
    }
}

impl Pipeline {
    /// A pipeline over `store` and `provider`; configure it, then `build`.
    pub fn builder(store: Arc<dyn Store>, provider: Arc<dyn Provider>) -> PipelineBuilder {
        PipelineBuilder {
            config: Config {
                store,
                provider,
                policy: WindowPolicy::default().max_messages(50),
                counter: Arc::new(context_window::exact(
                    context_window::OpenAiEncoding::O200kBase,
                )),
                summarizer: None,
                middleware: Vec::new(),
                tools: None,
                max_tool_rounds: 8,
                concurrency: Concurrency::default(),
                system_prompt: None,
                temperature: None,
                max_tokens: None,
            },
        }
    }

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
        let span = tracing::info_span!(
            "execute",
            session = %log_tag(&id),
            provider = self.inner.provider.name()
        );
        let turn_id = options.turn_id.unwrap_or_else(IdempotencyKey::random);
        self.execute_message(id, message, turn_id, None)
            .instrument(span)
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
        let span = tracing::info_span!(
            "execute",
            session = %log_tag(&id),
            provider = self.inner.provider.name(),
            streaming = true
        );
        let turn_id = options.turn_id.unwrap_or_else(IdempotencyKey::random);
        let result = self
            .execute_message(id, message, turn_id, Some(&mut *on_event))
            .instrument(span)
            .await;
        if result.is_ok() {
            on_event(StreamEvent::Done);
        }
        result
    }

    async fn execute_message(
        &self,
        id: SessionId,
        message: Message,
        turn_id: IdempotencyKey,
        mut on_event: OnDelta<'_>,
    ) -> Result<Executed, Error> {
        let lock = self.session_lock(&id);
        let _guard = lock.lock().await;
        let attempts = match self.inner.concurrency {
            Concurrency::Retry { attempts } => attempts.max(1),
            Concurrency::Reject => 1,
        };
        let mut run = Run {
            turn_id,
            usage: Usage::default(),
            model_calls: 0,
            tools: ToolRuns::default(),
        };
        for attempt in 1..=attempts {
            if attempt > 1
                && let Some(f) = on_event.as_mut()
            {
                f(StreamEvent::Restart);
            }
            if let Some(done) = self
                .attempt(&id, &message, attempt, &mut run, reborrow(&mut on_event))
                .await?
            {
                return Ok(done);
            }
            tracing::debug!(session = %log_tag(&id), attempt, "a concurrent turn landed first");
        }
        Err(Error::Busy {
            id,
            attempts,
            usage: run.usage,
        })
    }

    async fn load(&self, id: &SessionId, turn_id: &IdempotencyKey) -> Result<Loaded, Error> {
        let policy = &self.inner.policy;
        let by_budget = policy.prompt_budget().map(|b| b / MIN_MESSAGE_TOKENS + 1);
        let bound = match (policy.max_messages, by_budget) {
            (Some(m), Some(b)) => Some(m.min(b)),
            (m, b) => m.or(b),
        };
        // One more than the window can hold, so a tool exchange cut at the
        // edge is recognized and left out whole; unbounded: everything.
        let n = bound.map_or(usize::MAX, |n| n.saturating_add(1));
        let started = Instant::now();
        let loaded = self
            .inner
            .store
            .load_recent_with(id, n, Some(turn_id))
            .await?;
        let loaded = match loaded {
            Some(r) => Loaded {
                first_position: r.first_position(),
                total: r.total_messages,
                messages: r.messages,
                system_prompt: r.system_prompt,
                summaries: r.summaries,
                expect: Expect::Version(r.version),
                replay: r.replay,
            },
            None => Loaded {
                messages: Vec::new(),
                first_position: 0,
                total: 0,
                system_prompt: None,
                summaries: Vec::new(),
                expect: Expect::Absent,
                replay: None,
            },
        };
        tracing::debug!(
            messages = loaded.messages.len(),
            replay = loaded.replay.is_some(),
            elapsed = ?started.elapsed(),
            "loaded"
        );
        Ok(loaded)
    }

    /// One attempt at the turn: `Ok(None)` when a concurrent turn landed
    /// first (the attempt is discarded).
    async fn attempt(
        &self,
        id: &SessionId,
        message: &Message,
        attempt: u32,
        run: &mut Run,
        mut on_event: OnDelta<'_>,
    ) -> Result<Option<Executed>, Error> {
        let inner = &self.inner;
        let mut loaded = self.load(id, &run.turn_id).await?;
        if let Some(appended) = loaded.replay {
            let tail = (&loaded.messages[..], loaded.first_position, loaded.total);
            let turn = self
                .stored_turn(id, &run.turn_id, appended, Some(tail))
                .await?;
            return Ok(Some(Self::replayed(
                id, run, appended, &turn, on_event, false,
            )?));
        }
        let discarded = run.usage;
        let prompt = loaded
            .system_prompt
            .take()
            .or_else(|| inner.system_prompt.clone());
        let mut history = std::mem::take(&mut loaded.messages);
        history.push(Arc::new(message.clone()));
        let window: Window = select(
            History {
                system_prompt: prompt.as_deref(),
                summaries: &loaded.summaries,
                messages: &history,
                first_position: loaded.first_position,
            },
            &inner.policy,
            &*inner.counter,
        )?;
        tracing::debug!(
            sent = window.messages.len(),
            dropped = window.dropped,
            tokens = window.tokens,
            "window selected"
        );
        let ctx = ExecContext {
            session_id: id.clone(),
            turn_id: run.turn_id.clone(),
            attempt,
        };
        let mut request = ChatRequest {
            messages: window.request_messages(),
            tools: inner.tools.as_ref().map(|t| t.specs()).unwrap_or_default(),
            temperature: inner.temperature,
            max_tokens: inner.max_tokens,
        };
        for m in &inner.middleware {
            m.before(&ctx, &mut request).await?;
        }

        let mut turn: Vec<Message> = vec![message.clone()];
        let mut response = self.call(&request, reborrow(&mut on_event), run).await?;
        let mut rounds = 0;
        // Results of discarded attempts already standing in for a call of
        // this attempt.
        let mut reused = Vec::new();
        while !response.message.tool_calls.is_empty() {
            let calls = response.message;
            let handler = inner
                .tools
                .as_ref()
                .filter(|_| rounds < inner.max_tool_rounds);
            let mut results = Vec::with_capacity(calls.tool_calls.len());
            if let Some(tools) = handler {
                rounds += 1;
                for call in &calls.tool_calls {
                    let output = run.tools.run(&**tools, call, attempt, &mut reused).await?;
                    results.push(Message::tool(call.id.clone(), output));
                }
            } else {
                let why = if inner.tools.is_some() {
                    NOT_RUN_LIMIT
                } else {
                    NOT_RUN_NO_HANDLER
                };
                tracing::debug!(
                    calls = calls.tool_calls.len(),
                    reason = why,
                    "tool calls answered without running them"
                );
                results.extend(
                    calls
                        .tool_calls
                        .iter()
                        .map(|call| Message::tool(call.id.clone(), why)),
                );
            }
            request.messages.push(Arc::new(calls.clone()));
            request
                .messages
                .extend(results.iter().cloned().map(Arc::new));
            turn.push(calls);
            turn.extend(results);
            if handler.is_none() {
                // The final answer, with no tools to ask for.
                request.tools.clear();
                response = self.call(&request, reborrow(&mut on_event), run).await?;
                break;
            }
            response = self.call(&request, reborrow(&mut on_event), run).await?;
        }
        for m in inner.middleware.iter().rev() {
            m.after(&ctx, &mut response).await?;
        }
        if !response.message.tool_calls.is_empty() {
            tracing::warn!(
                calls = response.message.tool_calls.len(),
                "the final reply still asks for tools: its calls are not stored"
            );
            response.message.tool_calls.clear();
        }

        // Returned as stored (token count included), as a replay returns it.
        let mut reply = response.message;
        annotate(&*inner.counter, &mut reply);
        turn.push(reply.clone());
        for m in &mut turn {
            annotate(&*inner.counter, m);
        }
        let stored = turn.len();
        let append = Append::new(turn)
            .expect(loaded.expect)
            .key(run.turn_id.clone())
            .count(counters::PROMPT_TOKENS, run.usage.prompt_tokens)
            .count(counters::COMPLETION_TOKENS, run.usage.completion_tokens)
            .count(counters::MODEL_CALLS, run.model_calls)
            .count(counters::TURNS, 1);
        let started = Instant::now();
        let appended = match inner.store.append_with(id, append).await {
            Ok(appended) => appended,
            Err(StoreError::Conflict { .. }) => return Ok(None),
            Err(source) => {
                return Err(Error::Save {
                    id: id.clone(),
                    turn_id: run.turn_id.clone(),
                    source,
                });
            }
        };
        if appended.replayed {
            // The same turn id landed from another execute since the load:
            // that turn is the one stored, and this one's reply is void.
            tracing::debug!("the turn was stored by another execute meanwhile");
            let turn = self.stored_turn(id, &run.turn_id, appended, None).await?;
            return Ok(Some(Self::replayed(
                id, run, appended, &turn, on_event, true,
            )?));
        }
        tracing::debug!(
            stored,
            version = appended.version,
            elapsed = ?started.elapsed(),
            "turn saved"
        );
        if let Some(summarizer) = &inner.summarizer {
            self.maybe_summarize(id, &window, &**summarizer).await;
        }
        Ok(Some(Executed {
            reply,
            usage: run.usage,
            discarded_usage: discarded,
            model_calls: run.model_calls,
            version: appended.version,
            stored,
            context_messages: window.messages.len().saturating_sub(1),
            turn_id: run.turn_id.clone(),
            replayed: false,
        }))
    }

    /// The messages a stored turn wrote: from `tail` (messages, position
    /// of the first, total) when they are in it, otherwise read back.
    async fn stored_turn(
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
        let range = appended.positions();
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

    /// The result of a turn found stored under its id.
    fn replayed(
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
            stored: turn.len(),
            context_messages: 0,
            turn_id: run.turn_id.clone(),
            replayed: true,
        })
    }

    /// Sends one request, counting its usage into `run`.
    async fn call(
        &self,
        request: &ChatRequest,
        on_event: OnDelta<'_>,
        run: &mut Run,
    ) -> Result<ChatResponse, Error> {
        let started = Instant::now();
        let result = match on_event {
            Some(f) => self.inner.provider.chat_stream(request, f).await,
            None => self.inner.provider.chat(request).await,
        };
        match &result {
            Ok(r) => {
                run.usage += r.usage;
                run.model_calls += 1;
                tracing::debug!(
                    prompt_tokens = r.usage.prompt_tokens,
                    completion_tokens = r.usage.completion_tokens,
                    elapsed = ?started.elapsed(),
                    "provider answered"
                );
            }
            Err(e) => tracing::debug!(error = %e, "provider failed"),
        }
        result
    }

    /// Summarizes what the window dropped, when no summary covers it yet.
    /// Failures are logged, not returned: the turn is already stored.
    async fn maybe_summarize(&self, id: &SessionId, window: &Window, summarizer: &dyn Summarizer) {
        let covered = window
            .summaries
            .iter()
            .filter(|s| s.covers.start == 0)
            .map(|s| s.covers.end)
            .max()
            .unwrap_or(0);
        if window.first_position <= covered {
            return;
        }
        let result = context_window::summarize_dropped(
            &*self.inner.store,
            id,
            &self.inner.policy,
            &*self.inner.counter,
            summarizer,
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(session = %log_tag(id), error = %e, "summarizing failed");
        }
    }
}

/// A [`Summarizer`] that asks a provider.
#[derive(Debug)]
pub struct ProviderSummarizer {
    provider: Arc<dyn Provider>,
}

impl ProviderSummarizer {
    /// Summaries written by `provider`.
    #[must_use]
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self { provider }
    }
}

#[async_trait]
impl Summarizer for ProviderSummarizer {
    async fn summarize(
        &self,
        previous: Option<&statestore_core::Summary>,
        messages: &[Arc<Message>],
    ) -> Result<String, BoxError> {
        let mut text = String::new();
        if let Some(p) = previous {
            text.push_str("Summary so far: ");
            text.push_str(&p.content);
            text.push_str("\n\n");
        }
        for m in messages {
            text.push_str(m.role.as_str());
            text.push_str(": ");
            text.push_str(&m.text());
            text.push('\n');
        }
        let request = ChatRequest {
            messages: vec![
                Arc::new(Message::system(
                    "Summarize the conversation below in a few sentences. Keep names, facts, \
                     decisions and open questions.",
                )),
                Arc::new(Message::user(text)),
            ],
            ..ChatRequest::default()
        };
        let response = self.provider.chat(&request).await.map_err(Box::new)?;
        Ok(response.message.text().into_owned())
    }
}
