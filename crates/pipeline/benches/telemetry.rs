//! What telemetry costs an `execute` on the memory store (offline
//! provider, history of about 100 messages, as `benches/execute.rs`):
//!
//! - `no subscriber`: spans and metrics with nobody listening, the case of
//!   an application that never installs telemetry. Compare with
//!   `pipeline/execute(offline provider, history 100)/memory` of a build
//!   before telemetry to see what the instrumentation itself costs.
//! - `otel layer, exporting`: `tracing-opentelemetry` installed with a
//!   batch span processor and a periodic metric reader, both exporting to
//!   in-memory exporters (emptied between batches, untimed): every span
//!   and metric point built, processed and handed to an exporter. Network
//!   export (OTLP) runs on the SDK's own threads.
//!
//! ```text
//! cargo bench -p pipeline --features metrics --bench telemetry
//! ```
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use context_window::{CharEstimate, WindowPolicy, annotate};
use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use pipeline::{OfflineProvider, Pipeline};
use statestore_core::{Expect, Message, Role, SessionId, Store};
use statestore_memory::MemoryStore;
use tracing_subscriber::layer::SubscriberExt;

const GROUP: &str = "pipeline/execute telemetry(memory, offline provider, history 100)";
const EXECUTES_PER_FORK: u64 = 50;

async fn template(store: &dyn Store, id: &SessionId) {
    let history = (0..100)
        .map(|i| {
            let text = format!("message {i}: some ordinary chat text of moderate length");
            let mut m = match i % 2 {
                0 => Message::user(text),
                _ => Message::assistant(text),
            };
            annotate(&CharEstimate, &mut m);
            m
        })
        .collect();
    store.append(id, history, Expect::Any).await.unwrap();
}

fn telemetry(c: &mut Criterion) {
    // One thread: a subscriber set as the thread's default sees every span.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let template_id = SessionId::new("template").unwrap();
    let id = SessionId::new("bench-session").unwrap();
    rt.block_on(template(&*store, &template_id));
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .window(
            WindowPolicy::default()
                .max_messages(20)
                .token_budget(128_000, 4_000),
        )
        .build();
    let spans = InMemorySpanExporter::default();
    let metrics = InMemoryMetricExporter::default();
    let run = |b: &mut criterion::Bencher<'_>| {
        b.to_async(&rt).iter_custom(|iters| {
            let (store, pipe, template_id, id) = (&store, &pipe, &template_id, &id);
            let (spans, metrics) = (&spans, &metrics);
            async move {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    store.delete(id).await.unwrap();
                    store.fork(template_id, id).await.unwrap();
                    spans.reset();
                    metrics.reset();
                    let n = EXECUTES_PER_FORK.min(iters - done);
                    let start = Instant::now();
                    for _ in 0..n {
                        let out = pipe
                            .execute(id.as_str(), Role::User, "What's my name?")
                            .await
                            .unwrap();
                        black_box(out);
                    }
                    total += start.elapsed();
                    done += n;
                }
                total
            }
        });
    };
    let mut group = c.benchmark_group(GROUP);
    group.bench_function("no subscriber", run);

    let tracers = SdkTracerProvider::builder()
        .with_batch_exporter(spans.clone())
        .build();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(meters.clone());
    statestore_core::telemetry::refresh_instruments();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracers.tracer("bench")));
    {
        let _default = tracing::subscriber::set_default(subscriber);
        group.bench_function("otel layer, exporting", run);
    }
    group.finish();
    tracers.shutdown().unwrap();
    meters.shutdown().unwrap();
}

criterion_group!(benches, telemetry);
criterion_main!(benches);
