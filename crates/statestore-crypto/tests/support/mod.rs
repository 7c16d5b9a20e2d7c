//! Helpers shared by the integration tests: keys, layers over each
//! backend, and the throwaway Redis harness (in one place, so that moving
//! to another harness crate changes only `redis_server` below).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers; each test binary uses a part"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use statestore_core::{
    Append, Appended, ConversationState, Expect, IdempotencyKey, ListPage, ListQuery, Metadata,
    RecentState, Result, SessionId, Store, Version, async_trait,
};
use statestore_crypto::{Encrypted, Key, KeyRing};

/// The Redis test harness. Switching harness crates: change these two lines.
pub use redis_test_server::RedisServer;
pub fn redis_server() -> RedisServer {
    RedisServer::start().expect("redis-server starts")
}

pub fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

pub fn key(id: &str, byte: u8) -> Key {
    Key::from_bytes(id, &[byte; 32]).unwrap()
}

pub fn ring(id: &str, byte: u8) -> KeyRing {
    KeyRing::new(key(id, byte))
}

pub fn memory() -> Arc<dyn Store> {
    Arc::new(statestore_memory::MemoryStore::new())
}

/// A SQLite store on a file in its own temp dir, removed when it is dropped.
#[derive(Debug)]
pub struct Sqlite {
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
}

impl Sqlite {
    pub async fn open() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = statestore_sqlite::SqliteStore::builder()
            .open(dir.path().join("store.sqlite3"))
            .await
            .unwrap();
        Self {
            store: Arc::new(store),
            dir,
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("store.sqlite3")
    }
}

/// A fresh key prefix per store on a shared server.
pub async fn redis_store(url: &str) -> Arc<dyn Store> {
    static N: AtomicU32 = AtomicU32::new(0);
    let prefix = format!("t{}:", N.fetch_add(1, Ordering::Relaxed));
    Arc::new(
        statestore_redis::RedisStore::builder()
            .prefix(prefix)
            .connect(url)
            .await
            .unwrap(),
    )
}

/// The crate error behind a refused read, checked to be a `Decryption`
/// that names `id` (in the error and its text) and wrote nothing.
pub fn refused(result: Result<impl std::fmt::Debug>, id: &SessionId) -> statestore_crypto::Error {
    let e = result.expect_err("tampered data must not read");
    assert!(
        matches!(&e, statestore_core::Error::Decryption { id: got, .. } if got == id),
        "{e:?}"
    );
    assert_eq!(e.write_outcome(), statestore_core::WriteOutcome::NotWritten);
    assert!(e.to_string().contains(id.as_str()), "{e}");
    assert_eq!(
        statestore_crypto::Error::from_store(&e).and_then(statestore_crypto::Error::session),
        Some(id)
    );
    match e {
        statestore_core::Error::Decryption {
            source: Some(source),
            ..
        } => *source.downcast::<statestore_crypto::Error>().unwrap(),
        other => panic!("no typed source: {other:?}"),
    }
}

pub fn encrypted(inner: Arc<dyn Store>) -> Encrypted {
    Encrypted::new(inner, ring("k1", 1))
}

#[async_trait]
impl Store for Sqlite {
    async fn load_with(
        &self,
        id: &SessionId,
        options: statestore_core::Load,
    ) -> Result<Option<ConversationState>> {
        self.store.load_with(id, options).await
    }
    async fn load_recent_as(
        &self,
        id: &SessionId,
        read: statestore_core::Recent,
    ) -> Result<Option<RecentState>> {
        self.store.load_recent_as(id, read).await
    }
    async fn save_with(
        &self,
        state: &ConversationState,
        options: statestore_core::Save,
    ) -> Result<Version> {
        self.store.save_with(state, options).await
    }
    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        self.store.append_with(id, append).await
    }
    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        self.store.fork(source, target).await
    }
    async fn delete_with(&self, id: &SessionId, options: statestore_core::Delete) -> Result<bool> {
        self.store.delete_with(id, options).await
    }
    async fn exists(&self, id: &SessionId) -> Result<bool> {
        self.store.exists(id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.store.list(query).await
    }
    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        self.store.merge_metadata(id, patch, expect).await
    }
    async fn add_summary_with(
        &self,
        id: &SessionId,
        add: statestore_core::AddSummary,
    ) -> Result<Version> {
        self.store.add_summary_with(id, add).await
    }
    async fn touch(&self, id: &SessionId) -> Result<bool> {
        self.store.touch(id).await
    }

    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &statestore_core::Pending,
    ) -> statestore_core::Result<()> {
        self.store.put_pending(id, key, pending).await
    }
    async fn load_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
    ) -> statestore_core::Result<Option<statestore_core::Pending>> {
        self.store.load_pending(id, key).await
    }
}
