//! Re-binding: an append whose messages landed at other positions than
//! they were sealed for (the session was deleted and re-created up to the
//! same version between the layer's plan and the write) is re-sealed where
//! it lies — only the bytes it sent, never another writer's.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use statestore_core::{
    Appended, Error as StoreError, Expect, IdempotencyKey, Message, Result as StoreResult,
    SessionId,
};

use super::{Bound, Layer};
use crate::envelope::Epoch;
use crate::manifest;
use crate::seal::{Codec, SEALED_KEY};

/// Attempts to re-bind messages an append placed elsewhere than expected.
const REPAIR_ATTEMPTS: u32 = 16;
/// Sessions with appends that may sit elsewhere than sealed for, at most.
const UNBOUND_CAPACITY: usize = 1_024;
/// Such appends (attempts) kept per session, at most (the newest).
const UNBOUND_PER_SESSION: usize = 16;

/// One attempt of an append, as sent.
#[derive(Debug)]
pub(super) struct Sent {
    /// The position its first message was sealed for.
    pub(super) planned: u64,
    /// The epoch it was sealed for (`None`: a session without a manifest).
    pub(super) epoch: Option<Epoch>,
    /// Its messages exactly as sent: sealed, each with a random nonce, so
    /// no other write stores the same bytes.
    pub(super) stored: Vec<Arc<Message>>,
    /// Its messages as given.
    pub(super) plain: Vec<Message>,
    /// The append's idempotency key.
    pub(super) key: Option<IdempotencyKey>,
}

impl Layer {
    /// The store answered `done` for an append whose attempts (this one,
    /// and earlier ones under the same key) are `attempts`: where an
    /// attempt was sealed for other positions than `done`'s, re-binds
    /// its messages before answering.
    pub(super) async fn rebind_landed(
        &self,
        id: &SessionId,
        done: &Appended,
        attempts: &[Arc<Sent>],
        codec: Codec<'_>,
    ) -> StoreResult<Appended> {
        let key = attempts.first().and_then(|a| a.key.as_ref());
        if attempts.iter().all(|a| a.planned == done.first_position) {
            self.settled(id, key);
            return Ok(*done);
        }
        tracing::warn!(
            session = %id,
            landed = done.first_position,
            replayed = done.replayed,
            "an append landed elsewhere than planned (the session was re-created); re-binding its messages"
        );
        match self.rebind(id, attempts, codec).await {
            Ok(()) => {
                self.settled(id, key);
                Ok(*done)
            }
            Err((reason, source)) => {
                self.record_unbound(id, attempts.to_vec());
                Err(self.err(crate::Error::NotRebound {
                    id: id.clone(),
                    positions: done.first_position
                        ..done.first_position.saturating_add(done.messages),
                    reason,
                    source: source.map(Box::new),
                }))
            }
        }
    }

