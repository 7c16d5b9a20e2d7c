#![doc = include_str!("../README.md")]

mod error;
#[cfg(feature = "openai")]
pub mod openai;
mod provider;

pub use error::Error;
#[cfg(feature = "openai")]
pub use openai::{OpenAiProvider, OpenAiProviderBuilder};
pub use provider::{ChatRequest, ChatResponse, FinishReason, Provider, ToolSpec, Usage};
