//! The session map: 64 independently locked shards of slots, one per
//! session, and everything that finds, writes, expires or evicts a
//! session in it. Lock order is shard → slot → recency index or list
//! index (each a leaf: never both held).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use statestore_core::codec::Limits;
use statestore_core::{Result, SessionId, Timestamp};

use crate::listing::Listing;
use crate::recency::{Clock, Recency};
use crate::session::Session;
use crate::writes::Write;

/// Number of independently locked shards of the session map.
const SHARDS: usize = 64;
/// Expired sessions removed, at most, by one write (keeps tail latency flat).
const SWEEP_BUDGET: usize = 16;

/// A part of the session map, locked on its own.
pub(crate) type Shard = Mutex<HashMap<SessionId, Arc<Slot>>>;

/// What the clones of one [`MemoryStore`](crate::MemoryStore) share.
pub(crate) struct Inner {
    pub(crate) shards: [Shard; SHARDS],
    hasher: std::hash::RandomState,
    /// Sessions currently in the map.
    pub(crate) len: AtomicUsize,
    clock: Clock,
    /// Access order, kept only when a TTL or a session bound is configured.
    pub(crate) recency: Option<Mutex<Recency>>,
    /// The list indexes (see [`crate::listing`]).
    pub(crate) listing: Mutex<Listing>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) max_sessions: Option<usize>,
    pub(crate) limits: Limits,
}

/// One session's cell. `None` once the session was removed from the map: an
/// operation that finds it so looks the id up again.
pub(crate) struct Slot {
    pub(crate) session: Mutex<Option<Session>>,
    /// The session's last access, as a [`Clock`] tick (unique per access).
    pub(crate) tick: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks; if one ever did, the data is
    // still consistent (every mutation is a single assignment), so go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    pub(crate) fn new(ttl: Option<Duration>, max_sessions: Option<usize>, limits: Limits) -> Self {
        let tracked = ttl.is_some() || max_sessions.is_some();
        Inner {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: std::hash::RandomState::new(),
            len: AtomicUsize::new(0),
            clock: Clock::new(),
            recency: tracked.then(|| Mutex::new(Recency::default())),
            listing: Mutex::new(Listing::default()),
            ttl,
            max_sessions,
            limits,
        }
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "the index is reduced modulo SHARDS"
    )]
    pub(crate) fn shard(&self, id: &SessionId) -> &Shard {
        let i = self.hasher.hash_one(id.as_str()) % SHARDS as u64;
        &self.shards[usize::try_from(i).unwrap_or(0)]
    }

    pub(crate) fn expired(&self, tick: u64) -> bool {
        self.ttl
            .is_some_and(|ttl| self.clock.elapsed_since(tick) > ttl)
    }

    /// Records an access of `id` now.
    pub(crate) fn touch(&self, id: &SessionId, slot: &Slot) {
        let Some(recency) = &self.recency else { return };
        let tick = self.clock.tick();
        let old = slot.tick.swap(tick, Ordering::Relaxed);
        lock(recency).moved(old, tick, id);
    }

    /// The live slot of `id`, removing it first if it has expired.
    pub(crate) fn find(&self, id: &SessionId) -> Option<Arc<Slot>> {
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
    pub(crate) fn read<T>(&self, id: &SessionId, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        self.read_with(id, true, f)
    }

    /// Runs `f` on the live session `id`; counting it as an access (its
    /// `last_accessed_at` and last-access tick, so its expiry) only when
    /// `access` — else a maintenance read, which leaves both as they are.
    pub(crate) fn read_with<T>(
        &self,
        id: &SessionId,
        access: bool,
        f: impl FnOnce(&mut Session) -> T,
    ) -> Option<T> {
        loop {
            let slot = self.find(id)?;
            let mut guard = lock(&slot.session);
            if let Some(session) = guard.as_mut() {
                if access {
                    session.last_accessed_at = Timestamp::now();
                    self.touch(id, &slot);
                }
                return Some(f(session));
            }
            // Removed between lookup and lock: look again.
        }
    }

    pub(crate) fn write<W: Write>(&self, id: &SessionId, op: W) -> Result<W::Out> {
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
                    lock(&self.listing).moved(id, None, Some(&session.listed()));
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
                let was = session.listed();
                let out = if op.keeps_clocks() {
                    // A maintenance write: a new version, but no access —
                    // timestamps and the last-access tick (the expiry) stay.
                    let out = op.update(id, session)?;
                    session.version += 1;
                    out
                } else {
                    let out = op.update(id, session)?;
                    session.bump();
                    self.touch(id, &slot);
                    out
                };
                lock(&self.listing).moved(id, Some(&was), Some(&session.listed()));
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

    /// Removes `id` from a locked shard map (live or expired); whether it
    /// did. With `only_tick`, only when the session's last access is still
    /// that tick (it was not used since).
    pub(crate) fn remove_locked(
        &self,
        map: &mut HashMap<SessionId, Arc<Slot>>,
        id: &SessionId,
        only_tick: Option<u64>,
    ) -> bool {
        self.remove_if(map, id, |_, tick| only_tick.is_none_or(|t| t == tick))
            .is_some()
    }

    /// Removes `id` from a locked shard map when `remove` says so, asked
    /// with the session's lock held (so no write lands between the question
    /// and the removal): with the live session (`None` once removed or
    /// expired) and its last-access tick. `None` when `remove` refused;
    /// `Some(whether a live session was removed)` otherwise.
    pub(crate) fn remove_if(
        &self,
        map: &mut HashMap<SessionId, Arc<Slot>>,
        id: &SessionId,
        remove: impl FnOnce(Option<&Session>, u64) -> bool,
    ) -> Option<bool> {
        let Some(slot) = map.get(id) else {
            return remove(None, 0).then_some(false);
        };
        let mut guard = lock(&slot.session);
        let tick = slot.tick.load(Ordering::Relaxed);
        let live = guard.as_ref().filter(|_| !self.expired(tick));
        if !remove(live, tick) {
            return None;
        }
        let existed = live.is_some();
        let removed = guard.take();
        drop(guard);
        if let Some(session) = removed {
            lock(&self.listing).moved(id, Some(&session.listed()), None);
        }
        map.remove(id);
        self.len.fetch_sub(1, Ordering::Relaxed);
        if let Some(recency) = &self.recency {
            lock(recency).remove(tick);
        }
        Some(existed)
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

    pub(crate) fn purge_expired(&self) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::writes::AppendOp;
    use statestore_core::{Append, Expect, Message, Store};

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

    /// The recency and list indexes hold exactly one entry per session in
    /// the map, with the session's current tick, owner and `updated_at`,
    /// after concurrent creates, reads, forks, deletes and evictions.
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
        // The list index holds every session in the map, where it is.
        let listed = lock(&inner.listing).entries();
        assert_eq!(listed.len(), store.len());
        for (id, at) in listed {
            let map = lock(inner.shard(&id));
            let slot = map.get(&id).expect("listed session is in the map");
            let session = lock(&slot.session);
            assert_eq!(session.as_ref().map(Session::listed), Some(at));
        }
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
