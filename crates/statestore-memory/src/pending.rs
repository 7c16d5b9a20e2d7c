//! Progress of keyed writes still to be made ([`Store::put_pending`]):
//! kept beside the sessions, not in them, since it neither creates a
//! session nor changes its version.
//!
//! [`Store::put_pending`]: statestore_core::Store::put_pending

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use statestore_core::{IdempotencyKey, Pending, SessionId};

/// Progress by session and key, with when it expires.
type BySession = HashMap<SessionId, HashMap<IdempotencyKey, (Arc<Pending>, Option<Instant>)>>;

/// Every session's recorded progress, by session and key, with when it
/// expires (the store's TTL after it was recorded).
#[derive(Debug, Default)]
pub(crate) struct PendingWrites {
    map: Mutex<BySession>,
}

impl PendingWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, BySession> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn put(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: Pending,
        ttl: Option<Duration>,
    ) {
        let expires = ttl.and_then(|t| Instant::now().checked_add(t));
        self.lock()
            .entry(id.clone())
            .or_default()
            .insert(key.clone(), (Arc::new(pending), expires));
    }

    pub(crate) fn get(&self, id: &SessionId, key: &IdempotencyKey) -> Option<Pending> {
        let mut map = self.lock();
        let keys = map.get_mut(id)?;
        let (pending, expires) = keys.get(key)?;
        if expires.is_some_and(|e| e <= Instant::now()) {
            keys.remove(key);
            return None;
        }
        Some((**pending).clone())
    }

    /// Forgets the progress of `key`'s write (made now).
    pub(crate) fn remove(&self, id: &SessionId, key: &IdempotencyKey) {
        let mut map = self.lock();
        if let Some(keys) = map.get_mut(id) {
            keys.remove(key);
            if keys.is_empty() {
                map.remove(id);
            }
        }
    }

    /// Forgets every progress of the session (deleted).
    pub(crate) fn remove_session(&self, id: &SessionId) {
        self.lock().remove(id);
    }
}
