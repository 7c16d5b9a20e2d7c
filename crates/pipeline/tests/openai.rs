//! `OpenAiProvider` against a scripted HTTP/1.1 server on 127.0.0.1: the
//! request JSON field by field, replies, retries and their limits, error
//! mapping, streaming, and that the API key never shows.
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

// ---- a scripted HTTP/1.1 server ----

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

#[derive(Debug, Clone)]
enum Body {
    /// Sent with a `Content-Length`.
    Full(Vec<u8>),
    /// Sent with `Transfer-Encoding: chunked`, one chunk at a time.
    Chunks(Vec<Vec<u8>>),
    /// Like `Chunks`, then nothing more while the connection stays open.
    ChunksThenHang(Vec<Vec<u8>>),
    /// Like `Chunks`, then the connection is closed without ending the
    /// body (a connection dropped mid-stream).
    ChunksThenClose(Vec<Vec<u8>>),
    /// No answer at all while the connection stays open.
    Hang,
}

/// One scripted answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

fn sse_text(events: &[&str]) -> Vec<u8> {
    events
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect::<String>()
        .into_bytes()
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self::raw(status, &body.to_string()).header("content-type", "application/json")
    }

    fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Full(body.as_bytes().to_vec()),
        }
    }

    fn hang() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: Body::Hang,
        }
    }

    /// An event stream of `events` (each becomes `data: …\n\n`), cut into
    /// pieces of `piece` bytes wherever that falls (mid-line, mid-character).
    fn sse(events: &[&str], piece: usize) -> Self {
        let text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let chunks = text.as_bytes().chunks(piece).map(<[u8]>::to_vec).collect();
        Self::sse_body(Body::Chunks(chunks))
    }

    /// `events` in one piece, then silence on an open connection.
    fn sse_then_hang(events: &[&str]) -> Self {
        Self::sse_body(Body::ChunksThenHang(vec![sse_text(events)]))
    }

    /// `events` in one piece, then the connection closes mid-body.
    fn sse_then_close(events: &[&str]) -> Self {
        Self::sse_body(Body::ChunksThenClose(vec![sse_text(events)]))
    }

    fn sse_body(body: Body) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Server {
    /// Answers the n-th request with `script[n]`, and every request after
    /// the script's end with its last reply.
    async fn start(script: Vec<Reply>) -> Self {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&script);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let _ = serve(stream, &script, &seen).await;
                });
            }
        });
        Self { port, requests }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Reads one request from `stream`, records it, and answers it.
async fn serve(
    mut stream: TcpStream,
    script: &[Reply],
    seen: &Mutex<Vec<Recorded>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let reply = {
        let mut seen = seen.lock().unwrap();
        seen.push(Recorded {
            method,
            path,
            headers,
            body,
        });
        script[(seen.len() - 1).min(script.len() - 1)].clone()
    };

    let hang = || tokio::time::sleep(Duration::from_secs(60));
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nconnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let then_hang = matches!(reply.body, Body::ChunksThenHang(_));
    let then_close = matches!(reply.body, Body::ChunksThenClose(_));
    match reply.body {
        Body::Hang => hang().await,
        Body::Full(bytes) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", bytes.len()));
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&bytes).await?;
        }
        Body::Chunks(chunks) | Body::ChunksThenHang(chunks) | Body::ChunksThenClose(chunks) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            for chunk in chunks {
                stream
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                stream.write_all(&chunk).await?;
                stream.write_all(b"\r\n").await?;
                stream.flush().await?;
                // Let the client see the pieces one by one.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if then_hang {
                hang().await;
            }
            if then_close {
                // Dropped without the last chunk: the body never ends.
                return Ok(());
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}

// ---- the provider's debug events ----

