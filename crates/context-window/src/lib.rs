#![doc = include_str!("../README.md")]

pub mod count;
mod error;
pub mod exact;

pub use count::{CharEstimate, TokenCounter, annotate, count_message, message_tokens};
pub use error::Error;
#[cfg(feature = "bpe-openai")]
pub use exact::BpeOpenAi;
pub use exact::{OpenAiEncoding, Tiktoken, exact};
