#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod recency;

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use statestore_core::codec::{self, Limits};
use statestore_core::{
    Append, Appended, ConversationState, Counters, Error, Expect, IdempotencyKey, ListPage,
    ListQuery, Message, Metadata, REMEMBERED_WRITES, RecentState, Result, SessionId, Store,
    Summary, Timestamp, Version, async_trait,
};

use recency::{Clock, Recency};

/// Number of independently locked shards of the session map.
const SHARDS: usize = 64;
/// Expired sessions removed, at most, by one write (keeps tail latency flat).
const SWEEP_BUDGET: usize = 16;

/// An in-memory [`Store`]: for development, tests and single-instance apps.
///
/// Cloning is cheap and clones share the same sessions. See the
/// [crate documentation](crate) for its design and limits.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
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
        let tracked = self.ttl.is_some() || self.max_sessions.is_some();
        MemoryStore {
            inner: Arc::new(Inner {
                shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
                hasher: std::hash::RandomState::new(),
                len: AtomicUsize::new(0),
                clock: Clock::new(),
                recency: tracked.then(|| Mutex::new(Recency::default())),
                ttl: self.ttl,
                max_sessions: self.max_sessions,
                limits: self.limits,
            }),
        }
    }
}

type Shard = Mutex<HashMap<SessionId, Arc<Slot>>>;

struct Inner {
    shards: [Shard; SHARDS],
    hasher: std::hash::RandomState,
    /// Sessions currently in the map.
    len: AtomicUsize,
    clock: Clock,
    /// Access order, kept only when a TTL or a session bound is configured.
    recency: Option<Mutex<Recency>>,
    ttl: Option<Duration>,
    max_sessions: Option<usize>,
    limits: Limits,
}

/// One session's cell. `None` once the session was removed from the map: an
/// operation that finds it so looks the id up again.
struct Slot {
    session: Mutex<Option<Session>>,
    /// The session's last access, as a [`Clock`] tick (unique per access).
    tick: AtomicU64,
}

#[derive(Clone)]
struct Session {
    user_id: Option<String>,
    system_prompt: Option<String>,
    messages: Vec<Arc<Message>>,
    summaries: Vec<Summary>,
    metadata: Metadata,
    counters: Counters,
    /// The last [`REMEMBERED_WRITES`] keyed appends, oldest first.
    writes: VecDeque<(IdempotencyKey, Appended)>,
    version: Version,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_accessed_at: Timestamp,
}

impl Session {
    fn empty() -> Self {
        let now = Timestamp::now();
        Self {
            user_id: None,
            system_prompt: None,
            messages: Vec::new(),
            summaries: Vec::new(),
            metadata: Metadata::new(),
            counters: Counters::new(),
            writes: VecDeque::new(),
            version: 0,
            created_at: now,
            updated_at: now,
            last_accessed_at: now,
        }
    }

    fn from_state(state: &ConversationState) -> Self {
        Self {
            user_id: state.user_id.clone(),
            system_prompt: state.system_prompt.clone(),
            messages: state.messages.clone(),
            summaries: state.summaries.clone(),
            metadata: state.metadata.clone(),
            counters: state.counters.clone(),
            ..Self::empty()
        }
    }

    fn to_state(&self, id: &SessionId) -> ConversationState {
        ConversationState {
            id: id.clone(),
            user_id: self.user_id.clone(),
            messages: self.messages.clone(),
            system_prompt: self.system_prompt.clone(),
            summaries: self.summaries.clone(),
            metadata: self.metadata.clone(),
            counters: self.counters.clone(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_accessed_at: self.last_accessed_at,
        }
    }

    fn check(&self, id: &SessionId, expect: Expect) -> Result<()> {
        if expect.admits(Some(self.version)) {
            Ok(())
        } else {
            Err(conflict(id, expect, Some(self.version)))
        }
    }

    /// What the write under `key` did, if remembered.
    fn remembered(&self, key: &IdempotencyKey) -> Option<Appended> {
        self.writes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| a.replay())
    }

    /// Remembers a keyed write, forgetting the oldest beyond the bound.
    fn remember(&mut self, key: Option<IdempotencyKey>, appended: Appended) {
        let Some(key) = key else { return };
        if self.writes.len() >= REMEMBERED_WRITES {
            self.writes.pop_front();
        }
        self.writes.push_back((key, appended));
    }

