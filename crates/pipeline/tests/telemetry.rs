//! The spans and metrics of an execute, as an OpenTelemetry SDK receives
//! them: an in-memory span exporter behind `tracing-opentelemetry`, and an
//! in-memory metric exporter behind the global meter provider. For each
//! scenario — two tool rounds, a conflict restart, a replay, a store write
//! whose outcome is unknown — on memory and on real Redis, the exact span
//! tree with its attributes, and the metric points.
//!
//! The exporters are process-wide, so the tests take turns (`SERIAL`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, InMemoryMetricExporterBuilder, PeriodicReader, SdkMeterProvider,
    Temporality,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use pipeline::{
    ChatRequest, ChatResponse, Error, ExecContext, ExecOptions, FinishReason, Middleware, Pipeline,
    Provider, ToolHandler, ToolSpec, Usage,
};
use redis_test_server::{FaultProxy, RedisServer};
use statestore_core::telemetry::ConversationIds;
use statestore_core::{
    BoxError, Expect, IdempotencyKey, Message, Role, SessionId, Store, ToolCall, WriteOutcome,
};
use statestore_memory::MemoryStore;
use statestore_redis::RedisStore;
use tracing_subscriber::layer::SubscriberExt;

/// The process-wide exporters.
struct Telemetry {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    meters: SdkMeterProvider,
}

fn telemetry() -> &'static Telemetry {
    static T: OnceLock<Telemetry> = OnceLock::new();
    T.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let tracers = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracers.tracer("test"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_level(false)
            .with_target(false);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .unwrap();
        let metrics = InMemoryMetricExporterBuilder::new()
            .with_temporality(Temporality::Delta)
            .build();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(meters.clone());
        statestore_core::telemetry::refresh_instruments();
        Telemetry {
            spans,
            metrics,
            meters,
        }
    })
}

/// Takes a turn with the exporters, emptied.
async fn begin() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = SERIAL.lock().await;
    clear();
    guard
}

/// Empties the exporters.
fn clear() {
    let t = telemetry();
    t.meters.force_flush().unwrap();
    t.metrics.reset();
    t.spans.reset();
}

/// A value as text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.as_str().to_owned(), text(&kv.value)))
        .collect()
}

/// The finished spans as a tree: one line per span, `name {k=v, …}` with
/// the attributes named in `keys`, children indented under parents, in
/// start order.
fn tree(spans: &[SpanData], keys: &[&str]) -> String {
    let mut spans: Vec<&SpanData> = spans.iter().collect();
    spans.sort_by_key(|s| s.start_time);
    let ids: Vec<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut out = String::new();
    fn walk(
        out: &mut String,
        spans: &[&SpanData],
        ids: &[opentelemetry::trace::SpanId],
        parent: Option<opentelemetry::trace::SpanId>,
        depth: usize,
        keys: &[&str],
    ) {
        for s in spans {
            let is_root = !ids.contains(&s.parent_span_id);
            let matches = match parent {
                None => is_root,
                Some(p) => s.parent_span_id == p,
            };
            if !matches {
                continue;
            }
            let a = attrs(&s.attributes);
            let shown: Vec<String> = keys
                .iter()
                .filter_map(|k| a.get(*k).map(|v| format!("{k}={v}")))
                .collect();
            out.push_str(&"  ".repeat(depth));
            out.push_str(&s.name);
            if !shown.is_empty() {
                out.push_str(&format!(" {{{}}}", shown.join(", ")));
            }
            out.push('\n');
            walk(
                out,
                spans,
                ids,
                Some(s.span_context.span_id()),
                depth + 1,
                keys,
            );
        }
    }
    walk(&mut out, &spans, &ids, None, 0, keys);
    out
}

