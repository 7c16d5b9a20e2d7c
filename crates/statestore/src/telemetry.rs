//! Telemetry: the spans and metrics of every store operation, model call,
//! tool call and execute (`docs/telemetry.md` lists them all), and, with the
//! `otel` feature, their export to an OpenTelemetry collector over
//! OTLP/HTTP: one call for applications, `init`, configured by the
//! standard `OTEL_*` environment variables.
//!
//! Without `otel`, this module holds what every build has (re-exported from
//! `statestore_core::telemetry`): the [`Traced`] store wrapper that
//! `open` puts around every store, and [`ConversationIds`], how session ids
//! are recorded.
//!
//! The library crates emit their spans through `tracing` and their metrics
//! through the `opentelemetry` API; neither goes anywhere until an
//! application installs an exporter. [`init`] does that for the whole
//! process:
//!
//! - a global `tracing` subscriber (a `tracing_subscriber` registry with a
//!   `tracing-opentelemetry` layer) whose spans a batch processor exports;
//! - the global tracer provider and meter provider of the `opentelemetry`
//!   API, the meters exported by a periodic reader;
//! - both over OTLP/HTTP with protobuf bodies, to `/v1/traces` and
//!   `/v1/metrics` of the collector (gRPC is not built in);
//!
//! and returns a [`TelemetryGuard`] that exports what is pending and shuts
//! both down when dropped. An application that composes its own subscriber
//! (a `fmt` layer for its logs, filters) adds [`Telemetry::layer`] to it and
//! calls [`Telemetry::install`] instead.
//!
//! # Environment
//!
//! | variable | effect | default |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | the collector's base URL: spans go to `<base>/v1/traces`, metrics to `<base>/v1/metrics` | `http://localhost:4318` |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | one signal's full URL, used as is (wins over the base) | |
//! | `OTEL_EXPORTER_OTLP_HEADERS` (and `_TRACES_`/`_METRICS_HEADERS`) | headers sent with every export, `key=value,key2=value2`, values percent-decoded (`Authorization=Bearer%20…`) | |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` (and `_TRACES_`/`_METRICS_TIMEOUT`) | milliseconds one export may take, retries included | 10000 |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION` (and per signal) | `gzip` compresses request bodies | none |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (and per signal) | must be `http/protobuf` when set: another value is an error | `http/protobuf` |
//! | `OTEL_SERVICE_NAME` | the resource's `service.name` | `statestore` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | more resource attributes, `key=value,…` (a `service.name` there counts when `OTEL_SERVICE_NAME` is unset) | |
//! | `OTEL_METRIC_EXPORT_INTERVAL` | milliseconds between metric exports | 60000 |
//! | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | the batch span processor: milliseconds between exports, spans queued (more are dropped), spans per request | 5000, 2048, 512 |
//! | `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER` | `otlp`, or `none` to leave that signal out; another value is an error | `otlp` |
//! | `OTEL_SDK_DISABLED` | `true`: export nothing ([`init`] still succeeds) | `false` |
//!
//! [`Telemetry::endpoint`], [`Telemetry::service_name`],
//! [`Telemetry::timeout`] and [`Telemetry::metric_interval`] set the same
//! in code and win over the environment.
//!
//! # What is exported
//!
//! Spans and their events at level `INFO` and above (the library's own
//! spans are), from every crate but the HTTP and TLS stacks and the
//! exporter itself. Span attributes are the spans' `tracing` fields and
//! `target`; code locations, thread ids and busy/idle times are left out.
//! Metrics are cumulative.
//!
//! # Flushing and blocking
//!
//! Exports run on threads of the SDK, never on the application's runtime.
//! Dropping the [`TelemetryGuard`] blocks the dropping thread until the last
//! spans and metrics are sent: as long as the collector takes to answer,
//! at most about 5 s for each signal (the SDK's shutdown limits) — a
//! collector that is down costs the retries of one export (under 2 s).
//! Both [`init`] and the guard's drop are safe inside an async runtime
//! (`#[tokio::main]`), but the drop blocks that runtime's thread meanwhile:
//! a collector served by the same single-threaded runtime would not answer
//! in time.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 OTEL_SERVICE_NAME=chat-api
//! let _telemetry = statestore::telemetry::init()?;
//! // … serve; spans and metrics are exported until `_telemetry` is dropped …
//! # Ok(())
//! # }
//! ```

pub use statestore_core::telemetry::*;

#[cfg(feature = "otel")]
mod client;
#[cfg(feature = "otel")]
mod guard;
#[cfg(feature = "otel")]
mod otel;

#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub use otel::{Telemetry, TelemetryGuard, init};