    /// Records a completed write.
    fn bump(&mut self) -> Version {
        self.version += 1;
        self.updated_at = Timestamp::now();
        self.last_accessed_at = self.updated_at;
        self.version
    }
}

/// The expectation check for a session that does not exist.
fn check_missing(id: &SessionId, expect: Expect) -> Result<()> {
    if expect.admits(None) {
        Ok(())
    } else {
        Err(conflict(id, expect, None))
    }
}

fn conflict(id: &SessionId, expected: Expect, actual: Option<Version>) -> Error {
    Error::Conflict {
        id: id.clone(),
        expected,
        actual,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks; if one ever did, the data is
    // still consistent (every mutation is a single assignment), so go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn merge(metadata: &mut Metadata, patch: Metadata) {
    for (k, v) in patch {
        if v.is_null() {
            metadata.remove(&k);
        } else {
            metadata.insert(k, v);
        }
    }
}

/// What a write does to a session that is missing and to one that exists.
trait Write {
    type Out;
    /// The outcome of an earlier identical write, when this one repeats it:
    /// then nothing is written and the version stays.
    fn replay(&self, _session: &Session) -> Option<Self::Out> {
        None
    }
    /// A new session, or the error for a missing one.
    fn create(self, id: &SessionId) -> Result<(Session, Self::Out)>;
    /// Changes an existing session; the version is bumped afterwards unless
    /// this fails.
    fn update(self, id: &SessionId, session: &mut Session) -> Result<Self::Out>;
}

impl Inner {
    #[expect(
        clippy::indexing_slicing,
        reason = "the index is reduced modulo SHARDS"
    )]
    fn shard(&self, id: &SessionId) -> &Shard {
        let i = self.hasher.hash_one(id.as_str()) % SHARDS as u64;
        &self.shards[usize::try_from(i).unwrap_or(0)]
    }

    fn expired(&self, tick: u64) -> bool {
        self.ttl
            .is_some_and(|ttl| self.clock.elapsed_since(tick) > ttl)
    }

    /// Records an access of `id` now.
    fn touch(&self, id: &SessionId, slot: &Slot) {
        let Some(recency) = &self.recency else { return };
        let tick = self.clock.tick();
        let old = slot.tick.swap(tick, Ordering::Relaxed);
        lock(recency).moved(old, tick, id);
    }

    /// The live slot of `id`, removing it first if it has expired.
    fn find(&self, id: &SessionId) -> Option<Arc<Slot>> {
        let mut map = lock(self.shard(id));
        let slot = map.get(id)?;
        let tick = slot.tick.load(Ordering::Relaxed);
        if self.expired(tick) {
            // Only if still unused since: a write that raced this check and
            // returned Ok moved the tick, and its session must stay.
            if self.remove_locked(&mut map, id, Some(tick)) {
                return None;
            }
            return map.get(id).cloned();
        }
        Some(Arc::clone(slot))
    }

    /// Runs `f` on the live session `id`, counting it as an access.
    fn read<T>(&self, id: &SessionId, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        loop {
            let slot = self.find(id)?;
            let mut guard = lock(&slot.session);
            if let Some(session) = guard.as_mut() {
                session.last_accessed_at = Timestamp::now();
                self.touch(id, &slot);
                return Some(f(session));
            }
            // Removed between lookup and lock: look again.
        }
    }

    fn write<W: Write>(&self, id: &SessionId, op: W) -> Result<W::Out> {
        let slot = {
            let mut map = lock(self.shard(id));
            let mut live = map.get(id).cloned();
            if let Some(slot) = &live {
                let tick = slot.tick.load(Ordering::Relaxed);
                // Removed only if unused since the expiry was observed.
                if self.expired(tick) && self.remove_locked(&mut map, id, Some(tick)) {
                    live = None;
                }
            }
            match live {
                Some(slot) => slot,
                None => {
                    let (mut session, out) = op.create(id)?;
                    session.bump();
                    let slot = Arc::new(Slot {
                        session: Mutex::new(Some(session)),
                        tick: AtomicU64::new(0),
                    });
                    self.touch(id, &slot);
                    map.insert(id.clone(), slot);
                    self.len.fetch_add(1, Ordering::Relaxed);
                    drop(map);
                    self.after_insert();
                    return Ok(out);
                }
            }
        };
        let mut guard = lock(&slot.session);
        match guard.as_mut() {
            Some(session) => {
                if let Some(out) = op.replay(session) {
                    session.last_accessed_at = Timestamp::now();
                    self.touch(id, &slot);
                    return Ok(out);
                }
                let out = op.update(id, session)?;
                session.bump();
                self.touch(id, &slot);
                Ok(out)
            }
            None => {
                // Removed between lookup and lock. Retrying could apply `op`
                // twice in spirit only if it had run; it has not, so retry.
                drop(guard);
                self.write(id, op)
            }
        }
    }

    /// Removes `id` from a locked shard map. With `only_tick`, only when the
    /// session's last access is still that tick (it was not used since).
    fn remove_locked(
        &self,
        map: &mut HashMap<SessionId, Arc<Slot>>,
        id: &SessionId,
        only_tick: Option<u64>,
    ) -> bool {
        let Some(slot) = map.get(id) else {
            return false;
        };
        let mut guard = lock(&slot.session);
        let tick = slot.tick.load(Ordering::Relaxed);
        if only_tick.is_some_and(|t| t != tick) {
            return false;
        }
        let existed = guard.take().is_some();
        drop(guard);
        map.remove(id);
        self.len.fetch_sub(1, Ordering::Relaxed);
        if let Some(recency) = &self.recency {
            lock(recency).remove(tick);
        }
        existed
    }

    /// Removes the least recently used session whose recorded tick is
    /// `(tick, id)`; false when it was used since.
    fn remove_if_unused(&self, tick: u64, id: &SessionId) -> bool {
        let mut map = lock(self.shard(id));
        self.remove_locked(&mut map, id, Some(tick))
    }

    /// Enforces the session bound and sweeps a few expired sessions.
    fn after_insert(&self) {
        let Some(recency) = &self.recency else { return };
        let mut swept = 0;
        while swept < SWEEP_BUDGET {
            let oldest = lock(recency).oldest();
            let Some((tick, id)) = oldest else { break };
            let over = self
                .max_sessions
                .is_some_and(|max| self.len.load(Ordering::Relaxed) > max);
            if !over && !self.expired(tick) {
                break;
            }
            if self.remove_if_unused(tick, &id) {
                tracing::debug!(
                    reason = if over { "lru" } else { "ttl" },
                    "evicted a session"
                );
            } else {
                // Used since it was recorded: its fresh tick is already in place.
                lock(recency).remove_stale(tick, &id);
            }
            swept += 1;
        }
    }

    fn purge_expired(&self) -> usize {
        let Some(recency) = &self.recency else {
            return 0;
        };
        let mut removed = 0;
        loop {
            let oldest = lock(recency).oldest();
            let Some((tick, id)) = oldest else { break };
            if !self.expired(tick) {
                break;
            }
            if self.remove_if_unused(tick, &id) {
                removed += 1;
            } else {
                lock(recency).remove_stale(tick, &id);
            }
        }
        removed
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

struct AppendOp<'a> {
    append: Append,
    limits: &'a Limits,
}

