//! The shared backend suite through the layers: encrypted (as by default,
//! without compression, and with zstd for every value) and
//! compression-only, over memory, SQLite (a file
//! in a temp dir per case) and Redis (a fresh prefix per case on one
//! throwaway server).
#![allow(clippy::unwrap_used, reason = "test code")]

mod support;

mod memory {
    mod encrypted {
        statestore_core::conformance_suite!(async {
            super::super::support::encrypted(super::super::support::memory())
        });
    }
    mod encrypted_compressed {
        statestore_core::conformance_suite!(async {
            statestore_crypto::Encrypted::builder(
                super::super::support::memory(),
                super::super::support::ring("k1", 1),
            )
            .compression(statestore_crypto::Compression::zstd().threshold(16))
            .build()
        });
    }
    mod compressed {
        statestore_core::conformance_suite!(async {
            statestore_crypto::Compressed::with_compression(
                super::super::support::memory(),
                statestore_crypto::Compression::zstd().threshold(16),
            )
        });
    }
}

mod sqlite {
    statestore_core::conformance_suite!(async {
        let sqlite = super::support::Sqlite::open().await;
        super::support::encrypted(std::sync::Arc::new(sqlite))
    });
}

mod redis {
    use super::support;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn encrypted() {
        let server = support::redis_server();
        let url = server.url();
        statestore_core::conformance::run_all(|| {
            let url = url.clone();
            async move { support::encrypted(support::redis_store(&url).await) }
        })
        .await;
    }
}

mod expiry {
    // The TTL's meaning through the encryption layer, over a store with a
    // short one.
    statestore_core::expiry_suite!(|ttl| async move {
        super::support::encrypted(std::sync::Arc::new(
            statestore_memory::MemoryStore::builder().ttl(ttl).build(),
        ))
    });
}
