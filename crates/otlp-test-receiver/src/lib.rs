#![doc = include_str!("../README.md")]

mod http;
mod received;
mod tree;
mod value;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use http::ReceivedRequest;
/// The OTLP protobuf types, as decoded (`opentelemetry-proto`'s `tonic`
/// messages), for tests that want more than the flattened views.
pub use opentelemetry_proto;
pub use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
pub use received::{
    DataPoint, MetricKind, PointValue, ReceivedEvent, ReceivedMetric, ReceivedSpan,
};
pub use value::Value;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// An OTLP/HTTP protobuf receiver on `127.0.0.1` and a free port, serving
/// from its own thread until dropped. See the [crate docs](crate).
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: http::Shared,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver; it is listening when this returns.
    ///
    /// It runs on a thread of its own with its own runtime, not on the
    /// caller's: a caller that blocks its runtime (a telemetry guard that
    /// flushes on drop, a blocking HTTP client) still gets its requests
    /// answered.
    ///
    /// # Errors
    ///
    /// Binding the port, or starting the thread or its runtime, failed.
    pub async fn start() -> std::io::Result<Receiver> {
        Self::start_blocking()
    }

    /// [`Receiver::start`] for synchronous code (it blocks for as long as
    /// binding a port and starting a thread take).
    ///
    /// # Errors
    ///
    /// As [`Receiver::start`].
    pub fn start_blocking() -> std::io::Result<Receiver> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared: http::Shared = Arc::new(Mutex::new(http::State::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let serving = Arc::clone(&shared);
        // The runtime is built, run and dropped on this thread only: a
        // runtime dropped inside the caller's async context would panic.
        let thread = std::thread::Builder::new()
            .name(format!("otlp-test-receiver:{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build();
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let _ = ready_tx.send(Ok(()));
                            http::serve(listener, serving, stop_rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Receiver {
                addr,
                shared,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the receiver's thread died starting")),
        }
    }

    /// The base URL to export to, `http://127.0.0.1:PORT` (what
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` takes; exporters append `/v1/traces`
    /// and `/v1/metrics`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let state = http::lock(&self.shared);
        let mut out = Vec::new();
        for request in &state.traces {
            received::spans(request, &mut out);
        }
        out
    }

    /// The first span received named `name`.
    pub fn span(&self, name: &str) -> Option<ReceivedSpan> {
        self.spans().into_iter().find(|s| s.name == name)
    }

    /// Every metric of every export so far, in arrival order. Cumulative
    /// metrics are sent again at each export: see [`Receiver::metric`].
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        let state = http::lock(&self.shared);
        let mut out = Vec::new();
        for request in &state.metrics {
            received::metrics(request, &mut out);
        }
        out
    }

    /// The metric named `name` from the latest export that had it.
    pub fn metric(&self, name: &str) -> Option<ReceivedMetric> {
        self.metrics().into_iter().rev().find(|m| m.name == name)
    }

    /// The trace export requests as decoded.
    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        http::lock(&self.shared).traces.clone()
    }

    /// The metric export requests as decoded.
    pub fn metric_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        http::lock(&self.shared).metrics.clone()
    }

    /// Every HTTP request received, with its headers and the status it got
    /// (also those refused: 404, 400, 415, …).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        http::lock(&self.shared).requests.clone()
    }

    /// Forgets everything received so far.
    pub fn clear(&self) {
        let mut state = http::lock(&self.shared);
        state.traces.clear();
        state.metrics.clear();
        state.requests.clear();
    }

    /// Polls `done` every 10 ms until it returns true (then true) or
    /// `timeout` passes (then false). It blocks the calling thread, which
    /// is fine in async tests too: the receiver serves from its own thread.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// use std::time::Duration;
    /// let receiver = otlp_test_receiver::Receiver::start_blocking()?;
    /// // … export to receiver.endpoint() …
    /// assert!(receiver.wait_for(|r| r.span("execute").is_some(), Duration::from_secs(5)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for(&self, mut done: impl FnMut(&Receiver) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The spans received so far as an indented tree, one line per span:
    /// `name  key=value …` with all of its attributes (sorted by key),
    /// children two spaces under their parent, siblings and roots in start
    /// order; `!error: message` ends the line of a span whose status is
    /// Error.
    ///
    /// ```text
    /// execute  provider=offline session=3f1c…
    ///   chat offline  gen_ai.usage.input_tokens=12
    /// ```
    pub fn span_tree(&self) -> String {
        tree::render(&self.spans(), tree::Shown::All)
    }

    /// [`Receiver::span_tree`] showing only the attributes in `keys`, in
    /// that order (for output that stays stable as attributes are added).
    pub fn span_tree_with(&self, keys: &[&str]) -> String {
        tree::render(&self.spans(), tree::Shown::Only(keys))
    }
}

impl Drop for Receiver {
    /// Stops serving and joins the thread (connections in flight are cut).
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
