//! `OpenAiProvider` against a scripted HTTP/1.1 server on 127.0.0.1 ([`server`]):
//! the request JSON field by field ([`request`]), replies ([`replies`]),
//! retries and their limits and error mapping ([`retries`]), streaming
//! ([`streaming`]), construction and that the API key never shows
//! ([`construction`]), and the pipeline over it end to end ([`end_to_end`]).
//! One test binary: the modules share the server, the capture of the
//! provider's debug events ([`logs`]) and the helpers below.
//!
//! Nothing here measures wall-clock time: retries are counted by the
//! requests the server saw, and waits are read from the provider's debug
//! events.
#![cfg(feature = "openai")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod construction;
mod end_to_end;
mod logs;
mod replies;
mod request;
mod retries;
mod server;
mod streaming;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline::openai::RetryPolicy;
use pipeline::{
    ChatRequest, ChatResponse, Error, FinishReason, OpenAiProvider, OpenAiProviderBuilder,
    Provider, StreamEvent, ToolSpec, Usage,
};
use serde_json::{Value, json};
use statestore_core::{ContentPart, ImageUrl, Message, Role, TokenCount, ToolCall};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "sk-test-VERY-SECRET-0123456789abcdef";

use logs::capture_logs;
use server::{Body, Reply, Server, sse_text};
use streaming::stream_with;

/// Fast retries, no jitter, a generous timeout, the test key.
fn builder(server: &Server) -> OpenAiProviderBuilder {
    OpenAiProvider::builder()
        .base_url(server.base_url())
        .model("gpt-4o-mini")
        .api_key(KEY)
        .timeout(Duration::from_secs(10))
        .max_retries(2)
        .retry_base_delay(Duration::from_millis(5))
        .max_retry_delay(Duration::from_millis(50))
        .jitter(false)
}

/// Builds the provider and asks it "hi".
async fn say_hi(builder: OpenAiProviderBuilder) -> Result<ChatResponse, Error> {
    builder.build().unwrap().chat(&ask("hi")).await
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Arc::new(Message::user(text))],
        ..ChatRequest::default()
    }
}

fn completion(message: Value, finish_reason: &str, usage: Option<(u64, u64)>) -> Value {
    let mut body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    });
    if let Some((prompt, completion)) = usage {
        body["usage"] = json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        });
    }
    body
}

fn hello() -> Reply {
    Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": "Hello!"}),
            "stop",
            Some((9, 3)),
        ),
    )
}

fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// A loopback port that was free a moment ago and has nobody listening now.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn assert_no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} shows the API key: {text}");
    assert!(
        !text.contains("VERY-SECRET"),
        "{what} shows part of the key: {text}"
    );
}
