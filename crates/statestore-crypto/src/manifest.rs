//! The manifest: a session's sealed record of everything it holds, which
//! makes the history one authenticated whole rather than a set of
//! authenticated values.
//!
//! Sealing each value binds it to its session, owner, context and place,
//! but a value can still be *removed* (a message cut off the end, the
//! system prompt, a summary, a metadata key), *put back* (an older
//! ciphertext of the same place) or *left out of date* (counters)
//! without any value failing its check. So every session written
//! through an encrypting layer also holds, under the metadata key
//! `statestore.manifest.<epoch>`, one sealed [`Manifest`]:
//!
//! | field | records |
//! |---|---|
//! | `epoch` | 16 random bytes, renewed by every rewrite of the history (`save`, `fork`): bound into every message, summary, system prompt and metadata value, so no value from before a rewrite opens after it |
//! | `messages`, `summaries` | how many of each the session holds |
//! | `prompt` | whether it has a system prompt |
//! | `metadata` | each metadata key, with the authentication tag of its sealed value (each value has a random nonce, so its tag names it) |
//! | `counters` | every counter and its value |
//!
//! The manifest is bound to the session id, its owner (`user_id`, stored in
//! the clear) and the layer's context. Every write through the layer
//! rewrites it **in its own atomic step**: an append and a summary carry it
//! as their metadata patch ([`statestore_core::Append::metadata`],
//! [`statestore_core::AddSummary::metadata`]), `merge_metadata` in its
//! patch, `save` in the state — and each of those but `save` (which
//! records all it writes) is guarded by the version the manifest it
//! extends was read at, so no other write lands between the manifest and
//! what it records. Every read checks the session
//! against it before returning anything (`Error::Inconsistent`). The key
//! names the epoch, so a write that raced a re-creation of the session
//! (which drew another epoch) adds a second manifest instead of hiding the
//! first; re-binding (`layer/rebind.rs`) settles it.
//!
//! What no record inside the store can detect: the whole session (or the
//! whole store) put back to an older consistent snapshot, manifest and
//! all. That takes an anchor outside the store: see the crate docs.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use statestore_core::{ConversationState, Counters, Metadata, RecentState, SessionId};

use crate::envelope::{self, Epoch, Place, Scope};
use crate::seal::Codec;
use crate::{Error, Result};

/// The metadata key of a session's manifest: this, then the epoch in hex.
pub(crate) const PREFIX: &str = "statestore.manifest.";

/// See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) epoch: Epoch,
    pub(crate) messages: u64,
    pub(crate) summaries: u64,
    pub(crate) prompt: bool,
    /// Metadata key → the tag of its stored value ([`tag`]).
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) counters: Counters,
}

/// What a read found, as the manifest describes it.
pub(crate) struct Observed<'a> {
    pub(crate) id: &'a SessionId,
    pub(crate) owner: Option<&'a str>,
    pub(crate) messages: u64,
    pub(crate) summaries: u64,
    pub(crate) prompt: bool,
    /// All of it, manifest included.
    pub(crate) metadata: &'a Metadata,
    pub(crate) counters: &'a Counters,
}

impl<'a> Observed<'a> {
    pub(crate) fn state(s: &'a ConversationState) -> Self {
        Self {
            id: &s.id,
            owner: s.user_id.as_deref(),
            messages: s.messages.len() as u64,
            summaries: s.summaries.len() as u64,
            prompt: s.system_prompt.is_some(),
            metadata: &s.metadata,
            counters: &s.counters,
        }
    }

    pub(crate) fn recent(r: &'a RecentState) -> Self {
        Self {
            id: &r.id,
            owner: r.user_id.as_deref(),
            messages: r.total_messages,
            summaries: r.summaries.len() as u64,
            prompt: r.system_prompt.is_some(),
            metadata: &r.metadata,
            counters: &r.counters,
        }
    }
}

/// A fresh random epoch.
pub(crate) fn new_epoch() -> Epoch {
    use chacha20poly1305::aead::rand_core::RngCore as _;
    let mut epoch = [0u8; 16];
    chacha20poly1305::aead::OsRng.fill_bytes(&mut epoch);
    epoch
}

