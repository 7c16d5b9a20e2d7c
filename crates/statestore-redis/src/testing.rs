//! Throwaway real `redis-server` processes for tests and benchmarks (feature
//! `testing`).
//!
//! [`RedisServer`] starts one server — plain, with ACL users, TLS-only, or
//! with an fsync-always append-only file — and [`RedisCluster`] a Redis
//! Cluster of them. Each server:
//!
//! - listens on `127.0.0.1` only, on a port that was free when it started;
//! - runs from a fresh temporary directory holding its generated
//!   `redis.conf`, its log and its data, so it never reads or touches
//!   anything of a server someone started by hand;
//! - is ready when the constructor returns (it answered PING);
//! - is SIGKILLed, reaped and its directory deleted when dropped, also when
//!   the test panics.
//!
//! Failures are injected with [`RedisServer::kill`] (a crash),
//! [`RedisServer::restart`] (same port, same data),
//! [`RedisServer::pause`] / [`RedisServer::resume`] (a hung server), and
//! [`FaultProxy`] (a connection that drops after the server executed a
//! request, before its reply arrives).
//!
//! It needs the `redis-server` and `redis-cli` programs on `PATH` (Debian's
//! `redis-server` package; `cargo xtask ci` installs it). Starting a server
//! blocks for a few milliseconds; in async tests that is fine.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use statestore_redis::testing::RedisServer;
//!
//! let mut server = RedisServer::builder()
//!     .acl_user("app", "secret", "~app:* +@all")
//!     .appendonly_always()
//!     .start()?;
//! assert_eq!(server.url(), format!("redis://app:secret@127.0.0.1:{}", server.port()));
//! server.cli(&["SET", "app:k", "v"])?;
//! server.kill()?;
//! server.restart()?;
//! assert_eq!(server.cli(&["GET", "app:k"])?, "v");
//! # Ok(())
//! # }
//! ```

mod cluster;
mod process;
mod proxy;
mod server;
mod tls;

pub use cluster::RedisCluster;
pub use proxy::FaultProxy;
pub use server::{RedisServer, ServerBuilder};
pub use tls::TlsFiles;
