//! What is sealed in each stored value, and what stays clear.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use statestore_core::{
    Content, ConversationState, Message, Metadata, Pending, RecentState, SessionId, Summary,
    ToolCall,
};

use crate::envelope::{self, Place, Scope, Sealer};
use crate::manifest;
use crate::{Error, Field, Result};

/// The message metadata key under which a sealed message keeps its body.
pub(crate) const SEALED_KEY: &str = "statestore.sealed";

/// The parts of a message that are sealed together.
#[derive(Serialize)]
struct BodyRef<'a> {
    content: &'a Content,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[ToolCall]>::is_empty")]
    tool_calls: &'a [ToolCall],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    metadata: &'a Metadata,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    content: Content,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    metadata: Metadata,
}

fn message_place(position: u64, m: &Message) -> Place<'_> {
    Place::Message {
        position,
        role: m.role,
        token_count: m.token_count.as_ref(),
        timestamp: m.timestamp,
    }
}

fn summary_place(index: u64, s: &Summary) -> Place<'static> {
    Place::Summary {
        index,
        covers: s.covers.clone(),
        token_count: s.token_count,
        created_at: s.created_at,
    }
}

fn serialization(id: &SessionId, what: &str, e: &serde_json::Error) -> statestore_core::Error {
    statestore_core::Error::InvalidArgument {
        id: id.clone(),
        reason: format!("{what} cannot be serialized: {e}"),
    }
}

/// The scope of the metadata value under `key`: the session's, but for
/// the title ([`TITLE_KEY`](statestore_core::TITLE_KEY)) without the
/// epoch, so that `list` opens it without reading the session's manifest
/// (`layer/list.rs`). The manifest records the title as any metadata value,
/// so a load still refuses one from another epoch.
fn title_scope<'a>(s: Scope<'a>, key: &str) -> Scope<'a> {
    if key == statestore_core::TITLE_KEY {
        Scope { epoch: None, ..s }
    } else {
        s
    }
}

/// Seals and opens whole values of one layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Codec<'a> {
    pub(crate) sealer: Sealer<'a>,
    /// Whether unencrypted values are read (an encrypting layer migrating
    /// a store); a compression-only layer always reads them.
    pub(crate) plaintext_ok: bool,
}

