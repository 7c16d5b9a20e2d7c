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
//! [`Message`] (its `content`, a string or null, and its `tool_calls`, whose
//! `arguments` are kept as the exact JSON text the model produced);
//! `usage.prompt_tokens`/`completion_tokens` (zeros when the server sends no
//! usage) and `finish_reason` (via [`FinishReason::from_wire`]; when a server
//! omits it, `tool_calls` if the reply has tool calls, else `stop`). A body
//! that is not JSON or has no choice is [`Error::InvalidResponse`].
//!
//! # Retries and errors
//!
//! Each attempt (sending the request and reading the whole answer) is bounded
//! by the [`timeout`](OpenAiProviderBuilder::timeout); once a streamed
//! answer has started, by the
//! [`stream_idle_timeout`](OpenAiProviderBuilder::stream_idle_timeout)
//! between two pieces instead. These are retried, up to
//! [`max_retries`](OpenAiProviderBuilder::max_retries) times after the
//! first attempt:
//!
//! | outcome | after the last attempt |
//! | --- | --- |
//! | HTTP 429 | [`Error::RateLimited`] (with the last `Retry-After`) |
//! | HTTP 5xx | [`Error::Status`] |
//! | the attempt's timeout | [`Error::Timeout`] |
//! | no connection (refused, reset, DNS) | [`Error::Transport`] |
//! | a stream silent for the idle timeout | [`Error::Timeout`] (with the idle timeout) |
//! | a stream dropped mid-way, or ended before `[DONE]` without a `finish_reason` | [`Error::Transport`] |
//!
//! The delay before retry *n* (1-based) is `retry_base_delay × 2^(n-1)`,
//! scaled by a random factor in `[0.5, 1]` when jitter is on (the default),
//! and never more than [`max_retry_delay`](OpenAiProviderBuilder::max_retry_delay).
//! When the server says how long to wait — `retry-after-ms` (milliseconds)
//! or `Retry-After` (seconds) — that wait is used instead, capped at the same
//! maximum.
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
//! after the last `Restart` is the reply's. An event that is not valid JSON
//! (except an unfinished one where the body ends, which is a cut), or an
//! `error` reported inside the stream, is [`Error::InvalidResponse`] and is
//! not retried, whichever attempt it comes in.
//!
//! Attempts and retries are logged with `tracing` at debug level (attempt,
//! status, delay); neither the key nor any message content is logged.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use statestore_core::{Content, ContentPart, Message, Role, ToolCall};

use crate::{
    ChatRequest, ChatResponse, Error, FinishReason, OnEvent, Provider, StreamEvent, ToolSpec, Usage,
};

/// Where requests go unless configured otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The model used unless configured otherwise.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Longest error message kept from a response body, in characters.
const MAX_MESSAGE_CHARS: usize = 300;
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
    max_retries: u32,
    retry_base_delay: Duration,
    max_retry_delay: Duration,
    jitter: bool,
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
            .field("max_retries", &self.max_retries)
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

/// Configures an [`OpenAiProvider`]; from [`OpenAiProvider::builder`] or
/// [`OpenAiProviderBuilder::from_env`].
#[derive(Clone)]
pub struct OpenAiProviderBuilder {
    base_url: String,
    model: String,
    api_key: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    timeout: Duration,
    stream_idle_timeout: Option<Duration>,
    max_retries: u32,
    retry_base_delay: Duration,
    max_retry_delay: Duration,
    jitter: bool,
    context_tokens: Option<usize>,
}

impl fmt::Debug for OpenAiProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProviderBuilder")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("max_retries", &self.max_retries)
            .field("context_tokens", &self.context_tokens)
            .finish_non_exhaustive()
    }
}

impl Default for OpenAiProviderBuilder {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            api_key: None,
            temperature: None,
            max_tokens: None,
            timeout: Duration::from_secs(60),
            stream_idle_timeout: None,
            max_retries: 2,
            retry_base_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(30),
            jitter: true,
            context_tokens: None,
        }
    }
}

