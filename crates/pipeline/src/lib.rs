#![doc = include_str!("../README.md")]

mod error;
#[cfg(feature = "openai")]
pub mod openai;
mod provider;

#[cfg(feature = "openai")]
pub use openai::{OpenAiProvider, OpenAiProviderBuilder};

pub use error::Error;
pub use provider::{ChatRequest, ChatResponse, FinishReason, Provider, ToolSpec, Usage};