    /// Re-seals, where they now are and for the session's epoch, the
    /// messages of `attempts` stored at other positions than the ones they
    /// were sealed for, or under another epoch (the session was re-created
    /// between the plan and the write), and seals a new manifest of the
    /// session as it is, in one version-guarded save (again after a lost
    /// race). Only a message equal byte for byte to one an attempt sent is
    /// touched — each carries a random nonce, so no other write stored the
    /// same bytes; a value moved or copied by anyone else keeps failing its
    /// check. `Ok` when none of them is left misplaced, or the session is
    /// gone.
    ///
    /// The session's epoch is the one of a manifest no attempt wrote
    /// (the re-created session's), else the attempts'.
    async fn rebind(
        &self,
        id: &SessionId,
        attempts: &[Arc<Sent>],
        codec: Codec<'_>,
    ) -> Result<(), (String, Option<StoreError>)> {
        let mut ours: HashMap<&str, (&Sent, u64)> = HashMap::new();
        for a in attempts {
            for (k, m) in (0..).zip(&a.stored) {
                if let Some(sealed) = m.metadata().get(SEALED_KEY).and_then(|v| v.as_str()) {
                    ours.insert(sealed, (a.as_ref(), k));
                }
            }
        }
        let our_keys: Vec<String> = attempts
            .iter()
            .filter_map(|a| a.epoch.as_ref().map(manifest::key_of))
            .collect();
        let mut last = None;
        for _ in 0..REPAIR_ATTEMPTS {
            let mut state = match self.inner.load(id).await {
                Ok(Some(raw)) => raw,
                Ok(None) => return Ok(()),
                Err(e) => return Err(("the session could not be read".into(), Some(e))),
            };
            let manifests: Vec<&String> = state
                .metadata
                .keys()
                .filter(|k| manifest::is_manifest_key(k))
                .collect();
            let genuine = manifests
                .iter()
                .find(|k| !our_keys.contains(k))
                .or(manifests.first())
                .and_then(|k| epoch_of(k));
            let bound = genuine.map(|epoch| {
                let mut b = Bound::fresh_for(state.user_id.clone());
                if let Some(b) = Arc::get_mut(&mut b) {
                    b.manifest.epoch = epoch;
                }
                b
            });
            let scope = self.scope(id, bound.as_deref());
            let mut fixed = 0_usize;
            for (position, m) in (0..).zip(state.messages.iter_mut()) {
                let Some(&(sent, k)) = m
                    .metadata()
                    .get(SEALED_KEY)
                    .and_then(|v| v.as_str())
                    .and_then(|sealed| ours.get(sealed))
                else {
                    continue;
                };
                let (Some(mine), Some(plain)) = (
                    usize::try_from(k).ok().and_then(|k| sent.stored.get(k)),
                    usize::try_from(k).ok().and_then(|k| sent.plain.get(k)),
                ) else {
                    continue;
                };
                if **m != **mine
                    || (sent.planned.checked_add(k) == Some(position) && sent.epoch == genuine)
                {
                    continue;
                }
                let resealed = codec
                    .seal_message(scope, position, plain)
                    .map_err(|e| ("a message could not be sealed".to_owned(), Some(e)))?;
                *m = Arc::new(resealed);
                fixed += 1;
            }
            if fixed == 0 && manifests.len() <= 1 {
                return Ok(());
            }
            manifest::strip(&mut state.metadata);
            let version = state.version;
            let bound = match &bound {
                Some(b) => Some(
                    self.seal_whole(codec, &mut state, b)
                        .map_err(|e| ("the manifest could not be sealed".to_owned(), Some(e)))?,
                ),
                None => None,
            };
            match self.inner.save(&state, Expect::Version(version)).await {
                Ok(v) => {
                    self.remember(id, v, state.messages.len() as u64, bound);
                    return Ok(());
                }
                // Lost a race, or perhaps applied: read again.
                Err(e) if matches!(e, StoreError::Conflict { .. }) || e.is_transient() => {
                    last = Some(e);
                }
                Err(e) => return Err(("the re-binding save failed".into(), Some(e))),
            }
        }
        Err((
            format!("{REPAIR_ATTEMPTS} re-binding saves failed or lost races"),
            last,
        ))
    }

