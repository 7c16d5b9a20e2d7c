//! [`Message`] and its parts: one entry of a conversation's history.

use std::fmt;
use std::num::NonZeroU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use token::{Encoding, TokenCount};

mod token;
mod wire;

/// A JSON object of caller-defined values, kept in key order.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A wall-clock instant, stored as whole milliseconds since the Unix epoch.
///
/// Serialized as a JSON integer, so stored states are compact and readable
/// from any language. Any millisecond count up to `u64::MAX − 1` (584
/// million years after 1970) is kept exactly; `u64::MAX` reads as
/// `u64::MAX − 1`. That spare value lets `Option<Timestamp>` take 8 bytes,
/// the size of the timestamp itself.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(NonZeroU64);

impl Timestamp {
    /// The Unix epoch.
    const EPOCH: Self = Self::from_unix_millis(0);

    /// The current wall-clock time.
    #[must_use]
    pub fn now() -> Self {
        SystemTime::now().into()
    }

    /// A timestamp from milliseconds since the Unix epoch (`u64::MAX` is
    /// taken as `u64::MAX − 1`).
    #[must_use]
    pub const fn from_unix_millis(ms: u64) -> Self {
        // Held one higher, so that zero is free for `None`.
        match NonZeroU64::new(ms.saturating_add(1)) {
            Some(n) => Self(n),
            None => Self(NonZeroU64::MAX),
        }
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_unix_millis(self) -> u64 {
        self.0.get() - 1
    }
}

/// The Unix epoch.
impl Default for Timestamp {
    fn default() -> Self {
        Self::EPOCH
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.as_unix_millis())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Self::from_unix_millis)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Self::from_unix_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        UNIX_EPOCH + Duration::from_millis(t.as_unix_millis())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.as_unix_millis())
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
/// assert_eq!(answer.tool_call_id(), Some("call_1"));
/// assert_eq!(call.tool_calls()[0].name, "weather");
///
/// // Stable snake_case JSON; unknown fields are ignored when reading.
/// let json = serde_json::to_value(&ask).unwrap();
/// assert_eq!(json["role"], "user");
/// assert_eq!(json["content"], "What's the weather in Paris?");
/// ```
///
/// The fields most messages leave empty — [`name`](Self::name),
/// [`tool_calls`](Self::tool_calls), [`tool_call_id`](Self::tool_call_id)
/// and [`metadata`](Self::metadata) — are kept in one box, allocated only
/// when one of them is set, and reached through accessors (`name()`,
/// `name_mut()`, …). A message is a third the size it would be with them
/// inline, which is what a store holding millions of messages, and a window
/// selection scanning thousands, pay for per message. Serialized, the
/// message is the flat JSON object it always was.
#[derive(Clone)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The body.
    pub content: Content,
    /// A cached token count, filled in by a token counter.
    pub token_count: Option<TokenCount>,
    /// When the message was created.
    pub timestamp: Option<Timestamp>,
    /// The rarely set fields; `None` while all are empty.
    rare: Option<Box<Rare>>,
}

/// The fields of a [`Message`] most messages leave empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rare {
    name: Option<String>,
    tool_calls: Vec<ToolCall>,
    tool_call_id: Option<String>,
    metadata: Metadata,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.tool_calls.is_empty()
            && self.tool_call_id.is_none()
            && self.metadata.is_empty()
    }
}

/// The empty map [`Message::metadata`] returns for a message without any.
static NO_METADATA: std::sync::LazyLock<Metadata> = std::sync::LazyLock::new(Metadata::new);

impl Message {
    /// A message of only a role, a body and a timestamp (the codec's fast
    /// path, `codec/plain.rs`).
    pub(crate) fn plain(role: Role, content: Content, timestamp: Option<Timestamp>) -> Self {
        Self {
            role,
            content,
            token_count: None,
            timestamp,
            rare: None,
        }
    }

    /// A message with `role` and `content`, stamped with the current time.
    #[must_use]
    pub fn new(role: Role, content: impl Into<Content>) -> Self {
        Self {
            role,
            content: content.into(),
            token_count: None,
            timestamp: Some(Timestamp::now()),
            rare: None,
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
        Self::new(Role::Tool, content).with_tool_call_id(tool_call_id)
    }

    /// The participant name (OpenAI's `name` field), if any.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.rare.as_ref()?.name.as_deref()
    }

    /// The participant name, to set or clear.
    pub fn name_mut(&mut self) -> &mut Option<String> {
        &mut self.rare_mut().name
    }

    /// Tools the model asked to call (assistant messages only); empty for
    /// most messages.
    #[must_use]
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.rare.as_ref().map_or(&[], |r| &r.tool_calls)
    }

    /// The tool calls, to change.
    pub fn tool_calls_mut(&mut self) -> &mut Vec<ToolCall> {
        &mut self.rare_mut().tool_calls
    }

    /// The [`ToolCall::id`] this message answers (tool messages only).
    #[must_use]
    pub fn tool_call_id(&self) -> Option<&str> {
        self.rare.as_ref()?.tool_call_id.as_deref()
    }

    /// The answered call's id, to set or clear.
    pub fn tool_call_id_mut(&mut self) -> &mut Option<String> {
        &mut self.rare_mut().tool_call_id
    }

    /// Caller-defined values kept with the message; empty for most
    /// messages.
    #[must_use]
    pub fn metadata(&self) -> &Metadata {
        self.rare.as_ref().map_or(&NO_METADATA, |r| &r.metadata)
    }

    /// The metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.rare_mut().metadata
    }

    /// The rare fields, boxed on first use.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Sets the tool calls (for assistant messages).
    #[must_use]
    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> Self {
        if !calls.is_empty() || self.rare.is_some() {
            *self.tool_calls_mut() = calls;
        }
        self
    }

    /// Sets the id of the call this message answers (for tool messages).
    #[must_use]
    pub fn with_tool_call_id(mut self, id: impl Into<String>) -> Self {
        *self.tool_call_id_mut() = Some(id.into());
        self
    }

    /// Sets the participant name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        *self.name_mut() = Some(name.into());
        self
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn with_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.metadata_mut().insert(key.into(), value.into());
        self
    }

    /// Replaces all metadata.
    #[must_use]
    pub fn with_metadata_map(mut self, metadata: Metadata) -> Self {
        if !metadata.is_empty() || self.rare.is_some() {
            *self.metadata_mut() = metadata;
        }
        self
    }

    /// Sets the cached token count.
    #[must_use]
    pub fn with_token_count(mut self, count: TokenCount) -> Self {
        self.token_count = Some(count);
        self
    }

    /// Sets (or clears) the creation time.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: Option<Timestamp>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The message's text (see [`Content::text`]).
    #[must_use]
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        self.content.text()
    }

    /// The rare fields, unless all are empty.
    fn filled(&self) -> Option<&Rare> {
        self.rare.as_deref().filter(|r| !r.is_empty())
    }
}

/// Equal when every field is: a message whose rare fields were set and
/// emptied again equals one where they never were.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role
            && self.content == other.content
            && self.token_count == other.token_count
            && self.timestamp == other.timestamp
            && self.filled() == other.filled()
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("role", &self.role)
            .field("content", &self.content)
            .field("name", &self.name())
            .field("tool_calls", &self.tool_calls())
            .field("tool_call_id", &self.tool_call_id())
            .field("metadata", self.metadata())
            .field("token_count", &self.token_count)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

#[cfg(test)]
mod tests;
