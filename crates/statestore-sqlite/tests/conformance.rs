//! The shared backend suite, each case on a new SQLite file in its own temp
//! dir: default settings, TTL and limits that never trigger, and
//! `synchronous=NORMAL`.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

mod plain {
    statestore_core::conformance_suite!(async {
        super::common::TempStore::open(statestore_sqlite::SqliteStore::builder()).await
    });
}

mod ttl_and_limits {
    // A TTL and limits that never trigger, and a single reader: the
    // bookkeeping paths must not change any observable behaviour.
    statestore_core::conformance_suite!(async {
        super::common::TempStore::open(
            statestore_sqlite::SqliteStore::builder()
                .ttl(std::time::Duration::from_secs(3600))
                .limits(
                    statestore_core::codec::Limits::none()
                        .with_max_message_bytes(1 << 20)
                        .with_max_messages(1_000_000),
                )
                .readers(1),
        )
        .await
    });
}

mod relaxed {
    statestore_core::conformance_suite!(async {
        super::common::TempStore::open(
            statestore_sqlite::SqliteStore::builder()
                .synchronous(statestore_sqlite::Synchronous::Normal),
        )
        .await
    });
}

mod expiry {
    // The TTL's meaning, on a store with a short one.
    statestore_core::expiry_suite!(|ttl| async move {
        super::common::TempStore::open(statestore_sqlite::SqliteStore::builder().ttl(ttl)).await
    });
}
