//! The throwaway Redis servers of the tests: the one place that names the
//! harness crate.

pub use statestore_redis::testing::RedisCluster;
pub use statestore_redis::testing::RedisServer;
