//! The [`Provider`] trait: one chat request in, one assistant reply out.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use statestore_core::Message;

use crate::Error;

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// Its parameters as a JSON Schema object.
    pub parameters: serde_json::Value,
}

/// A chat request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The conversation to continue: system prompt, summaries, history and
    /// the new message, in order.
    pub messages: Vec<Arc<Message>>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Sampling temperature; `None` uses the provider's default.
    pub temperature: Option<f32>,
    /// Most tokens to generate; `None` uses the provider's default.
    pub max_tokens: Option<u32>,
}

/// Tokens a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request.
    pub prompt_tokens: u64,
    /// Tokens of the reply.
    pub completion_tokens: u64,
}

impl Usage {
    /// Both together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// A natural end.
    Stop,
    /// The token limit.
    Length,
    /// It wants tool results.
    ToolCalls,
    /// The provider filtered the content.
    ContentFilter,
    /// Anything else the provider said.
    Other(String),
}

impl FinishReason {
    /// From an OpenAI-style `finish_reason` string.
    #[must_use]
    pub fn from_wire(s: &str) -> Self {
        match s {
            "stop" => Self::Stop,
            "length" => Self::Length,
            "tool_calls" | "function_call" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// The model's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The assistant message (with tool calls, if any).
    pub message: Message,
    /// Tokens used.
    pub usage: Usage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

/// What a streaming call reports to its callback, in order: text as it
/// arrives, possibly a [`StreamEvent::Restart`] (everything shown so far is
/// void and the reply starts again — a provider retried a broken stream, or
/// the pipeline re-asked the model after a concurrent turn), and finally
/// [`StreamEvent::Done`] once the reply is complete.
///
/// ```
/// use pipeline::StreamEvent;
///
/// let mut shown = String::new();
/// let mut on_event = |event: StreamEvent<'_>| match event {
///     StreamEvent::Delta(text) => shown.push_str(text),
///     StreamEvent::Restart => shown.clear(),
///     StreamEvent::Done => {}
///     _ => {}
/// };
/// on_event(StreamEvent::Delta("Hel"));
/// on_event(StreamEvent::Restart);
/// on_event(StreamEvent::Delta("Hello"));
/// on_event(StreamEvent::Done);
/// assert_eq!(shown, "Hello");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent<'a> {
    /// The next piece of the reply's text.
    Delta(&'a str),
    /// Discard the text shown so far: the reply starts again.
    Restart,
    /// The reply is complete.
    Done,
}

/// The streaming callback type.
pub type OnEvent<'a> = dyn for<'e> FnMut(StreamEvent<'e>) + Send + 'a;

/// A chat model.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// A short name for logs and metrics, e.g. `"openai"`.
    fn name(&self) -> &str;

    /// The model asked for, when the provider knows it: telemetry's
    /// `gen_ai.request.model` and the `chat {model}` span name.
    ///
    /// A provider may also record what the answer said on the current
    /// span (the pipeline's `chat` span), for instance
    /// `tracing::Span::current().record("gen_ai.response.model", "gpt-4o-2024-08-06")`;
    /// the fields it declares are listed in `docs/telemetry.md`.
    fn model(&self) -> Option<&str> {
        None
    }

    /// The model's context size in tokens, when known (used for the token
    /// budget when the pipeline has none configured).
    fn context_tokens(&self) -> Option<usize> {
        None
    }

    /// Sends `request` and returns the reply.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error>;

    /// Like [`Provider::chat`], reporting each piece of text to `on_event`
    /// as it arrives ([`StreamEvent::Delta`]); returns the complete reply at
    /// the end. A provider that retries a broken stream reports
    /// [`StreamEvent::Restart`] first. [`StreamEvent::Done`] is the
    /// pipeline's to send. The default calls `chat` and delivers the text in
    /// one piece.
    async fn chat_stream(
        &self,
        request: &ChatRequest,
        on_event: &mut OnEvent<'_>,
    ) -> Result<ChatResponse, Error> {
        let response = self.chat(request).await?;
        on_event(StreamEvent::Delta(&response.message.text()));
        Ok(response)
    }
}
