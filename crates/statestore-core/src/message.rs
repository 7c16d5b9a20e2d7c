//! [`Message`] and its parts: one entry of a conversation's history.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A JSON object of caller-defined values, kept in key order.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A wall-clock instant, stored as whole milliseconds since the Unix epoch.
///
/// Serialized as a JSON integer, so stored states are compact and readable
/// from any language.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The current wall-clock time.
    #[must_use]
    pub fn now() -> Self {
        SystemTime::now().into()
    }

    /// A timestamp from milliseconds since the Unix epoch.
    #[must_use]
    pub const fn from_unix_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        UNIX_EPOCH + Duration::from_millis(t.0)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person (or program) talking to the model.
    User,
    /// The model; may carry [`ToolCall`]s.
    Assistant,
    /// The result of a tool call; carries the `tool_call_id` it answers.
    Tool,
}

impl Role {
    /// The role's wire name: `"system"`, `"user"`, `"assistant"` or `"tool"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message body: plain text, or a list of parts (text and images), as in
/// OpenAI's Chat Completions format.
///
/// Plain text serializes as a JSON string, parts as a JSON array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// A single piece of text.
    Text(String),
    /// Several parts, in order.
    Parts(Vec<ContentPart>),
}

impl Content {
    /// All text in the body, parts joined by newlines; images contribute nothing.
    #[must_use]
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Text(t) => t.as_str().into(),
            Self::Parts(parts) => {
                let texts: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Text { text } => Some(text.as_str()),
                        ContentPart::ImageUrl { .. } => None,
                    })
                    .collect();
                match texts.as_slice() {
                    [one] => (*one).into(),
                    _ => texts.join("\n").into(),
                }
            }
        }
    }

    /// Whether the body holds no text and no parts.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Text(t) => t.is_empty(),
            Self::Parts(p) => p.is_empty(),
        }
    }
}

impl Default for Content {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

/// A string is [`Content::Text`], an array [`Content::Parts`] — decided by
/// the JSON value's type, without buffering the value first as
/// `#[serde(untagged)]` would (which made decoding a stored message about
/// twice as slow).
impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Body;
        impl<'de> serde::de::Visitor<'de> for Body {
            type Value = Content;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Content, E> {
                Ok(Content::Text(text.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Content, E> {
                Ok(Content::Text(text))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                parts: A,
            ) -> Result<Content, A::Error> {
                let parts = serde::de::value::SeqAccessDeserializer::new(parts);
                Vec::<ContentPart>::deserialize(parts).map(Content::Parts)
            }
        }
        d.deserialize_any(Body)
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<Vec<ContentPart>> for Content {
    fn from(parts: Vec<ContentPart>) -> Self {
        Self::Parts(parts)
    }
}

/// One part of a multi-part [`Content`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, by URL (`https:` or a `data:` URL).
    ImageUrl {
        /// Where the image is.
        image_url: ImageUrl,
    },
}

impl ContentPart {
    /// A text part.
    #[must_use]
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// An image part.
    #[must_use]
    pub fn image_url(url: impl Into<String>) -> Self {
        Self::ImageUrl {
            image_url: ImageUrl {
                url: url.into(),
                detail: None,
            },
        }
    }
}

/// The image of a [`ContentPart::ImageUrl`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// The image's URL.
    pub url: String,
    /// `"low"`, `"high"` or `"auto"`; `None` leaves the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A tool invocation requested by the model in an assistant message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id; the [`Role::Tool`] message answering it carries the same
    /// id in [`Message::tool_call_id`].
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the JSON text the model produced. Kept as text, not
    /// parsed, so it round-trips byte for byte even when the model produced
    /// invalid JSON; see [`ToolCall::parse_arguments`].
    pub arguments: String,
}

impl ToolCall {
    /// A tool call.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    /// Parses [`ToolCall::arguments`] as JSON.
    ///
    /// # Errors
    ///
    /// When the model produced text that is not JSON.
    pub fn parse_arguments(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(&self.arguments)
    }
}

/// A cached token count for one message, tagged with the encoding that
/// produced it so that a count from another tokenizer is never reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCount {
    /// The encoding's name, e.g. `"o200k_base"`.
    pub encoding: String,
    /// Tokens the whole message costs in a request under that encoding.
    pub tokens: u32,
}

/// One message of a conversation.
///
/// Construct with [`Message::user`], [`Message::assistant`],
/// [`Message::system`] or [`Message::tool`], then refine with the `with_*`
/// methods:
///
/// ```
/// use statestore_core::{Message, Role, ToolCall};
///
/// let ask = Message::user("What's the weather in Paris?");
/// let call = Message::assistant("")
///     .with_tool_calls(vec![ToolCall::new("call_1", "weather", r#"{"city":"Paris"}"#)]);
/// let answer = Message::tool("call_1", r#"{"celsius":21}"#);
/// assert_eq!(answer.role, Role::Tool);
/// assert_eq!(answer.tool_call_id.as_deref(), Some("call_1"));
///
/// // Stable snake_case JSON; unknown fields are ignored when reading.
/// let json = serde_json::to_value(&ask).unwrap();
/// assert_eq!(json["role"], "user");
/// assert_eq!(json["content"], "What's the weather in Paris?");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The body.
    #[serde(default)]
    pub content: Content,
    /// An optional participant name (OpenAI's `name` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tools the model asked to call (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The [`ToolCall::id`] this message answers (tool messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Caller-defined values kept with the message.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// A cached token count, filled in by a token counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_count: Option<TokenCount>,
    /// When the message was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

impl Message {
    /// A message of only a role, a body and a timestamp (the codec's fast
    /// path, `codec/plain.rs`).
    pub(crate) fn plain(role: Role, content: Content, timestamp: Option<Timestamp>) -> Self {
        Self {
            role,
            content,
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            metadata: Metadata::new(),
            token_count: None,
            timestamp,
        }
    }