impl OpenAiProviderBuilder {
    /// A builder filled from the environment: `OPENAI_API_KEY` (optional
    /// for servers other than OpenAI's), `OPENAI_BASE_URL` (default
    /// [`DEFAULT_BASE_URL`]) and `OPENAI_MODEL` (default [`DEFAULT_MODEL`]).
    /// Empty variables count as unset.
    #[must_use]
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut builder = Self::default();
        if let Some(key) = get("OPENAI_API_KEY") {
            builder = builder.api_key(key.trim());
        }
        if let Some(url) = get("OPENAI_BASE_URL") {
            builder = builder.base_url(url.trim());
        }
        if let Some(model) = get("OPENAI_MODEL") {
            builder = builder.model(model.trim());
        }
        builder
    }

    /// The model's name, e.g. `"gpt-4o-mini"` or `"llama3.1:8b"`. Default
    /// [`DEFAULT_MODEL`].
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// The API key, sent as `Authorization: Bearer <key>`. An empty key
    /// means none (fine for local servers; OpenAI's API requires one).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.api_key = (!key.is_empty()).then_some(key);
        self
    }

    /// The API's base URL, up to and excluding `/chat/completions`, e.g.
    /// `http://localhost:11434/v1` for Ollama. Default [`DEFAULT_BASE_URL`].
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The temperature used when a request has none. Default: none sent.
    #[must_use]
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The `max_tokens` used when a request has none. Default: none sent.
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// The limit for one attempt: sending the request and reading the whole
    /// answer (when streaming: until the answer starts; then the
    /// [`stream_idle_timeout`](Self::stream_idle_timeout) applies). Default
    /// 60 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// When streaming, the longest the answer may go without sending a byte
    /// once it has started (the time to the first token counts). A stream
    /// that stalls that long is abandoned and retried. There is no limit on
    /// a stream's total length as long as it keeps sending. Default: the
    /// [`timeout`](Self::timeout).
    #[must_use]
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = Some(timeout);
        self
    }

    /// How many times a failed attempt (429, 5xx, timeout, no connection, a
    /// stream that broke off) is retried; `0` makes one attempt only.
    /// Default 2.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The delay before the first retry, doubled for each further one.
    /// Default 500 ms.
    #[must_use]
    pub fn retry_base_delay(mut self, delay: Duration) -> Self {
        self.retry_base_delay = delay;
        self
    }

    /// The longest wait between two attempts, whether from the backoff or
    /// from the server's `Retry-After`. Default 30 s.
    #[must_use]
    pub fn max_retry_delay(mut self, delay: Duration) -> Self {
        self.max_retry_delay = delay;
        self
    }

    /// Whether backoff delays are scaled by a random factor in `[0.5, 1]`,
    /// so that many clients do not retry in lockstep. Default `true`.
    #[must_use]
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The model's context size in tokens, reported by
    /// [`Provider::context_tokens`]. Default: unknown.
    #[must_use]
    pub fn context_tokens(mut self, tokens: usize) -> Self {
        self.context_tokens = Some(tokens);
        self
    }

    /// The provider.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the base URL is not an `http`/`https` URL, the
    /// key cannot be sent in a header, the temperature is not a finite
    /// number, or no key is set for `api.openai.com`;
    /// [`Error::Transport`] when the HTTP client cannot be created.
    pub fn build(self) -> Result<OpenAiProvider, Error> {
        let config = |detail: &str| Error::Config {
            detail: detail.to_owned(),
        };
        let base_url = self.base_url.trim().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base_url)
            .map_err(|e| config(&format!("the base URL is not valid: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config("the base URL must be http:// or https://"));
        }
        if self.model.trim().is_empty() {
            return Err(config("the model name is empty"));
        }
        if self.temperature.is_some_and(|t| !t.is_finite()) {
            return Err(config("the temperature is not a finite number"));
        }
        let api_key = match self.api_key {
            Some(key) => {
                let mut header = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| config("the API key contains characters a header cannot carry"))?;
                header.set_sensitive(true);
                Some(ApiKey { key, header })
            }
            None if url.host_str() == Some("api.openai.com") => {
                return Err(config(
                    "an API key is required for api.openai.com (set OPENAI_API_KEY)",
                ));
            }
            None => None,
        };

        // reqwest is built with rustls but without choosing its crypto:
        // install ring's process-wide unless the application chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("statestore-pipeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport(Box::new(e)))?;

        Ok(OpenAiProvider {
            client,
            endpoint: format!("{base_url}/chat/completions"),
            base_url,
            model: self.model,
            api_key,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            timeout: self.timeout,
            stream_idle_timeout: self.stream_idle_timeout.unwrap_or(self.timeout),
            max_retries: self.max_retries,
            retry_base_delay: self.retry_base_delay,
            max_retry_delay: self.max_retry_delay,
            jitter: self.jitter,
            context_tokens: self.context_tokens,
        })
    }
}

