//! The throwaway Redis servers of the tests: the one place that names the
//! harness crate.

#[allow(unused_imports, reason = "only some test binaries start a cluster")]
pub use redis_test_server::RedisCluster;
#[allow(unused_imports, reason = "the PostgreSQL tests start no Redis")]
pub use redis_test_server::RedisServer;