    /// A message with `role` and `content`, stamped with the current time.
    #[must_use]
    pub fn new(role: Role, content: impl Into<Content>) -> Self {
        Self {
            role,
            content: content.into(),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            metadata: Metadata::new(),
            token_count: None,
            timestamp: Some(Timestamp::now()),
        }
    }

    /// A system message.
    #[must_use]
    pub fn system(content: impl Into<Content>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    #[must_use]
    pub fn user(content: impl Into<Content>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    #[must_use]
    pub fn assistant(content: impl Into<Content>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A tool result answering the call with id `tool_call_id`.
    #[must_use]
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<Content>) -> Self {
        let mut m = Self::new(Role::Tool, content);
        m.tool_call_id = Some(tool_call_id.into());
        m
    }

    /// Sets the tool calls (for assistant messages).
    #[must_use]
    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> Self {
        self.tool_calls = calls;
        self
    }

    /// Sets the participant name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn with_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The message's text (see [`Content::text`]).
    #[must_use]
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        self.content.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_stable() {
        let m = Message::assistant("")
            .with_tool_calls(vec![ToolCall::new("c1", "f", "{\"a\":1}")])
            .with_name("bot");
        let mut v = serde_json::to_value(&m).unwrap();
        v.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(
            v,
            serde_json::json!({
                "role": "assistant",
                "content": "",
                "name": "bot",
                "tool_calls": [{"id": "c1", "name": "f", "arguments": "{\"a\":1}"}],
            })
        );
    }

    #[test]
    fn tolerates_unknown_fields_and_missing_optionals() {
        let m: Message =
            serde_json::from_str(r#"{"role":"tool","tool_call_id":"x","future_field":[1,2]}"#)
                .unwrap();
        assert_eq!(m.role, Role::Tool);
        assert!(m.content.is_empty());
        assert_eq!(m.tool_call_id.as_deref(), Some("x"));
        assert!(serde_json::from_str::<Message>(r#"{"role":"wizard"}"#).is_err());
    }

    #[test]
    fn multi_part_content_round_trips() {
        let m = Message::user(vec![
            ContentPart::text("look"),
            ContentPart::image_url("https://example.invalid/cat.png"),
            ContentPart::text("at this"),
        ]);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""type":"image_url""#), "{json}");
        let back: Message = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.text(), "look\nat this");
    }

    #[test]
    fn content_is_text_or_parts_and_nothing_else() {
        let text: Content = serde_json::from_str(r#""a \"quoted\" line\n""#).unwrap();
        assert_eq!(text, Content::Text("a \"quoted\" line\n".into()));
        let parts: Content = serde_json::from_str(r#"[{"type":"text","text":"x"}]"#).unwrap();
        assert_eq!(parts, Content::Parts(vec![ContentPart::text("x")]));
        assert_eq!(
            serde_json::from_str::<Content>("[]").unwrap(),
            Content::Parts(Vec::new())
        );
        for other in [
            "null",
            "1",
            "true",
            r#"{"text":"x"}"#,
            r#"[{"type":"video"}]"#,
        ] {
            assert!(serde_json::from_str::<Content>(other).is_err(), "{other}");
        }
    }
}
