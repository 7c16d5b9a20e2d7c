//! What is sealed in each stored value, and what stays clear.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use statestore_core::{
    Content, ConversationState, Message, Metadata, Pending, RecentState, SessionId, Summary,
    ToolCall,
};

use crate::envelope::{self, Place, Sealer};
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
        id: &SessionId,
        position: u64,
        m: &Message,
    ) -> statestore_core::Result<Message> {
        let body = serde_json::to_vec(&BodyRef {
            content: &m.content,
            name: m.name.as_deref(),
            tool_calls: &m.tool_calls,
            tool_call_id: m.tool_call_id.as_deref(),
            metadata: &m.metadata,
        })
        .map_err(|e| serialization(id, "a message", &e))?;
        let ambiguous = m.metadata.contains_key(SEALED_KEY);
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
        let sealed = self.sealer.seal(&body, id, &message_place(position, m));
        if !self.worth_sealing(&sealed, body.len(), ambiguous) {
            return Ok(m.clone());
        }
        let mut metadata = Metadata::new();
        metadata.insert(SEALED_KEY.to_owned(), sealed.into());
        Ok(Message {
            role: m.role,
            content: Content::Text(String::new()),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            metadata,
            token_count: m.token_count.clone(),
            timestamp: m.timestamp,
        })
    }

    pub(crate) fn open_message(
        &self,
        id: &SessionId,
        position: u64,
        m: &Message,
    ) -> Result<Message> {
        let field = || Field::Message(position);
        let Some(sealed) = m.metadata.get(SEALED_KEY) else {
            self.plain(id, field())?;
            return Ok(m.clone());
        };
        let malformed = |reason: &str| Error::Malformed {
            id: id.clone(),
            field: field(),
            reason: reason.to_owned(),
        };
        let serde_json::Value::String(sealed) = sealed else {
            return Err(malformed("the sealed body is not a string"));
        };
        if m.metadata.len() != 1
            || !m.content.is_empty()
            || m.name.is_some()
            || !m.tool_calls.is_empty()
            || m.tool_call_id.is_some()
        {
            return Err(malformed("clear fields beside a sealed body"));
        }
        let body = self
            .sealer
            .open(sealed, id, &message_place(position, m), self.plaintext_ok)
            .map_err(|f| f.at(id, field()))?;
        let body: Body = serde_json::from_slice(&body)
            .map_err(|_| malformed("the sealed body is not a message body"))?;
        Ok(Message {
            role: m.role,
            content: body.content,
            name: body.name,
            tool_calls: body.tool_calls,
            tool_call_id: body.tool_call_id,
            metadata: body.metadata,
            token_count: m.token_count.clone(),
            timestamp: m.timestamp,
        })
    }

    fn seal_text(&self, text: &str, id: &SessionId, place: &Place<'_>) -> String {
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
        let sealed = self.sealer.seal(text.as_bytes(), id, place);
        if self.worth_sealing(&sealed, text.len(), ambiguous) {
            sealed
        } else {
            text.to_owned()
        }
    }

    fn open_text(&self, text: &str, id: &SessionId, place: &Place<'_>) -> Result<String> {
        if !envelope::is_sealed(text) {
            self.plain(id, place.field())?;
            return Ok(text.to_owned());
        }
        let body = self
            .sealer
            .open(text, id, place, self.plaintext_ok)
            .map_err(|f| f.at(id, place.field()))?;
        String::from_utf8(body).map_err(|_| Error::Malformed {
            id: id.clone(),
            field: place.field(),
            reason: "the sealed text is not UTF-8".into(),
        })
    }

    pub(crate) fn seal_summary(&self, id: &SessionId, index: u64, s: &Summary) -> Summary {
        Summary {
            content: self.seal_text(&s.content, id, &summary_place(index, s)),
            ..s.clone()
        }
    }

    pub(crate) fn open_summary(&self, id: &SessionId, index: u64, s: &Summary) -> Result<Summary> {
        Ok(Summary {
            content: self.open_text(&s.content, id, &summary_place(index, s))?,
            ..s.clone()
        })
    }

    /// Progress as the inner store keeps it: one message whose text is the
    /// whole progress as JSON, sealed and bound to the session and `key`.
    pub(crate) fn seal_pending(
        &self,
        id: &SessionId,
        key: &str,
        pending: &Pending,
    ) -> statestore_core::Result<Pending> {
        let json = serde_json::to_string(pending).map_err(|e| {
            statestore_core::Error::InvalidArgument {
                id: id.clone(),
                reason: format!("progress cannot be serialized: {e}"),
            }
        })?;
        let sealed = self.seal_text(&json, id, &Place::Pending(key));
        Ok(Pending::new(
            vec![Message::assistant(sealed)],
            Default::default(),
        ))
    }

    /// The progress [`Codec::seal_pending`] stored.
    pub(crate) fn open_pending(
        &self,
        id: &SessionId,
        key: &str,
        stored: &Pending,
    ) -> Result<Pending> {
        let malformed = |reason: &str| Error::Malformed {
            id: id.clone(),
            field: crate::Field::Pending(key.to_owned()),
            reason: reason.into(),
        };
        let [one] = stored.messages.as_slice() else {
            return Err(malformed("not one sealed message"));
        };
        let json = self.open_text(&one.text(), id, &Place::Pending(key))?;
        serde_json::from_str(&json).map_err(|_| malformed("the progress is not valid JSON"))
    }

    pub(crate) fn seal_prompt(&self, id: &SessionId, prompt: &str) -> String {
        self.seal_text(prompt, id, &Place::SystemPrompt)
    }

    pub(crate) fn open_prompt(&self, id: &SessionId, prompt: &str) -> Result<String> {
        self.open_text(prompt, id, &Place::SystemPrompt)
    }

    /// A metadata value, sealed (by an encrypting layer; a
    /// compression-only layer leaves metadata as it is).
    pub(crate) fn seal_value(
        &self,
        id: &SessionId,
        key: &str,
        value: &serde_json::Value,
    ) -> statestore_core::Result<serde_json::Value> {
        if !self.encrypting() {
            return Ok(value.clone());
        }
        let body =
            serde_json::to_vec(value).map_err(|e| serialization(id, "a metadata value", &e))?;
        Ok(self.sealer.seal(&body, id, &Place::Metadata(key)).into())
    }

    pub(crate) fn open_value(
        &self,
        id: &SessionId,
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
                self.plain(id, place.field())?;
                return Ok(value.clone());
            }
        };
        let body = self
            .sealer
            .open(text, id, &place, self.plaintext_ok)
            .map_err(|f| f.at(id, place.field()))?;
        serde_json::from_slice(&body).map_err(|_| Error::Malformed {
            id: id.clone(),
            field: place.field(),
            reason: "the sealed value is not JSON".into(),
        })
    }

    /// A metadata patch: values sealed, `null`s (removals) kept.
    pub(crate) fn seal_patch(
        &self,
        id: &SessionId,
        patch: Metadata,
    ) -> statestore_core::Result<Metadata> {
        patch
            .into_iter()
            .map(|(k, v)| {
                let v = if v.is_null() {
                    v
                } else {
                    self.seal_value(id, &k, &v)?
                };
                Ok((k, v))
            })
            .collect()
    }

    fn seal_metadata(
        &self,
        id: &SessionId,
        metadata: &Metadata,
    ) -> statestore_core::Result<Metadata> {
        metadata
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.seal_value(id, k, v)?)))
            .collect()
    }

    fn open_metadata(&self, id: &SessionId, metadata: &Metadata) -> Result<Metadata> {
        metadata
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.open_value(id, k, v)?)))
            .collect()
    }

    pub(crate) fn seal_messages<'m>(
        &self,
        id: &SessionId,
        first: u64,
        messages: impl IntoIterator<Item = &'m Message>,
    ) -> statestore_core::Result<Vec<Message>> {
        (first..)
            .zip(messages)
            .map(|(p, m)| self.seal_message(id, p, m))
            .collect()
    }

    fn open_messages(
        &self,
        id: &SessionId,
        first: u64,
        messages: &[Arc<Message>],
    ) -> Result<Vec<Arc<Message>>> {
        (first..)
            .zip(messages)
            .map(|(p, m)| self.open_message(id, p, m).map(Arc::new))
            .collect()
    }

    pub(crate) fn seal_state(
        &self,
        state: &ConversationState,
    ) -> statestore_core::Result<ConversationState> {
        let id = &state.id;
        Ok(ConversationState {
            messages: self
                .seal_messages(id, 0, state.messages.iter().map(|m| &**m))?
                .into_iter()
                .map(Arc::new)
                .collect(),
            system_prompt: state
                .system_prompt
                .as_deref()
                .map(|p| self.seal_prompt(id, p)),
            summaries: (0..)
                .zip(&state.summaries)
                .map(|(i, s)| self.seal_summary(id, i, s))
                .collect(),
            metadata: self.seal_metadata(id, &state.metadata)?,
            ..state.clone_header()
        })
    }

    pub(crate) fn open_state(&self, state: &ConversationState) -> Result<ConversationState> {
        let id = &state.id;
        Ok(ConversationState {
            messages: self.open_messages(id, 0, &state.messages)?,
            system_prompt: state
                .system_prompt
                .as_deref()
                .map(|p| self.open_prompt(id, p))
                .transpose()?,
            summaries: (0..)
                .zip(&state.summaries)
                .map(|(i, s)| self.open_summary(id, i, s))
                .collect::<Result<_>>()?,
            metadata: self.open_metadata(id, &state.metadata)?,
            ..state.clone_header()
        })
    }

    pub(crate) fn open_recent(&self, recent: RecentState) -> Result<RecentState> {
        let id = &recent.id;
        Ok(RecentState {
            messages: self.open_messages(id, recent.first_position(), &recent.messages)?,
            system_prompt: recent
                .system_prompt
                .as_deref()
                .map(|p| self.open_prompt(id, p))
                .transpose()?,
            summaries: (0..)
                .zip(&recent.summaries)
                .map(|(i, s)| self.open_summary(id, i, s))
                .collect::<Result<_>>()?,
            metadata: self.open_metadata(id, &recent.metadata)?,
            ..recent
        })
    }

    /// `raw` with every value not encrypted under the current key
    /// re-sealed under it, and how many values that was. Values already
    /// under the current key are kept byte for byte (not opened).
    pub(crate) fn rekey_state(
        &self,
        raw: &ConversationState,
    ) -> Result<(ConversationState, usize)> {
        let Some(keys) = self.sealer.keys else {
            return Ok((raw.clone(), 0));
        };
        let current = keys.current_id();
        let is_current = |text: &str| {
            envelope::is_sealed(text)
                && envelope::decode_text(text)
                    .ok()
                    .is_some_and(|b| envelope::header(&b).is_ok_and(|h| h.encrypted_under(current)))
        };
        let id = &raw.id;
        let mut changed = 0;
        let mut state = raw.clone();
        for (p, m) in (0..).zip(state.messages.iter_mut()) {
            let sealed = m.metadata.get(SEALED_KEY).and_then(|v| v.as_str());
            if sealed.is_some_and(is_current) {
                continue;
            }
            let open = self.open_message(id, p, m)?;
            *m = Arc::new(self.seal_message(id, p, &open)?);
            changed += 1;
        }
        if let Some(prompt) = &mut state.system_prompt
            && !is_current(prompt)
        {
            *prompt = self.seal_prompt(id, &self.open_prompt(id, prompt)?);
            changed += 1;
        }
        for (i, s) in (0..).zip(state.summaries.iter_mut()) {
            if !is_current(&s.content) {
                *s = self.seal_summary(id, i, &self.open_summary(id, i, s)?);
                changed += 1;
            }
        }
        for (k, v) in &mut state.metadata {
            if !v.as_str().is_some_and(is_current) {
                *v = self.seal_value(id, k, &self.open_value(id, k, v)?)?;
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
