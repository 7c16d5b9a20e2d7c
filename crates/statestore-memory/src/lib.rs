#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod listing;
mod pending;
mod recency;
mod session;
mod shards;
mod writes;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use statestore_core::codec::{self, Limits};
use statestore_core::{
    Append, Appended, ConversationState, Delete, Error, Expect, IdempotencyKey, ListCursor,
    ListOrder, ListPage, ListQuery, Load, Message, Metadata, Pending, Recent, RecentState, Result,
    Save as SaveOptions, SessionId, Store, Version, async_trait,
};

use shards::{Inner, lock};
use writes::{AddSummary, AppendOp, Fork, MergeMetadata, Save};

/// Sessions a `list` call examines at most before it returns a short page
/// with a cursor (only filters that the indexes do not serve skip any).
const LIST_BUDGET: usize = 4_096;

/// An in-memory [`Store`]: for development, tests and single-instance apps.
///
/// Cloning is cheap and clones share the same sessions. See the
/// [crate documentation](crate) for its design and limits.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    pending: Arc<pending::PendingWrites>,
}

/// Configures a [`MemoryStore`]; from [`MemoryStore::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MemoryStoreBuilder {
    ttl: Option<Duration>,
    max_sessions: Option<usize>,
    limits: Limits,
}

impl MemoryStoreBuilder {
    /// Sessions not accessed (read or written) for `ttl` are removed: a
    /// sliding idle timeout, as in the seed's memory store.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// At most `max` sessions are kept; creating one more evicts the least
    /// recently used. `0` is treated as `1`.
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = Some(max.max(1));
        self
    }

    /// Size limits checked before each write ([`Error::TooLarge`], nothing written).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the store.
    #[must_use]
    pub fn build(self) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner::new(self.ttl, self.max_sessions, self.limits)),
            pending: Arc::default(),
        }
    }
}

impl MemoryStore {
    /// An unbounded store: no TTL, no session limit, no size limits.
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures TTL, session bound and size limits.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// Sessions currently held (expired ones not yet removed included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// [`ListPage::total`] for `query`: the index's size when nothing but the
    /// user filters (and no session can have expired unseen), else a walk.
    fn count(&self, query: &ListQuery) -> Option<u64> {
        if !query.count {
            return None;
        }
        if !query.filters() && self.inner.ttl.is_none() {
            let n = lock(&self.inner.listing).len(query.user_id.as_ref());
            return Some(n as u64);
        }
        let mut position: Option<ListCursor> = None;
        let mut n = 0u64;
        loop {
            let batch = lock(&self.inner.listing).candidates(query, position.as_ref(), 1_024);
            let Some((last, at)) = batch.last() else {
                return Some(n);
            };
            position = Some(ListCursor {
                order: query.order,
                updated_at: *at,
                id: last.as_str().to_owned(),
            });
            for (id, _) in &batch {
                let admitted = self
                    .inner
                    .read_with(id, false, |s| query.admits(&s.info(id), &s.metadata));
                n += u64::from(admitted == Some(true));
            }
        }
    }

    /// Whether the store holds no session.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every expired session now; returns how many. Expired sessions
    /// are also removed when touched and, a few at a time, whenever a
    /// session is created, so calling this is optional.
    pub fn purge_expired(&self) -> usize {
        self.inner.purge_expired()
    }

    /// Spawns a tokio task that calls [`MemoryStore::purge_expired`] every
    /// `every`, for apps that create sessions rarely but want memory returned
    /// promptly. The task ends when the returned handle is dropped or shut
    /// down, or when the last clone of the store is dropped.
    ///
    /// Must be called within a tokio runtime.
    #[must_use = "dropping the handle stops the reaper"]
    pub fn spawn_reaper(&self, every: Duration) -> ReaperHandle {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every.max(Duration::from_millis(1)));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let n = inner.purge_expired();
                if n > 0 {
                    tracing::debug!(removed = n, "reaper removed expired sessions");
                }
            }
        });
        ReaperHandle { task: Some(task) }
    }

    fn check_sizes(&self, id: &SessionId, messages: &[Message]) -> Result<()> {
        let limits = &self.inner.limits;
        if limits.max_message_bytes.is_none() {
            return Ok(());
        }
        let sizes = messages
            .iter()
            .map(|m| codec::encode_message(id, m).map(|b| b.len()))
            .collect::<Result<Vec<_>>>()?;
        limits.check_message_sizes(id, sizes.into_iter())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .field("ttl", &self.inner.ttl)
            .field("max_sessions", &self.inner.max_sessions)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

/// Stops the task started by [`MemoryStore::spawn_reaper`] when dropped.
#[derive(Debug)]
pub struct ReaperHandle {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ReaperHandle {
    /// Stops the reaper and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // A cancelled task reports JoinError::Cancelled; that is the goal.
            let _ = task.await;
        }
    }
}

