//! The writes: what each one does to a missing and to an existing session
//! ([`Write`]), applied by the one write path of the session map.

use std::collections::VecDeque;
use std::sync::Arc;

use statestore_core::codec::Limits;
use statestore_core::{
    Append, Appended, Content, ContentPart, ConversationState, Error, Expect, Message, Metadata,
    Result, SessionId, Timestamp, Version,
};

use crate::session::{Session, check_missing};

/// What a write does to a session that is missing and to one that exists.
pub(crate) trait Write {
    type Out;
    /// The outcome of an earlier identical write, when this one repeats it:
    /// then nothing is written and the version stays.
    fn replay(&self, _session: &Session) -> Option<Self::Out> {
        None
    }
    /// Whether an update keeps the session's clocks (`updated_at`,
    /// `last_accessed_at`, its last-access tick and so its expiry): a
    /// maintenance save ([`statestore_core::Save::keep_clocks`]).
    fn keeps_clocks(&self) -> bool {
        false
    }
    /// A new session, or the error for a missing one.
    fn create(self, id: &SessionId) -> Result<(Session, Self::Out)>;
    /// Changes an existing session; the version is bumped afterwards unless
    /// this fails.
    fn update(self, id: &SessionId, session: &mut Session) -> Result<Self::Out>;
}

fn merge(metadata: &mut Metadata, patch: Metadata) {
    for (k, v) in patch {
        if v.is_null() {
            metadata.remove(&k);
        } else {
            metadata.insert(k, v);
        }
    }
}

/// Gives back the spare capacity of a message's buffers before it is
/// stored for the session's lifetime: text built with `format!` or pushed
/// piecewise carries up to as much again unused (in the footprint bench,
/// 49 spare bytes on 57 of text). A buffer with spare room is copied into
/// an exact one, and the old one freed whole, rather than shrunk in place:
/// an in-place shrink leaves the spare bytes as a hole next to the text,
/// which the counting allocator credits but the process's resident size
/// keeps (measured: same RSS). Buffers already exact are not touched.
fn shrink(m: &mut Message) {
    match &mut m.content {
        Content::Text(t) => exact(t),
        Content::Parts(parts) => {
            for part in parts {
                match part {
                    ContentPart::Text { text } => exact(text),
                    ContentPart::ImageUrl { image_url } => exact(&mut image_url.url),
                    // Parts added to the enum later keep their buffers.
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }
        }
    }
    if !m.tool_calls().is_empty() {
        for call in m.tool_calls_mut() {
            exact(&mut call.arguments);
        }
    }
}

/// Replaces `s` by an exact copy when it has spare capacity.
fn exact(s: &mut String) {
    if s.capacity() > s.len() {
        *s = s.as_str().to_owned();
    }
}

pub(crate) struct AppendOp<'a> {
    pub(crate) append: Append,
    pub(crate) limits: &'a Limits,
}

impl AppendOp<'_> {
    /// Appends to `s` (already checked), adds the counters, remembers the key.
    fn apply(self, s: &mut Session) -> Appended {
        let Append {
            messages,
            key,
            counters,
            metadata,
            ..
        } = self.append;
        let appended = Appended::new(
            s.version + 1,
            s.messages.len() as u64,
            messages.len() as u64,
        );
        s.messages.extend(messages.into_iter().map(|mut m| {
            shrink(&mut m);
            Arc::new(m)
        }));
        for (name, delta) in counters {
            let total = s.counters.entry(name).or_insert(0);
            *total = total.saturating_add(delta);
        }
        merge(&mut s.metadata, metadata);
        s.remember(key, appended);
        appended
    }
}