impl Codec<'_> {
    fn encrypting(&self) -> bool {
        self.sealer.keys.is_some()
    }

    fn plain(&self, id: &SessionId, field: Field) -> Result<()> {
        if self.encrypting() && !self.plaintext_ok {
            return Err(Error::NotEncrypted {
                id: id.clone(),
                field,
            });
        }
        Ok(())
    }

    /// Seals text for a compression-only layer only when that makes it
    /// smaller or when the plain text would read as sealed.
    fn worth_sealing(&self, sealed: &str, plain_len: usize, ambiguous: bool) -> bool {
        self.encrypting() || ambiguous || sealed.len() < plain_len
    }

    pub(crate) fn seal_message(
        &self,
        s: Scope<'_>,
        position: u64,
        m: &Message,
    ) -> statestore_core::Result<Message> {
        let body = serde_json::to_vec(&BodyRef {
            content: &m.content,
            name: m.name(),
            tool_calls: m.tool_calls(),
            tool_call_id: m.tool_call_id(),
            metadata: m.metadata(),
        })
        .map_err(|e| serialization(s.id, "a message", &e))?;
        let ambiguous = m.metadata().contains_key(SEALED_KEY);
        if !self.encrypting()
            && !ambiguous
            && self
                .sealer
                .compression
                .threshold_bytes()
                .is_none_or(|t| body.len() < t)
        {
            return Ok(m.clone());
        }
        let sealed = self.sealer.seal(&body, &s, &message_place(position, m));
        if !self.worth_sealing(&sealed, body.len(), ambiguous) {
            return Ok(m.clone());
        }
        let mut metadata = Metadata::new();
        metadata.insert(SEALED_KEY.to_owned(), sealed.into());
        let mut out = Message::new(m.role, Content::default()).with_metadata_map(metadata);
        out.token_count = m.token_count.clone();
        out.timestamp = m.timestamp;
        Ok(out)
    }

    pub(crate) fn open_message(&self, s: Scope<'_>, position: u64, m: &Message) -> Result<Message> {
        let field = || Field::Message(position);
        let Some(sealed) = m.metadata().get(SEALED_KEY) else {
            self.plain(s.id, field())?;
            return Ok(m.clone());
        };
        let malformed = |reason: &str| Error::Malformed {
            id: s.id.clone(),
            field: field(),
            reason: reason.to_owned(),
        };
        let serde_json::Value::String(sealed) = sealed else {
            return Err(malformed("the sealed body is not a string"));
        };
        if m.metadata().len() != 1
            || !m.content.is_empty()
            || m.name().is_some()
            || !m.tool_calls().is_empty()
            || m.tool_call_id().is_some()
        {
            return Err(malformed("clear fields beside a sealed body"));
        }
        let body = self
            .sealer
            .open(sealed, &s, &message_place(position, m), self.plaintext_ok)
            .map_err(|f| f.at(s.id, field()))?;
        let body: Body = serde_json::from_slice(&body)
            .map_err(|_| malformed("the sealed body is not a message body"))?;
        let mut open = Message::new(m.role, body.content)
            .with_tool_calls(body.tool_calls)
            .with_metadata_map(body.metadata);
        open.token_count = m.token_count.clone();
        open.timestamp = m.timestamp;
        if body.name.is_some() {
            *open.name_mut() = body.name;
        }
        if body.tool_call_id.is_some() {
            *open.tool_call_id_mut() = body.tool_call_id;
        }
        Ok(open)
    }

    fn seal_text(&self, text: &str, s: Scope<'_>, place: &Place<'_>) -> String {
        let ambiguous = envelope::is_sealed(text);
        if !self.encrypting()
            && !ambiguous
            && self
                .sealer
                .compression
                .threshold_bytes()
                .is_none_or(|t| text.len() < t)
        {
            return text.to_owned();
        }
        let sealed = self.sealer.seal(text.as_bytes(), &s, place);
        if self.worth_sealing(&sealed, text.len(), ambiguous) {
            sealed
        } else {
            text.to_owned()
        }
    }

    fn open_text(&self, text: &str, s: Scope<'_>, place: &Place<'_>) -> Result<String> {
        if !envelope::is_sealed(text) {
            self.plain(s.id, place.field())?;
            return Ok(text.to_owned());
        }
        let body = self
            .sealer
            .open(text, &s, place, self.plaintext_ok)
            .map_err(|f| f.at(s.id, place.field()))?;
        String::from_utf8(body).map_err(|_| Error::Malformed {
            id: s.id.clone(),
            field: place.field(),
            reason: "the sealed text is not UTF-8".into(),
        })
    }

    pub(crate) fn seal_summary(&self, s: Scope<'_>, index: u64, summary: &Summary) -> Summary {
        Summary {
            content: self.seal_text(&summary.content, s, &summary_place(index, summary)),
            ..summary.clone()
        }
    }

    pub(crate) fn open_summary(
        &self,
        s: Scope<'_>,
        index: u64,
        summary: &Summary,
    ) -> Result<Summary> {
        Ok(Summary {
            content: self.open_text(&summary.content, s, &summary_place(index, summary))?,
            ..summary.clone()
        })
    }

    /// Progress as the inner store keeps it: one message whose text is the
    /// whole progress as JSON, sealed and bound to the session and `key`.
    pub(crate) fn seal_pending(
        &self,
        s: Scope<'_>,
        key: &str,
        pending: &Pending,
    ) -> statestore_core::Result<Pending> {
        let json = serde_json::to_string(pending).map_err(|e| {
            statestore_core::Error::InvalidArgument {
                id: s.id.clone(),
                reason: format!("progress cannot be serialized: {e}"),
            }
        })?;
        let sealed = self.seal_text(&json, s, &Place::Pending(key));
        Ok(Pending::new(
            vec![Message::assistant(sealed)],
            Default::default(),
        ))
    }

    /// The progress [`Codec::seal_pending`] stored.
    pub(crate) fn open_pending(
        &self,
        s: Scope<'_>,
        key: &str,
        stored: &Pending,
    ) -> Result<Pending> {
        let malformed = |reason: &str| Error::Malformed {
            id: s.id.clone(),
            field: crate::Field::Pending(key.to_owned()),
            reason: reason.into(),
        };
        let [one] = stored.messages.as_slice() else {
            return Err(malformed("not one sealed message"));
        };
        let json = self.open_text(&one.text(), s, &Place::Pending(key))?;
        serde_json::from_str(&json).map_err(|_| malformed("the progress is not valid JSON"))
    }

    pub(crate) fn seal_prompt(&self, s: Scope<'_>, prompt: &str) -> String {
        self.seal_text(prompt, s, &Place::SystemPrompt)
    }

    pub(crate) fn open_prompt(&self, s: Scope<'_>, prompt: &str) -> Result<String> {
        self.open_text(prompt, s, &Place::SystemPrompt)
    }

    /// A metadata value, sealed (by an encrypting layer; a
    /// compression-only layer leaves metadata as it is).
    pub(crate) fn seal_value(
        &self,
        s: Scope<'_>,
        key: &str,
        value: &serde_json::Value,
    ) -> statestore_core::Result<serde_json::Value> {
        if !self.encrypting() {
            return Ok(value.clone());
        }
        if manifest::is_manifest_key(key) {
            return Err(statestore_core::Error::InvalidArgument {
                id: s.id.clone(),
                reason: format!(
                    "metadata key {key:?} is reserved for the encryption layer's manifest"
                ),
            });
        }
        let body =
            serde_json::to_vec(value).map_err(|e| serialization(s.id, "a metadata value", &e))?;
        Ok(self
            .sealer
            .seal(&body, &title_scope(s, key), &Place::Metadata(key))
            .into())
    }

    pub(crate) fn open_value(
        &self,
        s: Scope<'_>,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        if !self.encrypting() {
            return Ok(value.clone());
        }
        let place = Place::Metadata(key);
        let text = match value {
            serde_json::Value::String(s) if envelope::is_sealed(s) => s,
            _ => {
                self.plain(s.id, place.field())?;
                return Ok(value.clone());
            }
        };
        let body = self
            .sealer
            .open(text, &title_scope(s, key), &place, self.plaintext_ok)
            .map_err(|f| f.at(s.id, place.field()))?;
        serde_json::from_slice(&body).map_err(|_| Error::Malformed {
            id: s.id.clone(),
            field: place.field(),
            reason: "the sealed value is not JSON".into(),
        })
    }

    /// A metadata patch: values sealed, `null`s (removals) kept.
    pub(crate) fn seal_patch(
        &self,
        s: Scope<'_>,
        patch: Metadata,
    ) -> statestore_core::Result<Metadata> {
        patch
            .into_iter()
            .map(|(k, v)| {
                let v = if v.is_null() {
                    v
                } else {
                    self.seal_value(s, &k, &v)?
                };
                Ok((k, v))
            })
            .collect()
    }

    fn seal_metadata(
        &self,
        s: Scope<'_>,
        metadata: &Metadata,
    ) -> statestore_core::Result<Metadata> {
        metadata
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.seal_value(s, k, v)?)))
            .collect()
    }

    /// Metadata opened, the layer's own entries (the manifest) left out.
    fn open_metadata(&self, s: Scope<'_>, metadata: &Metadata) -> Result<Metadata> {
        metadata
            .iter()
            .filter(|(k, _)| !(self.encrypting() && manifest::is_manifest_key(k)))
            .map(|(k, v)| Ok((k.clone(), self.open_value(s, k, v)?)))
            .collect()
    }

    pub(crate) fn seal_messages<'m>(
        &self,
        s: Scope<'_>,
        first: u64,
        messages: impl IntoIterator<Item = &'m Message>,
    ) -> statestore_core::Result<Vec<Message>> {
        (first..)
            .zip(messages)
            .map(|(p, m)| self.seal_message(s, p, m))
            .collect()
    }

    fn open_messages(
        &self,
        s: Scope<'_>,
        first: u64,
        messages: &[Arc<Message>],
    ) -> Result<Vec<Arc<Message>>> {
        (first..)
            .zip(messages)
            .map(|(p, m)| self.open_message(s, p, m).map(Arc::new))
            .collect()
    }

    /// `state` sealed for scope `s` (whose id is `state.id`).
    pub(crate) fn seal_state(
        &self,
        s: Scope<'_>,
        state: &ConversationState,
    ) -> statestore_core::Result<ConversationState> {
        Ok(ConversationState {
            messages: self
                .seal_messages(s, 0, state.messages.iter().map(|m| &**m))?
                .into_iter()
                .map(Arc::new)
                .collect(),
            system_prompt: state
                .system_prompt
                .as_deref()
                .map(|p| self.seal_prompt(s, p)),
            summaries: (0..)
                .zip(&state.summaries)
                .map(|(i, summary)| self.seal_summary(s, i, summary))
                .collect(),
            metadata: self.seal_metadata(s, &state.metadata)?,
            ..state.clone_header()
        })
    }

    /// `state` (its manifest already taken out of its metadata) opened.
    pub(crate) fn open_state(
        &self,
        s: Scope<'_>,
        state: &ConversationState,
    ) -> Result<ConversationState> {
        Ok(ConversationState {
            messages: self.open_messages(s, 0, &state.messages)?,
            system_prompt: state
                .system_prompt
                .as_deref()
                .map(|p| self.open_prompt(s, p))
                .transpose()?,
            summaries: (0..)
                .zip(&state.summaries)
                .map(|(i, summary)| self.open_summary(s, i, summary))
                .collect::<Result<_>>()?,
            metadata: self.open_metadata(s, &state.metadata)?,
            ..state.clone_header()
        })
    }

    /// `recent` (its manifest already taken out of its metadata) opened.
    pub(crate) fn open_recent(&self, s: Scope<'_>, recent: RecentState) -> Result<RecentState> {
        Ok(RecentState {
            messages: self.open_messages(s, recent.first_position(), &recent.messages)?,
            system_prompt: recent
                .system_prompt
                .as_deref()
                .map(|p| self.open_prompt(s, p))
                .transpose()?,
            summaries: (0..)
                .zip(&recent.summaries)
                .map(|(i, summary)| self.open_summary(s, i, summary))
                .collect::<Result<_>>()?,
            metadata: self.open_metadata(s, &recent.metadata)?,
            ..recent
        })
    }

    /// Whether `text` is a value sealed in this build's format under the
    /// current key (read from its header, not opened).
    pub(crate) fn is_current(&self, text: &str) -> bool {
        let Some(keys) = self.sealer.keys else {
            return false;
        };
        envelope::is_sealed(text)
            && envelope::decode_text(text).ok().is_some_and(|b| {
                envelope::header(&b).is_ok_and(|h| h.current_under(keys.current_id()))
            })
    }

    /// `raw` (its manifest already taken out) with every value opened under
    /// scope `from` and sealed again for scope `to` — all of them when the
    /// scopes differ (a session bound for the first time), else only those
    /// not under the current key (the others are kept byte for byte, not
    /// opened) — and how many values were sealed again.
    pub(crate) fn rekey_state(
        &self,
        from: Scope<'_>,
        to: Scope<'_>,
        raw: &ConversationState,
    ) -> Result<(ConversationState, usize)> {
        if self.sealer.keys.is_none() {
            return Ok((raw.clone(), 0));
        }
        let same = from.epoch == to.epoch && from.owner == to.owner;
        let is_current = |text: &str| same && self.is_current(text);
        let mut changed = 0;
        let mut state = raw.clone();
        for (p, m) in (0..).zip(state.messages.iter_mut()) {
            let sealed = m.metadata().get(SEALED_KEY).and_then(|v| v.as_str());
            if sealed.is_some_and(is_current) {
                continue;
            }
            let open = self.open_message(from, p, m)?;
            *m = Arc::new(self.seal_message(to, p, &open)?);
            changed += 1;
        }
        if let Some(prompt) = &mut state.system_prompt
            && !is_current(prompt)
        {
            *prompt = self.seal_prompt(to, &self.open_prompt(from, prompt)?);
            changed += 1;
        }
        for (i, summary) in (0..).zip(state.summaries.iter_mut()) {
            if !is_current(&summary.content) {
                *summary = self.seal_summary(to, i, &self.open_summary(from, i, summary)?);
                changed += 1;
            }
        }
        for (k, v) in &mut state.metadata {
            if !v.as_str().is_some_and(is_current) {
                *v = self.seal_value(to, k, &self.open_value(from, k, v)?)?;
                changed += 1;
            }
        }
        Ok((state, changed))
    }
}

/// Everything of a state but its messages, prompt, summaries and metadata.
trait CloneHeader {
    fn clone_header(&self) -> Self;
}

impl CloneHeader for ConversationState {
    fn clone_header(&self) -> Self {
        Self {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            messages: Vec::new(),
            system_prompt: None,
            summaries: Vec::new(),
            metadata: Metadata::new(),
            counters: self.counters.clone(),
            writes: self.writes.clone(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_accessed_at: self.last_accessed_at,
        }
    }
}
