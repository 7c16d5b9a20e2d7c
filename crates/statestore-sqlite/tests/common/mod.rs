//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test helpers; each test binary uses a part"
)]

use statestore_core::{
    AddSummary, Append, Appended, ConversationState, Expect, IdempotencyKey, ListPage, ListQuery,
    Metadata, RecentState, Result, SessionId, Store, Version, async_trait,
};
use statestore_sqlite::{SqliteStore, SqliteStoreBuilder};

/// A store on a file in its own temp dir, removed when the store is dropped.
#[derive(Debug)]
pub struct TempStore {
    pub store: SqliteStore,
    pub dir: tempfile::TempDir,
}

impl TempStore {
    pub async fn open(builder: SqliteStoreBuilder) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let store = builder.open(&path).await.unwrap();
        Self { store, dir }
    }
}

#[async_trait]
impl Store for TempStore {
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
    async fn add_summary_with(&self, id: &SessionId, add: AddSummary) -> Result<Version> {
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

pub fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}
