//! The JSON on the wire: the request written field by field from our types
//! (see the [module documentation](super#wire-format)), the reply and the
//! stream chunks read back, and the conversions between them.

use serde::{Deserialize, Serialize};
use statestore_core::{Content, ContentPart, Message, Role, ToolCall};

use super::OpenAiProvider;
use super::failure::truncate;
use crate::{ChatRequest, ChatResponse, Error, FinishReason, ToolSpec, Usage};

impl OpenAiProvider {
    /// The request's body; `stream` asks for a stream with usage.
    pub(super) fn body(&self, request: &ChatRequest, stream: bool) -> Result<Vec<u8>, Error> {
        let wire = WireRequest {
            model: &self.model,
            messages: request
                .messages
                .iter()
                .map(|m| WireMessage::new(m))
                .collect(),
            tools: request.tools.iter().map(WireTool::new).collect(),
            temperature: request.temperature.or(self.temperature),
            max_tokens: request.max_tokens.or(self.max_tokens),
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        };
        serde_json::to_vec(&wire).map_err(|e| Error::InvalidResponse {
            detail: format!("the request could not be encoded: {e}"),
        })
    }
}

/// The reply in a non-streamed answer's `bytes`; `redact` cleans a
/// server message quoted in an error.
pub(super) fn parse_response(
    bytes: &[u8],
    redact: impl Fn(String) -> String,
) -> Result<ChatResponse, Error> {
    let wire: WireResponse = serde_json::from_slice(bytes).map_err(|e| Error::InvalidResponse {
        detail: format!("not a chat completion: {e}"),
    })?;
    record_answer(
        wire.id.as_deref(),
        wire.model.as_deref(),
        wire.usage.as_ref(),
    );
    let Some(choice) = wire.choices.into_iter().next() else {
        let detail = match wire.error.and_then(|e| e.message) {
            Some(serde_json::Value::String(m)) => {
                format!("no choices; the server said: {}", redact(truncate(&m)))
            }
            _ => "the response has no choices".to_owned(),
        };
        return Err(Error::InvalidResponse { detail });
    };
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall::new(c.id, c.function.name, c.function.arguments))
        .collect();
    let finish_reason = finish_reason(choice.finish_reason.as_deref(), !tool_calls.is_empty());
    let content = choice.message.content.unwrap_or_default();
    let usage = wire.usage.map(Usage::from).unwrap_or_default();
    Ok(ChatResponse {
        message: Message::assistant(content).with_tool_calls(tool_calls),
        usage,
        finish_reason,
    })
}