/// What the metric exporter received: `(name, unit, attributes) → count`
/// for histograms, `→ value` for counters.
fn points() -> BTreeMap<String, u64> {
    let t = telemetry();
    t.meters.force_flush().unwrap();
    let mut out = BTreeMap::new();
    for rm in t.metrics.get_finished_metrics().unwrap() {
        for scope in rm.scope_metrics() {
            for m in scope.metrics() {
                let mut put = |attrs: Vec<&KeyValue>, v: u64| {
                    let mut a: Vec<String> = attrs
                        .iter()
                        .map(|kv| format!("{}={}", kv.key, text(&kv.value)))
                        .collect();
                    a.sort();
                    let key = format!("{} [{}] {{{}}}", m.name(), m.unit(), a.join(", "));
                    *out.entry(key).or_default() += v;
                };
                match m.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            put(p.attributes().collect(), p.count());
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            put(p.attributes().collect(), p.count());
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            put(p.attributes().collect(), p.value());
                        }
                    }
                    other => panic!("unexpected metric {}: {other:?}", m.name()),
                }
            }
        }
    }
    out.retain(|_, v| *v > 0);
    out
}

/// A scripted model, `test-model`, that records the pieces of the answer
/// a real provider records on the `chat` span.
#[derive(Debug)]
struct Scripted {
    replies: Mutex<Vec<ChatResponse>>,
}

impl Scripted {
    fn new(mut replies: Vec<ChatResponse>) -> Arc<Self> {
        replies.reverse();
        Arc::new(Self {
            replies: Mutex::new(replies),
        })
    }
}

fn answer(message: Message, finish_reason: FinishReason) -> ChatResponse {
    ChatResponse {
        message,
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 2,
        },
        finish_reason,
    }
}

fn weather(id: &str, city: &str) -> ChatResponse {
    answer(
        Message::assistant("").with_tool_calls(vec![ToolCall::new(id, "weather", city)]),
        FinishReason::ToolCalls,
    )
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn model(&self) -> Option<&str> {
        Some("test-model")
    }
    async fn chat(&self, _: &ChatRequest) -> Result<ChatResponse, Error> {
        tracing::Span::current().record("gen_ai.response.model", "test-model-2026");
        let next = self.replies.lock().unwrap().pop();
        Ok(next.unwrap_or_else(|| answer(Message::assistant("ok"), FinishReason::Stop)))
    }
}

struct Weather;

#[async_trait]
impl ToolHandler for Weather {
    fn specs(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "weather".into(),
            description: "The weather in a city.".into(),
            parameters: serde_json::json!({"type": "object"}),
        }]
    }
    async fn call(&self, call: &ToolCall) -> Result<String, BoxError> {
        Ok(format!("sunny in {}", call.arguments))
    }
}

/// Another instance's turn, landing before this execute's first write.
struct Interloper {
    store: Arc<dyn Store>,
}

#[async_trait]
impl Middleware for Interloper {
    async fn before(&self, ctx: &ExecContext, _: &mut ChatRequest) -> Result<(), Error> {
        if ctx.attempt == 1 {
            let other = vec![Message::user("from another instance")];
            self.store
                .append(&ctx.session_id, other, Expect::Any)
                .await?;
        }
        Ok(())
    }
}

const SPAN_KEYS: &[&str] = &[
    "db.system.name",
    "statestore.outcome",
    "error.type",
    "statestore.write_outcome",
    "gen_ai.tool.call.id",
    "statestore.tool.reused",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "statestore.turn.replayed",
    "statestore.turn.resumed",
    "statestore.turn.conflict_restarts",
    "statestore.messages.stored",
    "statestore.model_calls",
];

/// Spans as a tree, after checking what every span shares: the session
/// as the default policy records it (never raw), and the turn id.
fn checked_tree(system: &str, session: &str, turn: &IdempotencyKey) -> String {
    let spans = telemetry().spans.get_finished_spans().unwrap();
    let tag = ConversationIds::Tag
        .value(&SessionId::new(session).unwrap())
        .unwrap();
    for s in &spans {
        let a = attrs(&s.attributes);
        assert_eq!(
            a.get("gen_ai.conversation.id"),
            Some(&tag),
            "{}: the session's tag",
            s.name
        );
        if s.name == "execute" || s.name.starts_with("execute_tool") {
            assert_eq!(
                a.get("statestore.turn.id").map(String::as_str),
                Some(turn.as_str())
            );
        }
        if let Some(sys) = a.get("db.system.name") {
            assert_eq!(sys, system);
        }
        for v in a.values() {
            assert!(
                !v.contains(session),
                "{}: the raw session id in {v}",
                s.name
            );
        }
    }
    tree(&spans, SPAN_KEYS)
}

fn turn(name: &str) -> (IdempotencyKey, ExecOptions) {
    let key = IdempotencyKey::new(name).unwrap();
    (key.clone(), ExecOptions::new().turn_id(key))
}

