//! How backends persist values: JSON with a schema version, and the size
//! limits checked before anything is written.
//!
//! Backends that serialize (Redis) store each message as the JSON produced by
//! [`encode_message`] and keep [`SCHEMA_VERSION`] beside the session;
//! readers call [`check_schema`] and [`decode_message`], which turn foreign
//! or damaged bytes into [`Error::Corrupt`] / [`Error::UnsupportedSchema`]
//! for that session only.

use crate::{ConversationState, Error, Message, Result, SessionId};

mod plain;

/// The storage schema this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Fails with [`Error::UnsupportedSchema`] when `found` is newer than this
/// build understands, and [`Error::Corrupt`] when it is 0.
///
/// # Errors
///
/// As above.
pub fn check_schema(id: &SessionId, found: u32) -> Result<()> {
    if found == 0 {
        return Err(Error::Corrupt {
            id: id.clone(),
            detail: "schema version 0".into(),
            source: None,
        });
    }
    if found > SCHEMA_VERSION {
        return Err(Error::UnsupportedSchema {
            id: id.clone(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// One message as stored JSON.
///
/// # Errors
///
/// Only if serialization itself fails, which our types never do; reported
/// as [`Error::InvalidArgument`].
pub fn encode_message(id: &SessionId, message: &Message) -> Result<Vec<u8>> {
    serde_json::to_vec(message).map_err(|e| Error::InvalidArgument {
        id: id.clone(),
        reason: format!("message cannot be serialized: {e}"),
    })
}

/// A message from stored JSON.
///
/// # Errors
///
/// [`Error::Corrupt`] when the bytes are not a message.
pub fn decode_message(id: &SessionId, bytes: &[u8]) -> Result<Message> {
    // The common shape in one pass; anything else through serde_json.
    if let Some(message) = plain::message(bytes) {
        return Ok(message);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(id, "a stored message is not valid", e))
}

#[derive(serde::Serialize)]
struct EnvelopeOut<'a> {
    schema_version: u32,
    state: &'a ConversationState,
}

#[derive(serde::Deserialize)]
struct SchemaOnly {
    schema_version: u32,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn {
    state: ConversationState,
}

/// A whole state as one versioned JSON document
/// (`{"schema_version": 1, "state": {...}}`), for export and for backends
/// that store sessions whole.
///
/// # Errors
///
/// Only if serialization fails, which our types never do.
pub fn encode_state(state: &ConversationState) -> Result<Vec<u8>> {
    serde_json::to_vec(&EnvelopeOut {
        schema_version: SCHEMA_VERSION,
        state,
    })
    .map_err(|e| Error::InvalidArgument {
        id: state.id.clone(),
        reason: format!("state cannot be serialized: {e}"),
    })
}

/// Reads what [`encode_state`] wrote, checking the schema version first.
/// `id` names the session in errors.
///
/// # Errors
///
/// [`Error::UnsupportedSchema`] for a newer schema, [`Error::Corrupt`] for
/// anything that is not such a document.
pub fn decode_state(id: &SessionId, bytes: &[u8]) -> Result<ConversationState> {
    let schema: SchemaOnly = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(id, "stored state has no schema version", e))?;
    check_schema(id, schema.schema_version)?;
    let env: EnvelopeIn = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(id, "stored state is not valid", e))?;
    Ok(env.state)
}

/// Size limits a backend enforces before writing. `None` means unlimited.
///
/// Sizes are bytes of a message's stored JSON ([`encode_message`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest single message.
    pub max_message_bytes: Option<usize>,
    /// The most messages one session may hold.
    pub max_messages: Option<u64>,
}

impl Limits {
    /// No limits.
    #[must_use]
    pub const fn none() -> Self {
        Self {
            max_message_bytes: None,
            max_messages: None,
        }
    }

    /// Sets the largest single message, in bytes of stored JSON.
    #[must_use]
    pub const fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// Sets the most messages one session may hold.
    #[must_use]
    pub const fn with_max_messages(mut self, n: u64) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// Checks each message's encoded size. `sizes` yields the stored size of
    /// each message being written, in order.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] naming the first message over the limit.
    pub fn check_message_sizes(
        &self,
        id: &SessionId,
        sizes: impl ExactSizeIterator<Item = usize>,
    ) -> Result<()> {
        let Some(limit) = self.max_message_bytes else {
            return Ok(());
        };
        let count = sizes.len();
        for (i, size) in sizes.enumerate() {
            if size > limit {
                return Err(Error::TooLarge {
                    id: id.clone(),
                    what: format!("message {} of {count}", i + 1),
                    size,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// Checks that a session would hold at most [`Limits::max_messages`].
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when `total` is over the limit.
    pub fn check_message_count(&self, id: &SessionId, total: u64) -> Result<()> {
        match self.max_messages {
            Some(limit) if total > limit => Err(Error::TooLarge {
                id: id.clone(),
                what: format!("the history ({total} messages)"),
                size: usize::try_from(total).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId::new("s").unwrap()
    }

    #[test]
    fn state_round_trips_with_schema() {
        let state = ConversationState::new(id()).with_messages([Message::user("hi")]);
        let bytes = encode_state(&state).unwrap();
        assert!(bytes.starts_with(br#"{"schema_version":1,"#));
        assert_eq!(decode_state(&id(), &bytes).unwrap(), state);
    }

    #[test]
    fn foreign_bytes_are_typed_errors() {
        for bad in [
            &b"garbage"[..],
            b"",
            b"{\"schema_version\":1,\"state\":{\"id\":",
            b"[1,2]",
        ] {
            assert!(
                matches!(decode_state(&id(), bad), Err(Error::Corrupt { .. })),
                "{bad:?}"
            );
            assert!(
                matches!(decode_message(&id(), bad), Err(Error::Corrupt { .. })),
                "{bad:?}"
            );
        }
        let newer = br#"{"schema_version":2,"state":{"id":"s","brand_new":true}}"#;
        assert!(matches!(
            decode_state(&id(), newer),
            Err(Error::UnsupportedSchema {
                found: 2,
                supported: 1,
                ..
            })
        ));
    }

    #[test]
    fn limits_name_the_offending_message() {
        let limits = Limits::none().with_max_message_bytes(10);
        assert!(
            limits
                .check_message_sizes(&id(), [3, 10].into_iter())
                .is_ok()
        );
        let err = limits
            .check_message_sizes(&id(), [3, 11, 50].into_iter())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"session "s": message 2 of 3 is 11 bytes, over the limit of 10"#
        );
        assert!(
            Limits::none()
                .with_max_messages(2)
                .check_message_count(&id(), 3)
                .is_err()
        );
    }
}
