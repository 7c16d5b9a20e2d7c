//! The shared backend suite against one throwaway PostgreSQL server per
//! test binary (started on first use; its watchdog stops it when the
//! process exits), each case on a fresh store: its own schema.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use pg_test_server::PgServer;
use statestore_postgres::{PostgresStore, PostgresStoreBuilder};

fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        PgServer::builder()
            .fsync(false)
            .config("max_connections", "400")
            .start()
            .expect("a PostgreSQL server for the suite")
    })
}

/// A store in a schema no other store of this process uses.
async fn fresh(
    configure: impl FnOnce(PostgresStoreBuilder) -> PostgresStoreBuilder,
) -> PostgresStore {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let url = server().url();
    let builder = PostgresStore::builder(&url)
        .unwrap()
        .pool_size(8)
        .schema(&format!("case_{}_{n}", std::process::id()));
    configure(builder).build().await.unwrap()
}

mod plain {
    statestore_core::conformance_suite!(async { super::fresh(|b| b).await });
}

mod ttl_and_limits {
    // A TTL and limits that never trigger: the bookkeeping paths must not
    // change any observable behaviour.
    statestore_core::conformance_suite!(async {
        super::fresh(|b| {
            b.ttl(std::time::Duration::from_secs(3600)).limits(
                statestore_core::codec::Limits::none()
                    .with_max_message_bytes(1 << 20)
                    .with_max_messages(1_000_000),
            )
        })
        .await
    });
}

mod partitioned {
    // Every table hash-partitioned by session id (four partitions each, to
    // keep the creation of each case's schema quick).
    statestore_core::conformance_suite!(async { super::fresh(|b| b.partitions(4)).await });
}

mod expiry {
    // The TTL's meaning, on a store with a short one.
    statestore_core::expiry_suite!(|ttl| async move { super::fresh(|b| b.ttl(ttl)).await });
}