async fn two_tool_rounds(store: Arc<dyn Store>, system: &str) {
    let _turn = begin().await;
    let provider = Scripted::new(vec![
        weather("c1", "Paris"),
        weather("c2", "Oslo"),
        answer(Message::assistant("Sunny in both."), FinishReason::Stop),
    ]);
    let pipe = Pipeline::builder(store, provider)
        .tools(Arc::new(Weather))
        .build();
    let (id, options) = turn("turn-tools");
    let done = pipe
        .execute_with("person-tools", Role::User, "Weather?", options)
        .await
        .unwrap();
    assert_eq!(done.model_calls, 3);
    let s = format!("db.system.name={system}");
    let chat = |finish: &str| {
        format!(
            "  chat test-model {{gen_ai.response.model=test-model-2026, gen_ai.usage.input_tokens=10, gen_ai.usage.output_tokens=2, gen_ai.response.finish_reasons={finish}}}\n"
        )
    };
    let expected = [
        "execute {statestore.turn.replayed=false, statestore.turn.resumed=false, statestore.turn.conflict_restarts=0, statestore.messages.stored=6, statestore.model_calls=3}\n".to_owned(),
        format!("  load_recent {{{s}, statestore.outcome=not_found}}\n"),
        format!("  load_pending {{{s}, statestore.outcome=not_found}}\n"),
        chat("tool_calls"),
        "  execute_tool weather {gen_ai.tool.call.id=c1, statestore.tool.reused=false}\n".to_owned(),
        format!("  put_pending {{{s}, statestore.outcome=ok}}\n"),
        chat("tool_calls"),
        "  execute_tool weather {gen_ai.tool.call.id=c2, statestore.tool.reused=false}\n".to_owned(),
        format!("  put_pending {{{s}, statestore.outcome=ok}}\n"),
        chat("stop"),
        format!("  append {{{s}, statestore.outcome=applied}}\n"),
    ]
    .concat();
    assert_eq!(checked_tree(system, "person-tools", &id), expected);

    let points = points();
    let model = "gen_ai.operation.name=chat, gen_ai.provider.name=scripted, gen_ai.request.model=test-model";
    let db = |op: &str| format!("db.client.operation.duration [s] {{db.operation.name={op}, {s}}}");
    let expected: BTreeMap<String, u64> = [
        (
            format!("gen_ai.client.operation.duration [s] {{{model}}}"),
            3,
        ),
        (
            format!("gen_ai.client.token.usage [{{token}}] {{{model}, gen_ai.token.type=input}}"),
            3,
        ),
        (
            format!("gen_ai.client.token.usage [{{token}}] {{{model}, gen_ai.token.type=output}}"),
            3,
        ),
        (db("append"), 1),
        (db("load_pending"), 1),
        (db("load_recent"), 1),
        (db("put_pending"), 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(points, expected);
}

async fn conflict_restart(store: Arc<dyn Store>, system: &str) {
    let _turn = begin().await;
    let provider = Scripted::new(vec![]);
    let pipe = Pipeline::builder(Arc::clone(&store), provider)
        .middleware(Arc::new(Interloper { store }))
        .build();
    let (id, options) = turn("turn-conflict");
    let done = pipe
        .execute_with("person-conflict", Role::User, "Hello", options)
        .await
        .unwrap();
    assert!(!done.replayed);
    let s = format!("db.system.name={system}");
    let chat = "  chat test-model {gen_ai.response.model=test-model-2026, gen_ai.usage.input_tokens=10, gen_ai.usage.output_tokens=2, gen_ai.response.finish_reasons=stop}\n";
    let expected = [
        "execute {statestore.turn.replayed=false, statestore.turn.resumed=false, statestore.turn.conflict_restarts=1, statestore.messages.stored=2, statestore.model_calls=2}\n".to_owned(),
        format!("  load_recent {{{s}, statestore.outcome=not_found}}\n"),
        format!("  load_pending {{{s}, statestore.outcome=not_found}}\n"),
        chat.to_owned(),
        format!("  append {{{s}, statestore.outcome=conflict, error.type=conflict, statestore.write_outcome=not_written}}\n"),
        format!("  load_recent {{{s}, statestore.outcome=found}}\n"),
        chat.to_owned(),
        format!("  append {{{s}, statestore.outcome=applied}}\n"),
    ]
    .concat();
    assert_eq!(checked_tree(system, "person-conflict", &id), expected);
    let points = points();
    assert_eq!(
        points.get(&format!(
            "statestore.conflicts [{{conflict}}] {{db.operation.name=append, {s}}}"
        )),
        Some(&1),
        "{points:#?}"
    );
    assert_eq!(
        points.get("statestore.retries [{retry}] {statestore.retry.cause=conflict}"),
        Some(&1),
        "{points:#?}"
    );
    assert_eq!(
        points.get(&format!(
            "db.client.operation.duration [s] {{db.operation.name=append, {s}, error.type=conflict}}"
        )),
        Some(&1),
        "{points:#?}"
    );
}

async fn replay(store: Arc<dyn Store>, system: &str) {
    let _turn = begin().await;
    let provider = Scripted::new(vec![]);
    let pipe = Pipeline::builder(store, provider).build();
    let (id, options) = turn("turn-replay");
    let first = pipe
        .execute_with("person-replay", Role::User, "Hello", options.clone())
        .await
        .unwrap();
    clear();
    let again = pipe
        .execute_with("person-replay", Role::User, "Hello", options)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.reply.text(), first.reply.text());
    let s = format!("db.system.name={system}");
    let expected = [
        "execute {statestore.turn.replayed=true, statestore.turn.resumed=false, statestore.turn.conflict_restarts=0, statestore.messages.stored=2, statestore.model_calls=0}\n".to_owned(),
        format!("  load_recent {{{s}, statestore.outcome=found}}\n"),
    ]
    .concat();
    assert_eq!(checked_tree(system, "person-replay", &id), expected);
    let points = points();
    assert_eq!(
        points.get("statestore.replays [{turn}] {statestore.replay.source=lookup}"),
        Some(&1),
        "{points:#?}"
    );
    assert!(
        !points.keys().any(|k| k.starts_with("gen_ai.")),
        "no model call: {points:#?}"
    );
}

/// Checks the spans of an execute whose write failed with an unknown
/// outcome (the error is `err`).
fn unknown_write(err: &Error, system: &str, session: &str, id: &IdempotencyKey) {
    assert_eq!(err.write_outcome(), WriteOutcome::Unknown, "{err}");
    let kind = err.kind();
    let s = format!("db.system.name={system}");
    let chat = "  chat test-model {gen_ai.response.model=test-model-2026, gen_ai.usage.input_tokens=10, gen_ai.usage.output_tokens=2, gen_ai.response.finish_reasons=stop}\n";
    let expected = [
        format!("execute {{error.type={kind}, statestore.write_outcome=unknown, statestore.turn.resumed=false, statestore.turn.conflict_restarts=0, statestore.model_calls=1}}\n"),
        format!("  load_recent {{{s}, statestore.outcome=not_found}}\n"),
        format!("  load_pending {{{s}, statestore.outcome=not_found}}\n"),
        chat.to_owned(),
        format!("  append {{{s}, statestore.outcome=error, error.type={kind}, statestore.write_outcome=unknown}}\n"),
    ]
    .concat();
    assert_eq!(checked_tree(system, session, id), expected);
    let spans = telemetry().spans.get_finished_spans().unwrap();
    let failed: Vec<&str> = spans
        .iter()
        .filter(|s| matches!(s.status, opentelemetry::trace::Status::Error { .. }))
        .map(|s| s.name.as_ref())
        .collect();
    assert_eq!(failed, ["append", "execute"], "both marked failed");
    let points = points();
    assert_eq!(
        points.get(&format!(
            "db.client.operation.duration [s] {{db.operation.name=append, {s}, error.type={kind}}}"
        )),
        Some(&1),
        "{points:#?}"
    );
}

/// A memory store whose next append is applied and then reported as timed
/// out: the write's outcome is unknown to the caller.
#[derive(Debug, Default)]
struct LosesAppendReply {
    inner: MemoryStore,
    armed: AtomicBool,
}

#[async_trait]
impl Store for LosesAppendReply {
    fn system_name(&self) -> &'static str {
        "memory"
    }
    async fn load_with(
        &self,
        id: &SessionId,
        o: statestore_core::Load,
    ) -> statestore_core::Result<Option<statestore_core::ConversationState>> {
        self.inner.load_with(id, o).await
    }
    async fn load_recent_as(
        &self,
        id: &SessionId,
        r: statestore_core::Recent,
    ) -> statestore_core::Result<Option<statestore_core::RecentState>> {
        self.inner.load_recent_as(id, r).await
    }
    async fn save_with(
        &self,
        s: &statestore_core::ConversationState,
        o: statestore_core::Save,
    ) -> statestore_core::Result<u64> {
        self.inner.save_with(s, o).await
    }
    async fn append_with(
        &self,
        id: &SessionId,
        a: statestore_core::Append,
    ) -> statestore_core::Result<statestore_core::Appended> {
        let done = self.inner.append_with(id, a).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(statestore_core::Error::Timeout {
                operation: "append",
                after: std::time::Duration::from_secs(1),
            });
        }
        Ok(done)
    }
    async fn fork(&self, a: &SessionId, b: &SessionId) -> statestore_core::Result<u64> {
        self.inner.fork(a, b).await
    }
    async fn delete_with(
        &self,
        id: &SessionId,
        o: statestore_core::Delete,
    ) -> statestore_core::Result<bool> {
        self.inner.delete_with(id, o).await
    }
    async fn exists(&self, id: &SessionId) -> statestore_core::Result<bool> {
        self.inner.exists(id).await
    }
    async fn list(
        &self,
        q: &statestore_core::ListQuery,
    ) -> statestore_core::Result<statestore_core::ListPage> {
        self.inner.list(q).await
    }
    async fn merge_metadata(
        &self,
        id: &SessionId,
        p: statestore_core::Metadata,
        e: Expect,
    ) -> statestore_core::Result<u64> {
        self.inner.merge_metadata(id, p, e).await
    }
    async fn add_summary_with(
        &self,
        id: &SessionId,
        a: statestore_core::AddSummary,
    ) -> statestore_core::Result<u64> {
        self.inner.add_summary_with(id, a).await
    }
    async fn put_pending(
        &self,
        id: &SessionId,
        k: &IdempotencyKey,
        p: &statestore_core::Pending,
    ) -> statestore_core::Result<()> {
        self.inner.put_pending(id, k, p).await
    }
    async fn load_pending(
        &self,
        id: &SessionId,
        k: &IdempotencyKey,
    ) -> statestore_core::Result<Option<statestore_core::Pending>> {
        self.inner.load_pending(id, k).await
    }
    async fn touch(&self, id: &SessionId) -> statestore_core::Result<bool> {
        self.inner.touch(id).await
    }
}

