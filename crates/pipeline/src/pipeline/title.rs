//! [`TitlePolicy`]: the title a session gets on its first turn (the turn
//! that finds no message stored, and no title set by the application), stored in
//! its metadata under [`TITLE_KEY`](statestore_core::TITLE_KEY) by the
//! turn's own write (so a turn and its title land together, once), and
//! returned by [`Store::list`](statestore_core::Store::list) without the
//! history.

use crate::{ChatRequest, ChatResponse, Error, Provider};
use statestore_core::Message;

/// How a session's title is made on its first turn (see
/// [`PipelineBuilder::title`](super::PipelineBuilder::title)).
///
/// ```
/// use pipeline::TitlePolicy;
///
/// assert_eq!(TitlePolicy::default(), TitlePolicy::None);
/// let policy = TitlePolicy::FirstMessage { max_chars: 40 };
/// assert_eq!(policy.from_message("  Plan a   trip\nto Oslo "), Some("Plan a trip to Oslo".into()));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TitlePolicy {
    /// No title.
    #[default]
    None,
    /// The first user message, whitespace collapsed, cut to `max_chars`
    /// characters (an ellipsis marks a cut). Free.
    FirstMessage {
        /// The most characters a title has.
        max_chars: usize,
    },
    /// One model call, made beside the turn's first one, asking for a
    /// title of at most `max_chars` characters for the first message. Its
    /// usage is counted in the turn's (`model_calls` included). When it
    /// fails, the title is the first message's, as with
    /// [`FirstMessage`](Self::FirstMessage), and the turn goes on.
    Model {
        /// The most characters a title has.
        max_chars: usize,
    },
}

impl TitlePolicy {
    /// The title [`FirstMessage`](Self::FirstMessage) makes of `text`
    /// (also the fallback of [`Model`](Self::Model)); `None` for
    /// [`TitlePolicy::None`] or a text with no visible character.
    #[must_use]
    pub fn from_message(&self, text: &str) -> Option<String> {
        match self {
            Self::None => None,
            Self::FirstMessage { max_chars } | Self::Model { max_chars } => cut(text, *max_chars),
        }
    }

    /// The request of [`Model`](Self::Model) for a session whose first
    /// message is `text`; `None` for the other policies.
    pub(super) fn request(&self, text: &str) -> Option<ChatRequest> {
        let Self::Model { max_chars } = self else {
            return None;
        };
        Some(ChatRequest {
            messages: vec![
                Message::system(format!(
                    "Write a title of at most {max_chars} characters for a conversation that \
                     starts with the user's message below. Reply with the title only: no \
                     quotes, no trailing period."
                ))
                .into(),
                Message::user(text).into(),
            ],
            tools: Vec::new(),
            temperature: Some(0.0),
            max_tokens: Some(
                u32::try_from(max_chars.saturating_mul(2))
                    .unwrap_or(u32::MAX)
                    .max(16),
            ),
        })
    }

    /// The title of a session whose first message is `text`, given what
    /// the title call (if any) answered.
    pub(super) fn title(
        &self,
        text: &str,
        called: Option<&Result<ChatResponse, Error>>,
    ) -> Option<String> {
        if let Some(Ok(response)) = called {
            let answered = response.message.text();
            let answered = answered
                .trim()
                .trim_matches(['"', '\'', '“', '”'])
                .trim_end_matches('.');
            if let Some(title) = self.from_message(answered) {
                return Some(title);
            }
        }
        if let Some(Err(e)) = called {
            tracing::warn!(error = %e, "the title call failed; the title is the first message's");
        }
        self.from_message(text)
    }
}

/// Asks `provider` for a title when `policy` calls for one.
pub(super) async fn call(
    policy: &TitlePolicy,
    provider: &dyn Provider,
    text: &str,
    conversation: Option<&str>,
) -> Option<Result<ChatResponse, Error>> {
    let request = policy.request(text)?;
    Some(super::spans::chat(provider, &request, None, conversation, false).await)
}

/// `text` with runs of whitespace made one space, trimmed, and cut to
/// `max_chars` characters, the last of them `…` when it was cut.
fn cut(text: &str, max_chars: usize) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() || max_chars == 0 {
        return None;
    }
    let collapsed = words.join(" ");
    if collapsed.chars().count() <= max_chars {
        return Some(collapsed);
    }
    let mut out: String = collapsed.chars().take(max_chars - 1).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_cut_on_characters_and_marked() {
        let p = TitlePolicy::FirstMessage { max_chars: 8 };
        assert_eq!(p.from_message("short"), Some("short".into()));
        assert_eq!(p.from_message("exactly8"), Some("exactly8".into()));
        assert_eq!(p.from_message("Grüße aus Köln"), Some("Grüße a…".into()));
        assert_eq!(p.from_message("ab      cdefghij"), Some("ab cdef…".into()));
        assert_eq!(p.from_message(" \n\t "), None);
        assert_eq!(TitlePolicy::None.from_message("text"), None);
        assert_eq!(
            TitlePolicy::FirstMessage { max_chars: 0 }.from_message("x"),
            None
        );
    }

    #[test]
    fn a_model_title_is_cleaned_and_falls_back_to_the_message() {
        let p = TitlePolicy::Model { max_chars: 12 };
        let answer = |text: &str| {
            Ok(ChatResponse {
                message: Message::assistant(text),
                usage: crate::Usage::default(),
                finish_reason: crate::FinishReason::Stop,
            })
        };
        assert_eq!(
            p.title("first", Some(&answer("\"Oslo trip.\""))),
            Some("Oslo trip".into())
        );
        assert_eq!(
            p.title("first words", Some(&answer("   "))),
            Some("first words".into())
        );
        let failed = Err(Error::Transport("down".into()));
        assert_eq!(p.title("first", Some(&failed)), Some("first".into()));
        assert!(p.request("hi").is_some());
        assert!(
            TitlePolicy::FirstMessage { max_chars: 5 }
                .request("hi")
                .is_none()
        );
    }
}