/// Collects the fields of every event from this crate's `openai` module,
/// one line per event.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The `delay_ms` of every "retrying" event, in order.
    fn delays_ms(&self) -> Vec<u64> {
        self.lines()
            .iter()
            .filter_map(|l| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix("delay_ms="))
                    .map(|v| v.parse().unwrap())
            })
            .collect()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl Logs {
    fn push(&self, event: &tracing::Event<'_>) {
        if event.metadata().target().starts_with("pipeline::openai") {
            let mut fields = Fields(format!("{}:", event.metadata().level()));
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

thread_local! {
    /// The capture of the test running on this thread, if any.
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// The one global subscriber of this test binary: hands each event to the
/// capture of the thread it happens on. A global subscriber (rather than
/// one scoped subscriber per test) keeps every callsite enabled: with
/// scoped subscribers, a callsite first hit on a thread without one is
/// disabled for every thread until interest is rebuilt, and a test would
/// see no events at random.
struct Router;

impl tracing::Subscriber for Router {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        CAPTURE.with(|c| {
            if let Some(logs) = &*c.borrow() {
                logs.push(event);
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Ends a capture when dropped.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// Captures the provider's events on this thread (the tests run on a
/// current-thread runtime) until the guard drops.
fn capture_logs() -> (Logs, CaptureGuard) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Router).unwrap();
    });
    let logs = Logs::default();
    CAPTURE.with(|c| *c.borrow_mut() = Some(logs.clone()));
    (logs, CaptureGuard)
}

// ---- helpers ----

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

// ---- the request ----

#[tokio::test]
async fn request_json_field_by_field() {
    let server = Server::start(vec![hello()]).await;
    let provider = builder(&server)
        .temperature(0.7)
        .max_tokens(2000)
        .build()
        .unwrap();

    let mut system = Message::system("You are terse.").with_metadata("tenant", "acme");
    system.token_count = Some(TokenCount {
        encoding: "o200k_base".into(),
        tokens: 9,
    });
    let image = Message::user(vec![
        ContentPart::text("What is in this image?"),
        ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: "https://example.invalid/cat.png".into(),
                detail: Some("low".into()),
            },
        },
        ContentPart::image_url("data:image/png;base64,iVBORw0KGgo="),
    ]);
    let named = Message::user("And the weather and time in Paris?").with_name("alice");
    let calls = Message::assistant("").with_tool_calls(vec![
        ToolCall::new("call_1", "weather", r#"{"city": "Paris"}"#),
        ToolCall::new("call_2", "time", r#"{"tz":"Europe/Paris"}"#),
    ]);
    let weather = Message::tool("call_1", r#"{"celsius":21}"#).with_metadata("ms", 12);
    let time = Message::tool("call_2", "14:05");
    let request = ChatRequest {
        messages: [system, image, named, calls, weather, time]
            .into_iter()
            .map(Arc::new)
            .collect(),
        tools: vec![ToolSpec {
            name: "weather".into(),
            description: "Current weather for a city".into(),
            parameters: json!({
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }),
        }],
        temperature: None,
        max_tokens: None,
    };
    provider.chat(&request).await.unwrap();

    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("authorization").map(str::to_owned),
        Some(format!("Bearer {KEY}"))
    );

    let body = r.json();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["temperature"], json!(0.7));
    assert_eq!(body["max_tokens"], 2000);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 6);
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]})
    );
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": "And the weather and time in Paris?", "name": "alice"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "time", "arguments": "{\"tz\":\"Europe/Paris\"}"}},
        ]})
    );
    // `content: null` is really there, not just missing.
    assert!(messages[3].as_object().unwrap().contains_key("content"));
    assert_eq!(
        messages[4],
        json!({"role": "tool", "content": "{\"celsius\":21}", "tool_call_id": "call_1"})
    );
    assert_eq!(
        messages[5],
        json!({"role": "tool", "content": "14:05", "tool_call_id": "call_2"})
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }}])
    );
    // Exactly these keys: nothing internal, no stream flags.
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["max_tokens", "messages", "model", "temperature", "tools"]
    );
    let raw = String::from_utf8(r.body.clone()).unwrap();
    for internal in [
        "metadata",
        "token_count",
        "timestamp",
        "tenant",
        "o200k_base",
    ] {
        assert!(!raw.contains(internal), "{internal} leaked into {raw}");
    }
}

#[tokio::test]
async fn defaults_overrides_and_no_key() {
    let server = Server::start(vec![hello()]).await;
    let with_defaults = builder(&server)
        .temperature(0.7)
        .max_tokens(2000)
        .build()
        .unwrap();
    let mut request = ask("hi");
    request.temperature = Some(0.2);
    request.max_tokens = Some(64);
    with_defaults.chat(&request).await.unwrap();

    // No defaults, no key (a local server), nothing in the request.
    let bare = OpenAiProvider::builder()
        .base_url(server.base_url())
        .model("llama3.1:8b")
        .api_key("")
        .build()
        .unwrap();
    bare.chat(&ask("hi")).await.unwrap();

    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    let overridden = seen[0].json();
    // The f32 is written in its shortest form, not widened to 0.20000000298….
    assert_eq!(overridden["temperature"], json!(0.2));
    assert!(String::from_utf8_lossy(&seen[0].body).contains(r#""temperature":0.2,"#));
    assert_eq!(overridden["max_tokens"], 64);
    assert!(seen[0].header("authorization").is_some());

    let plain = seen[1].json();
    assert_eq!(plain["model"], "llama3.1:8b");
    assert_eq!(
        plain,
        json!({"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]})
    );
    assert_eq!(seen[1].header("authorization"), None);
}

// ---- replies ----

#[tokio::test]
async fn reply_with_content() {
    let server = Server::start(vec![hello()]).await;
    let provider = builder(&server).build().unwrap();
    let reply = provider.chat(&ask("hi")).await.unwrap();
    assert_eq!(reply.message.role, Role::Assistant);
    assert_eq!(reply.message.text(), "Hello!");
    assert!(reply.message.tool_calls.is_empty());
    assert_eq!(
        reply.usage,
        Usage {
            prompt_tokens: 9,
            completion_tokens: 3
        }
    );
    assert_eq!(reply.finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn reply_with_tool_calls() {
    let server = Server::start(vec![Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "time", "arguments": "{}"}},
            ]}),
            "tool_calls",
            Some((50, 20)),
        ),
    )])
    .await;
    let provider = builder(&server).build().unwrap();
    let reply = provider.chat(&ask("weather?")).await.unwrap();
    assert_eq!(reply.message.text(), "");
    assert_eq!(
        reply.message.tool_calls,
        [
            // The arguments exactly as the model wrote them.
            ToolCall::new("call_a", "weather", "{\"city\": \"Paris\"}"),
            ToolCall::new("call_b", "time", "{}"),
        ]
    );
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.usage.total(), 70);
}

