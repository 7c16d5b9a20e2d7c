//! Telemetry of one turn, over the wire: spans and metrics exported with
//! OTLP/HTTP to a receiver this example starts on loopback, which decodes
//! them; the span tree it received is printed.
//!
//! ```text
//! cargo run -p statestore --features otel,pipeline --example telemetry
//! ```
//!
//! An application points the same setup at its collector with
//! `OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318` and calls
//! `statestore::telemetry::init()`; the receiver here stands in for the
//! collector (`.endpoint(…)` in code, since the example sets no variables).
#![allow(clippy::print_stdout, reason = "an example prints what it received")]
// The pipeline's futures, nested in `main`'s, are deep for rustc's layout queries.
#![recursion_limit = "256"]

use std::sync::Arc;

use otlp_test_receiver::Receiver;
use statestore::memory::MemoryStore;
use statestore::pipeline::{OfflineProvider, Pipeline};
use statestore::telemetry::Telemetry;
use statestore::{Role, Store};
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The collector: it answers from a thread of its own, so it is there
    // while the guard's drop blocks this runtime.
    let receiver = Receiver::start().await?;

    // Telemetry as an application composes it: the OpenTelemetry layer in
    // its own subscriber (a fmt layer for logs would go next to it).
    let telemetry = Telemetry::from_env()?.endpoint(receiver.endpoint());
    let subscriber = tracing_subscriber::registry().with(telemetry.layer());
    tracing::subscriber::set_global_default(subscriber)?;
    let guard = telemetry.install()?;

    // One turn on a memory store with the offline model.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let pipe = Pipeline::builder(store, Arc::new(OfflineProvider::new())).build();
    let executed = pipe.execute("alice-1", Role::User, "Hi, I'm Alice").await?;
    println!("assistant: {}\n", executed.reply.text());

    // Dropping the guard exports what is pending and returns once it is sent.
    drop(guard);

    let tree = receiver.span_tree();
    println!(
        "spans received by the collector at {}:",
        receiver.endpoint()
    );
    print!("{tree}");
    let execute = receiver.span("execute").ok_or("no execute span arrived")?;
    println!(
        "\nresource: service.name={}",
        execute.service_name().unwrap_or("?")
    );
    // The library's instruments (with feature `otel`), latest export each.
    let mut names: Vec<String> = receiver.metrics().into_iter().map(|m| m.name).collect();
    names.sort();
    names.dedup();
    for name in names {
        if let Some(metric) = receiver.metric(&name) {
            println!(
                "metric {name} ({}): {} points",
                metric.unit,
                metric.points.len()
            );
        }
    }
    let requests = receiver.requests();
    println!(
        "requests: {} (POST {})",
        requests.len(),
        requests
            .iter()
            .map(|r| format!("{} -> {}", r.path, r.status))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if requests.iter().any(|r| r.status != 200) {
        return Err("the receiver refused an export".into());
    }
    Ok(())
}
