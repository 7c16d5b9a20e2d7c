//! Token counting: the [`TokenCounter`] trait, OpenAI's chat-format
//! overheads, and the per-message cache.
//!
//! A message's cost is counted the way OpenAI's Chat Completions format
//! bills it (the OpenAI cookbook's rules, as tiktoken-rs implements them):
//! [`PER_MESSAGE`] tokens of framing, plus the role, the text, the name (and
//! [`PER_NAME`]), and for each tool call its name, its arguments and
//! [`PER_TOOL_CALL`]. A request adds [`REPLY_PRIMING`] once. These framing
//! numbers are what OpenAI documents for current models; tool-call framing
//! is not documented and is the cookbook's heuristic. Images are an
//! estimate: [`IMAGE_TOKENS`] each (OpenAI bills by resolution, which a
//! URL does not tell).
//!
//! Counts are cached in [`Message::token_count`], tagged with the
//! counter's [`TokenCounter::encoding`]: [`annotate`] fills the cache before
//! a message is stored, and [`message_tokens`] uses it when the encoding
//! matches, so selecting a window over stored history tokenizes nothing it
//! has seen before.

use statestore_core::{Content, ContentPart, Message, TokenCount};

/// Framing tokens per message.
pub const PER_MESSAGE: usize = 3;
/// Extra tokens when a message has a `name`.
pub const PER_NAME: usize = 1;
/// Framing tokens per tool call (heuristic).
pub const PER_TOOL_CALL: usize = 1;
/// Tokens added once per request (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMING: usize = 3;
/// Estimated tokens per image part.
pub const IMAGE_TOKENS: usize = 85;

/// Counts tokens of text under one encoding.
pub trait TokenCounter: Send + Sync + std::fmt::Debug {
    /// The encoding's name, stored with cached counts: `"o200k_base"`,
    /// `"cl100k_base"`, or `"chars/4"` for the estimate.
    fn encoding(&self) -> &str;

    /// Tokens in `text`, as ordinary text (special-token strings such as
    /// `<|endoftext|>` count as the text they are).
    fn count_text(&self, text: &str) -> usize;
}

impl<T: TokenCounter + ?Sized> TokenCounter for &T {
    fn encoding(&self) -> &str {
        (**self).encoding()
    }
    fn count_text(&self, text: &str) -> usize {
        (**self).count_text(text)
    }
}

impl<T: TokenCounter + ?Sized> TokenCounter for std::sync::Arc<T> {
    fn encoding(&self) -> &str {
        (**self).encoding()
    }
    fn count_text(&self, text: &str) -> usize {
        (**self).count_text(text)
    }
}

/// The seed's estimate: a token per four bytes of text (rounded up), zero
/// cost and no tables. Off by 20–50 % on English, far more on code and
/// CJK; use an exact counter where the budget matters.
#[derive(Debug, Clone, Copy, Default)]
pub struct CharEstimate;

impl TokenCounter for CharEstimate {
    fn encoding(&self) -> &str {
        "chars/4"
    }
    fn count_text(&self, text: &str) -> usize {
        text.len().div_ceil(4)
    }
}

/// Tokens `message` costs in a request, computed with `counter` (no cache).
pub fn count_message(counter: &dyn TokenCounter, message: &Message) -> usize {
    let mut n = PER_MESSAGE + counter.count_text(message.role.as_str());
    match &message.content {
        Content::Text(t) => n += counter.count_text(t),
        Content::Parts(parts) => {
            for part in parts {
                n += match part {
                    ContentPart::Text { text } => counter.count_text(text),
                    ContentPart::ImageUrl { .. } => IMAGE_TOKENS,
                    // Parts added to the enum later: counted as nothing
                    // until they have a rule.
                    #[allow(unreachable_patterns)]
                    _ => 0,
                };
            }
        }
    }
    if let Some(name) = &message.name() {
        n += counter.count_text(name) + PER_NAME;
    }
    for call in message.tool_calls() {
        n += counter.count_text(&call.name) + counter.count_text(&call.arguments) + PER_TOOL_CALL;
    }
    n
}

/// Tokens `message` costs, from its cache when the cache was made by this
/// counter's encoding, otherwise counted now.
pub fn message_tokens(counter: &dyn TokenCounter, message: &Message) -> usize {
    match &message.token_count {
        Some(c) if c.encoding == counter.encoding() => c.tokens as usize,
        _ => count_message(counter, message),
    }
}

/// Fills `message.token_count` for `counter`'s encoding (unless it is
/// already there). Call before storing a message so that later windows
/// never count it again.
pub fn annotate(counter: &dyn TokenCounter, message: &mut Message) {
    if message
        .token_count
        .as_ref()
        .is_some_and(|c| c.encoding == counter.encoding())
    {
        return;
    }
    let tokens = u32::try_from(count_message(counter, message)).unwrap_or(u32::MAX);
    message.token_count = Some(TokenCount::new(counter.encoding(), tokens));
}
