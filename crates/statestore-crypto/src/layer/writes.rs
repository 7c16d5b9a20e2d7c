//! The writes other than appends — `fork`, `save`, `merge_metadata`,
//! `add_summary` — and re-encryption: each rewrites the session's manifest
//! in its own atomic step (`manifest.rs`).

use std::sync::Arc;

use statestore_core::{
    AddSummary, ConversationState, Counters, Error as StoreError, Expect, Load, Metadata,
    Result as StoreResult, Save, SessionId, Timestamp, Version, check_fork_ids,
};

use super::{Bound, Layer, MAX_UNGUARDED_ATTEMPTS, Plan, Planned};
use crate::manifest::{self, Manifest, Observed};
use crate::seal::Codec;

impl Layer {
    /// A fork: the source read (an access, as a fork is), re-sealed for
    /// the target and saved create-only.
    pub(crate) async fn fork(
        &self,
        source: &SessionId,
        target: &SessionId,
    ) -> StoreResult<Version> {
        check_fork_ids(source, target)?;
        // Values are bound to their session: a fork re-seals them for the
        // target instead of copying them.
        let Some(mut state) = self.load_with(source, Load::new()).await? else {
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

    pub(crate) async fn save(
        &self,
        state: &ConversationState,
        expect: Expect,
    ) -> StoreResult<Version> {
        self.save_with(state, Save::new().expect(expect)).await
    }

    /// A save as `Store::save_with`: `options` (a maintenance save's
    /// `keep_clocks` included) go to the store underneath with each try.
    pub(crate) async fn save_with(
        &self,
        state: &ConversationState,
        options: Save,
    ) -> StoreResult<Version> {
        let id = &state.id;
        let _gate = self.gate.read().await;
        let keys = self.keys();
        let codec = self.codec(keys.as_ref());
        if !self.encrypting() {
            let sealed = codec.seal_state(self.scope(id, None), state)?;
            return self.inner.save_with(&sealed, options).await;
        }
        // A rewrite of the history: a fresh epoch. The manifest records
        // the whole state written, so the save needs no other guard than
        // the caller's.
        let bound = Bound::fresh_for(state.user_id.clone());
        let mut sealed = codec.seal_state(self.scope(id, Some(&bound)), state)?;
        let bound = self.seal_whole(codec, &mut sealed, &bound)?;
        match self.inner.save_with(&sealed, options).await {
            Ok(v) => {
                self.remember(id, v, state.messages.len() as u64, Some(bound));
                Ok(v)
            }
            Err(e) => {
                self.forget(id);
                Err(e)
            }
        }
    }

    /// Adds to `sealed` (a whole sealed state, without a manifest) the
    /// manifest of `bound`'s epoch recording it.
    pub(crate) fn seal_whole(
        &self,
        codec: Codec<'_>,
        sealed: &mut ConversationState,
        bound: &Bound,
    ) -> StoreResult<Arc<Bound>> {
        let manifest = Manifest::of(bound.manifest.epoch, sealed);
        let next = Arc::new(Bound {
            manifest,
            owner: sealed.user_id.clone(),
        });
        let (key, value) =
            codec.seal_manifest(self.scope(&sealed.id, Some(&next)), &next.manifest)?;
        sealed.metadata.insert(key, value);
        Ok(next)
    }

    pub(crate) async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> StoreResult<Version> {
        if !self.encrypting() {
            return self.inner.merge_metadata(id, patch, expect).await;
        }
        let mut plan = self.plan_known(id, expect);
        for _ in 0..MAX_UNGUARDED_ATTEMPTS {
            let Plan { guard, total, base } = match plan.take() {
                Some(planned) => planned,
                None => match self.plan_read(id, expect, None).await? {
                    Planned::Write(plan) => plan,
                    // No key was asked about.
                    Planned::Replay(_) => continue,
                },
            };
            let _gate = self.gate.read().await;
            let keys = self.keys();
            let codec = self.codec(keys.as_ref());
            let mut sealed = codec.seal_patch(self.scope(id, base.as_deref()), patch.clone())?;
            let next = self.bind_patch(
                codec,
                id,
                base.as_ref(),
                (0, 0),
                &Counters::new(),
                &mut sealed,
            )?;
            let result = self.inner.merge_metadata(id, sealed, guard).await;
            if let Some(done) = self.settle(id, expect, result, total, next) {
                return done;
            }
        }
        Err(StoreError::Conflict {
            id: id.clone(),
            expected: expect,
            actual: None,
        })
    }

    pub(crate) async fn add_summary_with(
        &self,
        id: &SessionId,
        add: AddSummary,
    ) -> StoreResult<Version> {
        let expect = add.expect;
        if !self.encrypting() {
            let codec = self.codec(None);
            let scope = self.scope(id, None);
            let mut sealed =
                AddSummary::new(codec.seal_summary(scope, 0, &add.summary)).expect(expect);
            sealed.metadata = codec.seal_patch(scope, add.metadata)?;
            return self.inner.add_summary_with(id, sealed).await;
        }
        // Summaries are bound to their index: read how many there are.
        for _ in 0..MAX_UNGUARDED_ATTEMPTS {
            let Some(read) = self.inner.load_recent(id, 0).await? else {
                self.forget(id);
                return Err(StoreError::NotFound { id: id.clone() });
            };
            let keys = self.keys();
            let codec = self.codec(keys.as_ref());
            let base = self
                .verify(codec, &Observed::recent(&read))
                .map_err(|e| self.err(e))?;
            self.remember(id, read.version, read.total_messages, base.clone());
            if !expect.admits(Some(read.version)) {
                return Err(StoreError::Conflict {
                    id: id.clone(),
                    expected: expect,
                    actual: Some(read.version),
                });
            }
            let _gate = self.gate.read().await;
            let keys = self.keys();
            let codec = self.codec(keys.as_ref());
            let scope = self.scope(id, base.as_deref());
            let index = read.summaries.len() as u64;
            let mut sealed = AddSummary::new(codec.seal_summary(scope, index, &add.summary))
                .expect(Expect::Version(read.version));
            sealed.metadata = codec.seal_patch(scope, add.metadata.clone())?;
            let next = self.bind_patch(
                codec,
                id,
                base.as_ref(),
                (0, 1),
                &Counters::new(),
                &mut sealed.metadata,
            )?;
            let result = self.inner.add_summary_with(id, sealed).await;
            if let Some(done) = self.settle(id, expect, result, read.total_messages, next) {
                return done;
            }
        }
        Err(StoreError::Conflict {
            id: id.clone(),
            expected: expect,
            actual: None,
        })
    }

    /// What the answer to a write guarded by the layer means: `Some` to
    /// return (the layer now knows the session at `total` messages and
    /// manifest `next`, or nothing when it failed), `None` to plan again —
    /// a conflict on a guard the layer chose for a caller's `Expect::Any`
    /// (nothing was written).
    fn settle(
        &self,
        id: &SessionId,
        caller: Expect,
        result: StoreResult<Version>,
        total: u64,
        next: Option<Arc<Bound>>,
    ) -> Option<StoreResult<Version>> {
        match result {
            Ok(v) => {
                self.remember(id, v, total, next);
                Some(Ok(v))
            }
            Err(e) => {
                self.forget(id);
                match e {
                    StoreError::Conflict { .. } if caller == Expect::Any => None,
                    e => Some(Err(e)),
                }
            }
        }
    }

    /// `raw` (as stored) moved to the current key, for a save guarded by
    /// its version: `None` when every value, the manifest included, already is.
    /// A session without a manifest (read while migrating) is bound: every
    /// value sealed again under a fresh epoch, and a manifest added.
    pub(crate) fn rekey(
        &self,
        codec: Codec<'_>,
        raw: &ConversationState,
    ) -> crate::Result<Option<(ConversationState, usize, Arc<Bound>)>> {
        let id = &raw.id;
        let base = self.verify(codec, &Observed::state(raw))?;
        let manifest_current = raw
            .metadata
            .iter()
            .find(|(k, _)| manifest::is_manifest_key(k))
            .is_some_and(|(_, v)| v.as_str().is_some_and(|t| codec.is_current(t)));
        let mut plain = raw.clone();
        manifest::strip(&mut plain.metadata);
        let to = match &base {
            Some(b) => Arc::clone(b),
            None => Bound::fresh_for(raw.user_id.clone()),
        };
        let (mut state, values) = codec.rekey_state(
            self.scope(id, base.as_deref()),
            self.scope(id, Some(&to)),
            &plain,
        )?;
        if values == 0 && manifest_current {
            return Ok(None);
        }
        let bound = self
            .seal_whole(codec, &mut state, &to)
            .map_err(crate::Error::Store)?;
        Ok(Some((state, values, bound)))
    }
}
