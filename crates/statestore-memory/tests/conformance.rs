//! The shared backend suite, against the memory store with and without bounds.

mod unbounded {
    statestore_core::conformance_suite!(async { statestore_memory::MemoryStore::new() });
}

mod bounded {
    // TTL and an LRU bound large enough never to trigger: the bookkeeping
    // paths must not change any observable behaviour.
    statestore_core::conformance_suite!(async {
        statestore_memory::MemoryStore::builder()
            .ttl(std::time::Duration::from_secs(3600))
            .max_sessions(1_000)
            .build()
    });
}

mod expiry {
    // The TTL's meaning, on a store with a short one.
    statestore_core::expiry_suite!(|ttl| async move {
        statestore_memory::MemoryStore::builder().ttl(ttl).build()
    });
}
