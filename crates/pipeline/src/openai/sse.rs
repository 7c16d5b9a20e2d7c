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

    /// Reads a `text/event-stream` answer to its end, or to the first
    /// chunk that is not a chat completion chunk or reports an error.
    ///
    /// Every early return drops `response` with its body unread, which
    /// closes the connection (one whose body was not read to the end is
    /// never reused): nothing more of a failed attempt is read.
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
            for data in decoder.feed(&bytes) {
                let data = match data {
                    Ok(data) => data,
                    Err(detail) => return state.malformed(detail.to_owned()),
                };
                match state.apply(&data, on_event, delivered, redact) {
                    Ok(false) => {}
                    Ok(true) => return Ok(state.finish()),
                    Err(Failure::Malformed(detail)) => return state.malformed(detail),
                    Err(failure) => return Err(failure),
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
            if data != "[DONE]" && serde_json::from_str::<serde_json::Value>(data).is_err() {
                return Err(Failure::CutShort(
                    "the stream ended in the middle of an event",
                ));
            }
            match state.apply(data, on_event, delivered, redact) {
                Ok(false) => {}
                Ok(true) => return Ok(state.finish()),
                Err(Failure::Malformed(detail)) => return state.malformed(detail),
                Err(failure) => return Err(failure),
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
    /// The data of the events `bytes` completes, in order; a line that is
    /// not UTF-8 ends them with an error (what is wrong), after the events
    /// before it.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Result<String, &'static str>> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let mut complete = Vec::new();
            let read = self.line(&line, &mut complete);
            events.extend(complete.into_iter().map(Ok));
            if let Err(detail) = read {
                events.push(Err(detail));
                break;
            }
        }
        events
    }

    fn finish(&mut self) -> Result<Vec<String>, &'static str> {
        let mut events = Vec::new();
        let rest = std::mem::take(&mut self.buffer);
        if !rest.is_empty() {
            self.line(&rest, &mut events)?;
        }
        events.extend(self.data.take());
        Ok(events)
    }

    fn line(&mut self, raw: &[u8], events: &mut Vec<String>) -> Result<(), &'static str> {
        let line = std::str::from_utf8(raw).map_err(|_| "a line of the stream is not UTF-8")?;
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
    /// Applies one event's data; `true` at `[DONE]`. A chunk that is not a
    /// chat completion chunk is [`Failure::Malformed`]; one that reports an
    /// error is [`Failure::ErrorEvent`] when its status is retryable, else
    /// [`Failure::Invalid`].
    fn apply(
        &mut self,
        data: &str,
        on_event: &mut OnEvent<'_>,
        delivered: &mut bool,
        redact: impl Fn(String) -> String,
    ) -> Result<bool, Failure> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: WireChunk = serde_json::from_str(data).map_err(|e| malformed(&e))?;
        if let Some(error) = chunk.error {
            if let Some(status) = error_status(error.code.as_ref()) {
                return Err(Failure::ErrorEvent {
                    status,
                    body: data.as_bytes().to_vec(),
                });
            }
            let message = match error.message {
                Some(serde_json::Value::String(m)) => redact(truncate(&m)),
                _ => "no explanation".to_owned(),
            };
            return Err(Failure::Invalid(Error::InvalidResponse {
                detail: format!("the stream reported an error: {message}"),
            }));
        }
        if chunk.choices.is_none() && chunk.usage.is_none() {
            return Err(Failure::Malformed(
                "a chunk is JSON but not a chat completion chunk: it has no choices, usage or error"
                    .to_owned(),
            ));
        }
        if let Some(usage) = chunk.usage {
            // The usage chunk (the last) says what answered, too.
            super::wire::record_answer(chunk.id.as_deref(), chunk.model.as_deref(), Some(&usage));
            self.usage = Some(usage.into());
        }
        for choice in chunk
            .choices
            .unwrap_or_default()
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

    /// The attempt's outcome at a malformed chunk: like a stream cut there,
    /// the reply when it already had its `finish_reason`, else
    /// [`Failure::Malformed`].
    fn malformed(self, detail: String) -> Result<ChatResponse, Failure> {
        if self.finish_reason.is_none() {
            return Err(Failure::Malformed(detail));
        }
        tracing::debug!(
            detail,
            "a malformed stream chunk after the finish_reason: the reply is complete"
        );
        Ok(self.finish())
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

/// What is wrong with a chunk `serde_json` could not read: where, never
/// what it said (a type error quotes the value).
fn malformed(e: &serde_json::Error) -> Failure {
    let what = match e.classify() {
        serde_json::error::Category::Data => "a chunk is JSON but not a chat completion chunk",
        serde_json::error::Category::Eof => "a chunk is not JSON: it ends early",
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            "a chunk is not JSON"
        }
    };
    Failure::Malformed(format!("{what} (line {}, column {})", e.line(), e.column()))
}

/// The status an error event gives in `error.code` (a number, or a string
/// of digits) when it is one to retry: 429 or 5xx.
fn error_status(code: Option<&serde_json::Value>) -> Option<u16> {
    let status = match code? {
        serde_json::Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
        serde_json::Value::String(s) => s.trim().parse::<u16>().ok()?,
        _ => return None,
    };
    (status == 429 || (500..=599).contains(&status)).then_some(status)
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
            let mut events: Vec<String> = d.feed(a).into_iter().map(Result::unwrap).collect();
            events.extend(d.feed(b).into_iter().map(Result::unwrap));
            events.extend(d.finish().unwrap());
            assert_eq!(
                events,
                ["{\"a\":1}", "line1\nline2", "[DONE]"],
                "split at {split}"
            );
        }
    }

    #[test]
    fn sse_decoder_stops_at_a_line_that_is_not_utf8() {
        let mut d = SseDecoder::default();
        let events = d.feed(b"data: a\n\ndata: \xff\n\ndata: b\n\n");
        assert_eq!(
            events,
            [Ok("a".to_owned()), Err("a line of the stream is not UTF-8")]
        );
    }
}