/// The metadata key of the manifest of `epoch`.
pub(crate) fn key_of(epoch: &Epoch) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(PREFIX.len() + 32);
    key.push_str(PREFIX);
    for b in epoch {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// Whether `key` is a manifest's metadata key.
pub(crate) fn is_manifest_key(key: &str) -> bool {
    key.starts_with(PREFIX)
}

/// `metadata` without its manifests.
pub(crate) fn strip(metadata: &mut Metadata) {
    metadata.retain(|k, _| !is_manifest_key(k));
}

/// What names a stored metadata value in the manifest: a sealed value's
/// authentication tag; any other value's JSON text.
pub(crate) fn tag(value: &serde_json::Value) -> String {
    if let Some(text) = value.as_str()
        && envelope::is_sealed(text)
        && let Ok(bytes) = envelope::decode_text(text)
        && let Some(tag) = bytes.len().checked_sub(16).and_then(|at| bytes.get(at..))
    {
        return base64::engine::general_purpose::STANDARD_NO_PAD.encode(tag);
    }
    format!("={value}")
}

impl Manifest {
    /// The manifest of a session made or rewritten now, as `state` (sealed,
    /// manifest-free).
    pub(crate) fn of(epoch: Epoch, state: &ConversationState) -> Self {
        Self {
            epoch,
            messages: state.messages.len() as u64,
            summaries: state.summaries.len() as u64,
            prompt: state.system_prompt.is_some(),
            metadata: state
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), tag(v)))
                .collect(),
            counters: state.counters.clone(),
        }
    }

    /// The manifest after a write that adds `messages` messages,
    /// `summaries` summaries, `counters`, and merges the (sealed) `patch`.
    pub(crate) fn next(
        &self,
        messages: u64,
        summaries: u64,
        counters: &Counters,
        patch: &Metadata,
    ) -> Self {
        let mut next = self.clone();
        next.messages = self.messages.saturating_add(messages);
        next.summaries = self.summaries.saturating_add(summaries);
        for (name, delta) in counters {
            let total = next.counters.entry(name.clone()).or_insert(0);
            *total = total.saturating_add(*delta);
        }
        for (k, v) in patch {
            if v.is_null() {
                next.metadata.remove(k);
            } else {
                next.metadata.insert(k.clone(), tag(v));
            }
        }
        next
    }

    /// Whether `seen` is what this manifest records.
    pub(crate) fn check(&self, seen: &Observed<'_>) -> Result<()> {
        self.differences(seen)
            .map_err(|reason| Error::Inconsistent {
                id: seen.id.clone(),
                reason,
            })
    }

    fn differences(&self, seen: &Observed<'_>) -> std::result::Result<(), String> {
        let differs =
            |what: &str, stored: &dyn std::fmt::Display, recorded: &dyn std::fmt::Display| {
                Err(format!("{what}: {stored} stored, {recorded} recorded"))
            };
        if seen.messages != self.messages {
            return differs("messages", &seen.messages, &self.messages);
        }
        if seen.summaries != self.summaries {
            return differs("summaries", &seen.summaries, &self.summaries);
        }
        if seen.prompt != self.prompt {
            return Err(if self.prompt {
                "its system prompt was removed".into()
            } else {
                "a system prompt was added".into()
            });
        }
        for (k, v) in seen.metadata.iter().filter(|(k, _)| !is_manifest_key(k)) {
            match self.metadata.get(k) {
                None => return Err(format!("metadata key {k:?} was added")),
                Some(t) if *t != tag(v) => {
                    return Err(format!("metadata value {k:?} is not the one written last"));
                }
                Some(_) => {}
            }
        }
        if let Some(k) = self
            .metadata
            .keys()
            .find(|k| !seen.metadata.contains_key(k.as_str()))
        {
            return Err(format!("metadata key {k:?} was removed"));
        }
        if seen.counters != &self.counters {
            return Err(format!(
                "its counters differ: {:?} stored, {:?} recorded",
                seen.counters, self.counters
            ));
        }
        Ok(())
    }
}

/// The error of a session without a manifest, read by a layer that
/// requires one.
pub(crate) fn missing(id: &SessionId) -> Error {
    Error::Inconsistent {
        id: id.clone(),
        reason: "it has no manifest (written by an older version of statestore-crypto, or \
                 without the encryption layer; bind it with rotate_all through a layer that \
                 accepts plaintext)"
            .into(),
    }
}

impl Codec<'_> {
    /// `manifest` as the metadata entry that stores it, bound to `s`'s
    /// session, owner and context.
    pub(crate) fn seal_manifest(
        &self,
        s: Scope<'_>,
        manifest: &Manifest,
    ) -> statestore_core::Result<(String, serde_json::Value)> {
        let body =
            serde_json::to_vec(manifest).map_err(|e| statestore_core::Error::InvalidArgument {
                id: s.id.clone(),
                reason: format!("the manifest cannot be serialized: {e}"),
            })?;
        let scope = Scope { epoch: None, ..s };
        let sealed = self.sealer.seal(&body, &scope, &Place::Manifest);
        Ok((key_of(&manifest.epoch), sealed.into()))
    }

    /// The manifest of the session `seen`, opened but not yet checked
    /// against it ([`Manifest::check`]: after the values are opened, so
    /// that a moved or changed value is reported as such): `None` for a
    /// session without one when this codec reads plaintext (migrating:
    /// sessions written before manifests, or without the layer).
    ///
    /// Without `require`, a missing manifest is `None` here too: reads
    /// report it ([`missing`]) after opening the values, whose errors
    /// (plaintext, a format-1 value) say more.
    pub(crate) fn open_manifest(
        &self,
        context: &str,
        seen: &Observed<'_>,
        require: bool,
    ) -> Result<Option<Manifest>> {
        let id = seen.id;
        let inconsistent = |reason: String| Error::Inconsistent {
            id: id.clone(),
            reason,
        };
        let mut found = seen.metadata.iter().filter(|(k, _)| is_manifest_key(k));
        let Some((key, value)) = found.next() else {
            if self.plaintext_ok || !require {
                return Ok(None);
            }
            return Err(missing(id));
        };
        if found.next().is_some() {
            return Err(inconsistent(
                "it holds two manifests (a write raced a re-creation of the session and was \
                 not re-bound, or a manifest was copied in)"
                    .into(),
            ));
        }
        let scope = Scope {
            id,
            owner: seen.owner,
            context,
            epoch: None,
        };
        let text = value.as_str().unwrap_or_default();
        let body = self
            .sealer
            .open(text, &scope, &Place::Manifest, false)
            .map_err(|f| f.at(id, crate::Field::Manifest))?;
        let manifest: Manifest = serde_json::from_slice(&body).map_err(|_| Error::Malformed {
            id: id.clone(),
            field: crate::Field::Manifest,
            reason: "the sealed manifest is not a manifest".into(),
        })?;
        if key_of(&manifest.epoch) != *key {
            return Err(inconsistent(format!(
                "its manifest is stored under {key:?}, not under its own epoch"
            )));
        }
        Ok(Some(manifest))
    }
}
