//! [`Layer`]: what [`Encrypted`](crate::Encrypted) and
//! [`Compressed`](crate::Compressed) share — sealing on the way in, opening on
//! the way out, and the positions a sealed message is bound to.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use statestore_core::{
    Append, Appended, ConversationState, Error as StoreError, Expect, Load, Message, Metadata,
    RecentState, Result as StoreResult, SessionId, Store, Version, WriteOutcome,
};

use crate::envelope::{Epoch, Limits, LoadBudget, Scope, Sealer};
use crate::manifest::{self, Manifest, Observed};
use crate::seal::Codec;
use crate::{Compression, KeyRing};

mod list;
mod locks;
mod pending;
mod plan;
mod rebind;
mod writes;

pub(crate) use plan::{Plan, Planned};

use locks::SessionLocks;
use rebind::Sent;

/// Sessions whose (version, message count) the layer remembers, at most.
const KNOWN_CAPACITY: usize = 65_536;
/// Attempts of an unguarded append or summary before giving up (each lost
/// attempt means another writer's write landed: the store makes progress).
const MAX_UNGUARDED_ATTEMPTS: u32 = 10_000;

/// A session's version, message count and manifest, as last seen by this
/// layer.
#[derive(Clone, Debug)]
struct Known {
    version: Version,
    total: u64,
    /// `None`: a session without a manifest, read while migrating.
    bound: Option<Arc<Bound>>,
}

/// A bound session's manifest and owner.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) manifest: Manifest,
    pub(crate) owner: Option<String>,
}

impl Bound {
    /// The manifest of a session about to be created (or rewritten) for
    /// `owner`: a fresh epoch, nothing in it yet.
    pub(crate) fn fresh_for(owner: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            manifest: Manifest {
                epoch: manifest::new_epoch(),
                messages: 0,
                summaries: 0,
                prompt: false,
                metadata: Default::default(),
                counters: Default::default(),
            },
            owner,
        })
    }
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
    /// Bound into every value and manifest (`EncryptedBuilder::context`).
    pub(crate) context: String,
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

/// A message as stored, and opened, under the session's epoch.
type Opened = (Arc<Message>, Arc<Message>, Option<Epoch>);

/// Messages the layer keeps opened, at most.
const OPENED_CAPACITY: usize = 16_384;

impl Layer {
    pub(crate) fn new(
        inner: Arc<dyn Store>,
        keys: Option<Arc<RwLock<KeyRing>>>,
        compression: Compression,
        plaintext_ok: bool,
        context: String,
        limits: Limits,
    ) -> Self {
        Self {
            inner,
            keys,
            gate: tokio::sync::RwLock::new(()),
            compression,
            limits,
            plaintext_ok,
            context,
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

    /// What a value of session `id` is bound to besides its place.
    pub(crate) fn scope<'a>(&'a self, id: &'a SessionId, bound: Option<&'a Bound>) -> Scope<'a> {
        Scope {
            id,
            owner: bound.and_then(|b| b.owner.as_deref()),
            context: &self.context,
            epoch: bound.map(|b| &b.manifest.epoch),
        }
    }

    /// The manifest of the session `seen`, checked (`None`: a compression
    /// layer, or a session without one read while migrating).
    pub(crate) fn verify(
        &self,
        codec: Codec<'_>,
        seen: &Observed<'_>,
    ) -> crate::Result<Option<Arc<Bound>>> {
        let bound = self.manifest(codec, seen, true)?;
        if let Some(b) = &bound {
            b.manifest.check(seen)?;
        }
        Ok(bound)
    }

    /// What a read reports after opening the values: whether the session
    /// matches its manifest, and has one where one is required.
    fn verdict(&self, bound: Option<&Arc<Bound>>, seen: &Observed<'_>) -> crate::Result<()> {
        match bound {
            Some(b) => b.manifest.check(seen),
            None if self.encrypting() && !self.plaintext_ok => Err(manifest::missing(seen.id)),
            None => Ok(()),
        }
    }

    /// [`Layer::verify`] without the check, for reads that check after
    /// opening the values.
    fn manifest(
        &self,
        codec: Codec<'_>,
        seen: &Observed<'_>,
        require: bool,
    ) -> crate::Result<Option<Arc<Bound>>> {
        if !self.encrypting() {
            return Ok(None);
        }
        Ok(codec
            .open_manifest(&self.context, seen, require)?
            .map(|manifest| {
                Arc::new(Bound {
                    manifest,
                    owner: seen.owner.map(str::to_owned),
                })
            }))
    }

