//! [`Pipeline`]: `execute(session, role, content)` — load the window, call
//! the model, save the turn.
//!
//! # One execution, in order
//!
//! 1. **Lock** the session in this process (executions of one session run
//!    one at a time; different sessions run in parallel).
//! 2. **Load** what the window needs: `load_recent(n)` when the window is
//!    bounded (by messages, or by a token budget — a message costs at least
//!    [`MIN_MESSAGE_TOKENS`], so no more than `budget / 4` messages can
//!    fit), the whole history otherwise.
//! 3. **Select** the window ([`context_window::select`]) over the loaded
//!    history plus the new message; build the request.
//! 4. **Middleware** `before` hooks, in the order added.
//! 5. **Call** the provider; if the reply asks for tools and a
//!    [`ToolHandler`] is set, run them and call again (at most
//!    `max_tool_rounds` times).
//! 6. **Middleware** `after` hooks, in reverse order.
//! 7. **Save**: one `append` of the new message, the reply, and any tool
//!    calls and results, guarded by the version loaded in step 2.
//! 8. **Account** usage in the session's metadata (`usage.prompt_tokens`,
//!    `usage.completion_tokens`, `usage.calls`), and summarize what the
//!    window dropped when a [`Summarizer`] is set.
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
//! lost.
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
    BoxError, Content, Error as StoreError, Expect, Message, Metadata, Role, SessionId, Store,
    ToolCall,
};
use tracing::Instrument;

use crate::{ChatRequest, ChatResponse, Error, OnEvent, Provider, StreamEvent, ToolSpec, Usage};

/// Attempts at adding a turn's usage to the session's totals when other
/// turns keep updating them concurrently.
const USAGE_ATTEMPTS: usize = 64;

/// The least a message can cost in a request (framing plus a role token),
/// which bounds how many messages a token budget can hold.
pub const MIN_MESSAGE_TOKENS: usize = 4;

/// What a pipeline does when a concurrent turn (from another process)
/// changed the session between load and save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Concurrency {
    /// Start the turn again on the new history, up to `attempts` times in all.
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
pub struct ExecContext {
    /// The session.
    pub session_id: SessionId,
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
#[async_trait]
pub trait ToolHandler: Send + Sync {
    /// The tools offered to the model.
    fn specs(&self) -> Vec<ToolSpec>;

    /// Runs one call; the returned text becomes the tool message.
    async fn call(&self, call: &ToolCall) -> Result<String, BoxError>;
}

/// The result of one [`Pipeline::execute`].
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    /// The model's final reply.
    pub reply: Message,
    /// Tokens used by this turn (all provider calls of it).
    pub usage: Usage,
    /// The session's version after the turn was stored.
    pub version: u64,
    /// Messages stored by this turn (the new message, tool calls and
    /// results, the reply).
    pub stored: usize,
    /// Messages of the history sent to the model (not counting the new one).
    pub context_messages: usize,
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

    /// Tools the model may call, run between provider calls.
    pub fn tools(mut self, tools: Arc<dyn ToolHandler>) -> Self {
        self.config.tools = Some(tools);
        self
    }

    /// Most provider calls answering tool results in one turn (default 8).
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
    system_prompt: Option<String>,
    summaries: Vec<statestore_core::Summary>,
    metadata: Metadata,
    expect: Expect,
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
    /// session `session_id` — the seed's `ExecuteWithContext`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] for an invalid id or store failure, provider errors,
    /// [`Error::Window`] when the new message does not fit the budget,
    /// [`Error::Busy`] when concurrent turns kept winning. Nothing is stored
    /// on any error.
    pub async fn execute(
        &self,
        session_id: &str,
        role: Role,
        content: impl Into<Content>,
    ) -> Result<Executed, Error> {
        let id = SessionId::new(session_id)?;
        let mut message = Message::new(role, content);
        annotate(&*self.inner.counter, &mut message);
        let span = tracing::info_span!(
            "execute",
            session = %log_tag(&id),
            provider = self.inner.provider.name()
        );
        self.execute_message(id, message, None)
            .instrument(span)
            .await
    }

