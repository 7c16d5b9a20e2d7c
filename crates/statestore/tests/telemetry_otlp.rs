//! Telemetry over the wire: `statestore::telemetry` exporting OTLP/HTTP
//! protobuf to a receiver started on loopback, which decodes what arrives.
//! Proves the export path (our HTTP client, the endpoint paths, the
//! resource, flush on drop), not just the in-process one.
//!
//! The tests install global providers (and one a global subscriber): they
//! take turns through `SERIAL`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]
// The pipeline's futures, nested in the test's, are deep for rustc's layout queries.
#![recursion_limit = "256"]

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use otlp_test_receiver::{MetricKind, PointValue, Receiver};
use statestore::memory::MemoryStore;
use statestore::pipeline::{OfflineProvider, Pipeline};
use statestore::telemetry::Telemetry;
use statestore::{OpenError, Role, Store};
use tracing_subscriber::layer::SubscriberExt;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One turn on a memory store with the offline model.
async fn one_turn(session: &str) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let pipe = Pipeline::builder(store, Arc::new(OfflineProvider::new())).build();
    let executed = pipe
        .execute(session, Role::User, "Hi, I'm Alice")
        .await
        .unwrap();
    assert_eq!(executed.reply.text(), "Nice to meet you, Alice!");
}

/// A counter and a histogram with units, through the global meter provider.
fn record_metrics() {
    let meter = opentelemetry::global::meter("statestore");
    let turns = meter
        .u64_counter("statestore.test.turns")
        .with_unit("{turn}")
        .with_description("Turns executed by the test")
        .build();
    turns.add(1, &[KeyValue::new("db.system.name", "memory")]);
    turns.add(2, &[KeyValue::new("db.system.name", "memory")]);
    let duration = meter
        .f64_histogram("statestore.test.duration")
        .with_unit("s")
        .build();
    duration.record(0.25, &[KeyValue::new("db.operation.name", "append")]);
    duration.record(0.75, &[KeyValue::new("db.operation.name", "append")]);
}

#[test]
fn an_execute_span_and_metrics_arrive_over_otlp() {
    let _serial = serial();
    let receiver = Receiver::start_blocking().unwrap();
    let telemetry = Telemetry::from_env()
        .unwrap()
        .endpoint(receiver.endpoint())
        .service_name("telemetry-test");
    let subscriber = tracing_subscriber::registry().with(telemetry.layer());
    let _default = tracing::subscriber::set_default(subscriber);
    let guard = telemetry.install().unwrap();

    runtime().block_on(async {
        one_turn("otlp-1").await;
        record_metrics();
        // Dropped on the runtime's thread, inside its context: the export
        // runs on the SDK's threads and our client never on this one.
        drop(guard);
    });

    // Everything arrived by the time the drop returned: no waiting.
    let execute = receiver
        .span("execute")
        .unwrap_or_else(|| panic!("no execute span in {:?}", receiver.spans()));
    assert_eq!(execute.service_name(), Some("telemetry-test"));
    assert_eq!(execute.scope, "statestore");
    assert_eq!(execute.parent_span_id, None);
    assert_eq!(execute.trace_id.len(), 32);
    let provider = execute
        .attr("gen_ai.provider.name")
        .unwrap_or_else(|| panic!("no provider attribute: {:?}", execute.attributes));
    assert_eq!(*provider, "offline");
    assert!(
        !execute
            .attributes
            .keys()
            .any(|k| k.starts_with("code.") || k.starts_with("thread.")),
        "locations and threads are left out: {:?}",
        execute.attributes
    );
    assert!(
        receiver.span_tree().starts_with("execute  "),
        "{}",
        receiver.span_tree()
    );

    // The library's own spans and metrics made the trip too: the store's
    // span under the execute, with the conventions' attributes, and the
    // GenAI and database instruments with their units.
    let append = receiver.span("append").unwrap();
    assert_eq!(
        append.parent_span_id.as_deref(),
        Some(execute.span_id.as_str())
    );
    assert_eq!(*append.attr("db.system.name").unwrap(), "memory");
    assert_eq!(*append.attr("db.operation.name").unwrap(), "append");
    assert_eq!(*append.attr("statestore.outcome").unwrap(), "applied");
    let chat = receiver.span("chat").unwrap();
    assert_eq!(
        chat.parent_span_id.as_deref(),
        Some(execute.span_id.as_str())
    );
    assert_eq!(*chat.attr("gen_ai.operation.name").unwrap(), "chat");
    assert!(chat.attr("gen_ai.usage.input_tokens").is_some(), "{chat:?}");
    let usage = receiver.metric("gen_ai.client.token.usage").unwrap();
    assert_eq!(usage.unit, "{token}");
    assert_eq!(usage.kind, MetricKind::Histogram);
    let input = usage
        .point(&[
            ("gen_ai.token.type", "input"),
            ("gen_ai.provider.name", "offline"),
        ])
        .unwrap_or_else(|| panic!("{usage:?}"));
    assert_eq!(input.value.count(), Some(1));
    let db = receiver.metric("db.client.operation.duration").unwrap();
    assert_eq!(db.unit, "s");
    let appends = db
        .point(&[
            ("db.operation.name", "append"),
            ("db.system.name", "memory"),
        ])
        .unwrap_or_else(|| panic!("{db:?}"));
    assert_eq!(appends.value.count(), Some(1));

    let turns = receiver.metric("statestore.test.turns").unwrap();
    assert_eq!(turns.kind, MetricKind::Sum { monotonic: true });
    assert_eq!(turns.unit, "{turn}");
    assert_eq!(turns.description, "Turns executed by the test");
    assert_eq!(turns.scope, "statestore");
    assert_eq!(turns.resource["service.name"], "telemetry-test");
    let point = turns.point(&[("db.system.name", "memory")]).unwrap();
    assert_eq!(point.value, PointValue::Int(3));

    let duration = receiver.metric("statestore.test.duration").unwrap();
    assert_eq!(duration.kind, MetricKind::Histogram);
    assert_eq!(duration.unit, "s");
    let point = duration.point(&[("db.operation.name", "append")]).unwrap();
    assert_eq!(point.value.count(), Some(2));
    assert_eq!(point.value.as_f64(), Some(1.0));

    // Each signal to its own path, as protobuf, with our client.
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    assert!(requests.iter().any(|r| r.path == "/v1/traces"));
    assert!(requests.iter().any(|r| r.path == "/v1/metrics"));
    assert!(
        requests
            .iter()
            .all(|r| r.header("content-type") == Some("application/x-protobuf"))
    );
}

