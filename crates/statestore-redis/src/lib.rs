#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod call;
mod conn;
mod decode;
mod diagnose;
mod durable;
mod error;
mod eviction;
mod keys;
mod list;
mod operations;
mod read;
mod reindex;
mod scripts;
mod store;

/// Entry points for the fuzz targets (feature `__fuzzing`); not a public API.
#[cfg(feature = "__fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use builder::{
    DEFAULT_DURABLE_CONNECTIONS, DEFAULT_MAX_MESSAGE_BYTES, MAX_TTL, RedisStoreBuilder,
};
pub use conn::Connection;
pub use diagnose::{Diagnosis, NodeReport};
pub use error::Error;
pub use eviction::EvictionPolicyCheck;
pub use list::LIST_BUDGET;
pub use store::RedisStore;
