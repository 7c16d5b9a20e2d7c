//! [`OpenAiProvider`]: any OpenAI-compatible Chat Completions endpoint
//! (OpenAI, Ollama, vLLM, the llama.cpp server, …) over HTTP(S).
//!
//! ```no_run
//! use std::time::Duration;
//! use pipeline::OpenAiProvider;
//!
//! # fn main() -> Result<(), pipeline::Error> {
//! // The seed's `openai.NewProvider("openai", "gpt-4o-mini", "",
//! //     ProviderDefaults{Temperature: 0.7, MaxTokens: 2000}, false)`:
//! let provider = OpenAiProvider::builder()
//!     .model("gpt-4o-mini")
//!     .api_key(std::env::var("OPENAI_API_KEY").unwrap_or_default())
//!     .temperature(0.7)
//!     .max_tokens(2000)
//!     .timeout(Duration::from_secs(60))
//!     .max_retries(2)
//!     .context_tokens(128_000)
//!     .build()?;
//!
//! // Or from `OPENAI_API_KEY`, `OPENAI_BASE_URL` and `OPENAI_MODEL`:
//! let local = OpenAiProvider::from_env()?;
//! # let _ = (provider, local);
//! # Ok(()) }
//! ```
//!
//! # Wire format
//!
//! Every call is one `POST {base_url}/chat/completions` with a JSON body
//! written field by field from our types, so nothing internal (a message's
//! `metadata`, `token_count` or `timestamp`) ever leaves the process:
//!
//! - `model`; `messages`, each with its `role` and its `content` — a JSON
//!   string for plain text, an array of `{"type":"text","text":…}` and
//!   `{"type":"image_url","image_url":{"url":…,"detail":…}}` parts for
//!   multi-part content; `name` when set; an assistant message's
//!   `tool_calls` as `[{"id","type":"function","function":{"name","arguments"}}]`
//!   (with `"content": null` when it has no text, which is what OpenAI
//!   expects); a tool message's `tool_call_id`.
//! - `tools` as `[{"type":"function","function":{"name","description","parameters"}}]`,
//!   left out when there are none (some servers reject an empty array).
//! - `temperature` and `max_tokens`: the request's, else the provider's
//!   defaults, else left out so the server's own defaults apply.
//! - Streaming adds `"stream": true` and `"stream_options": {"include_usage": true}`
//!   so the final chunk carries the usage.
//!
//! The `Authorization: Bearer …` header is sent only when a key is set
//! (local servers usually need none), and it is marked sensitive. The key is
//! never written to `Debug` output, to an error, or to a log event; an error
//! message from a server that echoes it back has it replaced with
//! `<redacted>`.
//!
//! The reply's `choices[0].message` becomes an assistant
//! [`Message`](statestore_core::Message) (its `content`, a string or null, and its `tool_calls`, whose
//! `arguments` are kept as the exact JSON text the model produced);
//! `usage.prompt_tokens`/`completion_tokens` (zeros when the server sends no
//! usage) and `finish_reason` (via
//! [`FinishReason::from_wire`](crate::FinishReason::from_wire); when a
//! server omits it, `tool_calls` if the reply has tool calls, else `stop`).
//! A body that is not JSON or has no choice is [`Error::InvalidResponse`].
//!
//! # Retries and errors
//!
//! Each attempt (sending the request and reading the whole answer) is bounded
//! by the [`timeout`](OpenAiProviderBuilder::timeout); once a streamed
//! answer has started, by the
//! [`stream_idle_timeout`](OpenAiProviderBuilder::stream_idle_timeout)
//! between two pieces instead. These are retried, up to
//! [`max_retries`](RetryPolicy::max_retries) times after the first attempt
//! (the retry settings are one [`RetryPolicy`], set with
//! [`OpenAiProviderBuilder::retry`]):
//!
//! | outcome | after the last attempt |
//! | --- | --- |
//! | HTTP 429 | [`Error::RateLimited`] (with the last `Retry-After`) |
//! | HTTP 5xx | [`Error::Status`] |
//! | the attempt's timeout | [`Error::Timeout`] |
//! | no connection (refused, reset, DNS) | [`Error::Transport`] |
//! | a stream silent for the idle timeout | [`Error::Timeout`] (with the idle timeout) |
//! | a stream dropped mid-way, or ended before `[DONE]` without a `finish_reason` | [`Error::Transport`] |
//! | a stream chunk that is not a chat completion chunk | [`Error::MalformedStream`] |
//! | an `error` event in a stream whose `error.code` is 429 or 5xx | as that HTTP status: [`Error::RateLimited`], [`Error::Status`] |
//!
//! The delay before retry *n* (1-based) is `initial_backoff × 2^(n-1)`,
//! never more than [`max_backoff`](RetryPolicy::max_backoff), scaled by a
//! random factor in `[0.5, 1]` when [`jitter`](RetryPolicy::jitter) is on
//! (the default; [`RetryPolicy::random_source`] replaces the randomness,
//! e.g. to make the delays exact in a test). When the server says how long
//! to wait — `retry-after-ms` (milliseconds) or `Retry-After` (seconds) —
//! that wait is used instead, capped at the same maximum.
//!
//! Not retried: HTTP 400 whose `error.code` is `context_length_exceeded`
//! (also recognised: llama.cpp's `exceed_context_size_error` type and a
//! message mentioning the "maximum context length", as vLLM words it) is
//! [`Error::ContextLengthExceeded`]; 401 and 403 are [`Error::Auth`]; any
//! other status is [`Error::Status`] after one attempt. Redirects are not
//! followed. Error messages are the body's `error.message` when there is
//! one (else the body's text, else the status's reason), cut to 300
//! characters.
//!
//! Streaming retries with the same policy and the same attempt budget, also
//! after the stream has started: a stream that is dropped, stalls or ends
//! before `[DONE]` without a `finish_reason` is abandoned — nothing of it is
//! returned — and the request is sent again. A stream that ends without
//! `[DONE]` but after a `finish_reason` is complete. When the abandoned
//! stream had already delivered text to the callback, the callback gets
//! [`StreamEvent::Restart`] before the retry: the text shown so far is void
//! and the next [`StreamEvent::Delta`]s start the reply again, so the text
//! after the last `Restart` is the reply's.
//!
//! A malformed chunk — a line that is not UTF-8, an event whose data is
//! not JSON, or JSON that is not a chunk (not an object with `choices`,
//! `usage` or `error`, or a field of the wrong type) — ends the attempt
//! there: nothing after it is read, the connection is dropped, and the
//! attempt is retried like a stream cut at that point (so after a
//! `finish_reason` the reply is complete). Its error says where the chunk
//! broke, never what it said.
//!
//! An `error` event (`{"error": {...}}`) also ends the attempt. It is
//! retried only when its `error.code` is a status worth retrying (429 or
//! 5xx, as a number or a string of digits, as vLLM, llama.cpp and
//! OpenRouter send it), with the same budget and the error of that status
//! at the end. Any other error event — OpenAI's own carry no status — is
//! [`Error::InvalidResponse`] and is not retried, whichever attempt it
//! comes in: the server answered, and said the request failed, possibly
//! after it was paid for.
//!
//! Attempts and retries are logged with `tracing` at debug level (attempt,
//! status, delay); neither the key nor any message content is logged.

