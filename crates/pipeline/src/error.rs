//! The crate's one error type.

use std::time::Duration;

/// Everything an execution or a provider call can fail with. Messages never
/// contain API keys or message content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is larger than the model's context window (OpenAI's
    /// `context_length_exceeded`). Lower the window's token budget.
    #[error("the request exceeds the model's context window: {message}")]
    ContextLengthExceeded {
        /// The provider's explanation.
        message: String,
    },

    /// The provider refused the credentials (HTTP 401 or 403).
    #[error("the provider refused the credentials (HTTP {status}): {message}")]
    Auth {
        /// The HTTP status.
        status: u16,
        /// The provider's explanation.
        message: String,
    },

    /// Still rate limited (HTTP 429) after every retry.
    #[error("rate limited by the provider after {attempts} attempts")]
    RateLimited {
        /// Attempts made.
        attempts: u32,
        /// The last `Retry-After` the provider sent.
        retry_after: Option<Duration>,
    },

    /// The provider answered with an error status (after retries for 5xx).
    #[error("the provider answered HTTP {status} after {attempts} attempts: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The provider's explanation.
        message: String,
    },

    /// The provider did not answer in time.
    #[error("the provider did not answer within {after:?}")]
    Timeout {
        /// The configured limit.
        after: Duration,
    },

    /// The provider could not be reached, or its answer broke off (a
    /// connection dropped mid-answer, a stream that ended before it was
    /// complete).
    #[error("cannot reach the provider: {0}")]
    Transport(#[source] statestore_core::BoxError),

    /// The provider's answer is not a chat completion.
    #[error("the provider's response is not valid: {detail}")]
    InvalidResponse {
        /// What was wrong.
        detail: String,
    },

    /// A provider was configured with values it cannot work with (a base
    /// URL that is not `http`/`https`, a missing key for OpenAI's API, …).
    #[error("invalid provider configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },

    /// A turn could not be stored because other turns kept landing on the
    /// same session (the pipeline's retries ran out).
    #[error("session {id} is busy: {attempts} attempts conflicted with concurrent turns")]
    Busy {
        /// The session, as given.
        id: statestore_core::SessionId,
        /// Attempts made.
        attempts: u32,
    },

    /// The store failed.
    #[error(transparent)]
    Store(#[from] statestore_core::Error),

    /// The context window could not be built.
    #[error(transparent)]
    Window(#[from] context_window::Error),

    /// A tool the model called failed; nothing was stored.
    #[error("tool {name:?} failed: {source}")]
    Tool {
        /// The tool's name.
        name: String,
        /// Its error.
        #[source]
        source: statestore_core::BoxError,
    },

    /// A middleware refused the request.
    #[error("rejected by middleware: {0}")]
    Rejected(String),
}

impl Error {
    /// Whether retrying later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Timeout { .. }
            | Self::Transport(_)
            | Self::Busy { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}
