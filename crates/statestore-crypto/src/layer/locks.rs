//! Appends to one session through a layer take turns: one async mutex per
//! session with an append in progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use statestore_core::SessionId;

/// One async mutex per session with an append in progress, removed when
/// the last holder is done.
#[derive(Default)]
pub(super) struct SessionLocks {
    map: Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>,
}

pub(super) struct SessionTurn<'a> {
    locks: &'a SessionLocks,
    id: &'a SessionId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SessionLocks {
    pub(super) async fn lock<'a>(&'a self, id: &'a SessionId) -> SessionTurn<'a> {
        let mutex = Arc::clone(
            self.map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id.clone())
                .or_default(),
        );
        SessionTurn {
            locks: self,
            id,
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for SessionTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Clones are only taken under the map lock: a count of 1 means
        // no one else holds or waits for this session's mutex.
        if map.get(self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(self.id);
        }
    }
}
