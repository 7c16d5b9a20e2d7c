//! The session middleware on the memory store and on real Redis: turns
//! ([`turns`]: the seed's Quick Start, nothing stored on failure,
//! concurrent turns, windows, streaming), middleware order
//! ([`middleware`]), tools ([`tools`]), one write per turn and exactly-once
//! turns ([`exactly_once`]), and conflicts with their retries and usage
//! accounting ([`conflicts`]), titles ([`titles`]), rewound turns
//! ([`rewind`]). One test binary; the scripted provider and
//! the helpers every topic uses are below.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod conflicts;
mod exactly_once;
mod middleware;
mod rewind;
mod titles;
mod tools;
mod turns;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use context_window::WindowPolicy;
use pipeline::{
    ChatRequest, ChatResponse, Concurrency, Error, ExecContext, ExecOptions, FinishReason,
    Middleware, OfflineProvider, Pipeline, Provider, StreamEvent, ToolHandler, ToolSpec, Usage,
    counters,
};
use redis_test_server::{FaultProxy, RedisServer};
use statestore_core::{
    BoxError, Expect, IdempotencyKey, Message, Role, SessionId, Store, ToolCall, WriteOutcome,
};
use statestore_memory::MemoryStore;
use statestore_redis::RedisStore;

/// The two turns of the seed page's Alice example, as stored.
const ALICE_TURNS: [&str; 4] = [
    "Hi, I'm Alice",
    "Nice to meet you, Alice!",
    "What's my name?",
    "Your name is Alice",
];

/// The text of each message.
fn texts(messages: &[Arc<Message>]) -> Vec<String> {
    messages.iter().map(|m| m.text().into_owned()).collect()
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// A provider that fails, or answers, as told.
#[derive(Debug, Default)]
struct Scripted {
    replies: Mutex<Vec<Result<ChatResponse, Error>>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(mut replies: Vec<Result<ChatResponse, Error>>) -> Self {
        replies.reverse();
        Self {
            replies: Mutex::new(replies),
            requests: Mutex::default(),
        }
    }
}

fn reply(message: Message) -> Result<ChatResponse, Error> {
    Ok(ChatResponse {
        message,
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 2,
        },
        finish_reason: FinishReason::Stop,
    })
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        self.requests.lock().unwrap().push(request.clone());
        self.replies
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| reply(Message::assistant("ok")))
    }
}