impl AppendOp<'_> {
    /// Appends to `s` (already checked), adds the counters, remembers the key.
    fn apply(self, s: &mut Session) -> Appended {
        let Append {
            messages,
            key,
            counters,
            ..
        } = self.append;
        let appended = Appended::new(
            s.version + 1,
            s.messages.len() as u64,
            messages.len() as u64,
        );
        s.messages.extend(messages.into_iter().map(Arc::new));
        for (name, delta) in counters {
            let total = s.counters.entry(name).or_insert(0);
            *total = total.saturating_add(delta);
        }
        s.remember(key, appended);
        appended
    }
}

impl Write for AppendOp<'_> {
    type Out = Appended;
    fn replay(&self, s: &Session) -> Option<Appended> {
        s.remembered(self.append.key.as_ref()?)
    }
    fn create(self, id: &SessionId) -> Result<(Session, Appended)> {
        check_missing(id, self.append.expect)?;
        self.limits
            .check_message_count(id, self.append.messages.len() as u64)?;
        let mut s = Session::empty();
        let appended = self.apply(&mut s);
        Ok((s, appended))
    }
    fn update(self, id: &SessionId, s: &mut Session) -> Result<Appended> {
        s.check(id, self.append.expect)?;
        self.limits
            .check_message_count(id, (s.messages.len() + self.append.messages.len()) as u64)?;
        Ok(self.apply(s))
    }
}

struct Save<'a> {
    state: &'a ConversationState,
    expect: Expect,
}