impl OpenAiProvider {
    /// A builder with the defaults: [`DEFAULT_BASE_URL`], [`DEFAULT_MODEL`],
    /// no key, no temperature or `max_tokens` default, 60 s per attempt
    /// (and between two pieces of a stream), 2 retries from 500 ms with
    /// jitter, waits capped at 30 s.
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

    fn body(&self, request: &ChatRequest, stream: bool) -> Result<Vec<u8>, Error> {
        let wire = WireRequest {
            model: &self.model,
            messages: request
                .messages
                .iter()
                .map(|m| WireMessage::new(m))
                .collect(),
            tools: request.tools.iter().map(WireTool::new).collect(),
            temperature: request.temperature.or(self.temperature),
            max_tokens: request.max_tokens.or(self.max_tokens),
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        };
        serde_json::to_vec(&wire).map_err(|e| Error::InvalidResponse {
            detail: format!("the request could not be encoded: {e}"),
        })
    }

    fn headers(&self, stream: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if stream {
            headers.insert(
                reqwest::header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        if let Some(key) = &self.api_key {
            headers.insert(AUTHORIZATION, key.header.clone());
        }
        headers
    }

    /// One attempt: send, and read the body unless streaming.
    async fn attempt(&self, body: &[u8], stream: bool, attempt: u32) -> Result<Answer, Failure> {
        let exchange = async {
            let response = self
                .client
                .post(&self.endpoint)
                .headers(self.headers(stream))
                .body(body.to_vec())
                .send()
                .await
                .map_err(Failure::Transport)?;
            let status = response.status();
            tracing::debug!(
                attempt,
                status = status.as_u16(),
                stream,
                model = %self.model,
                "chat completion answered"
            );
            if status.is_success() {
                if stream {
                    return Ok(Answer::Stream(response));
                }
                let bytes = response.bytes().await.map_err(Failure::Transport)?;
                return Ok(Answer::Body(bytes.to_vec()));
            }
            let retry_after = retry_after(response.headers());
            // A body that cannot be read still leaves the status to report.
            let body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            Err(Failure::Status {
                status: status.as_u16(),
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// Attempts until an answer, a final error or the last retry.
    async fn send(&self, body: &[u8], stream: bool) -> Result<Answer, Error> {
        let mut attempt: u32 = 1;
        loop {
            let failure = match self.attempt(body, stream, attempt).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let delay = self.after_failure(failure, attempt)?;
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// After attempt `attempt` (1-based) failed: the wait before the next
    /// one, or the error to return when `failure` is not retried or no
    /// attempts are left.
    fn after_failure(&self, failure: Failure, attempt: u32) -> Result<Duration, Error> {
        let retry_after = match &failure {
            Failure::Status {
                status,
                retry_after,
                ..
            } if *status == 429 || (500..=599).contains(status) => *retry_after,
            Failure::Status { .. } | Failure::Invalid(_) => {
                tracing::debug!(
                    attempt,
                    outcome = %failure.describe(),
                    "chat completion failed; not retried"
                );
                return Err(self.final_error(failure, attempt));
            }
            Failure::Timeout | Failure::Transport(_) | Failure::Stalled | Failure::CutShort(_) => {
                None
            }
        };
        if attempt >= self.max_retries.saturating_add(1) {
            tracing::debug!(
                attempt,
                outcome = %failure.describe(),
                "chat completion failed; no retries left"
            );
            return Err(self.final_error(failure, attempt));
        }
        let delay = self.delay(attempt, retry_after);
        tracing::debug!(
            attempt,
            outcome = %failure.describe(),
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "chat completion attempt failed; retrying"
        );
        Ok(delay)
    }

    /// The wait before the retry that follows attempt `attempt` (1-based).
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_delay);
        }
        let exponent = attempt.saturating_sub(1).min(31);
        let backoff = self
            .retry_base_delay
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max_retry_delay);
        if self.jitter {
            backoff.mul_f64(jitter_factor())
        } else {
            backoff
        }
    }

    fn final_error(&self, failure: Failure, attempts: u32) -> Error {
        match failure {
            Failure::Timeout => Error::Timeout {
                after: self.timeout,
            },
            Failure::Transport(e) => Error::Transport(Box::new(e)),
            Failure::Stalled => Error::Timeout {
                after: self.stream_idle_timeout,
            },
            Failure::CutShort(detail) => Error::Transport(Box::new(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                detail,
            ))),
            Failure::Invalid(e) => e,
            Failure::Status {
                status,
                retry_after,
                body,
            } => {
                let info = ErrorInfo::from_body(status, &body);
                let message = self.redact(info.message);
                match status {
                    429 => Error::RateLimited {
                        attempts,
                        retry_after,
                    },
                    400 if info.context_length => Error::ContextLengthExceeded { message },
                    401 | 403 => Error::Auth { status, message },
                    _ => Error::Status {
                        status,
                        attempts,
                        message,
                    },
                }
            }
        }
    }

    fn redact(&self, message: String) -> String {
        match &self.api_key {
            Some(key) if message.contains(&key.key) => message.replace(&key.key, REDACTED),
            _ => message,
        }
    }

    /// One streaming attempt: send, then read the answer to its end.
    /// `delivered` is set once text has gone to `on_event`.
    async fn stream_attempt(
        &self,
        body: &[u8],
        attempt: u32,
        on_event: &mut OnEvent<'_>,
        delivered: &mut bool,
    ) -> Result<ChatResponse, Failure> {
        let response = match self.attempt(body, true, attempt).await? {
            Answer::Stream(response) => response,
            Answer::Body(bytes) => {
                return parse_response(&bytes, |m| self.redact(m)).map_err(Failure::Invalid);
            }
        };
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("text/event-stream"));
        if !is_sse {
            // A server that ignored `"stream": true` and answered in one piece.
            let bytes = tokio::time::timeout(self.timeout, response.bytes())
                .await
                .map_err(|_| Failure::Timeout)?
                .map_err(Failure::Transport)?;
            let reply = parse_response(&bytes, |m| self.redact(m)).map_err(Failure::Invalid)?;
            let text = reply.message.text();
            if !text.is_empty() {
                *delivered = true;
                on_event(StreamEvent::Delta(&text));
            }
            return Ok(reply);
        }
        self.read_stream(response, on_event, delivered).await
    }

    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        on_event: &mut OnEvent<'_>,
        delivered: &mut bool,
    ) -> Result<ChatResponse, Failure> {
        let mut decoder = SseDecoder::default();
        let mut state = StreamState::default();
        let redact = |m| self.redact(m);
        loop {
            let chunk = tokio::time::timeout(self.stream_idle_timeout, response.chunk())
                .await
                .map_err(|_| Failure::Stalled)?
                .map_err(Failure::Transport)?;
            let Some(bytes) = chunk else { break };
            for data in decoder.feed(&bytes).map_err(Failure::Invalid)? {
                let done = state
                    .apply(&data, on_event, delivered, redact)
                    .map_err(Failure::Invalid)?;
                if done {
                    return Ok(state.finish());
                }
            }
        }
        // The body ended. What is left without its closing blank line is
        // used when it is whole (some servers omit the last newline); when
        // it is not, the stream was cut in the middle of an event.
        let rest = decoder
            .finish()
            .map_err(|_| Failure::CutShort("the stream ended in the middle of an event"))?;
        for data in rest {
            let data = data.trim();
            if data != "[DONE]" && serde_json::from_str::<WireChunk>(data).is_err() {
                return Err(Failure::CutShort(
                    "the stream ended in the middle of an event",
                ));
            }
            let done = state
                .apply(data, on_event, delivered, redact)
                .map_err(Failure::Invalid)?;
            if done {
                return Ok(state.finish());
            }
        }
        if state.finish_reason.is_none() {
            return Err(Failure::CutShort(
                "the stream ended before [DONE] and before a finish_reason",
            ));
        }
        Ok(state.finish())
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    fn context_tokens(&self) -> Option<usize> {
        self.context_tokens
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let body = self.body(request, false)?;
        match self.send(&body, false).await? {
            Answer::Body(bytes) => parse_response(&bytes, |m| self.redact(m)),
            // Not produced when not streaming.
            Answer::Stream(response) => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| Error::Transport(Box::new(e)))?;
                parse_response(&bytes, |m| self.redact(m))
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

/// What a successful attempt produced.
enum Answer {
    /// The whole body of a non-streaming call.
    Body(Vec<u8>),
    /// A streaming response whose body is still to be read.
    Stream(reqwest::Response),
}

/// Why an attempt failed.
enum Failure {
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    Timeout,
    Transport(reqwest::Error),
    /// A stream sent nothing for the idle timeout.
    Stalled,
    /// A stream ended before it was complete.
    CutShort(&'static str),
    /// An answer that is not a chat completion, or a stream that reported
    /// an error: refused, not retried.
    Invalid(Error),
}

impl Failure {
    /// For logs: no body, no key.
    fn describe(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("HTTP {status}"),
            Self::Timeout => "timeout".to_owned(),
            Self::Transport(e) if e.is_connect() => "connection failed".to_owned(),
            Self::Transport(_) => "transport error".to_owned(),
            Self::Stalled => "stream stalled".to_owned(),
            Self::CutShort(_) => "stream cut short".to_owned(),
            Self::Invalid(_) => "invalid response".to_owned(),
        }
    }
}

/// `retry-after-ms` (OpenAI's, in milliseconds) or `Retry-After` (seconds,
/// possibly fractional). HTTP dates are ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let value = headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    number("retry-after").and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// A factor in `[0.5, 1]`, random enough to spread retries apart.
fn jitter_factor() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    0.5 + f64::from(u32::try_from(bits % 1_001).unwrap_or(0)) / 2_000.0
}

/// Cuts `text` to [`MAX_MESSAGE_CHARS`] characters.
fn truncate(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.char_indices();
    match chars.nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// What an error body says.
struct ErrorInfo {
    message: String,
    context_length: bool,
}

impl ErrorInfo {
    fn from_body(status: u16, body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<WireErrorBody>(body)
            .ok()
            .and_then(|b| b.error);
        let (message, code, kind) = match parsed {
            Some(error) => (
                error.message.and_then(|m| match m {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string()),
                }),
                error.code.and_then(|c| match c {
                    serde_json::Value::String(s) => Some(s),
                    _ => None,
                }),
                error.kind,
            ),
            None => (None, None, None),
        };
        let message = match message {
            Some(m) if !m.trim().is_empty() => m,
            _ => {
                let text = String::from_utf8_lossy(body);
                if text.trim().is_empty()
                    || serde_json::from_slice::<serde_json::Value>(body).is_ok()
                {
                    reqwest::StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("no explanation")
                        .to_owned()
                } else {
                    text.into_owned()
                }
            }
        };
        let context_length = code.as_deref() == Some("context_length_exceeded")
            || kind.as_deref() == Some("exceed_context_size_error")
            || message
                .to_ascii_lowercase()
                .contains("maximum context length");
        Self {
            message: truncate(&message),
            context_length,
        }
    }
}

fn parse_response(bytes: &[u8], redact: impl Fn(String) -> String) -> Result<ChatResponse, Error> {
    let wire: WireResponse = serde_json::from_slice(bytes).map_err(|e| Error::InvalidResponse {
        detail: format!("not a chat completion: {e}"),
    })?;
    let Some(choice) = wire.choices.into_iter().next() else {
        let detail = match wire.error.and_then(|e| e.message) {
            Some(serde_json::Value::String(m)) => {
                format!("no choices; the server said: {}", redact(truncate(&m)))
            }
            _ => "the response has no choices".to_owned(),
        };
        return Err(Error::InvalidResponse { detail });
    };
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall::new(c.id, c.function.name, c.function.arguments))
        .collect();
    let finish_reason = finish_reason(choice.finish_reason.as_deref(), !tool_calls.is_empty());
    let content = choice.message.content.unwrap_or_default();
    let usage = wire.usage.map(Usage::from).unwrap_or_default();
    Ok(ChatResponse {
        message: Message::assistant(content).with_tool_calls(tool_calls),
        usage,
        finish_reason,
    })
}

fn finish_reason(wire: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match wire {
        Some(s) if !s.is_empty() => FinishReason::from_wire(s),
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Splits an SSE byte stream into the `data` of its events.
#[derive(Default)]
struct SseDecoder {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, Error> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            self.line(&line, &mut events)?;
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<String>, Error> {
        let mut events = Vec::new();
        let rest = std::mem::take(&mut self.buffer);
        if !rest.is_empty() {
            self.line(&rest, &mut events)?;
        }
        events.extend(self.data.take());
        Ok(events)
    }

    fn line(&mut self, raw: &[u8], events: &mut Vec<String>) -> Result<(), Error> {
        let line = std::str::from_utf8(raw).map_err(|_| Error::InvalidResponse {
            detail: "the event stream is not UTF-8".to_owned(),
        })?;
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            events.extend(self.data.take());
        } else if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        // Comments (`:`) and the `event`, `id` and `retry` fields carry
        // nothing a chat completion needs.
        Ok(())
    }
}

/// A reply being assembled from stream chunks.
#[derive(Default)]
struct StreamState {
    content: String,
    tool_calls: BTreeMap<u32, PartialToolCall>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
}

#[derive(Default)]
struct PartialToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl StreamState {
    /// Applies one event's data; `true` at `[DONE]`.
    fn apply(
        &mut self,
        data: &str,
        on_event: &mut OnEvent<'_>,
        delivered: &mut bool,
        redact: impl Fn(String) -> String,
    ) -> Result<bool, Error> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: WireChunk = serde_json::from_str(data).map_err(|e| Error::InvalidResponse {
            detail: format!("a stream chunk is not valid: {e}"),
        })?;
        if let Some(error) = chunk.error {
            let message = match error.message {
                Some(serde_json::Value::String(m)) => redact(truncate(&m)),
                _ => "no explanation".to_owned(),
            };
            return Err(Error::InvalidResponse {
                detail: format!("the stream reported an error: {message}"),
            });
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        for choice in chunk
            .choices
            .into_iter()
            .filter(|c| c.index.unwrap_or(0) == 0)
        {
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                *delivered = true;
                on_event(StreamEvent::Delta(&text));
                self.content.push_str(&text);
            }
            for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let index = match call.index {
                    Some(index) => index,
                    // Servers that omit the index: a new id starts a new
                    // call, anything else continues the last one.
                    None => {
                        let last = self.tool_calls.keys().next_back().copied();
                        let known = call
                            .id
                            .as_deref()
                            .is_some_and(|id| self.tool_calls.values().any(|c| c.id == id));
                        match (last, call.id.is_some() && !known) {
                            (Some(last), false) => last,
                            (Some(last), true) => last + 1,
                            (None, _) => u32::try_from(position).unwrap_or(u32::MAX),
                        }
                    }
                };
                let slot = self.tool_calls.entry(index).or_default();
                if let Some(id) = call.id.filter(|id| !id.is_empty()) {
                    slot.id = id;
                }
                if let Some(function) = call.function {
                    if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                        slot.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        slot.arguments.push_str(&arguments);
                    }
                }
            }
        }
        Ok(false)
    }

