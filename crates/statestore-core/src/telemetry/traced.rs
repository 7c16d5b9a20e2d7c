//! [`Traced`]: one span, one duration and the right counters for every
//! store operation, around any [`Store`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;
use tracing::field::Empty;

use super::ids::ConversationIds;
use super::metrics::{Count, count, record_store_op};
use crate::{
    AddSummary, Append, Appended, ConversationState, Delete, Error, Expect, IdempotencyKey,
    ListPage, ListQuery, Load, Metadata, Pending, PruneQuery, Pruned, Recent, RecentState, Result,
    Save, SessionId, Store, Version,
};

/// A [`Store`] that records a span (see the [module
/// documentation](super)) and the
/// store metrics for every operation of the store inside, then does
/// exactly what that store does: same results, same errors, same retry
/// behaviour.
///
/// The pipeline and the facade's `open` wrap their store with [`traced`];
/// wrap a store yourself when you use it directly.
///
/// ```
/// # async fn demo(store: std::sync::Arc<dyn statestore_core::Store>) -> statestore_core::Result<()> {
/// use statestore_core::telemetry::{ConversationIds, Traced};
/// use statestore_core::{SessionId, Store};
///
/// let store = Traced::new(store).conversation_ids(ConversationIds::Omit);
/// store.load(&SessionId::new("s-1")?).await?; // one `load` span
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Traced {
    inner: Arc<dyn Store>,
    ids: ConversationIds,
}

/// `store`, wrapped in [`Traced`] unless it is traced already.
#[must_use]
pub fn traced(store: Arc<dyn Store>) -> Arc<dyn Store> {
    if store.is_traced() {
        store
    } else {
        Arc::new(Traced::new(store))
    }
}

impl Traced {
    /// Traces `inner`, recording session ids per [`ConversationIds::Default`].
    #[must_use]
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            ids: ConversationIds::Default,
        }
    }

    /// Records session ids as `ids` says.
    #[must_use]
    pub fn conversation_ids(mut self, ids: ConversationIds) -> Self {
        self.ids = ids;
        self
    }

    /// The store inside.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// Runs `operation` of the inner store inside its span, then records
    /// how it went: `outcome` names a success (`found`, `replayed`, …).
    async fn run<T>(
        &self,
        op: &'static str,
        id: Option<&SessionId>,
        write: bool,
        fut: impl Future<Output = Result<T>>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> Result<T> {
        let system = self.inner.system_name();
        let span = tracing::info_span!(
            target: "statestore::store",
            "store",
            otel.name = op,
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = system,
            db.operation.name = op,
            gen_ai.conversation.id = Empty,
            statestore.outcome = Empty,
            error.type = Empty,
            statestore.write_outcome = Empty,
        );
        if !span.is_disabled()
            && let Some(v) = id.and_then(|id| self.ids.value(id))
        {
            span.record("gen_ai.conversation.id", v);
        }
        let started = Instant::now();
        let result = fut.instrument(span.clone()).await;
        let error_type = match &result {
            Ok(value) => {
                span.record("statestore.outcome", outcome(value));
                None
            }
            Err(e) => {
                let kind = e.kind();
                let named = match e {
                    Error::Conflict { .. } => "conflict",
                    Error::NotFound { .. } => "not_found",
                    _ => "error",
                };
                span.record("statestore.outcome", named);
                span.record("error.type", kind);
                span.record("otel.status_code", "error");
                if write {
                    span.record("statestore.write_outcome", e.write_outcome().as_str());
                }
                match e {
                    Error::Conflict { .. } => count(Count::Conflict {
                        system,
                        operation: op,
                    }),
                    Error::Corrupt { detail, .. } => {
                        count(Count::Corrupt { system });
                        if detail.contains("evicted") {
                            count(Count::Eviction { system });
                        }
                    }
                    Error::Decryption { .. } => count(Count::Corrupt { system }),
                    _ => {}
                }
                Some(kind)
            }
        };
        record_store_op(system, op, error_type, started.elapsed());
        result
    }
}

fn found<T>(value: &Option<T>) -> &'static str {
    if value.is_some() {
        "found"
    } else {
        "not_found"
    }
}

fn ok<T>(_: &T) -> &'static str {
    "ok"
}

fn applied(value: &Appended) -> &'static str {
    if value.replayed {
        "replayed"
    } else {
        "applied"
    }
}

fn done(value: &bool) -> &'static str {
    if *value { "ok" } else { "not_found" }
}

#[async_trait]
impl Store for Traced {
    fn system_name(&self) -> &'static str {
        self.inner.system_name()
    }

    fn is_traced(&self) -> bool {
        true
    }

    async fn load_with(&self, id: &SessionId, options: Load) -> Result<Option<ConversationState>> {
        self.run(
            "load",
            Some(id),
            false,
            self.inner.load_with(id, options),
            found,
        )
        .await
    }

    async fn load_recent_as(&self, id: &SessionId, read: Recent) -> Result<Option<RecentState>> {
        self.run(
            "load_recent",
            Some(id),
            false,
            self.inner.load_recent_as(id, read),
            found,
        )
        .await
    }

    async fn save_with(&self, state: &ConversationState, options: Save) -> Result<Version> {
        let id = &state.id;
        self.run(
            "save",
            Some(id),
            true,
            self.inner.save_with(state, options),
            ok,
        )
        .await
    }

    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        self.run(
            "append",
            Some(id),
            true,
            self.inner.append_with(id, append),
            applied,
        )
        .await
    }

    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        self.run(
            "fork",
            Some(source),
            true,
            self.inner.fork(source, target),
            ok,
        )
        .await
    }

    async fn prune(&self, query: &PruneQuery) -> Result<Pruned> {
        self.run("prune", None, true, self.inner.prune(query), ok)
            .await
    }

    async fn rewind(&self, id: &SessionId, to: u64, expect: Expect) -> Result<Version> {
        self.run(
            "rewind",
            Some(id),
            true,
            self.inner.rewind(id, to, expect),
            ok,
        )
        .await
    }

    async fn fork_at(&self, source: &SessionId, target: &SessionId, upto: u64) -> Result<Version> {
        let fut = self.inner.fork_at(source, target, upto);
        self.run("fork_at", Some(source), true, fut, ok).await
    }

    async fn delete_with(&self, id: &SessionId, options: Delete) -> Result<bool> {
        self.run(
            "delete",
            Some(id),
            true,
            self.inner.delete_with(id, options),
            done,
        )
        .await
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        self.run("exists", Some(id), false, self.inner.exists(id), ok)
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.run("list", None, false, self.inner.list(query), ok)
            .await
    }

    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        let fut = self.inner.merge_metadata(id, patch, expect);
        self.run("merge_metadata", Some(id), true, fut, ok).await
    }

    async fn add_summary_with(&self, id: &SessionId, add: AddSummary) -> Result<Version> {
        let fut = self.inner.add_summary_with(id, add);
        self.run("add_summary", Some(id), true, fut, ok).await
    }

    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> Result<()> {
        let fut = self.inner.put_pending(id, key, pending);
        self.run("put_pending", Some(id), true, fut, ok).await
    }

    async fn load_pending(&self, id: &SessionId, key: &IdempotencyKey) -> Result<Option<Pending>> {
        let fut = self.inner.load_pending(id, key);
        self.run("load_pending", Some(id), false, fut, found).await
    }

    async fn touch(&self, id: &SessionId) -> Result<bool> {
        self.run("touch", Some(id), true, self.inner.touch(id), done)
            .await
    }
}