/// The reply's finish reason; when the server sent none, `tool_calls` if
/// the reply has tool calls, else `stop`.
pub(super) fn finish_reason(wire: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match wire {
        Some(s) if !s.is_empty() => FinishReason::from_wire(s),
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

// ---- the wire format: requests ----

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `None` is sent as `null` (an assistant message with only tool calls).
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    fn new(message: &'a Message) -> Self {
        let content = if message.role == Role::Assistant
            && !message.tool_calls().is_empty()
            && message.content.is_empty()
        {
            None
        } else {
            Some(WireContent::new(&message.content))
        };
        Self {
            role: message.role.as_str(),
            content,
            name: message.name(),
            tool_calls: message
                .tool_calls()
                .iter()
                .map(|c| WireToolCall {
                    id: &c.id,
                    kind: "function",
                    function: WireFunctionCall {
                        name: &c.name,
                        arguments: &c.arguments,
                    },
                })
                .collect(),
            tool_call_id: message.tool_call_id(),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(Vec<WirePart<'a>>),
}

impl<'a> WireContent<'a> {
    fn new(content: &'a Content) -> Self {
        match content {
            Content::Text(text) => Self::Text(text),
            Content::Parts(parts) => Self::Parts(parts.iter().map(WirePart::new).collect()),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    Text {
        text: &'a str,
    },
    ImageUrl {
        image_url: WireImageUrl<'a>,
    },
    /// A part kind added to [`ContentPart`] after this was written: sent as
    /// the message type serializes it.
    #[serde(untagged)]
    Other(&'a ContentPart),
}

impl<'a> WirePart<'a> {
    fn new(part: &'a ContentPart) -> Self {
        match part {
            ContentPart::Text { text } => Self::Text { text },
            ContentPart::ImageUrl { image_url } => Self::ImageUrl {
                image_url: WireImageUrl {
                    url: &image_url.url,
                    detail: image_url.detail.as_deref(),
                },
            },
            other => Self::Other(other),
        }
    }
}

#[derive(Serialize)]
struct WireImageUrl<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

impl<'a> WireTool<'a> {
    fn new(tool: &'a ToolSpec) -> Self {
        Self {
            kind: "function",
            function: WireFunction {
                name: &tool.name,
                description: &tool.description,
                parameters: &tool.parameters,
            },
        }
    }
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

// ---- the wire format: responses ----

#[derive(Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) model: Option<String>,
    #[serde(default)]
    pub(super) choices: Vec<WireChoice>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
    #[serde(default)]
    pub(super) error: Option<WireError>,
}

#[derive(Deserialize)]
pub(super) struct WireChoice {
    pub(super) message: WireReplyMessage,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireReplyMessage {
    #[serde(default)]
    pub(super) content: Option<Content>,
    #[serde(default)]
    pub(super) tool_calls: Option<Vec<WireReplyToolCall>>,
}

#[derive(Deserialize)]
pub(super) struct WireReplyToolCall {
    pub(super) id: String,
    pub(super) function: WireReplyFunction,
}

#[derive(Deserialize)]
pub(super) struct WireReplyFunction {
    pub(super) name: String,
    #[serde(default)]
    pub(super) arguments: String,
}

#[derive(Deserialize)]
pub(super) struct WireUsage {
    #[serde(default)]
    pub(super) prompt_tokens: u64,
    #[serde(default)]
    pub(super) completion_tokens: u64,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<WireTokenDetails>,
    #[serde(default)]
    pub(super) completion_tokens_details: Option<WireTokenDetails>,
}

#[derive(Deserialize)]
pub(super) struct WireTokenDetails {
    #[serde(default)]
    pub(super) cached_tokens: Option<u64>,
    #[serde(default)]
    pub(super) reasoning_tokens: Option<u64>,
}

/// Records what an answer says about itself on the current span (the
/// pipeline's `chat` span declares these fields): the model that answered,
/// the response id, cached input and reasoning tokens.
pub(super) fn record_answer(id: Option<&str>, model: Option<&str>, usage: Option<&WireUsage>) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(model) = model {
        span.record("gen_ai.response.model", model);
    }
    if let Some(id) = id {
        span.record("gen_ai.response.id", id);
    }
    let cached = usage.and_then(|u| u.prompt_tokens_details.as_ref()?.cached_tokens);
    if let Some(n) = cached {
        span.record("gen_ai.usage.cache_read.input_tokens", n);
    }
    let reasoning = usage.and_then(|u| u.completion_tokens_details.as_ref()?.reasoning_tokens);
    if let Some(n) = reasoning {
        span.record("gen_ai.usage.reasoning.output_tokens", n);
    }
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct WireErrorBody {
    #[serde(default)]
    pub(super) error: Option<WireError>,
}

#[derive(Deserialize)]
pub(super) struct WireError {
    #[serde(default)]
    pub(super) message: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) code: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    pub(super) kind: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireChunk {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) model: Option<String>,
    /// `None` when the field is missing: a chunk has `choices` (empty in
    /// the usage chunk), `usage` or `error`.
    #[serde(default)]
    pub(super) choices: Option<Vec<WireChunkChoice>>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
    #[serde(default)]
    pub(super) error: Option<WireError>,
}

#[derive(Deserialize)]
pub(super) struct WireChunkChoice {
    #[serde(default)]
    pub(super) index: Option<u32>,
    #[serde(default)]
    pub(super) delta: Option<WireDelta>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireDelta {
    #[serde(default)]
    pub(super) content: Option<String>,
    #[serde(default)]
    pub(super) tool_calls: Option<Vec<WireDeltaToolCall>>,
}

#[derive(Deserialize)]
pub(super) struct WireDeltaToolCall {
    #[serde(default)]
    pub(super) index: Option<u32>,
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) function: Option<WireDeltaFunction>,
}

#[derive(Deserialize)]
pub(super) struct WireDeltaFunction {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) arguments: Option<String>,
}
