#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod compact;
pub mod count;
mod error;
pub mod exact;
mod select;

pub use compact::{Compacted, Summarizer, compact, summarize_dropped};
pub use count::{CharEstimate, TokenCounter, annotate, count_message, message_tokens};
pub use error::Error;
pub use select::{
    History, Selection, SentMessages, Window, WindowPolicy, select, select_borrowed,
    summary_message,
};

#[cfg(feature = "bpe-openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "bpe-openai")))]
pub use exact::BpeOpenAi;
pub use exact::{OpenAiEncoding, Tiktoken, exact};
