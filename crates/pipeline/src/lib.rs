#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod offline;
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub mod openai;
mod pipeline;
mod provider;

#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub use openai::{OpenAiProvider, OpenAiProviderBuilder};

pub use error::Error;
pub use offline::OfflineProvider;
pub use pipeline::{
    Concurrency, ExecContext, ExecOptions, Executed, MIN_MESSAGE_TOKENS, Middleware, Pipeline,
    PipelineBuilder, ProviderSummarizer, Redo, StoredTurn, TURN_METADATA_KEY, TitlePolicy,
    ToolContext, ToolHandler, TurnRef, counters, stored_turns,
};
pub use provider::{
    ChatRequest, ChatResponse, FinishReason, OnEvent, Provider, StreamEvent, ToolSpec, Usage,
};