#[tokio::test]
async fn missing_usage_counts_zero() {
    let server = Server::start(vec![Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": "ok"}),
            "length",
            None,
        ),
    )])
    .await;
    let reply = builder(&server)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap();
    assert_eq!(reply.usage, Usage::default());
    assert_eq!(reply.finish_reason, FinishReason::Length);
    assert_eq!(reply.message.text(), "ok");
}

#[tokio::test]
async fn invalid_bodies_are_invalid_responses() {
    let bodies = [
        Reply::raw(200, "<html>gateway</html>"),
        Reply::raw(200, ""),
        Reply::raw(200, "{\"choices\": [{\"message\": {\"content\": \"trunc"),
        Reply::json(200, json!({"id": "x", "object": "chat.completion"})),
        Reply::json(200, json!({"choices": []})),
        Reply::json(200, json!({"choices": [{"finish_reason": "stop"}]})),
        Reply::json(200, json!([1, 2, 3])),
        Reply::json(200, error_body("upstream failed", "server_error", None)),
    ];
    for reply in bodies {
        let server = Server::start(vec![reply.clone()]).await;
        let err = builder(&server)
            .build()
            .unwrap()
            .chat(&ask("hi"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidResponse { .. }),
            "{reply:?} gave {err:?}"
        );
        // An answer that arrived is not retried.
        assert_eq!(server.count(), 1, "{reply:?}");
    }
}

// ---- retries and errors ----

#[tokio::test]
async fn rate_limit_honours_retry_after_then_succeeds() {
    let (logs, _guard) = capture_logs();
    let limited = || Reply::json(429, error_body("Rate limit reached", "requests", None));
    let server = Server::start(vec![
        // Retry-After shorter than the backoff (which would be 40 ms)...
        limited().header("retry-after", "0"),
        // ... OpenAI's millisecond header, preferred over Retry-After ...
        limited()
            .header("retry-after-ms", "15")
            .header("retry-after", "20"),
        // ... and one longer than the configured maximum: capped.
        limited().header("retry-after", "3"),
        hello(),
    ])
    .await;
    let provider = builder(&server)
        .max_retries(3)
        .retry_base_delay(Duration::from_millis(40))
        .max_retry_delay(Duration::from_millis(60))
        .build()
        .unwrap();
    let reply = provider.chat(&ask("hi")).await.unwrap();
    assert_eq!(reply.message.text(), "Hello!");
    assert_eq!(server.count(), 4);
    assert_eq!(logs.delays_ms(), [0, 15, 60]);
    let lines = logs.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("DEBUG:")
            && l.contains("attempt=1")
            && l.contains("status=429")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("attempt=4") && l.contains("status=200")),
        "{lines:?}"
    );
    // Every attempt was the same request.
    let bodies: Vec<Vec<u8>> = server.requests().into_iter().map(|r| r.body).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test]