#[tokio::test]
async fn memory_spans_and_metrics() {
    let store = || -> Arc<dyn Store> { Arc::new(MemoryStore::new()) };
    two_tool_rounds(store(), "memory").await;
    conflict_restart(store(), "memory").await;
    // A store traced already (as `statestore::open` returns it) is not
    // wrapped again: one span per store call, as the tree says.
    replay(statestore_core::telemetry::traced(store()), "memory").await;

    let lossy = Arc::new(LosesAppendReply::default());
    lossy.armed.store(true, Ordering::SeqCst);
    let pipe = Pipeline::builder(lossy, Scripted::new(vec![])).build();
    let _turn = begin().await;
    let (id, options) = turn("turn-lost");
    let err = pipe
        .execute_with("person-lost", Role::User, "Hello", options)
        .await
        .unwrap_err();
    unknown_write(&err, "memory", "person-lost", &id);
}

/// Arms the proxy in the last hook before the turn's write, so that the
/// write's reply is the one lost.
struct LoseTheWriteReply {
    proxy: Arc<FaultProxy>,
}

#[async_trait]
impl Middleware for LoseTheWriteReply {
    async fn after(&self, _: &ExecContext, _: &mut ChatResponse) -> Result<(), Error> {
        self.proxy.drop_next_reply();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_spans_and_metrics() {
    let server = RedisServer::start().unwrap();
    let connect = || async {
        let store = RedisStore::builder().connect(&server.url()).await.unwrap();
        Arc::new(store) as Arc<dyn Store>
    };
    two_tool_rounds(connect().await, "redis").await;
    conflict_restart(connect().await, "redis").await;
    replay(connect().await, "redis").await;

    let proxy = Arc::new(FaultProxy::start(server.port()).await.unwrap());
    let store = RedisStore::builder()
        .response_timeout(std::time::Duration::from_secs(5))
        .connect(&proxy.url())
        .await
        .unwrap();
    let pipe = Pipeline::builder(Arc::new(store), Scripted::new(vec![]))
        .middleware(Arc::new(LoseTheWriteReply {
            proxy: Arc::clone(&proxy),
        }))
        .build();
    let _turn = begin().await;
    let (id, options) = turn("turn-lost");
    let err = pipe
        .execute_with("person-lost", Role::User, "Hello", options)
        .await
        .unwrap_err();
    assert_eq!(proxy.dropped_replies(), 1);
    unknown_write(&err, "redis", "person-lost", &id);
}

/// Every attribute name in the `gen_ai.`, `db.` and `error.` namespaces
/// that the spans carry is one the semantic conventions define (a typo
/// fails here), and nothing carries message text or tool arguments
/// unless content recording is on.
#[tokio::test]
// The GenAI constants are marked deprecated there only because the GenAI
// conventions moved to their own repository; the names are unchanged.
#[allow(deprecated)]
async fn attribute_names_are_the_conventions_and_content_stays_out() {
    use opentelemetry_semantic_conventions::attribute as semconv;
    let known = [
        semconv::GEN_AI_OPERATION_NAME,
        semconv::GEN_AI_PROVIDER_NAME,
        semconv::GEN_AI_REQUEST_MODEL,
        semconv::GEN_AI_REQUEST_TEMPERATURE,
        semconv::GEN_AI_REQUEST_MAX_TOKENS,
        semconv::GEN_AI_RESPONSE_MODEL,
        semconv::GEN_AI_RESPONSE_ID,
        semconv::GEN_AI_RESPONSE_FINISH_REASONS,
        semconv::GEN_AI_USAGE_INPUT_TOKENS,
        semconv::GEN_AI_USAGE_OUTPUT_TOKENS,
        semconv::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        semconv::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        semconv::GEN_AI_CONVERSATION_ID,
        semconv::GEN_AI_TOOL_NAME,
        semconv::GEN_AI_TOOL_TYPE,
        semconv::GEN_AI_TOOL_CALL_ID,
        semconv::GEN_AI_TOOL_CALL_ARGUMENTS,
        semconv::GEN_AI_TOOL_CALL_RESULT,
        semconv::GEN_AI_INPUT_MESSAGES,
        semconv::GEN_AI_OUTPUT_MESSAGES,
        semconv::DB_SYSTEM_NAME,
        semconv::DB_OPERATION_NAME,
        semconv::ERROR_TYPE,
    ];
    let run = |record: bool| async move {
        let _turn = begin().await;
        let provider = Scripted::new(vec![
            weather("c1", "Secret-City-Argument"),
            answer(Message::assistant("Reply-Text-Secret"), FinishReason::Stop),
        ]);
        let pipe = Pipeline::builder(Arc::new(MemoryStore::new()), provider)
            .tools(Arc::new(Weather))
            .record_content(record)
            .build();
        pipe.execute(
            "private-session",
            Role::User,
            "User-Text-Secret password=hunter2",
        )
        .await
        .unwrap();
        let spans = telemetry().spans.get_finished_spans().unwrap();
        let mut all = BTreeMap::new();
        for s in &spans {
            for (k, v) in attrs(&s.attributes) {
                all.insert(format!("{}:{k}", s.name), v);
            }
            for e in s.events.iter() {
                for (k, v) in attrs(&e.attributes) {
                    all.insert(format!("{}:event:{k}", s.name), v);
                }
            }
        }
        all
    };
    let quiet = run(false).await;
    for point in points().keys() {
        for secret in ["Secret", "hunter2", "private-session", "sunny"] {
            assert!(!point.contains(secret), "metric {point} leaks {secret}");
        }
    }
    for (k, v) in &quiet {
        let key = k.rsplit(':').next().unwrap();
        if ["gen_ai.", "db.", "error."]
            .iter()
            .any(|p| key.starts_with(p))
        {
            assert!(known.contains(&key), "{key} is not a convention name");
        }
        for secret in ["Secret", "hunter2", "private-session", "sunny"] {
            assert!(!v.contains(secret), "{k}={v} leaks {secret}");
        }
    }
    let loud = run(true).await;
    let joined: String = loud.values().cloned().collect();
    for shown in [
        "User-Text-Secret",
        "Secret-City-Argument",
        "sunny in Secret-City-Argument",
        "Reply-Text-Secret",
    ] {
        assert!(joined.contains(shown), "recorded when asked: {shown}");
    }
    assert!(
        !joined.contains("private-session"),
        "the raw id still is not"
    );
    assert!(loud.contains_key("chat test-model:gen_ai.input.messages"));
}

/// Serves `replies` in order on a loopback port, one per request (HTTP/1.1,
/// `Content-Length` bodies, keep-alive); returns the base URL.
async fn http_server(replies: Vec<(u16, String)>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let replies = Arc::new(Mutex::new(replies.into_iter()));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let replies = Arc::clone(&replies);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: headers, then Content-Length bytes.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + length);
                    let (status, body) = replies.lock().unwrap().next().unwrap();
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}/v1")
}

