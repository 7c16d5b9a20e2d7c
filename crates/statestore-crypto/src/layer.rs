//! [`Layer`]: what [`Encrypted`](crate::Encrypted) and
//! [`Compressed`](crate::Compressed) share — sealing on the way in, opening on
//! the way out, and the positions a sealed message is bound to.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use statestore_core::{
    Append, Appended, ConversationState, Error as StoreError, Expect, IdempotencyKey, Message,
    Metadata, RecentState, Result as StoreResult, SessionId, Store, Summary, Timestamp, Version,
    WriteOutcome, check_fork_ids,
};

use crate::envelope::{Limits, LoadBudget, Sealer};
use crate::seal::Codec;
use crate::{Compression, KeyRing};

mod pending;
mod rebind;

use rebind::Sent;

/// Sessions whose (version, message count) the layer remembers, at most.
const KNOWN_CAPACITY: usize = 65_536;
/// Attempts of an unguarded append or summary before giving up (each lost
/// attempt means another writer's write landed: the store makes progress).
const MAX_UNGUARDED_ATTEMPTS: u32 = 10_000;

/// A session's version and message count, as last seen by this layer.
#[derive(Clone, Copy, Debug)]
struct Known {
    version: Version,
    total: u64,
}

/// What [`Encrypted`] and [`Compressed`] share.
pub(crate) struct Layer {
    pub(crate) inner: Arc<dyn Store>,
    /// `None`: a compression-only layer.
    keys: Option<Arc<RwLock<KeyRing>>>,
    /// Held shared by every write from sealing until the store answered,
    /// and exclusively by a key switch (and a re-encryption that keeps
    /// losing races): after [`Encrypted::set_keyring`] returns, no write
    /// sealed with the old key is still on its way.
    pub(crate) gate: tokio::sync::RwLock<()>,
    compression: Compression,
    /// How much opening values may decompress.
    pub(crate) limits: Limits,
    plaintext_ok: bool,
    known: Mutex<HashMap<SessionId, Known>>,
    /// Appends to one session through this layer take turns, so they do
    /// not make each other retry.
    appending: SessionLocks,
    /// Messages recently opened or sealed here: (session, position) → (as
    /// stored, opened). A stored message equal to the one cached opens to
    /// the cached one (decryption is deterministic), so a turn's window is
    /// not decrypted again every turn.
    opened: Mutex<HashMap<(SessionId, u64), Opened>>,
    /// Attempts of appends that may sit elsewhere than their messages
    /// were sealed for: their reply was lost, or their re-binding failed.
    /// Re-bound when their key is replayed, or by the session's next
    /// append through this layer.
    unbound: Mutex<HashMap<SessionId, Vec<Arc<Sent>>>>,
}

/// A message as stored, and opened.
type Opened = (Arc<Message>, Arc<Message>);

/// Messages the layer keeps opened, at most.
const OPENED_CAPACITY: usize = 16_384;

