//! The crate's one error type.

use std::time::Duration;

use statestore_core::{IdempotencyKey, SessionId, WriteOutcome};

use crate::Usage;

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

    /// A streamed answer had a chunk that is not a chat completion chunk
    /// (not UTF-8, not JSON, or not the shape of one) on the last attempt
    /// allowed. Such a chunk ends its attempt there, and the attempt is
    /// retried like a stream cut short; the attempts before this one failed
    /// too, in this or another retried way. Transient, like a cut stream.
    #[error("the provider's stream was malformed on the last of {attempts} attempts: {detail}")]
    MalformedStream {
        /// Attempts made.
        attempts: u32,
        /// What was wrong with the last attempt's chunk: where it broke,
        /// never what it said.
        detail: String,
    },

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
    /// same session (the pipeline's retries ran out). Nothing was stored;
    /// the model calls of the discarded attempts were paid for all the
    /// same, and since nothing was written they are in no session's
    /// counters: `usage` is their total.
    #[error("session {id} is busy: {attempts} attempts conflicted with concurrent turns")]
    Busy {
        /// The session, as given.
        id: SessionId,
        /// Attempts made.
        attempts: u32,
        /// Tokens spent by the model calls of every attempt.
        usage: Usage,
    },

    /// The store failed before anything of the turn was written (loading
    /// the window, or refusing the session id).
    #[error(transparent)]
    Store(#[from] statestore_core::Error),

    /// Writing the turn failed. Whether it landed is
    /// [`Error::write_outcome`] (the store's verdict on `source`): when it
    /// is [`WriteOutcome::Unknown`] (a timeout, a dropped connection) or
    /// [`WriteOutcome::Written`], execute again with the same `turn_id`
    /// ([`ExecOptions::turn_id`](crate::ExecOptions::turn_id)): the turn is
    /// then stored at most once, and a retry of a turn that landed returns
    /// it without calling the model.
    #[error("storing turn {turn_id} of session {id} failed: {source}")]
    Save {
        /// The session.
        id: SessionId,
        /// The turn's id: retry with it.
        turn_id: IdempotencyKey,
        /// The store's error.
        #[source]
        source: statestore_core::Error,
    },

    /// The store reports that the turn landed (a retry of it, or the same
    /// turn id run twice at once), but its messages could not be read back:
    /// reading failed (`source`), or they are no longer where the store
    /// says they were written (the history was replaced since). The turn
    /// is stored: retry with the same `turn_id` to read it again.
    #[error("turn {turn_id} of session {id} is stored, but its messages cannot be read back")]
    TurnUnreadable {
        /// The session.
        id: SessionId,
        /// The turn's id.
        turn_id: IdempotencyKey,
        /// The store's error, when reading failed.
        #[source]
        source: Option<statestore_core::Error>,
    },

    /// The turn is stored (the store remembers its turn id), but the
    /// session's history was rewritten since (a `save`: the seed's
    /// trim-by-save, a compaction, an import) and no longer holds its
    /// reply (found by its stamp,
    /// [`TURN_METADATA_KEY`](crate::TURN_METADATA_KEY)), so the reply
    /// cannot be shown. Do not run it again under a new id: it would be
    /// stored twice.
    #[error(
        "turn {turn_id} of session {id} is stored, but the history was rewritten since: \
         its reply can no longer be shown"
    )]
    TurnRewritten {
        /// The session.
        id: SessionId,
        /// The turn's id.
        turn_id: IdempotencyKey,
    },

    /// [`Pipeline::regenerate`](crate::Pipeline::regenerate) or
    /// [`Pipeline::edit`](crate::Pipeline::edit) of a turn the session
    /// does not hold (no stored reply carries that id, or fewer turns are
    /// stored); nothing was written.
    #[error("session {id} holds no {turn}")]
    NoSuchTurn {
        /// The session.
        id: SessionId,
        /// The turn asked for: `turn with id …`, `turn at index …`.
        turn: String,
    },

    /// A retry of a turn that was stored, then taken away by a rewind
    /// ([`Store::rewind`](statestore_core::Store::rewind): the user went
    /// back to before it, to edit or regenerate). The store remembers it,
    /// so it is neither run again nor answered with another turn's reply.
    #[error("turn {turn_id} of session {id} was stored, then rewound away: it is not run again")]
    TurnRewound {
        /// The session.
        id: SessionId,
        /// The turn's id.
        turn_id: IdempotencyKey,
    },

    /// Loading the window failed while retrying a turn whose id the caller
    /// chose ([`ExecOptions::turn_id`](crate::ExecOptions::turn_id)),
    /// before the store could say whether an earlier attempt of the turn
    /// was stored: the outcome of that earlier attempt is still unknown
    /// ([`WriteOutcome::Unknown`]). Retry with the same turn id, never a
    /// new one.
    #[error("turn {turn_id} of session {id}: cannot tell whether it is stored: {source}")]
    Lookup {
        /// The session.
        id: SessionId,
        /// The turn's id: retry with it.
        turn_id: IdempotencyKey,
        /// The store's error.
        #[source]
        source: statestore_core::Error,
    },

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
    /// A short, stable name of the error's kind, in `snake_case`: what
    /// telemetry records as `error.type`. Store failures are named by the
    /// store error's [`kind`](statestore_core::Error::kind) (`timeout`,
    /// `conflict`, …); `write_outcome` on the same span says whether the
    /// turn was written.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ContextLengthExceeded { .. } => "context_length_exceeded",
            Self::Auth { .. } => "auth",
            Self::RateLimited { .. } => "rate_limited",
            Self::Status { .. } => "http_status",
            Self::Timeout { .. } => "timeout",
            Self::Transport(_) => "transport",
            Self::MalformedStream { .. } => "malformed_stream",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Config { .. } => "config",
            Self::Busy { .. } => "busy",
            Self::Store(e) | Self::Save { source: e, .. } | Self::Lookup { source: e, .. } => {
                e.kind()
            }
            Self::TurnUnreadable { .. } => "turn_unreadable",
            Self::TurnRewritten { .. } => "turn_rewritten",
            Self::NoSuchTurn { .. } => "no_such_turn",
            Self::TurnRewound { .. } => "turn_rewound",
            Self::Window(_) => "window",
            Self::Tool { .. } => "tool",
            Self::Rejected(_) => "rejected",
        }
    }

    /// Whether executing again later may succeed (rate limits, timeouts,
    /// unreachable provider or store, 5xx answers, malformed streams, a
    /// busy session).
    ///
    /// How to execute again depends on [`Error::write_outcome`]:
    ///
    /// - [`WriteOutcome::NotWritten`] — every error but the ones below:
    ///   nothing of the turn was stored, so a retry with the same turn id
    ///   or a new one is safe.
    /// - [`WriteOutcome::Unknown`] — [`Error::Save`] with a timeout or a
    ///   dropped connection, and [`Error::Lookup`] (a retry of a turn id
    ///   you chose that failed before the store could say whether an
    ///   earlier attempt landed): the turn may have landed. Retry **with the same
    ///   turn id** ([`Error::turn_id`]); a new id could store the turn twice.
    /// - [`WriteOutcome::Written`] — the turn landed (for example without
    ///   enough replica acknowledgements): a retry with the same turn id
    ///   returns it without calling the model.
    ///
    /// Retrying with the same turn id is right in every case, which is why
    /// the crate docs' retry loop always does it.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Timeout { .. }
            | Self::Transport(_)
            | Self::MalformedStream { .. }
            | Self::Busy { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Store(e)
            | Self::Save { source: e, .. }
            | Self::Lookup { source: e, .. }
            | Self::TurnUnreadable {
                source: Some(e), ..
            } => e.is_transient(),
            _ => false,
        }
    }

    /// What this error says about the turn — this attempt's write and any
    /// earlier attempt's under the same turn id (see
    /// [`Error::is_transient`]): the store's verdict for a failed
    /// [`Error::Save`]; [`WriteOutcome::Written`] for
    /// [`Error::TurnUnreadable`], [`Error::TurnRewritten`] and [`Error::TurnRewound`];
    /// [`WriteOutcome::Unknown`] for [`Error::Lookup`] (a retry of a turn
    /// that failed before the store said whether the turn was stored); and
    /// [`WriteOutcome::NotWritten`] for every other error — they all happen
    /// before the write, and after the store said the turn was not stored
    /// (or, for a turn id the pipeline made, when it cannot have been).
    ///
    /// ```
    /// use std::time::Duration;
    /// use pipeline::Error;
    /// use statestore_core::{IdempotencyKey, SessionId, WriteOutcome};
    ///
    /// let lost = Error::Save {
    ///     id: SessionId::new("s")?,
    ///     turn_id: IdempotencyKey::new("turn-1")?,
    ///     source: statestore_core::Error::Timeout {
    ///         operation: "append",
    ///         after: Duration::from_secs(2),
    ///     },
    /// };
    /// assert_eq!(lost.write_outcome(), WriteOutcome::Unknown);
    /// assert_eq!(lost.turn_id().map(|t| t.as_str()), Some("turn-1"));
    /// assert!(lost.is_transient());
    ///
    /// let refused = Error::Timeout { after: Duration::from_secs(30) };
    /// assert_eq!(refused.write_outcome(), WriteOutcome::NotWritten);
    /// # Ok::<(), statestore_core::Error>(())
    /// ```
    #[must_use]
    pub fn write_outcome(&self) -> WriteOutcome {
        match self {
            Self::Save { source, .. } => source.write_outcome(),
            Self::TurnUnreadable { .. } | Self::TurnRewritten { .. } | Self::TurnRewound { .. } => {
                WriteOutcome::Written
            }
            Self::Lookup { .. } => WriteOutcome::Unknown,
            _ => WriteOutcome::NotWritten,
        }
    }

    /// The id of the turn whose write failed, whose outcome is unknown, or
    /// that cannot be read back — what
    /// to pass to [`ExecOptions::turn_id`](crate::ExecOptions::turn_id)
    /// when retrying a turn whose id the pipeline generated. `None` for
    /// errors that stored nothing.
    #[must_use]
    pub fn turn_id(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::Save { turn_id, .. }
            | Self::TurnUnreadable { turn_id, .. }
            | Self::TurnRewritten { turn_id, .. }
            | Self::TurnRewound { turn_id, .. }
            | Self::Lookup { turn_id, .. } => Some(turn_id),
            _ => None,
        }
    }
}