/// The OpenAI provider over HTTP: a rate-limited first attempt and a
/// retried one show as `statestore.attempts` and a `rate_limited` retry;
/// the model that answered, the response id and the cached and reasoning
/// tokens come from the answer; the API key appears nowhere.
#[tokio::test]
async fn the_openai_provider_records_its_answer_and_its_retries() {
    const KEY: &str = "sk-test-DO-NOT-LEAK-0123456789";
    let body = serde_json::json!({
        "id": "chatcmpl-42",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 16},
                  "completion_tokens_details": {"reasoning_tokens": 8}},
    });
    let limited = r#"{"error": {"message": "slow down", "type": "rate_limit"}}"#;
    let url = http_server(vec![(429, limited.to_owned()), (200, body.to_string())]).await;
    let provider = pipeline::OpenAiProvider::builder()
        .base_url(url)
        .model("gpt-4o-mini")
        .api_key(KEY)
        .max_retries(2)
        .retry_base_delay(std::time::Duration::from_millis(5))
        .jitter(false)
        .build()
        .unwrap();
    let _turn = begin().await;
    let pipe = Pipeline::builder(Arc::new(MemoryStore::new()), Arc::new(provider))
        .conversation_ids(ConversationIds::Omit)
        .build();
    pipe.execute("openai-session", Role::User, "Hi")
        .await
        .unwrap();
    let spans = telemetry().spans.get_finished_spans().unwrap();
    let chat = spans.iter().find(|s| s.name == "chat gpt-4o-mini").unwrap();
    let a = attrs(&chat.attributes);
    let get = |k: &str| a.get(k).map(String::as_str);
    assert_eq!(get("gen_ai.provider.name"), Some("openai"));
    assert_eq!(get("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(get("gen_ai.response.model"), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(get("gen_ai.response.id"), Some("chatcmpl-42"));
    assert_eq!(get("gen_ai.usage.input_tokens"), Some("30"));
    assert_eq!(get("gen_ai.usage.cache_read.input_tokens"), Some("16"));
    assert_eq!(get("gen_ai.usage.reasoning.output_tokens"), Some("8"));
    assert_eq!(get("statestore.attempts"), Some("2"));
    let retry = chat
        .events
        .iter()
        .find(|e| attrs(&e.attributes).get("cause").map(String::as_str) == Some("rate_limited"));
    assert!(retry.is_some(), "the retry is an event on the chat span");
    for s in &spans {
        assert!(
            !attrs(&s.attributes).contains_key("gen_ai.conversation.id"),
            "{}: omitted by policy",
            s.name
        );
        for (k, v) in attrs(&s.attributes) {
            assert!(
                !v.contains("DO-NOT-LEAK"),
                "{}: {k} carries the API key",
                s.name
            );
        }
        for e in s.events.iter() {
            for (k, v) in attrs(&e.attributes) {
                assert!(
                    !v.contains("DO-NOT-LEAK"),
                    "{}: event {k} carries the API key",
                    s.name
                );
            }
        }
    }
    let points = points();
    assert_eq!(
        points.get("statestore.retries [{retry}] {statestore.retry.cause=rate_limited}"),
        Some(&1),
        "{points:#?}"
    );
}