async fn rate_limit_storm_gives_up_after_max_retries() {
    let (logs, _guard) = capture_logs();
    let server = Server::start(vec![
        Reply::json(429, error_body("Rate limit reached", "requests", None))
            .header("retry-after", "7"),
    ])
    .await;
    let err = builder(&server)
        .max_retries(3)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    match err {
        Error::RateLimited {
            attempts,
            retry_after,
        } => {
            assert_eq!(attempts, 4);
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(server.count(), 4);
    // Three waits, each Retry-After capped at the 50 ms maximum.
    assert_eq!(logs.delays_ms(), [50, 50, 50]);
}

#[tokio::test]
async fn server_error_storm_gives_up_after_max_retries() {
    let (logs, _guard) = capture_logs();
    let server = Server::start(vec![Reply::json(
        500,
        error_body(
            "The server had an error while processing your request.",
            "server_error",
            None,
        ),
    )])
    .await;
    let err = builder(&server)
        .max_retries(2)
        .retry_base_delay(Duration::from_millis(10))
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    match &err {
        Error::Status {
            status,
            attempts,
            message,
        } => {
            assert_eq!(*status, 500);
            assert_eq!(*attempts, 3);
            assert_eq!(
                message,
                "The server had an error while processing your request."
            );
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(server.count(), 3);
    // Exponential backoff: 10 ms, then 20 ms.
    assert_eq!(logs.delays_ms(), [10, 20]);
}

#[tokio::test]
async fn an_injected_random_source_makes_the_jittered_backoff_exact() {
    let (logs, _guard) = capture_logs();
    let server = Server::start(vec![Reply::json(
        503,
        error_body("overloaded", "server_error", None),
    )])
    .await;
    // The jitter factor is 0.5 + r / 2 for each draw r of the source.
    const DRAWS: [f64; 4] = [0.0, 0.5, 1.0, 0.25];
    let next = Arc::new(AtomicUsize::new(0));
    let source = Arc::clone(&next);
    let policy = RetryPolicy::default()
        .max_retries(4)
        .initial_backoff(Duration::from_millis(8))
        .max_backoff(Duration::from_millis(40))
        .random_source(move || DRAWS[source.fetch_add(1, Ordering::SeqCst) % DRAWS.len()]);
    // Backoffs 8, 16, 32 and 64 capped at 40 ms, scaled by 0.5, 0.75, 1
    // and 0.625.
    let expected = [4, 12, 32, 25];

    let err = builder(&server)
        .retry(policy.clone())
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: 503,
                attempts: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.count(), 5);
    assert_eq!(logs.delays_ms(), expected);
    assert_eq!(next.load(Ordering::SeqCst), 4, "one draw per retry");

    // The same sequence from the policy itself, to the nanosecond.
    next.store(0, Ordering::SeqCst);
    let delays: Vec<Duration> = (1..=4).map(|retry| policy.delay(retry, None)).collect();
    assert_eq!(delays, expected.map(Duration::from_millis));
    // A server's wait is not jittered: no draw.
    assert_eq!(
        policy.delay(1, Some(Duration::from_millis(7))),
        Duration::from_millis(7)
    );
    assert_eq!(next.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn transient_5xx_then_success() {
    let server = Server::start(vec![
        Reply::raw(502, "<html>Bad Gateway</html>"),
        Reply::raw(503, ""),
        hello(),
    ])
    .await;
    let reply = builder(&server)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap();
    assert_eq!(reply.message.text(), "Hello!");
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn non_json_error_body_becomes_the_message_truncated() {
    let server = Server::start(vec![Reply::raw(503, &"overloaded ".repeat(100))]).await;
    let err = builder(&server)
        .max_retries(0)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    let Error::Status {
        status,
        attempts,
        message,
    } = err
    else {
        panic!("expected Status, got {err:?}");
    };
    assert_eq!((status, attempts), (503, 1));
    assert!(message.starts_with("overloaded overloaded"));
    assert!(message.chars().count() <= 301, "{}", message.len());
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn context_length_exceeded_is_distinct_and_not_retried() {
    let server = Server::start(vec![Reply::json(
        400,
        error_body(
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130012 tokens.",
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
    )])
    .await;
    let err = builder(&server)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    match &err {
        Error::ContextLengthExceeded { message } => {
            assert!(message.starts_with("This model's maximum context length is 128000"));
        }
        other => panic!("expected ContextLengthExceeded, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    let server = Server::start(vec![Reply::json(
        400,
        error_body(
            "Invalid value for 'temperature'",
            "invalid_request_error",
            Some("invalid_value"),
        ),
    )])
    .await;
    let err = builder(&server)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    match err {
        Error::Status {
            status: 400,
            attempts: 1,
            message,
        } => assert_eq!(message, "Invalid value for 'temperature'"),
        other => panic!("expected Status 400, got {other:?}"),
    }
    assert_eq!(server.count(), 1);

    let server = Server::start(vec![Reply::raw(404, "")]).await;
    let err = builder(&server)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    match err {
        Error::Status {
            status: 404,
            attempts: 1,
            message,
        } => assert_eq!(message, "Not Found"),
        other => panic!("expected Status 404, got {other:?}"),
    }
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn auth_failures_are_not_retried() {
    for status in [401, 403] {
        let server = Server::start(vec![Reply::json(
            status,
            error_body(
                "Incorrect API key provided: sk-test-****cdef.",
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
        )])
        .await;
        let err = builder(&server)
            .build()
            .unwrap()
            .chat(&ask("hi"))
            .await
            .unwrap_err();
        match err {
            Error::Auth { status: s, message } => {
                assert_eq!(s, status);
                assert_eq!(message, "Incorrect API key provided: sk-test-****cdef.");
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        assert_eq!(server.count(), 1);
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_after_the_retries() {
    let server = Server::start(vec![Reply::hang()]).await;
    let err = builder(&server)
        .timeout(Duration::from_millis(200))
        .max_retries(2)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    match err {
        Error::Timeout { after } => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn connection_refused_is_transport_after_the_retries() {
    let (logs, _guard) = capture_logs();
    let port = refused_port();
    let err = OpenAiProvider::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .max_retries(2)
        .retry_base_delay(Duration::from_millis(5))
        .jitter(false)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.is_transient());
    // Retried like a 5xx: two waits before the third and last attempt.
    assert_eq!(logs.delays_ms(), [5, 10]);
    assert!(
        logs.lines().iter().any(|l| l.contains("connection failed")),
        "{:?}",
        logs.lines()
    );
}

// ---- streaming ----

const STREAM: &[&str] = &[
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Bonjour"},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":", ça va"},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" ? 🙂"},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":"{\"tz\":"}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\": \"Par"}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\"UTC\"}"}},{"index":0,"function":{"arguments":"is\"}"}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":31,"completion_tokens":17,"total_tokens":48}}"#,
    "[DONE]",
];

async fn stream_with(
    provider: &OpenAiProvider,
    request: &ChatRequest,
) -> (Result<ChatResponse, Error>, Vec<String>) {
    let mut deltas = Vec::new();
    let result = provider
        .chat_stream(request, &mut |e: StreamEvent<'_>| {
            if let StreamEvent::Delta(d) = e {
                deltas.push(d.to_owned());
            }
        })
        .await;
    (result, deltas)
}

#[tokio::test]
async fn streaming_reassembles_content_and_tool_calls() {
    // Pieces of 7 bytes cut through lines, JSON and multi-byte characters.
    for piece in [7, 64, 100_000] {
        let server = Server::start(vec![Reply::sse(STREAM, piece)]).await;
        let provider = builder(&server).temperature(0.7).build().unwrap();
        let (reply, deltas) = stream_with(&provider, &ask("Salut")).await;
        let reply = reply.unwrap();

        assert_eq!(deltas, ["Bonjour", ", ça va", " ? 🙂"], "pieces of {piece}");
        assert_eq!(reply.message.text(), "Bonjour, ça va ? 🙂");
        assert_eq!(
            reply.message.tool_calls,
            [
                ToolCall::new("call_a", "weather", "{\"city\": \"Paris\"}"),
                ToolCall::new("call_b", "time", "{\"tz\":\"UTC\"}"),
            ]
        );
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            reply.usage,
            Usage {
                prompt_tokens: 31,
                completion_tokens: 17
            }
        );

        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let body = seen[0].json();
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["temperature"], json!(0.7));
        assert_eq!(seen[0].header("accept"), Some("text/event-stream"));
    }
}

#[tokio::test]
async fn streaming_retries_before_the_stream_starts() {
    let server = Server::start(vec![
        Reply::json(429, error_body("slow down", "requests", None)).header("retry-after", "0"),
        Reply::raw(500, ""),
        Reply::sse(STREAM, 50),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, deltas) = stream_with(&provider, &ask("Salut")).await;
    assert_eq!(reply.unwrap().message.text(), "Bonjour, ça va ? 🙂");
    assert_eq!(deltas.len(), 3);
    assert_eq!(server.count(), 3);
}

/// What a streaming callback saw, owned.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Delta(String),
    Restart,
    Done,
}

fn delta(text: &str) -> Seen {
    Seen::Delta(text.to_owned())
}

/// Records every event, not only the text.
fn recorder(seen: &mut Vec<Seen>) -> impl FnMut(StreamEvent<'_>) + Send + '_ {
    move |e: StreamEvent<'_>| {
        seen.push(match e {
            StreamEvent::Delta(d) => Seen::Delta(d.to_owned()),
            StreamEvent::Restart => Seen::Restart,
            StreamEvent::Done => Seen::Done,
            other => panic!("unexpected event {other:?}"),
        });
    }
}

async fn stream_events(
    provider: &OpenAiProvider,
    request: &ChatRequest,
) -> (Result<ChatResponse, Error>, Vec<Seen>) {
    let mut seen = Vec::new();
    let result = provider
        .chat_stream(request, &mut recorder(&mut seen))
        .await;
    (result, seen)
}

/// The text a caller that honours `Restart` ends up showing.
fn shown(seen: &[Seen]) -> String {
    let last = seen.iter().rposition(|e| *e == Seen::Restart);
    seen[last.map_or(0, |i| i + 1)..]
        .iter()
        .filter_map(|e| match e {
            Seen::Delta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect()
}

/// A complete text-only stream: `pieces`, `stop`, usage, `[DONE]`.
fn text_stream(pieces: &[&str]) -> Reply {
    let mut events: Vec<String> = pieces
        .iter()
        .map(|p| {
            json!({"id": "c2", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
            .to_string()
        })
        .collect();
    events.push(
        json!({"id": "c2", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        .to_string(),
    );
    events.push(
        json!({"id": "c2", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}})
        .to_string(),
    );
    events.push("[DONE]".to_owned());
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    Reply::sse(&events, 30)
}

/// The first stream's text, `Restart`, the second stream's text.
fn restarted_once() -> Vec<Seen> {
    vec![
        delta("Bonjour"),
        delta(", ça va"),
        Seen::Restart,
        delta("Salut"),
        delta(" !"),
    ]
}

/// Checks a reply that came from `text_stream(["Salut", " !"])` alone:
/// nothing of the abandoned stream (its text, its tool call) is in it.
fn assert_second_reply(reply: &ChatResponse) {
    assert_eq!(reply.message.text(), "Salut !");
    assert!(reply.message.tool_calls.is_empty(), "{reply:?}");
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    assert_eq!(
        reply.usage,
        Usage {
            prompt_tokens: 7,
            completion_tokens: 2
        }
    );
}

#[tokio::test]
async fn a_truncated_stream_is_retried_after_a_restart() {
    // Text and the start of a tool call, then the body ends properly but
    // without a finish_reason and without [DONE].
    let server = Server::start(vec![
        Reply::sse(&STREAM[..6], 40),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    let reply = reply.unwrap();
    assert_second_reply(&reply);
    let mut expected = restarted_once();
    expected.insert(2, delta(" ? 🙂"));
    assert_eq!(seen, expected);
    assert_eq!(shown(&seen), reply.message.text());
    // The same request, sent twice.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn a_stream_cut_in_the_middle_of_an_event_is_retried() {
    // The body ends properly, but in the middle of a chunk's JSON: that is
    // a cut, not garbage.
    let whole = sse_text(&STREAM[..4]);
    let cut = String::from_utf8(whole[..whole.len() - 20].to_vec()).unwrap();
    let server = Server::start(vec![
        Reply::sse_body(Body::Chunks(vec![cut.into_bytes()])),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    assert_second_reply(&reply.unwrap());
    assert_eq!(seen, restarted_once());
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_retried() {
    let server = Server::start(vec![
        Reply::sse_then_close(&STREAM[..3]),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    let reply = reply.unwrap();
    assert_second_reply(&reply);
    assert_eq!(seen, restarted_once());
    assert_eq!(shown(&seen), reply.message.text());
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_stalled_stream_is_retried_after_the_idle_timeout() {
    let server = Server::start(vec![
        Reply::sse_then_hang(&STREAM[..3]),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    // The attempt's timeout stays long: the idle timeout alone ends the
    // stalled stream.
    let provider = builder(&server)
        .timeout(Duration::from_secs(30))
        .stream_idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    let reply = reply.unwrap();
    assert_second_reply(&reply);
    assert_eq!(seen, restarted_once());
    assert_eq!(shown(&seen), reply.message.text());
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_stream_that_keeps_breaking_fails_transiently_after_the_last_attempt() {
    let idle = Duration::from_millis(150);
    let faults = [
        ("truncated", Reply::sse(&STREAM[..4], 40)),
        ("dropped", Reply::sse_then_close(&STREAM[..4])),
        ("stalled", Reply::sse_then_hang(&STREAM[..4])),
    ];
    for (fault, reply) in faults {
        let (logs, _guard) = capture_logs();
        let server = Server::start(vec![reply]).await;
        let provider = builder(&server)
            .max_retries(2)
            .stream_idle_timeout(idle)
            .build()
            .unwrap();
        let (result, seen) = stream_events(&provider, &ask("Salut")).await;
        let err = result.unwrap_err();
        assert!(err.is_transient(), "{fault}: {err:?}");
        match (fault, &err) {
            ("stalled", Error::Timeout { after }) => assert_eq!(*after, idle),
            ("truncated" | "dropped", Error::Transport(_)) => {}
            _ => panic!("{fault}: unexpected {err:?}"),
        }
        // Exactly `max_retries + 1` attempts, with the non-streaming backoff.
        assert_eq!(server.count(), 3, "{fault}");
        assert_eq!(logs.delays_ms(), [5, 10], "{fault}");
        // A Restart before each retry, none after the last attempt.
        let text = [delta("Bonjour"), delta(", ça va"), delta(" ? 🙂")];
        let mut expected = Vec::new();
        for attempt in 1..=3 {
            expected.extend(text.iter().cloned());
            if attempt < 3 {
                expected.push(Seen::Restart);
            }
        }
        assert_eq!(seen, expected, "{fault}");
    }
}

#[tokio::test]
async fn broken_streams_and_statuses_share_one_attempt_budget() {
    let server = Server::start(vec![
        Reply::sse_then_close(&STREAM[..3]),
        Reply::raw(503, "busy"),
        Reply::sse(&STREAM[..3], 40),
        text_stream(&["never", " sent"]),
    ])
    .await;
    let provider = builder(&server).max_retries(2).build().unwrap();
    let (result, seen) = stream_events(&provider, &ask("Salut")).await;
    assert!(matches!(result, Err(Error::Transport(_))), "{result:?}");
    assert_eq!(server.count(), 3);
    // The 503 delivered nothing, so it needed no Restart.
    assert_eq!(
        seen,
        [
            delta("Bonjour"),
            delta(", ça va"),
            Seen::Restart,
            delta("Bonjour"),
            delta(", ça va"),
        ]
    );
}

#[tokio::test]
async fn garbage_and_error_events_are_refused_without_a_retry() {
    let garbage = "{\"choices\": [{\"delta\": {\"content\": ";
    let error = r#"{"error": {"message": "the model crashed", "type": "server_error"}}"#;
    for bad in [garbage, error] {
        // A bad event on the first attempt: one request.
        let server = Server::start(vec![
            Reply::sse(&[STREAM[1], bad, STREAM[2]], 40),
            text_stream(&["Salut", " !"]),
        ])
        .await;
        let provider = builder(&server).build().unwrap();
        let (result, seen) = stream_events(&provider, &ask("Salut")).await;
        assert!(
            matches!(result, Err(Error::InvalidResponse { .. })),
            "{result:?}"
        );
        assert_eq!(seen, [delta("Bonjour")]);
        assert_eq!(server.count(), 1);

        // After a retried fault: refused on the attempt it comes in.
        let server = Server::start(vec![
            Reply::sse(&STREAM[..3], 40),
            Reply::sse(&[STREAM[1], bad, STREAM[2]], 40),
            text_stream(&["Salut", " !"]),
        ])
        .await;
        let provider = builder(&server).build().unwrap();
        let (result, seen) = stream_events(&provider, &ask("Salut")).await;
        assert!(
            matches!(result, Err(Error::InvalidResponse { .. })),
            "{result:?}"
        );
        assert_eq!(
            seen,
            [
                delta("Bonjour"),
                delta(", ça va"),
                Seen::Restart,
                delta("Bonjour")
            ]
        );
        assert_eq!(server.count(), 2);
    }
}

#[tokio::test]
async fn streaming_from_a_server_that_ignores_stream() {
    let server = Server::start(vec![hello()]).await;
    let provider = builder(&server).build().unwrap();
    let (reply, deltas) = stream_with(&provider, &ask("hi")).await;
    assert_eq!(reply.unwrap().message.text(), "Hello!");
    assert_eq!(deltas, ["Hello!"]);
}

// ---- construction and the key ----

#[tokio::test]
async fn construction() {
    let server = Server::start(vec![hello()]).await;
    let provider = builder(&server).context_tokens(128_000).build().unwrap();
    assert_eq!(provider.name(), "openai");
    assert_eq!(provider.context_tokens(), Some(128_000));
    assert_eq!(provider.model(), "gpt-4o-mini");
    assert_eq!(provider.base_url(), server.base_url());
    let trailing = builder(&server)
        .base_url(format!("{}/", server.base_url()))
        .build()
        .unwrap();
    trailing.chat(&ask("hi")).await.unwrap();
    assert_eq!(server.requests()[0].path, "/v1/chat/completions");
    assert_eq!(
        OpenAiProvider::builder()
            .api_key(KEY)
            .build()
            .unwrap()
            .context_tokens(),
        None
    );

    for bad in [
        OpenAiProvider::builder(), // OpenAI without a key
        OpenAiProvider::builder().api_key(KEY).base_url("ftp://x"), // not http
        OpenAiProvider::builder().api_key(KEY).base_url("not a url"),
        OpenAiProvider::builder().api_key("sk-with\nnewline"),
        OpenAiProvider::builder().api_key(KEY).temperature(f32::NAN),
        OpenAiProvider::builder().api_key(KEY).model(""),
    ] {
        let shown = format!("{bad:?}");
        let err = bad.build().unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{shown}: {err:?}");
        assert_no_key("a configuration error", &format!("{err} {err:?}"));
    }
}

#[tokio::test]
async fn the_key_never_shows() {
    let (logs, _guard) = capture_logs();
    let echo = format!("Incorrect API key provided: {KEY}");
    let scenarios = vec![
        Reply::json(
            401,
            error_body(&echo, "invalid_request_error", Some("invalid_api_key")),
        ),
        Reply::json(500, error_body(&echo, "server_error", None)),
        Reply::raw(502, &format!("proxy saw Authorization: Bearer {KEY}")),
        Reply::json(
            400,
            error_body(
                &format!("{echo}; maximum context length"),
                "x",
                Some("context_length_exceeded"),
            ),
        ),
        Reply::json(429, error_body(&echo, "requests", None)),
        Reply::json(200, json!({"error": {"message": echo}})),
        Reply::raw(200, &format!("not json {KEY}")),
        Reply::hang(),
    ];
    let mut errors = Vec::new();
    for reply in scenarios {
        let server = Server::start(vec![reply]).await;
        let provider = builder(&server)
            .timeout(Duration::from_millis(200))
            .max_retries(1)
            .build()
            .unwrap();
        errors.push(provider.chat(&ask("hi")).await.unwrap_err());
        // Streaming too, including an error reported inside the stream.
        let (result, _) = stream_with(&provider, &ask("hi")).await;
        errors.push(result.unwrap_err());
    }
    let server = Server::start(vec![Reply::sse(
        &[&json!({"error": {"message": echo, "type": "server_error"}}).to_string()],
        1000,
    )])
    .await;
    let (result, _) = stream_with(&builder(&server).build().unwrap(), &ask("hi")).await;
    errors.push(result.unwrap_err());
    errors.push(
        OpenAiProvider::builder()
            .base_url(format!("http://127.0.0.1:{}/v1", refused_port()))
            .api_key(KEY)
            .max_retries(0)
            .build()
            .unwrap()
            .chat(&ask("hi"))
            .await
            .unwrap_err(),
    );

    let kinds: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            Error::Auth { .. } => "auth",
            Error::Status { .. } => "status",
            Error::ContextLengthExceeded { .. } => "context",
            Error::RateLimited { .. } => "rate",
            Error::InvalidResponse { .. } => "invalid",
            Error::Timeout { .. } => "timeout",
            Error::Transport(_) => "transport",
            _ => "other",
        })
        .collect();
    for kind in [
        "auth",
        "status",
        "context",
        "rate",
        "invalid",
        "timeout",
        "transport",
    ] {
        assert!(kinds.contains(&kind), "no {kind} error among {kinds:?}");
    }
    for err in &errors {
        assert_no_key("an error's Display", &err.to_string());
        assert_no_key("an error's Debug", &format!("{err:?}"));
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            assert_no_key("an error's source", &s.to_string());
            source = s.source();
        }
    }
    // Redacted, not dropped: the rest of the message is still there.
    assert!(errors.iter().any(|e| {
        e.to_string()
            .contains("Incorrect API key provided: <redacted>")
    }));

    let provider = OpenAiProvider::builder()
        .api_key(KEY)
        .base_url("http://127.0.0.1:9/v1");
    assert_no_key("the builder's Debug", &format!("{provider:?}"));
    let provider = provider.build().unwrap();
    let shown = format!("{provider:?}");
    assert_no_key("the provider's Debug", &shown);
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains("http://127.0.0.1:9/v1"), "{shown}");
    assert!(shown.contains("gpt-4o-mini"), "{shown}");

    let lines = logs.lines();
    assert!(!lines.is_empty());
    for line in &lines {
        assert_no_key("a log event", line);
        assert!(
            !line.contains("hi\""),
            "message content in a log event: {line}"
        );
    }
}

// ---- end to end: the pipeline over a real HTTP provider and a real store ----

/// The seed's Quick Start through `Pipeline` and `OpenAiProvider` against
/// the local server: the second request must carry the first turn.
async fn two_turns_over_http(store: Arc<dyn statestore_core::Store>) {
    let server = Server::start(vec![
        Reply::json(
            200,
            completion(
                json!({"role": "assistant", "content": "Nice to meet you, Alice!"}),
                "stop",
                Some((20, 6)),
            ),
        ),
        Reply::json(
            200,
            completion(
                json!({"role": "assistant", "content": "Your name is Alice"}),
                "stop",
                Some((40, 5)),
            ),
        ),
    ])
    .await;
    let provider = Arc::new(builder(&server).build().unwrap());
    let pipe = pipeline::Pipeline::builder(Arc::clone(&store), provider)
        .system_prompt("You are helpful.")
        .build();
    pipe.execute("user-123-conversation", Role::User, "Hi, I'm Alice")
        .await
        .unwrap();
    let second = pipe
        .execute("user-123-conversation", Role::User, "What's my name?")
        .await
        .unwrap();
    assert_eq!(second.reply.text(), "Your name is Alice");
    assert_eq!(
        second.usage,
        Usage {
            prompt_tokens: 40,
            completion_tokens: 5
        }
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let sent = requests[1].json();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hi, I'm Alice"},
            {"role": "assistant", "content": "Nice to meet you, Alice!"},
            {"role": "user", "content": "What's my name?"},
        ]),
        "the second request did not carry the first turn"
    );
    let id = statestore_core::SessionId::new("user-123-conversation").unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    assert_eq!(state.messages.len(), 4);
    assert_eq!(state.counters["prompt_tokens"], 60);
    assert_eq!(state.counters["completion_tokens"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_two_turns_on_memory() {
    two_turns_over_http(Arc::new(statestore_memory::MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_two_turns_on_redis() {
    let redis = redis_test_server::RedisServer::start().unwrap();
    let store = statestore_redis::RedisStore::builder()
        .connect(&redis.url())
        .await
        .unwrap();
    two_turns_over_http(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_provider_failure_stores_nothing() {
    let server = Server::start(vec![
        Reply::raw(500, "boom"),
        Reply::raw(500, "boom"),
        Reply::raw(500, "boom"),
    ])
    .await;
    let provider = Arc::new(builder(&server).build().unwrap());
    let store: Arc<dyn statestore_core::Store> = Arc::new(statestore_memory::MemoryStore::new());
    let pipe = pipeline::Pipeline::builder(Arc::clone(&store), provider).build();
    let err = pipe.execute("s", Role::User, "hello").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    let id = statestore_core::SessionId::new("s").unwrap();
    assert!(
        store.load(&id).await.unwrap().is_none(),
        "a failed turn created the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_a_restarted_stream_reaches_the_caller_and_only_the_reply_is_stored() {
    let server = Server::start(vec![
        Reply::sse_then_close(&STREAM[..3]),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = Arc::new(builder(&server).build().unwrap());
    let store: Arc<dyn statestore_core::Store> = Arc::new(statestore_memory::MemoryStore::new());
    let pipe = pipeline::Pipeline::builder(Arc::clone(&store), provider).build();
    let mut seen = Vec::new();
    let executed = pipe
        .execute_streaming("s", Role::User, "Salut", &mut recorder(&mut seen))
        .await
        .unwrap();
    assert_eq!(executed.reply.text(), "Salut !");
    let mut expected = restarted_once();
    expected.push(Seen::Done);
    assert_eq!(seen, expected);
    assert_eq!(server.count(), 2);

    let id = statestore_core::SessionId::new("s").unwrap();
    let state = store.load(&id).await.unwrap().unwrap();
    let texts: Vec<String> = state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect();
    assert_eq!(texts, ["Salut", "Salut !"]);
    assert_eq!(state.counters["completion_tokens"], 2);
}