impl Drop for ReaperHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn system_name(&self) -> &'static str {
        "memory"
    }

    async fn load_with(&self, id: &SessionId, options: Load) -> Result<Option<ConversationState>> {
        // A maintenance read leaves `last_accessed_at` and the tick alone.
        let access = !options.keep_clocks;
        Ok(self.inner.read_with(id, access, |s| s.to_state(id)))
    }

    async fn load_recent_as(&self, id: &SessionId, read: Recent) -> Result<Option<RecentState>> {
        let (n, lookup) = (read.n, read.lookup.as_ref());
        // A maintenance read leaves `last_accessed_at` and the tick alone.
        Ok(self
            .inner
            .read_with(id, !read.keep_clocks, |s| {
                let start = s.messages.len().saturating_sub(n);
                RecentState {
                    id: id.clone(),
                    user_id: s.user_id.clone(),
                    messages: s.messages.get(start..).unwrap_or_default().to_vec(),
                    total_messages: s.messages.len() as u64,
                    system_prompt: s.system_prompt.clone(),
                    summaries: s.summaries.clone(),
                    metadata: s.metadata.clone(),
                    counters: s.counters.clone(),
                    replay: lookup.and_then(|k| s.remembered(k)),
                    pending: None,
                    version: s.version,
                }
            })
            .map(|mut r| {
                if let (None, Some(key)) = (&r.replay, lookup) {
                    r.pending = self.pending.get(id, key);
                }
                r
            }))
    }

    async fn save_with(&self, state: &ConversationState, options: SaveOptions) -> Result<Version> {
        let limits = &self.inner.limits;
        limits.check_message_count(&state.id, state.messages.len() as u64)?;
        if limits.max_message_bytes.is_some() {
            let owned: Vec<Message> = state.messages.iter().map(|m| (**m).clone()).collect();
            self.check_sizes(&state.id, &owned)?;
        }
        self.inner.write(&state.id, Save { state, options })
    }

    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        self.check_sizes(id, &append.messages)?;
        let key = append.key.clone();
        let done = self.inner.write(
            id,
            AppendOp {
                append,
                limits: &self.inner.limits,
            },
        )?;
        // A lookup after the write finds it remembered, which hides any
        // progress left: forgetting it now is only tidying.
        if let Some(key) = key {
            self.pending.remove(id, &key);
        }
        Ok(done)
    }

    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        statestore_core::check_fork_ids(source, target)?;
        let snapshot = self
            .inner
            .read(source, |s| s.clone())
            .ok_or_else(|| Error::NotFound { id: source.clone() })?;
        self.inner.write(target, Fork(snapshot))
    }

    async fn delete_with(&self, id: &SessionId, options: Delete) -> Result<bool> {
        let expect = options.expect;
        let mut found = None;
        let removed = {
            let mut map = lock(self.inner.shard(id));
            self.inner.remove_if(&mut map, id, |live, _| {
                found = live.map(|s| s.version);
                expect.admits(found) && found.is_some()
            })
        };
        match removed {
            Some(existed) => {
                self.pending.remove_session(id);
                Ok(existed)
            }
            None if expect.admits(found) => {
                // No session (progress recorded before one may remain).
                self.pending.remove_session(id);
                Ok(false)
            }
            None => Err(Error::Conflict {
                id: id.clone(),
                expected: expect,
                actual: found,
            }),
        }
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        Ok(self.inner.find(id).is_some())
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let limit = query.limit.max(1);
        let mut position = query.position()?;
        let mut page = Vec::with_capacity(limit.min(1_024) + 1);
        let mut examined = 0usize;
        loop {
            let batch = lock(&self.inner.listing).candidates(
                query,
                position.as_ref(),
                (limit + 1 - page.len()).clamp(16, 1_024),
            );
            if batch.is_empty() {
                return Ok(ListPage::of(page, false, query.order).with_total(self.count(query)));
            }
            for (id, indexed_at) in batch {
                examined += 1;
                position = Some(ListCursor {
                    order: query.order,
                    updated_at: indexed_at,
                    id: id.as_str().to_owned(),
                });
                // A maintenance read: listing is not an access.
                let found = self.inner.read_with(&id, false, |s| {
                    let info = s.info(&id);
                    let admitted = query.admits(&info, &s.metadata);
                    (info, admitted)
                });
                let Some((info, true)) = found else { continue };
                if query.order == ListOrder::Recent && info.updated_at != indexed_at {
                    continue; // written since the index was read: it moved ahead
                }
                page.push(info);
                if page.len() > limit {
                    page.truncate(limit);
                    return Ok(ListPage::of(page, true, query.order).with_total(self.count(query)));
                }
            }
            if examined >= LIST_BUDGET {
                // Bounded work per call: a short page that continues here.
                let next = position.as_ref().map(ListCursor::encode);
                return Ok(ListPage::new(page, next).with_total(self.count(query)));
            }
        }
    }

    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        self.inner.write(id, MergeMetadata { patch, expect })
    }

    async fn add_summary_with(
        &self,
        id: &SessionId,
        add: statestore_core::AddSummary,
    ) -> Result<Version> {
        self.inner.write(id, AddSummary(add))
    }

    async fn touch(&self, id: &SessionId) -> Result<bool> {
        Ok(self.inner.read(id, |_| ()).is_some())
    }

    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> Result<()> {
        self.check_sizes(id, &pending.messages)?;
        if self
            .inner
            .read(id, |s| s.remembered(key))
            .flatten()
            .is_none()
        {
            self.pending.put(id, key, pending.clone(), self.inner.ttl);
        }
        Ok(())
    }

    async fn load_pending(&self, id: &SessionId, key: &IdempotencyKey) -> Result<Option<Pending>> {
        // Looking progress up is not an access (docs/design.md, retention).
        if self
            .inner
            .read_with(id, false, |s| s.remembered(key))
            .flatten()
            .is_some()
        {
            return Ok(None);
        }
        Ok(self.pending.get(id, key))
    }
}