#[test]
fn init_inside_a_runtime_sets_the_global_subscriber_once() {
    let _serial = serial();
    let receiver = Receiver::start_blocking().unwrap();
    runtime().block_on(async {
        // As in `#[tokio::main]`: nothing here may build or drop reqwest's
        // blocking client.
        let guard = Telemetry::from_env()
            .unwrap()
            .endpoint(receiver.endpoint())
            .init()
            .unwrap();
        // The global subscriber sees spans of any thread: run the turn on
        // another one so that no thread-local default of a test catches it.
        std::thread::spawn(|| runtime().block_on(one_turn("otlp-global")))
            .join()
            .unwrap();
        let again = Telemetry::from_env()
            .unwrap()
            .endpoint(receiver.endpoint())
            .init();
        assert!(
            matches!(again, Err(OpenError::Telemetry { .. })),
            "a second global subscriber is refused: {again:?}"
        );
        guard.shutdown().unwrap();
    });
    let execute = receiver.span("execute").unwrap();
    // OTEL_SERVICE_NAME (if the environment sets it) or the default.
    let expected = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "statestore".into());
    if std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_none() {
        assert_eq!(execute.service_name(), Some(expected.as_str()));
    }
}

#[test]
fn a_collector_that_is_not_there_costs_a_bounded_wait() {
    let _serial = serial();
    // A port that was free a moment ago: connections are refused.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let setup = || {
        Telemetry::from_env()
            .unwrap()
            .endpoint(&url)
            .timeout(Duration::from_millis(300))
    };
    let started = Instant::now();
    runtime().block_on(async {
        let telemetry = setup();
        let _default = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(telemetry.layer()),
        );
        let guard = telemetry.install().unwrap();
        one_turn("otlp-nowhere").await;
        record_metrics();
        drop(guard);

        let guard = setup().install().unwrap();
        record_metrics();
        let failed = guard.shutdown();
        match failed {
            Err(OpenError::Telemetry { url: named, source }) => {
                assert_eq!(named, url);
                assert!(source.to_string().contains("metrics"), "{source}");
            }
            other => panic!("the lost export is reported: {other:?}"),
        }
    });
    // Two shutdowns, each bounded by the retries of one export (connection
    // refused at once) and the SDK's 5 s limits.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
}
