//! Why an attempt failed, and the [`Error`] that becomes once it is not
//! retried: the status mapping, and what an error body says — cut to
//! [`MAX_MESSAGE_CHARS`] and with the API key redacted.

use std::time::Duration;

use super::wire::WireErrorBody;
use super::{OpenAiProvider, REDACTED};
use crate::Error;

/// Longest error message kept from a response body, in characters.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;

/// Why an attempt failed.
pub(super) enum Failure {
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
    /// A stream chunk that is not a chat completion chunk: the attempt ends
    /// there and is retried like a stream cut short. The detail says where
    /// the chunk broke, never what it said.
    Malformed(String),
    /// A stream reported an error whose status (`error.code`) is 429 or
    /// 5xx: retried like that HTTP status. `body` is the event's data,
    /// which has the shape of an error body.
    ErrorEvent {
        status: u16,
        body: Vec<u8>,
    },
    /// An answer that is not a chat completion, or a stream that reported
    /// an error with no retryable status: refused, not retried.
    Invalid(Error),
}

impl Failure {
    /// Why the attempt is retried, as telemetry's
    /// `statestore.retry.cause` names it.
    pub(super) fn cause(&self) -> &'static str {
        match self {
            Self::Status { status: 429, .. } | Self::ErrorEvent { status: 429, .. } => {
                "rate_limited"
            }
            Self::Status { .. } | Self::ErrorEvent { .. } => "server_error",
            Self::Timeout | Self::Stalled => "timeout",
            Self::Transport(_) => "connection",
            Self::CutShort(_) | Self::Malformed(_) => "stream_broken",
            Self::Invalid(_) => "invalid",
        }
    }

    /// For logs: no body, no key.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("HTTP {status}"),
            Self::Timeout => "timeout".to_owned(),
            Self::Transport(e) if e.is_connect() => "connection failed".to_owned(),
            Self::Transport(_) => "transport error".to_owned(),
            Self::Stalled => "stream stalled".to_owned(),
            Self::CutShort(_) => "stream cut short".to_owned(),
            Self::Malformed(_) => "malformed stream chunk".to_owned(),
            Self::ErrorEvent { status, .. } => format!("error event in the stream ({status})"),
            Self::Invalid(_) => "invalid response".to_owned(),
        }
    }
}

impl OpenAiProvider {
    /// The error for `failure`, the last of `attempts` attempts.
    pub(super) fn final_error(&self, failure: Failure, attempts: u32) -> Error {
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
            Failure::Malformed(detail) => Error::MalformedStream { attempts, detail },
            Failure::Invalid(e) => e,
            Failure::Status {
                status,
                retry_after,
                body,
            } => self.status_error(status, retry_after, &body, attempts),
            Failure::ErrorEvent { status, body } => {
                self.status_error(status, None, &body, attempts)
            }
        }
    }

    /// The error for HTTP status `status` with error body `body`.
    fn status_error(
        &self,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
        attempts: u32,
    ) -> Error {
        let info = ErrorInfo::from_body(status, body);
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

    /// `message` without the API key.
    pub(super) fn redact(&self, message: String) -> String {
        match &self.api_key {
            Some(key) if message.contains(&key.key) => message.replace(&key.key, REDACTED),
            _ => message,
        }
    }
}

/// Cuts `text` to [`MAX_MESSAGE_CHARS`] characters.
pub(super) fn truncate(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_character_boundaries() {
        let long = "é".repeat(400);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }
}