    fn finish(self) -> ChatResponse {
        let tool_calls: Vec<ToolCall> = self
            .tool_calls
            .into_values()
            .map(|c| ToolCall::new(c.id, c.name, c.arguments))
            .collect();
        let finish_reason = finish_reason(self.finish_reason.as_deref(), !tool_calls.is_empty());
        ChatResponse {
            message: Message::assistant(self.content).with_tool_calls(tool_calls),
            usage: self.usage.unwrap_or_default(),
            finish_reason,
        }
    }
}

// ---- the wire format: requests ----

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `None` is sent as `null` (an assistant message with only tool calls).
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    fn new(message: &'a Message) -> Self {
        let content = if message.role == Role::Assistant
            && !message.tool_calls.is_empty()
            && message.content.is_empty()
        {
            None
        } else {
            Some(WireContent::new(&message.content))
        };
        Self {
            role: message.role.as_str(),
            content,
            name: message.name.as_deref(),
            tool_calls: message
                .tool_calls
                .iter()
                .map(|c| WireToolCall {
                    id: &c.id,
                    kind: "function",
                    function: WireFunctionCall {
                        name: &c.name,
                        arguments: &c.arguments,
                    },
                })
                .collect(),
            tool_call_id: message.tool_call_id.as_deref(),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(Vec<WirePart<'a>>),
}

impl<'a> WireContent<'a> {
    fn new(content: &'a Content) -> Self {
        match content {
            Content::Text(text) => Self::Text(text),
            Content::Parts(parts) => Self::Parts(parts.iter().map(WirePart::new).collect()),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    Text {
        text: &'a str,
    },
    ImageUrl {
        image_url: WireImageUrl<'a>,
    },
    /// A part kind added to [`ContentPart`] after this was written: sent as
    /// the message type serializes it.
    #[serde(untagged)]
    Other(&'a ContentPart),
}

impl<'a> WirePart<'a> {
    fn new(part: &'a ContentPart) -> Self {
        match part {
            ContentPart::Text { text } => Self::Text { text },
            ContentPart::ImageUrl { image_url } => Self::ImageUrl {
                image_url: WireImageUrl {
                    url: &image_url.url,
                    detail: image_url.detail.as_deref(),
                },
            },
            other => Self::Other(other),
        }
    }
}

#[derive(Serialize)]
struct WireImageUrl<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

impl<'a> WireTool<'a> {
    fn new(tool: &'a ToolSpec) -> Self {
        Self {
            kind: "function",
            function: WireFunction {
                name: &tool.name,
                description: &tool.description,
                parameters: &tool.parameters,
            },
        }
    }
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

// ---- the wire format: responses ----

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireReplyMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireReplyMessage {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<WireReplyToolCall>>,
}

#[derive(Deserialize)]
struct WireReplyToolCall {
    id: String,
    function: WireReplyFunction,
}

#[derive(Deserialize)]
struct WireReplyFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct WireErrorBody {
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireDeltaToolCall>>,
}

#[derive(Deserialize)]
struct WireDeltaToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireDeltaFunction>,
}

#[derive(Deserialize)]
struct WireDeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> OpenAiProviderBuilder {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OpenAiProviderBuilder::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn from_env_reads_key_url_and_model() {
        let p = lookup(&[
            ("OPENAI_API_KEY", "sk-env"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"),
            ("OPENAI_MODEL", "llama3.1"),
        ])
        .build()
        .unwrap();
        assert_eq!(p.base_url(), "http://127.0.0.1:11434/v1");
        assert_eq!(p.endpoint, "http://127.0.0.1:11434/v1/chat/completions");
        assert_eq!(p.model(), "llama3.1");
        assert_eq!(p.api_key.as_ref().unwrap().key, "sk-env");
    }

    #[test]
    fn from_env_defaults_and_requires_a_key_for_openai() {
        let err = lookup(&[]).build().unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        let p = lookup(&[("OPENAI_API_KEY", "sk-env"), ("OPENAI_MODEL", "")])
            .build()
            .unwrap();
        assert_eq!(p.base_url(), DEFAULT_BASE_URL);
        assert_eq!(p.model(), DEFAULT_MODEL);
        // A local server needs no key.
        let p = lookup(&[("OPENAI_BASE_URL", "http://localhost:8000/v1")])
            .build()
            .unwrap();
        assert!(p.api_key.is_none());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = OpenAiProvider::builder()
            .base_url("http://127.0.0.1:1/v1")
            .retry_base_delay(Duration::from_millis(100))
            .max_retry_delay(Duration::from_millis(350))
            .jitter(false)
            .build()
            .unwrap();
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(p.delay(3, None), Duration::from_millis(350));
        assert_eq!(p.delay(40, None), Duration::from_millis(350));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(9))),
            Duration::from_millis(350)
        );
        assert_eq!(p.delay(3, Some(Duration::ZERO)), Duration::ZERO);
        let jittered = OpenAiProvider::builder()
            .base_url("http://127.0.0.1:1/v1")
            .retry_base_delay(Duration::from_millis(100))
            .build()
            .unwrap();
        for _ in 0..100 {
            let d = jittered.delay(1, None);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        h.insert("retry-after-ms", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn truncates_on_character_boundaries() {
        let long = "é".repeat(400);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn sse_decoder_joins_lines_split_anywhere() {
        let stream = b": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata:[DONE]";
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            let mut d = SseDecoder::default();
            let mut events = d.feed(a).unwrap();
            events.extend(d.feed(b).unwrap());
            events.extend(d.finish().unwrap());
            assert_eq!(
                events,
                ["{\"a\":1}", "line1\nline2", "[DONE]"],
                "split at {split}"
            );
        }
    }
}