impl Write for Save<'_> {
    type Out = Version;
    fn create(self, id: &SessionId) -> Result<(Session, Version)> {
        check_missing(id, self.expect)?;
        let session = Session {
            created_at: self.state.created_at,
            ..Session::from_state(self.state)
        };
        Ok((session, 1))
    }
    fn update(self, id: &SessionId, s: &mut Session) -> Result<Version> {
        s.check(id, self.expect)?;
        let created_at = s.created_at;
        let version = s.version;
        let writes = std::mem::take(&mut s.writes);
        *s = Session {
            created_at,
            version,
            writes,
            ..Session::from_state(self.state)
        };
        Ok(version + 1)
    }
}

struct Fork(Session);

impl Write for Fork {
    type Out = Version;
    fn create(self, _: &SessionId) -> Result<(Session, Version)> {
        let now = Timestamp::now();
        let session = Session {
            version: 0,
            writes: VecDeque::new(),
            created_at: now,
            updated_at: now,
            last_accessed_at: now,
            ..self.0
        };
        Ok((session, 1))
    }
    fn update(self, id: &SessionId, _: &mut Session) -> Result<Version> {
        Err(Error::AlreadyExists { id: id.clone() })
    }
}

struct MergeMetadata {
    patch: Metadata,
    expect: Expect,
}

impl Write for MergeMetadata {
    type Out = Version;
    fn create(self, id: &SessionId) -> Result<(Session, Version)> {
        check_missing(id, self.expect)?;
        let mut s = Session::empty();
        merge(&mut s.metadata, self.patch);
        Ok((s, 1))
    }
    fn update(self, id: &SessionId, s: &mut Session) -> Result<Version> {
        s.check(id, self.expect)?;
        merge(&mut s.metadata, self.patch);
        Ok(s.version + 1)
    }
}

struct AddSummary {
    summary: Summary,
    expect: Expect,
}

impl Write for AddSummary {
    type Out = Version;
    fn create(self, id: &SessionId) -> Result<(Session, Version)> {
        Err(Error::NotFound { id: id.clone() })
    }
    fn update(self, id: &SessionId, s: &mut Session) -> Result<Version> {
        s.check(id, self.expect)?;
        let range = &self.summary.covers;
        if range.start >= range.end || range.end > s.messages.len() as u64 {
            return Err(Error::InvalidArgument {
                id: id.clone(),
                reason: format!(
                    "summary covers messages {}..{}, but the history holds {}",
                    range.start,
                    range.end,
                    s.messages.len()
                ),
            });
        }
        s.summaries.push(self.summary);
        Ok(s.version + 1)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<ConversationState>> {
        Ok(self.inner.read(id, |s| s.to_state(id)))
    }

    async fn load_recent_with(
        &self,
        id: &SessionId,
        n: usize,
        lookup: Option<&IdempotencyKey>,
    ) -> Result<Option<RecentState>> {
        Ok(self.inner.read(id, |s| {
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
                version: s.version,
            }
        }))
    }

