#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod cluster;
mod process;
#[cfg(feature = "proxy")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
mod proxy;
mod server;
mod stats;
mod tls;

pub use builder::ServerBuilder;
pub use cluster::RedisCluster;
#[cfg(feature = "proxy")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
pub use proxy::FaultProxy;
pub use server::RedisServer;
pub use stats::{CommandStat, parse_command_stats};
pub use tls::TlsFiles;