    /// Recorded attempts of the append under `key` in session `id`.
    pub(super) fn unbound_of(
        &self,
        id: &SessionId,
        key: Option<&IdempotencyKey>,
    ) -> Vec<Arc<Sent>> {
        let Some(key) = key else {
            return Vec::new();
        };
        self.unbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .map(|all| {
                all.iter()
                    .filter(|a| a.key.as_ref() == Some(key))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Remembers attempts that may sit elsewhere than sealed for.
    pub(super) fn record_unbound(&self, id: &SessionId, attempts: Vec<Arc<Sent>>) {
        let mut unbound = self.unbound.lock().unwrap_or_else(PoisonError::into_inner);
        if unbound.len() >= UNBOUND_CAPACITY && !unbound.contains_key(id) {
            // Bounded: a forgotten attempt is no longer re-bound here.
            unbound.clear();
        }
        let all = unbound.entry(id.clone()).or_default();
        for a in attempts {
            if !all.iter().any(|b| Arc::ptr_eq(&a, b)) {
                all.push(a);
            }
        }
        let excess = all.len().saturating_sub(UNBOUND_PER_SESSION);
        all.drain(..excess);
    }

    /// The append under `key` is settled: its attempts are where they
    /// were sealed for, re-bound, or (a fresh write) were never applied.
    pub(super) fn settled(&self, id: &SessionId, key: Option<&IdempotencyKey>) {
        let Some(key) = key else {
            return;
        };
        self.drop_unbound(id, |a| a.key.as_ref() == Some(key));
    }

    fn drop_unbound(&self, id: &SessionId, settled: impl Fn(&Arc<Sent>) -> bool) {
        let mut unbound = self.unbound.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(all) = unbound.get_mut(id) {
            all.retain(|a| !settled(a));
            if all.is_empty() {
                unbound.remove(id);
            }
        }
    }

    /// Before an append: re-binds what earlier appends to the session,
    /// other than the one under `key`, may have left misplaced (their
    /// re-binding failed, or their reply was lost). A keyed one costs a
    /// lookup of its key (no messages read), and a load only when it
    /// landed elsewhere; an unkeyed one, a load. A failure keeps them for
    /// the next append.
    pub(super) async fn rebind_others(&self, id: &SessionId, key: Option<&IdempotencyKey>) {
        let others: Vec<Arc<Sent>> = {
            let unbound = self.unbound.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(all) = unbound.get(id) else {
                return;
            };
            all.iter()
                .filter(|a| key.is_none() || a.key.as_ref() != key)
                .cloned()
                .collect()
        };
        if others.is_empty() {
            return;
        }
        let failed = |reason: &str, source: Option<&StoreError>| {
            tracing::warn!(
                session = %id,
                reason,
                error = source.map(tracing::field::display),
                "re-binding an earlier append failed; the next append tries again"
            );
        };
        // Where each key landed: `None` when it is not applied (or the
        // session is gone), so nothing of it is stored.
        let mut landed: HashMap<&IdempotencyKey, Option<u64>> = HashMap::new();
        let mut check = Vec::new();
        for a in &others {
            let Some(k) = &a.key else {
                check.push(Arc::clone(a));
                continue;
            };
            let at = match landed.get(k) {
                Some(at) => *at,
                None => match self.inner.load_recent_with(id, 0, Some(k)).await {
                    Ok(read) => {
                        let at = read.and_then(|r| r.replay).map(|r| r.first_position);
                        landed.insert(k, at);
                        at
                    }
                    Err(e) => return failed("its key could not be looked up", Some(&e)),
                },
            };
            if at.is_some_and(|at| at != a.planned) {
                check.push(Arc::clone(a));
            }
        }
        if !check.is_empty() {
            let _gate = self.gate.read().await;
            let keys = self.keys();
            if let Err((reason, source)) = self.rebind(id, &check, self.codec(keys.as_ref())).await
            {
                self.drop_unbound(id, |a| {
                    others.iter().any(|b| Arc::ptr_eq(a, b))
                        && !check.iter().any(|b| Arc::ptr_eq(a, b))
                });
                return failed(&reason, source.as_ref());
            }
        }
        self.drop_unbound(id, |a| others.iter().any(|b| Arc::ptr_eq(a, b)));
    }
}

/// The epoch a manifest's metadata key names.
fn epoch_of(key: &str) -> Option<Epoch> {
    let hex = key.strip_prefix(manifest::PREFIX)?;
    let mut epoch = [0u8; 16];
    if hex.len() != 32 {
        return None;
    }
    for (i, b) in epoch.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(epoch)
}
