//! [`PipelineBuilder`] and the [`Config`] a pipeline is built from.

use std::sync::Arc;

use context_window::{Summarizer, TokenCounter, WindowPolicy};
use statestore_core::Store;
use statestore_core::telemetry::{ConversationIds, Traced};

use super::{Concurrency, Middleware, Pipeline, ToolHandler};
use crate::Provider;

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

    /// How a session gets its title on its first turn — the one that finds
    /// no message stored and no title set (default: none): the first
    /// message cut short, or one model call beside the turn's. Stored by the turn's own write, in metadata under
    /// [`TITLE_KEY`](statestore_core::TITLE_KEY), where
    /// [`Store::list`](statestore_core::Store::list) reads it.
    pub fn title(mut self, policy: super::TitlePolicy) -> Self {
        self.config.title = policy;
        self
    }

    /// How session ids are recorded in telemetry
    /// (`gen_ai.conversation.id`, on the pipeline's spans and the store's);
    /// default: [`ConversationIds::Default`], the process-wide policy — a
    /// keyed hash when `STATESTORE_TELEMETRY_KEY` is set, else a short
    /// tag. See `docs/telemetry.md`.
    pub fn conversation_ids(mut self, ids: ConversationIds) -> Self {
        self.config.conversation_ids = ids;
        self
    }

    /// Records message text, tool arguments and tool results on the spans
    /// (`gen_ai.input.messages`, `gen_ai.output.messages`,
    /// `gen_ai.tool.call.arguments`, `gen_ai.tool.call.result`). Off by
    /// default: switched on, everything users write and every tool's
    /// output reaches the trace backend — personal data, secrets pasted
    /// into a chat, anything.
    pub fn record_content(mut self, record: bool) -> Self {
        self.config.record_content = record;
        self
    }

    /// Builds the pipeline. Its store records a span per operation
    /// ([`Traced`], unless it is traced already).
    #[must_use]
    pub fn build(self) -> Pipeline {
        let mut config = self.config;
        let store = config.store;
        config.store = if store.is_traced() {
            store
        } else {
            Arc::new(Traced::new(store).conversation_ids(config.conversation_ids.clone()))
        };
        Pipeline {
            inner: Arc::new(config),
            locks: Arc::default(),
        }
    }
}

/// Everything a pipeline is configured with.
pub(super) struct Config {
    pub(super) store: Arc<dyn Store>,
    pub(super) provider: Arc<dyn Provider>,
    pub(super) policy: WindowPolicy,
    pub(super) counter: Arc<dyn TokenCounter>,
    pub(super) summarizer: Option<Arc<dyn Summarizer>>,
    pub(super) middleware: Vec<Arc<dyn Middleware>>,
    pub(super) tools: Option<Arc<dyn ToolHandler>>,
    pub(super) max_tool_rounds: usize,
    pub(super) concurrency: Concurrency,
    pub(super) system_prompt: Option<String>,
    pub(super) temperature: Option<f32>,
    pub(super) max_tokens: Option<u32>,
    pub(super) title: super::TitlePolicy,
    pub(super) conversation_ids: ConversationIds,
    pub(super) record_content: bool,
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
                title: super::TitlePolicy::None,
                conversation_ids: ConversationIds::Default,
                record_content: false,
            },
        }
    }
}
