#![doc = include_str!("../README.md")]

mod error;
mod offline;
#[cfg(feature = "openai")]
pub mod openai;
mod pipeline;
mod provider;

#[cfg(feature = "openai")]
pub use openai::{OpenAiProvider, OpenAiProviderBuilder};

pub use error::Error;
pub use offline::OfflineProvider;
pub use pipeline::{
    Concurrency, ExecContext, ExecOptions, Executed, MIN_MESSAGE_TOKENS, Middleware, Pipeline,
    PipelineBuilder, ProviderSummarizer, ToolHandler, counters,
};
pub use provider::{
    ChatRequest, ChatResponse, FinishReason, OnEvent, Provider, StreamEvent, ToolSpec, Usage,
};
