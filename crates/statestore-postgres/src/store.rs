//! [`Store`] for [`PostgresStore`]: each operation is one statement (see
//! `ops`).

use statestore_core::{
    AddSummary, Append, Appended, ConversationState, Delete, Expect, IdempotencyKey, ListPage,
    ListQuery, Load, Metadata, Pending, Recent, RecentState, Result, Save, SessionId, Store,
    Version, async_trait,
};

use crate::PostgresStore;

#[async_trait]
impl Store for PostgresStore {
    fn system_name(&self) -> &'static str {
        "postgresql"
    }

    async fn load_with(&self, id: &SessionId, options: Load) -> Result<Option<ConversationState>> {
        self.do_load(id, !options.keep_clocks).await
    }

    async fn load_recent_as(&self, id: &SessionId, read: Recent) -> Result<Option<RecentState>> {
        self.do_load_recent(id, read.n, read.lookup.as_ref(), !read.keep_clocks)
            .await
    }

    async fn save_with(&self, state: &ConversationState, options: Save) -> Result<Version> {
        self.do_save(state, options).await
    }

    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        self.do_append(id, append).await
    }

    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        self.do_fork(source, target).await
    }

    async fn delete_with(&self, id: &SessionId, options: Delete) -> Result<bool> {
        self.do_delete(id, options.expect).await
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        self.do_exists(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.do_list(query).await
    }

    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        self.do_merge(id, patch, expect).await
    }

    async fn add_summary_with(&self, id: &SessionId, add: AddSummary) -> Result<Version> {
        self.do_add_summary(id, add).await
    }

    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> Result<()> {
        self.do_put_pending(id, key, pending).await
    }

    async fn load_pending(&self, id: &SessionId, key: &IdempotencyKey) -> Result<Option<Pending>> {
        self.do_load_pending(id, key).await
    }

    async fn touch(&self, id: &SessionId) -> Result<bool> {
        self.do_touch(id).await
    }
}