impl Layer {
    pub(crate) fn new(
        inner: Arc<dyn Store>,
        keys: Option<Arc<RwLock<KeyRing>>>,
        compression: Compression,
        plaintext_ok: bool,
    ) -> Self {
        Self {
            inner,
            keys,
            gate: tokio::sync::RwLock::new(()),
            compression,
            limits: Limits::default(),
            plaintext_ok,
            known: Mutex::new(HashMap::new()),
            appending: SessionLocks::default(),
            opened: Mutex::new(HashMap::new()),
            unbound: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn keys(&self) -> Option<KeyRing> {
        self.keys
            .as_ref()
            .map(|k| k.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    pub(crate) fn codec<'a>(&self, keys: Option<&'a KeyRing>) -> Codec<'a> {
        Codec {
            sealer: Sealer {
                keys,
                compression: self.compression,
                limits: self.limits,
            },
            plaintext_ok: self.plaintext_ok || keys.is_none(),
        }
    }

    fn encrypting(&self) -> bool {
        self.keys.is_some()
    }

    pub(crate) fn err(&self, e: crate::Error) -> StoreError {
        e.into_store(self.encrypting())
    }

    fn known(&self, id: &SessionId) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied()
    }

    pub(crate) fn remember(&self, id: &SessionId, version: Version, total: u64) {
        if !self.encrypting() {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= KNOWN_CAPACITY && !known.contains_key(id) {
            // Crude but bounded: a forgotten session costs one extra read.
            known.clear();
        }
        known.insert(id.clone(), Known { version, total });
    }

    fn forget(&self, id: &SessionId) {
        if self.encrypting() {
            self.known
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
    }

    /// After a write (not an append) returned `version`: the message count
    /// is unchanged when this layer knew the session at `version - 1`.
    fn advance(&self, id: &SessionId, version: Version) {
        match self.known(id) {
            Some(k) if k.version.checked_add(1) == Some(version) => {
                self.remember(id, version, k.total);
            }
            _ => self.forget(id),
        }
    }

    /// Forgets every opened message (the key ring changed).
    pub(crate) fn clear_opened(&self) {
        self.opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn cache_opened(
        &self,
        id: &SessionId,
        entries: impl IntoIterator<Item = (u64, Arc<Message>, Arc<Message>)>,
    ) {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        for (position, stored, open) in entries {
            if opened.len() >= OPENED_CAPACITY {
                opened.clear();
            }
            opened.insert((id.clone(), position), (stored, open));
        }
    }

    /// `messages` (stored from position `first`) opened, from the cache
    /// where the stored form is unchanged.
    fn open_messages(
        &self,
        codec: Codec<'_>,
        id: &SessionId,
        first: u64,
        messages: Vec<Arc<Message>>,
    ) -> crate::Result<Vec<Arc<Message>>> {
        let mut out = Vec::with_capacity(messages.len());
        let mut fresh = Vec::new();
        {
            let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
            for (position, stored) in (first..).zip(&messages) {
                match opened.get(&(id.clone(), position)) {
                    Some((was, open)) if Arc::ptr_eq(was, stored) || **was == **stored => {
                        out.push(Some(Arc::clone(open)));
                    }
                    _ => out.push(None),
                }
            }
        }
        let mut result = Vec::with_capacity(messages.len());
        for ((position, stored), cached) in (first..).zip(messages).zip(out) {
            let open = match cached {
                Some(open) => open,
                None => {
                    let open = Arc::new(codec.open_message(id, position, &stored)?);
                    fresh.push((position, stored, Arc::clone(&open)));
                    open
                }
            };
            result.push(open);
        }
        if !fresh.is_empty() {
            self.cache_opened(id, fresh);
        }
        Ok(result)
    }

    pub(crate) async fn load(&self, id: &SessionId) -> StoreResult<Option<ConversationState>> {
        let Some(mut raw) = self.inner.load(id).await? else {
            self.forget(id);
            return Ok(None);
        };
        self.remember(id, raw.version, raw.messages.len() as u64);
        let keys = self.keys();
        let codec = self.codec(keys.as_ref());
        let messages = std::mem::take(&mut raw.messages);
        let open = || -> crate::Result<ConversationState> {
            let _budget = LoadBudget::start(self.limits.per_load);
            let mut state = codec.open_state(&raw)?;
            state.messages = self.open_messages(codec, id, 0, messages)?;
            Ok(state)
        };
        open().map(Some).map_err(|e| self.err(e))
    }

    pub(crate) async fn load_recent_with(
        &self,
        id: &SessionId,
        n: usize,
        lookup: Option<&IdempotencyKey>,
    ) -> StoreResult<Option<RecentState>> {
        let Some(raw) = self.inner.load_recent_with(id, n, lookup).await? else {
            self.forget(id);
            return Ok(None);
        };
        self.remember(id, raw.version, raw.total_messages);
        let keys = self.keys();
        let codec = self.codec(keys.as_ref());
        let mut raw = raw;
        let first = raw.first_position();
        let messages = std::mem::take(&mut raw.messages);
        let open = || -> crate::Result<RecentState> {
            let _budget = LoadBudget::start(self.limits.per_load);
            let mut recent = codec.open_recent(raw)?;
            recent.messages = self.open_messages(codec, id, first, messages)?;
            if let (Some(stored), Some(key)) = (&recent.pending, lookup) {
                recent.pending = Some(codec.open_pending(id, key.as_str(), stored)?);
            }
            Ok(recent)
        };
        open().map(Some).map_err(|e| self.err(e))
    }

    pub(crate) async fn save(
        &self,
        state: &ConversationState,
        expect: Expect,
    ) -> StoreResult<Version> {
        let _gate = self.gate.read().await;
        let keys = self.keys();
        let sealed = self.codec(keys.as_ref()).seal_state(state)?;
        match self.inner.save(&sealed, expect).await {
            Ok(v) => {
                self.remember(&state.id, v, state.messages.len() as u64);
                Ok(v)
            }
            Err(e) => {
                self.forget(&state.id);
                Err(e)
            }
        }
    }

    pub(crate) async fn append_with(
        &self,
        id: &SessionId,
        append: Append,
    ) -> StoreResult<Appended> {
        if !self.encrypting() {
            // Compressed values are not bound to a position.
            let sealed = self.codec(None).seal_messages(id, 0, &append.messages)?;
            return self
                .inner
                .append_with(id, with_messages(&append, sealed, append.expect))
                .await;
        }
        // Appends through this layer to one session take turns: each then
        // finds the session where the previous one left it (no read, no
        // retry). Other processes' writes still make an append re-read.
        let _turn = self.appending.lock(id).await;
        self.rebind_others(id, append.key.as_ref()).await;
        let caller = append.expect;
        // Where the messages will land, without a read when this layer knows.
        let mut plan = match caller {
            Expect::Absent => Some((Expect::Absent, 0)),
            Expect::Version(v) => self
                .known(id)
                .filter(|k| k.version == v)
                .map(|k| (caller, k.total)),
            Expect::Any => self
                .known(id)
                .map(|k| (Expect::Version(k.version), k.total)),
        };
        for _ in 0..MAX_UNGUARDED_ATTEMPTS {
            let (guard, first) = match plan.take() {
                Some(planned) => planned,
                None => {
                    let read = self
                        .inner
                        .load_recent_with(id, 0, append.key.as_ref())
                        .await?;
                    if let Some(r) = &read {
                        self.remember(id, r.version, r.total_messages);
                        if let Some(replay) = r.replay {
                            let attempts = self.unbound_of(id, append.key.as_ref());
                            if attempts.is_empty() {
                                return Ok(replay);
                            }
                            let _gate = self.gate.read().await;
                            let keys = self.keys();
                            let codec = self.codec(keys.as_ref());
                            return self.rebind_landed(id, &replay, &attempts, codec).await;
                        }
                    }
                    let found = read.map(|r| (r.version, r.total_messages));
                    match (caller, found) {
                        (Expect::Version(v), Some((version, total))) if version == v => {
                            (caller, total)
                        }
                        (Expect::Version(_), found) => {
                            return Err(StoreError::Conflict {
                                id: id.clone(),
                                expected: caller,
                                actual: found.map(|(v, _)| v),
                            });
                        }
                        (_, Some((version, total))) => (Expect::Version(version), total),
                        (_, None) => (Expect::Absent, 0),
                    }
                }
            };
            let gate = self.gate.read().await;
            let keys = self.keys();
            let codec = self.codec(keys.as_ref());
            let sealed = codec.seal_messages(id, first, &append.messages)?;
            let stored: Vec<Arc<Message>> = sealed.iter().cloned().map(Arc::new).collect();
            let sent = || Sent {
                planned: first,
                stored: stored.clone(),
                plain: append.messages.clone(),
                key: append.key.clone(),
            };
            match self
                .inner
                .append_with(id, with_messages(&append, sealed, guard))
                .await
            {
                Ok(done) => {
                    if !done.replayed {
                        self.remember(id, done.version, done.first_position + done.messages);
                    }
                    if done.first_position == first && !done.replayed {
                        self.cache_opened(
                            id,
                            (first..)
                                .zip(stored)
                                .zip(&append.messages)
                                .map(|((p, s), m)| (p, s, Arc::new(m.clone()))),
                        );
                        self.settled(id, append.key.as_ref());
                        return Ok(done);
                    }
                    // This attempt's own bytes (re-sent by the client, or
                    // landed elsewhere), or an earlier attempt's.
                    let mut attempts = self.unbound_of(id, append.key.as_ref());
                    attempts.push(Arc::new(sent()));
                    let result = self.rebind_landed(id, &done, &attempts, codec).await;
                    drop(gate);
                    return result;
                }
                // A conflict on a guard this layer chose: someone else's
                // write landed first. Nothing was written; read and retry
                // (with the same key, so a retry never applies twice).
                Err(StoreError::Conflict { .. }) if caller == Expect::Any => {
                    self.forget(id);
                }
                Err(e) => {
                    self.forget(id);
                    if e.write_outcome() != WriteOutcome::NotWritten && !stored.is_empty() {
                        // It may have landed, and elsewhere than planned.
                        self.record_unbound(id, vec![Arc::new(sent())]);
                    }
                    return Err(e);
                }
            }
        }
        Err(StoreError::Conflict {
            id: id.clone(),
            expected: caller,
            actual: None,
        })
    }

    pub(crate) async fn fork(
        &self,
        source: &SessionId,
        target: &SessionId,
    ) -> StoreResult<Version> {
        check_fork_ids(source, target)?;
        // Values are bound to their session: a fork re-seals them for the
        // target instead of copying them.
        let Some(mut state) = self.load(source).await? else {
            return Err(StoreError::NotFound { id: source.clone() });
        };
        state.id = target.clone();
        state.created_at = Timestamp::now();
        match self.save(&state, Expect::Absent).await {
            Ok(v) => Ok(v),
            Err(StoreError::Conflict { .. }) => {
                Err(StoreError::AlreadyExists { id: target.clone() })
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn delete(&self, id: &SessionId) -> StoreResult<bool> {
        self.forget(id);
        let existed = self.inner.delete(id).await;
        self.forget(id);
        existed
    }

    pub(crate) async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> StoreResult<Version> {
        let _gate = self.gate.read().await;
        let keys = self.keys();
        let patch = self.codec(keys.as_ref()).seal_patch(id, patch)?;
        let result = self.inner.merge_metadata(id, patch, expect).await;
        match &result {
            Ok(v) => self.advance(id, *v),
            Err(_) => self.forget(id),
        }
        result
    }

    pub(crate) async fn add_summary(
        &self,
        id: &SessionId,
        summary: Summary,
        expect: Expect,
    ) -> StoreResult<Version> {
        if !self.encrypting() {
            let sealed = self.codec(None).seal_summary(id, 0, &summary);
            return self.inner.add_summary(id, sealed, expect).await;
        }
        // Summaries are bound to their index: read how many there are.
        for _ in 0..MAX_UNGUARDED_ATTEMPTS {
            let Some(read) = self.inner.load_recent(id, 0).await? else {
                self.forget(id);
                return Err(StoreError::NotFound { id: id.clone() });
            };
            self.remember(id, read.version, read.total_messages);
            if !expect.admits(Some(read.version)) {
                return Err(StoreError::Conflict {
                    id: id.clone(),
                    expected: expect,
                    actual: Some(read.version),
                });
            }
            let _gate = self.gate.read().await;
            let keys = self.keys();
            let sealed =
                self.codec(keys.as_ref())
                    .seal_summary(id, read.summaries.len() as u64, &summary);
            match self
                .inner
                .add_summary(id, sealed, Expect::Version(read.version))
                .await
            {
                Ok(v) => {
                    self.advance(id, v);
                    return Ok(v);
                }
                Err(StoreError::Conflict { .. }) if expect == Expect::Any => self.forget(id),
                Err(e) => {
                    self.forget(id);
                    return Err(e);
                }
            }
        }
        Err(StoreError::Conflict {
            id: id.clone(),
            expected: expect,
            actual: None,
        })
    }
}

/// One async mutex per session with an append in progress, removed when
/// the last holder is done.
#[derive(Default)]
struct SessionLocks {
    map: Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>,
}

struct SessionTurn<'a> {
    locks: &'a SessionLocks,
    id: &'a SessionId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SessionLocks {
    async fn lock<'a>(&'a self, id: &'a SessionId) -> SessionTurn<'a> {
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

/// `append` with other messages and guard, its key and counters kept.
fn with_messages(
    append: &Append,
    messages: Vec<statestore_core::Message>,
    expect: Expect,
) -> Append {
    let mut out = Append::new(messages).expect(expect);
    out.key.clone_from(&append.key);
    out.counters.clone_from(&append.counters);
    out
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("inner", &self.inner)
            .field("keys", &self.keys())
            .field("compression", &self.compression)
            .field("accept_plaintext", &self.plaintext_ok)
            .finish_non_exhaustive()
    }
}
