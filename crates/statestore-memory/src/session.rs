//! One session's data, and the checks every write makes against it.

use std::collections::VecDeque;
use std::sync::Arc;

use statestore_core::{
    Appended, ConversationState, Counters, Error, Expect, IdempotencyKey, Message, Metadata,
    REMEMBERED_WRITES, RememberedWrite, Result, SessionId, SessionInfo, Summary, Timestamp,
    Version,
};

use crate::listing::Listed;

#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) user_id: Option<String>,
    pub(crate) system_prompt: Option<String>,
    pub(crate) messages: Vec<Arc<Message>>,
    pub(crate) summaries: Vec<Summary>,
    pub(crate) metadata: Metadata,
    pub(crate) counters: Counters,
    /// The last [`REMEMBERED_WRITES`] keyed appends, oldest first.
    pub(crate) writes: VecDeque<(IdempotencyKey, Appended)>,
    pub(crate) version: Version,
    pub(crate) created_at: Timestamp,
    pub(crate) updated_at: Timestamp,
    pub(crate) last_accessed_at: Timestamp,
}

impl Session {
    pub(crate) fn empty() -> Self {
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

    pub(crate) fn from_state(state: &ConversationState) -> Self {
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

    pub(crate) fn to_state(&self, id: &SessionId) -> ConversationState {
        ConversationState {
            id: id.clone(),
            user_id: self.user_id.clone(),
            messages: self.messages.clone(),
            system_prompt: self.system_prompt.clone(),
            summaries: self.summaries.clone(),
            metadata: self.metadata.clone(),
            counters: self.counters.clone(),
            writes: self
                .writes
                .iter()
                .map(|(k, a)| RememberedWrite::new(k.clone(), a.replay()))
                .collect(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_accessed_at: self.last_accessed_at,
        }
    }

    pub(crate) fn check(&self, id: &SessionId, expect: Expect) -> Result<()> {
        if expect.admits(Some(self.version)) {
            Ok(())
        } else {
            Err(conflict(id, expect, Some(self.version)))
        }
    }

    /// What the write under `key` did, if remembered.
    pub(crate) fn remembered(&self, key: &IdempotencyKey) -> Option<Appended> {
        self.writes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| a.replay())
    }

    /// Remembers the writes a save carries in that are not remembered yet
    /// ([`RememberedWrite::carried`]).
    pub(crate) fn carry(&mut self, writes: &[RememberedWrite]) {
        for w in writes {
            if self.remembered(&w.key).is_none() {
                self.remember(Some(w.key.clone()), w.carried());
            }
        }
    }

    /// Remembers a keyed write, forgetting the oldest beyond the bound.
    pub(crate) fn remember(&mut self, key: Option<IdempotencyKey>, appended: Appended) {
        let Some(key) = key else { return };
        if self.writes.len() >= REMEMBERED_WRITES {
            self.writes.pop_front();
        }
        self.writes.push_back((key, appended));
    }

    /// Records a completed write.
    /// Where the list indexes hold this session.
    pub(crate) fn listed(&self) -> Listed {
        Listed {
            user_id: self.user_id.clone(),
            updated_at: self.updated_at,
        }
    }

    /// What [`Store::list`](statestore_core::Store::list) says about it.
    pub(crate) fn info(&self, id: &SessionId) -> SessionInfo {
        SessionInfo::new(id.clone(), self.updated_at)
            .with_user(self.user_id.clone())
            .with_title(SessionInfo::title_in(&self.metadata))
            .created_at(self.created_at)
            .with_version(self.version)
    }

    pub(crate) fn bump(&mut self) -> Version {
        self.version += 1;
        self.updated_at = Timestamp::now();
        self.last_accessed_at = self.updated_at;
        self.version
    }
}

/// The expectation check for a session that does not exist.
pub(crate) fn check_missing(id: &SessionId, expect: Expect) -> Result<()> {
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
