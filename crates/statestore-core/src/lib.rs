#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod codec;
mod error;
mod id;
pub mod list;
mod message;
pub mod prune;
pub mod rewind;
mod state;
mod store;
pub mod telemetry;
pub mod write;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use async_trait::async_trait;
pub use error::{BoxError, Error, Result};
pub use id::SessionId;
pub use list::{ListCursor, ListOrder, ListPage, ListQuery, SessionInfo, TITLE_KEY, TimeRange};
pub use message::{
    Content, ContentPart, Encoding, ImageUrl, Message, Metadata, Role, Timestamp, TokenCount,
    ToolCall,
};
pub use prune::{PruneQuery, Pruned};
pub use state::{ConversationState, Expect, RecentState, Summary, Version};
pub use store::{Delete, Load, Recent, Store, check_fork_ids};
pub use write::{
    AddSummary, Append, Appended, Counters, IdempotencyKey, Pending, REMEMBERED_WRITES,
    RememberedWrite, Save, WriteOutcome,
};