    /// Like [`Pipeline::execute`], streaming the reply's text to `on_delta`
    /// as it arrives; the complete reply is stored at the end, exactly as
    /// with `execute`. If a concurrent turn forces a retry (see
    /// [`Concurrency`]), the model is asked again and its text streams
    /// again from the start: use [`Concurrency::Reject`] where a restarted
    /// stream is unwelcome.
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
        let id = SessionId::new(session_id)?;
        let mut message = Message::new(role, content);
        annotate(&*self.inner.counter, &mut message);
        let span = tracing::info_span!(
            "execute",
            session = %log_tag(&id),
            provider = self.inner.provider.name(),
            streaming = true
        );
        let result = self
            .execute_message(id, message, Some(&mut *on_event))
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
        mut on_delta: OnDelta<'_>,
    ) -> Result<Executed, Error> {
        let lock = self.session_lock(&id);
        let _guard = lock.lock().await;
        let attempts = match self.inner.concurrency {
            Concurrency::Retry { attempts } => attempts.max(1),
            Concurrency::Reject => 1,
        };
        for attempt in 1..=attempts {
            match self
                .attempt(&id, &message, attempt, reborrow(&mut on_delta))
                .await
            {
                Err(Error::Store(StoreError::Conflict { .. })) => {
                    tracing::debug!(session = %log_tag(&id), attempt, "a concurrent turn landed first");
                }
                other => return other,
            }
        }
        Err(Error::Busy { id, attempts })
    }

    async fn load(&self, id: &SessionId) -> Result<Loaded, Error> {
        let store = &self.inner.store;
        let policy = &self.inner.policy;
        let by_budget = policy.prompt_budget().map(|b| b / MIN_MESSAGE_TOKENS + 1);
        let bound = match (policy.max_messages, by_budget) {
            (Some(m), Some(b)) => Some(m.min(b)),
            (m, b) => m.or(b),
        };
        let started = Instant::now();
        let loaded = match bound {
            // One more than the window can hold, so a tool exchange cut at
            // the edge is recognized and left out whole.
            Some(n) => store
                .load_recent(id, n.saturating_add(1))
                .await?
                .map(|r| Loaded {
                    first_position: r.first_position(),
                    messages: r.messages,
                    system_prompt: r.system_prompt,
                    summaries: r.summaries,
                    metadata: r.metadata,
                    expect: Expect::Version(r.version),
                }),
            None => store.load(id).await?.map(|s| Loaded {
                first_position: 0,
                messages: s.messages,
                system_prompt: s.system_prompt,
                summaries: s.summaries,
                metadata: s.metadata,
                expect: Expect::Version(s.version),
            }),
        };
        let loaded = loaded.unwrap_or(Loaded {
            messages: Vec::new(),
            first_position: 0,
            system_prompt: None,
            summaries: Vec::new(),
            metadata: Metadata::new(),
            expect: Expect::Absent,
        });
        tracing::debug!(
            messages = loaded.messages.len(),
            elapsed = ?started.elapsed(),
            "loaded"
        );
        Ok(loaded)
    }

    async fn attempt(
        &self,
        id: &SessionId,
        message: &Message,
        attempt: u32,
        mut on_delta: OnDelta<'_>,
    ) -> Result<Executed, Error> {
        let inner = &self.inner;
        let mut loaded = self.load(id).await?;
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
        let mut usage = Usage::default();
        let mut response = self.call(&request, reborrow(&mut on_delta)).await?;
        usage += response.usage;
        let mut rounds = 0;
        while let Some(tools) = &inner.tools {
            if response.message.tool_calls.is_empty() || rounds >= inner.max_tool_rounds {
                break;
            }
            rounds += 1;
            let calls = response.message.clone();
            let mut results = Vec::with_capacity(calls.tool_calls.len());
            for call in &calls.tool_calls {
                let output = tools.call(call).await.map_err(|source| Error::Tool {
                    name: call.name.clone(),
                    source,
                })?;
                results.push(Message::tool(call.id.clone(), output));
            }
            request.messages.push(Arc::new(calls.clone()));
            request
                .messages
                .extend(results.iter().cloned().map(Arc::new));
            turn.push(calls);
            turn.extend(results);
            response = self.call(&request, reborrow(&mut on_delta)).await?;
            usage += response.usage;
        }
        for m in inner.middleware.iter().rev() {
            m.after(&ctx, &mut response).await?;
        }

        let reply = response.message.clone();
        turn.push(response.message);
        for m in &mut turn {
            annotate(&*inner.counter, m);
        }
        let stored = turn.len();
        let started = Instant::now();
        let mut version = inner.store.append(id, turn, loaded.expect).await?;
        tracing::debug!(
            stored,
            version,
            elapsed = ?started.elapsed(),
            "turn saved"
        );
        version = self.account(id, &loaded.metadata, usage, version).await?;
        if let Some(summarizer) = &inner.summarizer {
            self.maybe_summarize(id, &window, &**summarizer).await;
        }
        Ok(Executed {
            reply,
            usage,
            version,
            stored,
            context_messages: window.messages.len().saturating_sub(1),
        })
    }

    async fn call(
        &self,
        request: &ChatRequest,
        on_delta: OnDelta<'_>,
    ) -> Result<ChatResponse, Error> {
        let started = Instant::now();
        let result = match on_delta {
            Some(f) => self.inner.provider.chat_stream(request, f).await,
            None => self.inner.provider.chat(request).await,
        };
        match &result {
            Ok(r) => tracing::debug!(
                prompt_tokens = r.usage.prompt_tokens,
                completion_tokens = r.usage.completion_tokens,
                elapsed = ?started.elapsed(),
                "provider answered"
            ),
            Err(e) => tracing::debug!(error = %e, "provider failed"),
        }
        result
    }

    /// Adds this turn's usage to the session's `usage` metadata.
    async fn account(
        &self,
        id: &SessionId,
        before: &Metadata,
        usage: Usage,
        version: u64,
    ) -> Result<u64, Error> {
        let mut base = before;
        let mut fresh;
        let mut expect = Expect::Version(version);
        // Each conflict means another turn's write landed, so this makes
        // progress; the bound only guards against a pathological storm.
        for _ in 0..USAGE_ATTEMPTS {
            let total = |key: &str| {
                base.get("usage")
                    .and_then(|u| u.get(key))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            };
            let mut patch = Metadata::new();
            patch.insert(
                "usage".into(),
                serde_json::json!({
                    "prompt_tokens": total("prompt_tokens") + usage.prompt_tokens,
                    "completion_tokens": total("completion_tokens") + usage.completion_tokens,
                    "calls": total("calls") + 1,
                }),
            );
            match self.inner.store.merge_metadata(id, patch, expect).await {
                Ok(v) => return Ok(v),
                Err(StoreError::Conflict { .. }) => {
                    // Another turn landed after ours: add to its totals.
                    let Some(r) = self.inner.store.load_recent(id, 0).await? else {
                        return Ok(version);
                    };
                    fresh = r.metadata;
                    base = &fresh;
                    expect = Expect::Version(r.version);
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(session = %log_tag(id), "usage not recorded: the session stayed busy");
        Ok(version)
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
