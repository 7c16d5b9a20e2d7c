//! [`OfflineProvider`]: a deterministic stand-in for a model, so examples
//! and tests run with no API key and no network.

use async_trait::async_trait;
use context_window::{CharEstimate, TokenCounter, count_message};
use statestore_core::{Message, Role};

use crate::{ChatRequest, ChatResponse, Error, FinishReason, Provider, Usage};

/// A deterministic, offline "model". It is not intelligent; it exists so
/// that the pipeline can be demonstrated and tested without a network:
///
/// - it remembers a name introduced with "I'm …", "I am …" or "my name is
///   …" anywhere in the conversation it is sent, and answers questions
///   containing "my name" with it — so it shows whether the history
///   reached it;
/// - otherwise it answers `You said: <the last user message>`.
///
/// Usage is counted with [`CharEstimate`].
#[derive(Debug, Clone, Default)]
pub struct OfflineProvider;

impl OfflineProvider {
    /// The offline provider.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

fn introduced_name(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    for marker in ["my name is ", "i'm ", "i am "] {
        if let Some(at) = lower.find(marker) {
            let rest = text.get(at + marker.len()..)?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                return Some(name);
            }
        }
    }
    None
}

#[async_trait]
impl Provider for OfflineProvider {
    fn name(&self) -> &str {
        "offline"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let users: Vec<&Message> = request
            .messages
            .iter()
            .map(|m| &**m)
            .filter(|m| m.role == Role::User)
            .collect();
        let last = users
            .last()
            .map(|m| m.text().into_owned())
            .unwrap_or_default();
        let reply = if last.to_lowercase().contains("my name") {
            match users
                .iter()
                .rev()
                .skip(1)
                .find_map(|m| introduced_name(&m.text()))
            {
                Some(name) => format!("Your name is {name}"),
                None => "I don't know your name yet.".to_owned(),
            }
        } else if let Some(name) = introduced_name(&last) {
            format!("Nice to meet you, {name}!")
        } else {
            format!("You said: {last}")
        };
        let message = Message::assistant(reply);
        let counter = CharEstimate;
        let prompt: usize = request
            .messages
            .iter()
            .map(|m| count_message(&counter, m))
            .sum();
        let usage = Usage {
            prompt_tokens: prompt as u64,
            completion_tokens: counter.count_text(&message.text()) as u64,
        };
        Ok(ChatResponse {
            message,
            usage,
            finish_reason: FinishReason::Stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_introduced_names() {
        assert_eq!(introduced_name("Hi, I'm Alice").as_deref(), Some("Alice"));
        assert_eq!(introduced_name("my name is Bob.").as_deref(), Some("Bob"));
        assert_eq!(introduced_name("hello there"), None);
    }
}
