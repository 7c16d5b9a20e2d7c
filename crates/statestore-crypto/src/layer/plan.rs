//! Planning a guarded write: where it lands and which manifest it
//! extends, from what this layer knows or from one read.

use std::sync::Arc;

use statestore_core::{
    Appended, Error as StoreError, Expect, IdempotencyKey, Result as StoreResult, SessionId,
};

use super::{Bound, Known, Layer};
use crate::manifest::Observed;

impl Layer {
    /// Where a guarded write to `id` starts, when this layer knows without
    /// a read.
    pub(crate) fn plan_known(&self, id: &SessionId, caller: Expect) -> Option<Plan> {
        let known = |guard: Expect, k: Known| Plan {
            guard,
            total: k.total,
            base: k.bound,
        };
        match caller {
            Expect::Absent => Some(Plan::create()),
            Expect::Version(v) => self
                .known(id)
                .filter(|k| k.version == v)
                .map(|k| known(caller, k)),
            Expect::Any => self.known(id).map(|k| known(Expect::Version(k.version), k)),
        }
    }

    /// Reads the session (and what the write under `key` did, if it is
    /// remembered) to plan a guarded write: a conflict when `caller`'s
    /// expectation does not hold; an error when the session does not match
    /// its manifest.
    pub(crate) async fn plan_read(
        &self,
        id: &SessionId,
        caller: Expect,
        key: Option<&IdempotencyKey>,
    ) -> StoreResult<Planned> {
        let Some(read) = self.inner.load_recent_with(id, 0, key).await? else {
            self.forget(id);
            if matches!(caller, Expect::Version(_)) {
                return Err(StoreError::Conflict {
                    id: id.clone(),
                    expected: caller,
                    actual: None,
                });
            }
            return Ok(Planned::Write(Plan::create()));
        };
        if let Some(replay) = read.replay {
            // What the write did, whatever the session looks like now: a
            // write that raced a re-creation is re-bound from it.
            self.forget(id);
            return Ok(Planned::Replay(replay));
        }
        let keys = self.keys();
        let bound = self
            .verify(self.codec(keys.as_ref()), &Observed::recent(&read))
            .map_err(|e| {
                self.forget(id);
                self.err(e)
            })?;
        self.remember(id, read.version, read.total_messages, bound.clone());
        let guard = match caller {
            Expect::Version(v) if v != read.version => {
                return Err(StoreError::Conflict {
                    id: id.clone(),
                    expected: caller,
                    actual: Some(read.version),
                });
            }
            Expect::Version(_) => caller,
            _ => Expect::Version(read.version),
        };
        Ok(Planned::Write(Plan {
            guard,
            total: read.total_messages,
            base: bound,
        }))
    }
}

/// Where a guarded write starts: its guard, the session's message count,
/// and the manifest it extends (`None`: a session without one, written
/// while migrating).
pub(crate) struct Plan {
    pub(crate) guard: Expect,
    pub(crate) total: u64,
    pub(crate) base: Option<Arc<Bound>>,
}

impl Plan {
    /// A write that creates the session: a fresh epoch.
    fn create() -> Self {
        Self {
            guard: Expect::Absent,
            total: 0,
            base: Some(Bound::fresh_for(None)),
        }
    }
}

/// What [`Layer::plan_read`] found.
pub(crate) enum Planned {
    Write(Plan),
    /// The write under the key asked about is remembered: this.
    Replay(Appended),
}
