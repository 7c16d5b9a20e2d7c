//! Access order for TTL expiry and LRU eviction.
//!
//! Every access of a session takes a fresh, unique *tick* from [`Clock`]
//! (nanoseconds since the store was built, strictly increasing). [`Recency`]
//! maps ticks to session ids, so its first entry is both the least recently
//! used session and, since the TTL is sliding, the first to expire. Both
//! eviction and expiry therefore cost O(log n) per removed session and no
//! background thread is needed.
//!
//! Invariant: an entry `(tick, id)` exists exactly while the session `id`
//! is in the map with last-access tick `tick`; updates happen under the
//! session's lock, and the recency lock is always taken last (a leaf lock).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use statestore_core::SessionId;
use tokio::time::Instant;

/// A monotonic tick source. Uses tokio's clock, so tests can pause and
/// advance time (`tokio::time::pause`).
pub(crate) struct Clock {
    base: Instant,
    last: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A tick for an access happening now; never 0, never repeated.
    pub(crate) fn tick(&self) -> u64 {
        let now = self.now_nanos();
        let prev = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last.saturating_add(1)).max(1))
            })
            .unwrap_or_else(|last| last);
        now.max(prev.saturating_add(1)).max(1)
    }

    /// Time since the access recorded as `tick`.
    pub(crate) fn elapsed_since(&self, tick: u64) -> Duration {
        Duration::from_nanos(self.now_nanos().saturating_sub(tick))
    }
}

/// Sessions ordered by last access.
#[derive(Default)]
pub(crate) struct Recency {
    by_tick: BTreeMap<u64, SessionId>,
}

impl Recency {
    /// `id` was accessed again: its entry moves from `old` to `new`.
    pub(crate) fn moved(&mut self, old: u64, new: u64, id: &SessionId) {
        self.by_tick.remove(&old);
        self.by_tick.insert(new, id.clone());
    }

    pub(crate) fn remove(&mut self, tick: u64) {
        self.by_tick.remove(&tick);
    }

    /// Removes `(tick, id)` if it is still recorded; used when a removal
    /// found the session accessed since.
    pub(crate) fn remove_stale(&mut self, tick: u64, id: &SessionId) {
        if self.by_tick.get(&tick) == Some(id) {
            self.by_tick.remove(&tick);
        }
    }

    /// The least recently accessed session.
    pub(crate) fn oldest(&self) -> Option<(u64, SessionId)> {
        self.by_tick
            .first_key_value()
            .map(|(t, id)| (*t, id.clone()))
    }
}

#[cfg(test)]
impl Recency {
    pub(crate) fn entries(&self) -> Vec<(u64, SessionId)> {
        self.by_tick
            .iter()
            .map(|(t, id)| (*t, id.clone()))
            .collect()
    }
}