    /// Seals the manifest after a write on `base` into `patch` (the
    /// write's sealed metadata patch); the new manifest.
    pub(crate) fn bind_patch(
        &self,
        codec: Codec<'_>,
        id: &SessionId,
        base: Option<&Arc<Bound>>,
        added: (u64, u64),
        counters: &statestore_core::Counters,
        patch: &mut Metadata,
    ) -> StoreResult<Option<Arc<Bound>>> {
        let Some(base) = base else {
            return Ok(None);
        };
        let next = base.manifest.next(added.0, added.1, counters, patch);
        let (key, value) = codec.seal_manifest(self.scope(id, Some(base)), &next)?;
        patch.insert(key, value);
        Ok(Some(Arc::new(Bound {
            manifest: next,
            owner: base.owner.clone(),
        })))
    }

    pub(crate) fn err(&self, e: crate::Error) -> StoreError {
        e.into_store(self.encrypting())
    }

    fn known(&self, id: &SessionId) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    pub(crate) fn remember(
        &self,
        id: &SessionId,
        version: Version,
        total: u64,
        bound: Option<Arc<Bound>>,
    ) {
        if !self.encrypting() {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= KNOWN_CAPACITY && !known.contains_key(id) {
            // Crude but bounded: a forgotten session costs one extra read.
            known.clear();
        }
        known.insert(
            id.clone(),
            Known {
                version,
                total,
                bound,
            },
        );
    }

    fn forget(&self, id: &SessionId) {
        if self.encrypting() {
            self.known
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
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
        epoch: Option<Epoch>,
        entries: impl IntoIterator<Item = (u64, Arc<Message>, Arc<Message>)>,
    ) {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        for (position, stored, open) in entries {
            if opened.len() >= OPENED_CAPACITY {
                opened.clear();
            }
            opened.insert((id.clone(), position), (stored, open, epoch));
        }
    }

    /// `messages` (stored from position `first`) opened, from the cache
    /// where the stored form and the epoch are unchanged.
    fn open_messages(
        &self,
        codec: Codec<'_>,
        scope: Scope<'_>,
        first: u64,
        messages: Vec<Arc<Message>>,
    ) -> crate::Result<Vec<Arc<Message>>> {
        let id = scope.id;
        let epoch = scope.epoch.copied();
        let mut out = Vec::with_capacity(messages.len());
        let mut fresh = Vec::new();
        {
            let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
            for (position, stored) in (first..).zip(&messages) {
                match opened.get(&(id.clone(), position)) {
                    Some((was, open, e))
                        if *e == epoch && (Arc::ptr_eq(was, stored) || **was == **stored) =>
                    {
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
                    let open = Arc::new(codec.open_message(scope, position, &stored)?);
                    fresh.push((position, stored, Arc::clone(&open)));
                    open
                }
            };
            result.push(open);
        }
        if !fresh.is_empty() {
            self.cache_opened(id, epoch, fresh);
        }
        Ok(result)
    }

    /// The store's `load_with`, opened: `options` (a maintenance read) go
    /// through to the store underneath.
    pub(crate) async fn load_with(
        &self,
        id: &SessionId,
        options: Load,
    ) -> StoreResult<Option<ConversationState>> {
        let Some(mut raw) = self.inner.load_with(id, options).await? else {
            self.forget(id);
            return Ok(None);
        };
        let keys = self.keys();
        let codec = self.codec(keys.as_ref());
        let messages = std::mem::take(&mut raw.messages);
        let total = messages.len() as u64;
        let open = || -> crate::Result<(ConversationState, Option<Arc<Bound>>)> {
            let _budget = LoadBudget::start(self.limits.per_load);
            let mut seen = Observed::state(&raw);
            seen.messages = total;
            let bound = self.manifest(codec, &seen, false)?;
            // Reported after the values: a moved value is named as such.
            let verdict = self.verdict(bound.as_ref(), &seen);
            let scope = self.scope(id, bound.as_deref());
            let mut state = codec.open_state(scope, &raw)?;
            state.messages = self.open_messages(codec, scope, 0, messages)?;
            verdict?;
            Ok((state, bound))
        };
        match open() {
            Ok((state, bound)) => {
                self.remember(id, state.version, total, bound);
                Ok(Some(state))
            }
            Err(e) => {
                self.forget(id);
                Err(self.err(e))
            }
        }
    }

    pub(crate) async fn load_recent_as(
        &self,
        id: &SessionId,
        read: statestore_core::Recent,
    ) -> StoreResult<Option<RecentState>> {
        let lookup = read.lookup.clone();
        let Some(raw) = self.inner.load_recent_as(id, read).await? else {
            self.forget(id);
            return Ok(None);
        };
        let keys = self.keys();
        let codec = self.codec(keys.as_ref());
        let first = raw.first_position();
        let total = raw.total_messages;
        let open = |mut raw: RecentState| -> crate::Result<(RecentState, Option<Arc<Bound>>)> {
            let _budget = LoadBudget::start(self.limits.per_load);
            let seen = Observed::recent(&raw);
            let bound = self.manifest(codec, &seen, false)?;
            // Reported after the values: a moved value is named as such.
            let verdict = self.verdict(bound.as_ref(), &seen);
            let messages = std::mem::take(&mut raw.messages);
            let scope = self.scope(id, bound.as_deref());
            let pending = raw.pending.take();
            let mut recent = codec.open_recent(scope, raw)?;
            recent.messages = self.open_messages(codec, scope, first, messages)?;
            if let (Some(stored), Some(key)) = (pending, lookup.as_ref()) {
                let scope = self.scope(id, None);
                recent.pending = Some(codec.open_pending(scope, key.as_str(), &stored)?);
            }
            verdict?;
            Ok((recent, bound))
        };
        match open(raw) {
            Ok((recent, bound)) => {
                self.remember(id, recent.version, total, bound);
                Ok(Some(recent))
            }
            Err(e) => {
                self.forget(id);
                Err(self.err(e))
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
            let codec = self.codec(None);
            let scope = self.scope(id, None);
            let sealed = codec.seal_messages(scope, 0, &append.messages)?;
            let patch = codec.seal_patch(scope, append.metadata.clone())?;
            return self
                .inner
                .append_with(id, with_messages(&append, sealed, append.expect, patch))
                .await;
        }
        // Appends through this layer to one session take turns: each then
        // finds the session where the previous one left it (no read, no
        // retry). Other processes' writes still make an append re-read.
        let _turn = self.appending.lock(id).await;
        self.rebind_others(id, append.key.as_ref()).await;
        let caller = append.expect;
        // Where the messages will land, without a read when this layer knows.
        let mut plan = self.plan_known(id, caller);
        for _ in 0..MAX_UNGUARDED_ATTEMPTS {
            let Plan { guard, total, base } = match plan.take() {
                Some(planned) => planned,
                None => match self.plan_read(id, caller, append.key.as_ref()).await? {
                    Planned::Write(plan) => plan,
                    Planned::Replay(replay) => {
                        let attempts = self.unbound_of(id, append.key.as_ref());
                        if attempts.is_empty() {
                            return Ok(replay);
                        }
                        let _gate = self.gate.read().await;
                        let keys = self.keys();
                        let codec = self.codec(keys.as_ref());
                        return self.rebind_landed(id, &replay, &attempts, codec).await;
                    }
                },
            };
            let first = total;
            let gate = self.gate.read().await;
            let keys = self.keys();
            let codec = self.codec(keys.as_ref());
            let scope = self.scope(id, base.as_deref());
            let sealed = codec.seal_messages(scope, first, &append.messages)?;
            let mut patch = codec.seal_patch(scope, append.metadata.clone())?;
            let added = (append.messages.len() as u64, 0);
            let next = self.bind_patch(
                codec,
                id,
                base.as_ref(),
                added,
                &append.counters,
                &mut patch,
            )?;
            let epoch = base.as_ref().map(|b| b.manifest.epoch);
            let stored: Vec<Arc<Message>> = sealed.iter().cloned().map(Arc::new).collect();
            let sent = || Sent {
                planned: first,
                epoch,
                stored: stored.clone(),
                plain: append.messages.clone(),
                key: append.key.clone(),
            };
            match self
                .inner
                .append_with(id, with_messages(&append, sealed, guard, patch))
                .await
            {
                Ok(done) => {
                    if done.first_position == first && !done.replayed {
                        self.remember(id, done.version, first + done.messages, next);
                        self.cache_opened(
                            id,
                            epoch,
                            (first..)
                                .zip(stored)
                                .zip(&append.messages)
                                .map(|((p, s), m)| (p, s, Arc::new(m.clone()))),
                        );
                        self.settled(id, append.key.as_ref());
                        return Ok(done);
                    }
                    self.forget(id);
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

    pub(crate) async fn delete_with(
        &self,
        id: &SessionId,
        options: statestore_core::Delete,
    ) -> StoreResult<bool> {
        self.forget(id);
        let existed = self.inner.delete_with(id, options).await;
        self.forget(id);
        existed
    }
}

/// `append` with other messages, guard and metadata patch, its key and
/// counters kept.
fn with_messages(
    append: &Append,
    messages: Vec<statestore_core::Message>,
    expect: Expect,
    metadata: Metadata,
) -> Append {
    let mut out = Append::new(messages).expect(expect);
    out.key.clone_from(&append.key);
    out.counters.clone_from(&append.counters);
    out.metadata = metadata;
    out
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("inner", &self.inner)
            .field("keys", &self.keys())
            .field("compression", &self.compression)
            .field("accept_plaintext", &self.plaintext_ok)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}
