//! The throwaway Redis servers of the tests: the one place that names the
//! harness crate.

#[allow(unused_imports, reason = "only some test binaries start a cluster")]
pub use statestore_redis::testing::RedisCluster;
pub use statestore_redis::testing::RedisServer;
