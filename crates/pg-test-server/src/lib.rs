#![doc = include_str!("../README.md")]

mod bin;
mod builder;
mod error;
mod process;
mod server;
mod tls;

pub use bin::{PG_BIN_ENV, PgBin};
pub use builder::PgServerBuilder;
pub use error::{Error, Result};
pub use server::PgServer;
pub use tls::TlsFiles;
