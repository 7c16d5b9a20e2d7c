//! [`Message`]'s serde form: the flat JSON object it has always been
//! stored as, whatever the struct keeps boxed.
//!
//! Both directions go through a mirror struct with the original field list
//! and attributes, so the stored format is exactly the derived one it
//! replaces: the same field order, the same fields skipped when empty, the
//! same defaults for missing fields, unknown fields ignored.

use serde::{Deserialize, Serialize};

use super::{Content, Message, Metadata, Rare, Role, Timestamp, TokenCount, ToolCall};

/// A message as written, borrowing it.
#[derive(Serialize)]
#[serde(rename = "Message")]
struct Out<'a> {
    role: Role,
    content: &'a Content,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[ToolCall]>::is_empty")]
    tool_calls: &'a [ToolCall],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "no_metadata")]
    metadata: &'a Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_count: &'a Option<TokenCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<Timestamp>,
}

/// `&&Metadata`: the signature `skip_serializing_if` calls.
fn no_metadata(m: &&Metadata) -> bool {
    m.is_empty()
}

/// A message as read.
#[derive(Deserialize)]
#[serde(rename = "Message")]
struct In {
    role: Role,
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
    #[serde(default)]
    token_count: Option<TokenCount>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Out {
            role: self.role,
            content: &self.content,
            name: self.name(),
            tool_calls: self.tool_calls(),
            tool_call_id: self.tool_call_id(),
            metadata: self.metadata(),
            token_count: &self.token_count,
            timestamp: self.timestamp,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = In::deserialize(d)?;
        let rare = Rare {
            name: m.name,
            tool_calls: m.tool_calls,
            tool_call_id: m.tool_call_id,
            metadata: m.metadata,
        };
        Ok(Self {
            role: m.role,
            content: m.content,
            token_count: m.token_count,
            timestamp: m.timestamp,
            rare: (!rare.is_empty()).then(|| Box::new(rare)),
        })
    }
}
