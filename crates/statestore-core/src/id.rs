//! [`SessionId`]: the validated name of one conversation.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A validated session identifier.
///
/// # What is a legal id
///
/// Any UTF-8 string of **1 to [`SessionId::MAX_LEN`] bytes** that contains no
/// control character (`char::is_control`: U+0000–U+001F, U+007F–U+009F).
/// Everything else is legal and round-trips exactly: `:` `{` `}` `*` `?` `[`
/// `/` `..`, spaces, and any non-ASCII text. Backends must encode ids so that
/// no legal id can reach another session's data (the Redis backend escapes
/// them before they become part of a key; the memory backend compares them
/// byte for byte).
///
/// Control characters are refused because they are never intended, break log
/// lines and terminals, and are the usual carrier of injection attempts.
///
/// Cloning is cheap: the string is reference counted.
///
/// ```
/// use statestore_core::SessionId;
///
/// let id = SessionId::new("user-123:conv/{7}")?;
/// assert_eq!(id.as_str(), "user-123:conv/{7}");
///
/// assert!(SessionId::new("").is_err());
/// assert!(SessionId::new("bell\u{7}").is_err());
/// assert!(SessionId::new("x".repeat(SessionId::MAX_LEN + 1)).is_err());
/// # Ok::<(), statestore_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// The longest legal id, in bytes of UTF-8.
    pub const MAX_LEN: usize = 512;

    /// Validates `id` and wraps it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] when `id` is empty, longer than
    /// [`SessionId::MAX_LEN`] bytes, or contains a control character.
    pub fn new(id: impl AsRef<str>) -> Result<Self, Error> {
        let id = id.as_ref();
        validate(id)?;
        Ok(Self(Arc::from(id)))
    }

    /// The id exactly as it was given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(id: &str) -> Result<(), Error> {
    let reason = if id.is_empty() {
        "it is empty".to_owned()
    } else if id.len() > SessionId::MAX_LEN {
        format!(
            "it is {} bytes long; the limit is {}",
            id.len(),
            SessionId::MAX_LEN
        )
    } else if let Some((at, c)) = id.char_indices().find(|(_, c)| c.is_control()) {
        format!("it contains the control character {c:?} at byte {at}")
    } else {
        return Ok(());
    };
    Err(Error::InvalidId {
        id: preview(id),
        reason,
    })
}

/// A short, escaped rendering of a rejected id for error messages.
fn preview(id: &str) -> String {
    const SHOWN: usize = 64;
    let mut out: String = id
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if id.chars().nth(SHOWN).is_some() {
        out.push('…');
    }
    out
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Displays the id quoted and escaped, so ids with spaces or odd characters
/// read unambiguously in error messages.
impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl PartialEq<str> for SessionId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for SessionId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&*s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_printable_string() {
        for id in [
            "a",
            "a}:b",
            "{x}",
            "*",
            "?",
            "[a-z]",
            "..",
            "../..",
            "a:msgs",
            "with space",
            "ünïcødé 会话 🦀",
            "\\",
            "%00",
        ] {
            let parsed = SessionId::new(id).unwrap();
            assert_eq!(parsed.as_str(), id);
            let json = serde_json::to_string(&parsed).unwrap();
            let back: SessionId = serde_json::from_str(&json).unwrap();
            assert_eq!(back, parsed);
        }
        let longest = "é".repeat(SessionId::MAX_LEN / 2);
        assert_eq!(SessionId::new(&longest).unwrap().as_str(), longest);
    }

    #[test]
    fn rejects_empty_long_and_control() {
        for bad in [
            String::new(),
            "x".repeat(SessionId::MAX_LEN + 1),
            "nul\0".into(),
            "line\nbreak".into(),
            "tab\t".into(),
            "del\u{7f}".into(),
            "c1\u{85}".into(),
        ] {
            let err = SessionId::new(&bad).unwrap_err();
            assert!(matches!(err, Error::InvalidId { .. }), "{bad:?}: {err}");
        }
        let err: Result<SessionId, _> = serde_json::from_str("\"a\\u0000b\"");
        assert!(err.is_err());
    }

    #[test]
    fn error_message_escapes_and_truncates() {
        let err = SessionId::new(format!("{}\n", "y".repeat(10_000))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.len() < 300, "{msg}");
        assert!(!msg.contains('\n'));
    }
}