    async fn save(&self, state: &ConversationState, expect: Expect) -> Result<Version> {
        let limits = &self.inner.limits;
        limits.check_message_count(&state.id, state.messages.len() as u64)?;
        if limits.max_message_bytes.is_some() {
            let owned: Vec<Message> = state.messages.iter().map(|m| (**m).clone()).collect();
            self.check_sizes(&state.id, &owned)?;
        }
        self.inner.write(&state.id, Save { state, expect })
    }

    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        self.check_sizes(id, &append.messages)?;
        self.inner.write(
            id,
            AppendOp {
                append,
                limits: &self.inner.limits,
            },
        )
    }

    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        statestore_core::check_fork_ids(source, target)?;
        let snapshot = self
            .inner
            .read(source, |s| s.clone())
            .ok_or_else(|| Error::NotFound { id: source.clone() })?;
        self.inner.write(target, Fork(snapshot))
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let mut map = lock(self.inner.shard(id));
        Ok(self.inner.remove_locked(&mut map, id, None))
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        Ok(self.inner.find(id).is_some())
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let limit = query.limit.max(1);
        let after = query.cursor.as_deref();
        let mut ids: Vec<SessionId> = Vec::new();
        for shard in &self.inner.shards {
            let candidates: Vec<(SessionId, Arc<Slot>)> = lock(shard)
                .iter()
                .filter(|(id, _)| after.is_none_or(|c| id.as_str() > c))
                .map(|(id, slot)| (id.clone(), Arc::clone(slot)))
                .collect();
            for (id, slot) in candidates {
                if self.inner.expired(slot.tick.load(Ordering::Relaxed)) {
                    continue;
                }
                let keep = match (&query.user_id, lock(&slot.session).as_ref()) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(user), Some(s)) => s.user_id.as_ref() == Some(user),
                };
                if keep {
                    ids.push(id);
                }
            }
        }
        let more = ids.len() > limit;
        if more {
            ids.select_nth_unstable(limit);
            ids.truncate(limit);
        }
        ids.sort_unstable();
        let next_cursor = more
            .then(|| ids.last().map(|id| id.as_str().to_owned()))
            .flatten();
        Ok(ListPage { ids, next_cursor })
    }

    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        self.inner.write(id, MergeMetadata { patch, expect })
    }

    async fn add_summary(
        &self,
        id: &SessionId,
        summary: Summary,
        expect: Expect,
    ) -> Result<Version> {
        self.inner.write(id, AddSummary { summary, expect })
    }

    async fn touch(&self, id: &SessionId) -> Result<bool> {
        Ok(self.inner.read(id, |_| ()).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read that sees a session expired must not remove it when a write
    /// that found it live is finishing meanwhile: that write returned Ok,
    /// so the session must still be there (issue 10, item 9).
    #[test]
    fn expiry_spares_a_session_whose_concurrent_write_succeeded() {
        let store = MemoryStore::builder()
            .ttl(Duration::from_millis(50))
            .build();
        let inner = Arc::clone(&store.inner);
        let id = SessionId::new("raced").unwrap();
        let limits = Limits::none();
        let write = |text: &str| {
            inner.write(
                &id,
                AppendOp {
                    append: Append::new([Message::user(text)]),
                    limits: &limits,
                },
            )
        };
        write("first").unwrap();

        // A writer has found the session live and holds its lock ...
        let slot = lock(inner.shard(&id)).get(&id).cloned().unwrap();
        let mut session = lock(&slot.session);
        // ... while the TTL runs out and a reader sees it expired.
        std::thread::sleep(Duration::from_millis(80));
        let reader = {
            let inner = Arc::clone(&inner);
            let id = id.clone();
            std::thread::spawn(move || inner.find(&id).is_some())
        };
        // Wait until the reader holds the shard lock: it is then inside
        // `find`, blocked on the session lock we hold.
        while inner.shard(&id).try_lock().is_ok() {
            std::thread::yield_now();
        }
        // The writer finishes: its write lands and counts as an access.
        let s = session.as_mut().unwrap();
        s.messages.push(Arc::new(Message::user("second")));
        s.bump();
        inner.touch(&id, &slot);
        drop(session);

        assert!(
            reader.join().unwrap(),
            "the reader must see the live session"
        );
        let session = lock(inner.shard(&id)).get(&id).cloned();
        let session = session.expect("a session whose write returned Ok was removed");
        assert_eq!(lock(&session.session).as_ref().unwrap().messages.len(), 2);
    }

    /// The recency index holds exactly one entry per session in the map,
    /// with the session's current tick, after concurrent creates, reads,
    /// forks, deletes and evictions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn recency_index_matches_the_map_under_concurrency() {
        let store = MemoryStore::builder()
            .ttl(Duration::from_secs(3600))
            .max_sessions(64)
            .build();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..6u32 {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0..400u32 {
                    let id = SessionId::new(format!("s{}", (i * 7 + t) % 150)).unwrap();
                    let other = SessionId::new(format!("s{}", (i * 13 + t) % 150)).unwrap();
                    match i % 5 {
                        0 | 1 => {
                            store
                                .append(&id, vec![Message::user("x")], Expect::Any)
                                .await
                                .unwrap();
                        }
                        2 => {
                            store.load_recent(&id, 2).await.unwrap();
                        }
                        3 => {
                            let _ = store.fork(&id, &other).await;
                        }
                        _ => {
                            store.delete(&id).await.unwrap();
                        }
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let inner = &store.inner;
        let entries = lock(inner.recency.as_ref().unwrap()).entries();
        assert_eq!(entries.len(), store.len());
        assert!(store.len() <= 64);
        for (tick, id) in entries {
            let map = lock(inner.shard(&id));
            let slot = map.get(&id).expect("indexed session is in the map");
            assert_eq!(slot.tick.load(Ordering::Relaxed), tick);
            assert!(lock(&slot.session).is_some());
        }
    }
}