impl Write for AppendOp<'_> {
    type Out = Appended;
    fn replay(&self, s: &Session) -> Option<Appended> {
        s.remembered(self.append.key.as_ref()?)
    }
    fn create(self, id: &SessionId) -> Result<(Session, Appended)> {
        check_missing(id, self.append.expect)?;
        self.limits
            .check_message_count(id, self.append.messages.len() as u64)?;
        let mut s = Session::empty();
        let appended = self.apply(&mut s);
        Ok((s, appended))
    }
    fn update(self, id: &SessionId, s: &mut Session) -> Result<Appended> {
        s.check(id, self.append.expect)?;
        self.limits
            .check_message_count(id, (s.messages.len() + self.append.messages.len()) as u64)?;
        Ok(self.apply(s))
    }
}

pub(crate) struct Save<'a> {
    pub(crate) state: &'a ConversationState,
    pub(crate) options: statestore_core::Save,
}

impl Write for Save<'_> {
    type Out = Version;
    fn keeps_clocks(&self) -> bool {
        self.options.keep_clocks
    }
    fn create(self, id: &SessionId) -> Result<(Session, Version)> {
        check_missing(id, self.options.expect)?;
        let mut session = Session {
            created_at: self.state.created_at,
            ..Session::from_state(self.state)
        };
        session.carry(&self.state.writes);
        Ok((session, 1))
    }
    fn update(self, id: &SessionId, s: &mut Session) -> Result<Version> {
        s.check(id, self.options.expect)?;
        let (created_at, updated_at, last_accessed_at) =
            (s.created_at, s.updated_at, s.last_accessed_at);
        let version = s.version;
        // The history is replaced: remembered positions no longer hold.
        let mut writes = std::mem::take(&mut s.writes);
        for (_, done) in &mut writes {
            *done = done.rewritten();
        }
        // The clocks are kept here; a write that does not keep them bumps
        // them afterwards.
        *s = Session {
            created_at,
            updated_at,
            last_accessed_at,
            version,
            writes,
            ..Session::from_state(self.state)
        };
        s.carry(&self.state.writes);
        Ok(version + 1)
    }
}

pub(crate) struct Fork(pub(crate) Session);

impl Write for Fork {
    type Out = Version;
    fn create(self, _: &SessionId) -> Result<(Session, Version)> {
        let now = Timestamp::now();
        let session = Session {
            version: 0,
            writes: VecDeque::new(),
            created_at: now,
            updated_at: now,
            last_accessed_at: now,
            ..self.0
        };
        Ok((session, 1))
    }
    fn update(self, id: &SessionId, _: &mut Session) -> Result<Version> {
        Err(Error::AlreadyExists { id: id.clone() })
    }
}

pub(crate) struct MergeMetadata {
    pub(crate) patch: Metadata,
    pub(crate) expect: Expect,
}

impl Write for MergeMetadata {
    type Out = Version;
    fn create(self, id: &SessionId) -> Result<(Session, Version)> {
        check_missing(id, self.expect)?;
        let mut s = Session::empty();
        merge(&mut s.metadata, self.patch);
        Ok((s, 1))
    }
    fn update(self, id: &SessionId, s: &mut Session) -> Result<Version> {
        s.check(id, self.expect)?;
        merge(&mut s.metadata, self.patch);
        Ok(s.version + 1)
    }
}

pub(crate) struct AddSummary(pub(crate) statestore_core::AddSummary);

impl Write for AddSummary {
    type Out = Version;
    fn create(self, id: &SessionId) -> Result<(Session, Version)> {
        Err(Error::NotFound { id: id.clone() })
    }
    fn update(self, id: &SessionId, s: &mut Session) -> Result<Version> {
        let statestore_core::AddSummary {
            summary,
            expect,
            metadata,
            ..
        } = self.0;
        s.check(id, expect)?;
        let range = &summary.covers;
        if range.start >= range.end || range.end > s.messages.len() as u64 {
            return Err(Error::InvalidArgument {
                id: id.clone(),
                reason: format!(
                    "summary covers messages {}..{}, but the history holds {}",
                    range.start,
                    range.end,
                    s.messages.len()
                ),
            });
        }
        s.summaries.push(summary);
        merge(&mut s.metadata, metadata);
        Ok(s.version + 1)
    }
}
