//! The pipeline's telemetry: the `execute`, `chat {model}` and
//! `execute_tool {name}` spans and the GenAI metrics, named after the
//! OpenTelemetry semantic conventions (see
//! [`statestore_core::telemetry`] for the version, and
//! `docs/telemetry.md` for every attribute). Spans go through `tracing`;
//! with no subscriber they cost a few nanoseconds each.

use std::time::Instant;

use statestore_core::telemetry::{ModelCall, record_model_call};
use statestore_core::{Message, Role};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::OnDelta;
use crate::{ChatRequest, ChatResponse, Error, FinishReason, Provider};

/// Sends `request` to `provider` inside a `chat {model}` span, and records
/// the call's duration and tokens.
pub(crate) async fn chat(
    provider: &dyn Provider,
    request: &ChatRequest,
    on_event: OnDelta<'_>,
    conversation: Option<&str>,
    content: bool,
) -> Result<ChatResponse, Error> {
    let model = provider.model();
    let span = tracing::info_span!(
        "chat",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider.name(),
        gen_ai.request.model = model,
        gen_ai.request.temperature = request.temperature.map(f64::from),
        gen_ai.request.max_tokens = request.max_tokens,
        gen_ai.conversation.id = conversation,
        gen_ai.response.model = Empty,
        gen_ai.response.id = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.cache_read.input_tokens = Empty,
        gen_ai.usage.reasoning.output_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        statestore.attempts = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        match model {
            Some(m) => span.record("otel.name", format!("chat {m}")),
            None => span.record("otel.name", "chat"),
        };
        if content {
            span.record(
                "gen_ai.input.messages",
                messages_json(request.messages.iter().map(|m| &**m)),
            );
        }
    }
    let started = Instant::now();
    let result = async {
        match on_event {
            Some(f) => provider.chat_stream(request, f).await,
            None => provider.chat(request).await,
        }
    }
    .instrument(span.clone())
    .await;
    let mut call = ModelCall::chat(provider.name(), model, started.elapsed());
    match &result {
        Ok(r) => {
            span.record("gen_ai.usage.input_tokens", r.usage.prompt_tokens);
            span.record("gen_ai.usage.output_tokens", r.usage.completion_tokens);
            span.record(
                "gen_ai.response.finish_reasons",
                finish_reason(&r.finish_reason),
            );
            if content && !span.is_disabled() {
                span.record("gen_ai.output.messages", messages_json([&r.message]));
            }
            call.tokens = Some((r.usage.prompt_tokens, r.usage.completion_tokens));
            tracing::debug!(
                parent: &span,
                prompt_tokens = r.usage.prompt_tokens,
                completion_tokens = r.usage.completion_tokens,
                elapsed = ?started.elapsed(),
                "provider answered"
            );
        }
        Err(e) => {
            fail(&span, e.kind());
            call.error_type = Some(e.kind());
            tracing::debug!(parent: &span, error = %e, "provider failed");
        }
    }
    record_model_call(&call);
    result
}

/// Marks `span` failed with `error.type` = `kind`.
pub(crate) fn fail(span: &Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "error");
}

/// The span of one tool call: `execute_tool {name}`.
pub(crate) fn tool_span(
    name: &str,
    call_id: &str,
    turn_id: &str,
    conversation: Option<&str>,
    arguments: Option<&str>,
) -> Span {
    let span = tracing::info_span!(
        "execute_tool",
        otel.name = Empty,
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = name,
        gen_ai.tool.type = "function",
        gen_ai.tool.call.id = call_id,
        gen_ai.conversation.id = conversation,
        gen_ai.tool.call.arguments = arguments,
        gen_ai.tool.call.result = Empty,
        statestore.turn.id = turn_id,
        statestore.tool.reused = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("execute_tool {name}"));
    }
    span
}

/// The span of one execute (see `docs/telemetry.md`).
pub(crate) fn execute_span(provider: &dyn Provider, streaming: bool) -> Span {
    tracing::info_span!(
        "execute",
        otel.name = "execute",
        otel.status_code = Empty,
        gen_ai.provider.name = provider.name(),
        gen_ai.request.model = provider.model(),
        gen_ai.conversation.id = Empty,
        statestore.turn.id = Empty,
        statestore.turn.replayed = Empty,
        statestore.turn.resumed = Empty,
        statestore.turn.conflict_restarts = Empty,
        statestore.messages.sent = Empty,
        statestore.messages.stored = Empty,
        statestore.model_calls = Empty,
        statestore.streaming = streaming,
        error.type = Empty,
        statestore.write_outcome = Empty,
    )
}

/// The OpenAI-style name of a finish reason.
fn finish_reason(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(other) => other,
    }
}

/// Messages in the conventions' shape (`gen_ai.input.messages`): a JSON
/// array of `{role, parts}`, each part text, a tool call or a tool result.
/// Only recorded when content recording is switched on.
pub(crate) fn messages_json<'m>(messages: impl IntoIterator<Item = &'m Message>) -> String {
    let list: Vec<serde_json::Value> = messages
        .into_iter()
        .map(|m| {
            let mut parts = Vec::new();
            let text = m.text();
            match (&m.role, &m.tool_call_id()) {
                (Role::Tool, Some(id)) => parts.push(serde_json::json!({
                    "type": "tool_call_response", "id": id, "response": text,
                })),
                _ if !text.is_empty() => {
                    parts.push(serde_json::json!({"type": "text", "content": text}));
                }
                _ => {}
            }
            for call in m.tool_calls() {
                parts.push(serde_json::json!({
                    "type": "tool_call", "id": call.id, "name": call.name,
                    "arguments": call.arguments,
                }));
            }
            serde_json::json!({"role": m.role.to_string(), "parts": parts})
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}
