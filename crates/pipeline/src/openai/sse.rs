//! Reading a streamed answer: the server-sent events decoder, the reply
//! assembled from the chunks, and one streaming attempt from the request to
//! `[DONE]`, a `finish_reason` or a failure.

use std::collections::BTreeMap;

use reqwest::header::CONTENT_TYPE;
use statestore_core::{Message, ToolCall};

use super::OpenAiProvider;
use super::failure::{Failure, truncate};
use super::transport::Answer;
use super::wire::{WireChunk, finish_reason, parse_response};
use crate::{ChatResponse, Error, OnEvent, StreamEvent, Usage};

impl OpenAiProvider {
    /// One streaming attempt: send, then read the answer to its end.
    /// `delivered` is set once text has gone to `on_event`.
    pub(super) async fn stream_attempt(
        &self,
        body: &[u8],
        attempt: u32,
        on_event: &mut OnEvent<'_>,
        delivered: &mut bool,
    ) -> Result<ChatResponse, Failure> {
        let response = match self.attempt(body, true, attempt).await? {
            Answer::Stream(response) => response,
            Answer::Body(bytes) => {
                return parse_response(&bytes, |m| self.redact(m)).map_err(Failure::Invalid);
            }
        };
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("text/event-stream"));
        if !is_sse {
            // A server that ignored `"stream": true` and answered in one piece.
            let bytes = tokio::time::timeout(self.timeout, response.bytes())
                .await
                .map_err(|_| Failure::Timeout)?
                .map_err(Failure::Transport)?;
            let reply = parse_response(&bytes, |m| self.redact(m)).map_err(Failure::Invalid)?;
            let text = reply.message.text();
            if !text.is_empty() {
                *delivered = true;
                on_event(StreamEvent::Delta(&text));
            }
            return Ok(reply);
        }
        self.read_stream(response, on_event, delivered).await
    }

    /// Reads a `text/event-stream` answer to its end.
    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        on_event: &mut OnEvent<'_>,
        delivered: &mut bool,
    ) -> Result<ChatResponse, Failure> {
        let mut decoder = SseDecoder::default();
        let mut state = StreamState::default();
        let redact = |m| self.redact(m);
        loop {
            let chunk = tokio::time::timeout(self.stream_idle_timeout, response.chunk())
                .await
                .map_err(|_| Failure::Stalled)?
                .map_err(Failure::Transport)?;
            let Some(bytes) = chunk else { break };
            for data in decoder.feed(&bytes).map_err(Failure::Invalid)? {
                let done = state
                    .apply(&data, on_event, delivered, redact)
                    .map_err(Failure::Invalid)?;
                if done {
                    return Ok(state.finish());
                }
            }
        }
        // The body ended. What is left without its closing blank line is
        // used when it is whole (some servers omit the last newline); when
        // it is not, the stream was cut in the middle of an event.
        let rest = decoder
            .finish()
            .map_err(|_| Failure::CutShort("the stream ended in the middle of an event"))?;
        for data in rest {
            let data = data.trim();
            if data != "[DONE]" && serde_json::from_str::<WireChunk>(data).is_err() {
                return Err(Failure::CutShort(
                    "the stream ended in the middle of an event",
                ));
            }
            let done = state
                .apply(data, on_event, delivered, redact)
                .map_err(Failure::Invalid)?;
            if done {
                return Ok(state.finish());
            }
        }
        if state.finish_reason.is_none() {
            return Err(Failure::CutShort(
                "the stream ended before [DONE] and before a finish_reason",
            ));
        }
        Ok(state.finish())
    }
}

/// Splits an SSE byte stream into the `data` of its events.
#[derive(Default)]
struct SseDecoder {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, Error> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            self.line(&line, &mut events)?;
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<String>, Error> {
        let mut events = Vec::new();
        let rest = std::mem::take(&mut self.buffer);
        if !rest.is_empty() {
            self.line(&rest, &mut events)?;
        }
        events.extend(self.data.take());
        Ok(events)
    }

    fn line(&mut self, raw: &[u8], events: &mut Vec<String>) -> Result<(), Error> {
        let line = std::str::from_utf8(raw).map_err(|_| Error::InvalidResponse {
            detail: "the event stream is not UTF-8".to_owned(),
        })?;
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            events.extend(self.data.take());
        } else if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        // Comments (`:`) and the `event`, `id` and `retry` fields carry
        // nothing a chat completion needs.
        Ok(())
    }
}

/// A reply being assembled from stream chunks.
#[derive(Default)]
struct StreamState {
    content: String,
    tool_calls: BTreeMap<u32, PartialToolCall>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
}

#[derive(Default)]
struct PartialToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl StreamState {
    /// Applies one event's data; `true` at `[DONE]`.
    fn apply(
        &mut self,
        data: &str,
        on_event: &mut OnEvent<'_>,
        delivered: &mut bool,
        redact: impl Fn(String) -> String,
    ) -> Result<bool, Error> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: WireChunk = serde_json::from_str(data).map_err(|e| Error::InvalidResponse {
            detail: format!("a stream chunk is not valid: {e}"),
        })?;
        if let Some(error) = chunk.error {
            let message = match error.message {
                Some(serde_json::Value::String(m)) => redact(truncate(&m)),
                _ => "no explanation".to_owned(),
            };
            return Err(Error::InvalidResponse {
                detail: format!("the stream reported an error: {message}"),
            });
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        for choice in chunk
            .choices
            .into_iter()
            .filter(|c| c.index.unwrap_or(0) == 0)
        {
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                *delivered = true;
                on_event(StreamEvent::Delta(&text));
                self.content.push_str(&text);
            }
            for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let index = match call.index {
                    Some(index) => index,
                    // Servers that omit the index: a new id starts a new
                    // call, anything else continues the last one.
                    None => {
                        let last = self.tool_calls.keys().next_back().copied();
                        let known = call
                            .id
                            .as_deref()
                            .is_some_and(|id| self.tool_calls.values().any(|c| c.id == id));
                        match (last, call.id.is_some() && !known) {
                            (Some(last), false) => last,
                            (Some(last), true) => last + 1,
                            (None, _) => u32::try_from(position).unwrap_or(u32::MAX),
                        }
                    }
                };
                let slot = self.tool_calls.entry(index).or_default();
                if let Some(id) = call.id.filter(|id| !id.is_empty()) {
                    slot.id = id;
                }
                if let Some(function) = call.function {
                    if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                        slot.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        slot.arguments.push_str(&arguments);
                    }
                }
            }
        }
        Ok(false)
    }

    fn finish(self) -> ChatResponse {
        let tool_calls: Vec<ToolCall> = self
            .tool_calls
            .into_values()
            .map(|c| ToolCall::new(c.id, c.name, c.arguments))
            .collect();
        let finish_reason = finish_reason(self.finish_reason.as_deref(), !tool_calls.is_empty());
        ChatResponse {
            message: Message::assistant(self.content).with_tool_calls(tool_calls),
            usage: self.usage.unwrap_or_default(),
            finish_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_decoder_joins_lines_split_anywhere() {
        let stream = b": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata:[DONE]";
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            let mut d = SseDecoder::default();
            let mut events = d.feed(a).unwrap();
            events.extend(d.feed(b).unwrap());
            events.extend(d.finish().unwrap());
            assert_eq!(
                events,
                ["{\"a\":1}", "line1\nline2", "[DONE]"],
                "split at {split}"
            );
        }
    }
}