// Where each part lives: the builder and its checks; one attempt over HTTP
// and the retry loop around it; when to retry and how long to wait; why an
// attempt failed and the error it becomes; reading a streamed answer; the
// JSON sent and received.
mod builder;
mod failure;
mod retry;
mod sse;
mod transport;
mod wire;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderValue;

use crate::{ChatRequest, ChatResponse, Error, OnEvent, Provider, StreamEvent};
use transport::Answer;

pub use builder::OpenAiProviderBuilder;
pub use retry::RetryPolicy;

/// Where requests go unless configured otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The model used unless configured otherwise.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// What replaces the API key wherever it would otherwise be shown.
const REDACTED: &str = "<redacted>";

/// A chat model behind an OpenAI-compatible Chat Completions endpoint.
///
/// Cheap to share: wrap it in an `Arc` (the HTTP connection pool is inside).
/// See the [module documentation](self) for the wire format and the retry
/// policy.
#[derive(Clone)]
pub struct OpenAiProvider {
    client: reqwest::Client,
    endpoint: String,
    base_url: String,
    model: String,
    api_key: Option<ApiKey>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    timeout: Duration,
    stream_idle_timeout: Duration,
    retry: RetryPolicy,
    context_tokens: Option<usize>,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("retry", &self.retry)
            .field("context_tokens", &self.context_tokens)
            .finish_non_exhaustive()
    }
}

/// The API key and the `Authorization` header made from it. Its `Debug`
/// shows neither.
#[derive(Clone)]
struct ApiKey {
    key: String,
    header: HeaderValue,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl OpenAiProvider {
    /// A builder with the defaults: [`DEFAULT_BASE_URL`], [`DEFAULT_MODEL`],
    /// no key, no temperature or `max_tokens` default, 60 s per attempt
    /// (and between two pieces of a stream), 2 retries from 500 ms with
    /// jitter, waits capped at 30 s ([`RetryPolicy::default`]).
    #[must_use]
    pub fn builder() -> OpenAiProviderBuilder {
        OpenAiProviderBuilder::default()
    }

    /// A provider from `OPENAI_API_KEY`, `OPENAI_BASE_URL` and
    /// `OPENAI_MODEL`; see [`OpenAiProviderBuilder::from_env`] to adjust
    /// more before building.
    ///
    /// # Errors
    ///
    /// As [`OpenAiProviderBuilder::build`]; notably [`Error::Config`] when
    /// `OPENAI_API_KEY` is unset and `OPENAI_BASE_URL` points at OpenAI.
    pub fn from_env() -> Result<Self, Error> {
        OpenAiProviderBuilder::from_env().build()
    }

    /// The base URL requests go to (without `/chat/completions`).
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The model's name.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The retry policy.
    #[must_use]
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    fn model(&self) -> Option<&str> {
        Some(&self.model)
    }

    fn context_tokens(&self) -> Option<usize> {
        self.context_tokens
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let body = self.body(request, false)?;
        match self.send(&body, false).await? {
            Answer::Body(bytes) => wire::parse_response(&bytes, |m| self.redact(m)),
            // Not produced when not streaming.
            Answer::Stream(response) => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| Error::Transport(Box::new(e)))?;
                wire::parse_response(&bytes, |m| self.redact(m))
            }
        }
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        on_event: &mut OnEvent<'_>,
    ) -> Result<ChatResponse, Error> {
        let body = self.body(request, true)?;
        let mut attempt: u32 = 1;
        loop {
            let mut delivered = false;
            let failure = match self
                .stream_attempt(&body, attempt, on_event, &mut delivered)
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            let delay = self.after_failure(failure, attempt)?;
            if delivered {
                // The text shown so far belongs to an answer that will not
                // be used: the retried one starts from scratch.
                on_event(StreamEvent::Restart);
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}
