//! [`TelemetryGuard`]: what keeps telemetry exporting, and flushes it.

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::OpenError;

/// Keeps telemetry exporting; when dropped, sends what is pending (spans
/// not yet exported, the metrics' last values) and shuts the exporters
/// down. See the [module docs](super) on how long that may block.
///
/// The global providers stay set after the drop, shut down: spans and
/// measurements made later are dropped.
#[derive(Debug)]
#[must_use = "telemetry stops exporting when the guard is dropped"]
pub struct TelemetryGuard {
    url: String,
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    pub(super) fn new(
        url: String,
        tracer: Option<SdkTracerProvider>,
        meter: Option<SdkMeterProvider>,
    ) -> Self {
        TelemetryGuard { url, tracer, meter }
    }

    /// Exports the spans that ended and the metrics now, without shutting
    /// down; blocks until sent.
    ///
    /// # Errors
    ///
    /// [`OpenError::Telemetry`]: an export failed (nothing listening, a
    /// timeout, an error status).
    pub fn force_flush(&self) -> Result<(), OpenError> {
        let traces = self.tracer.as_ref().map(SdkTracerProvider::force_flush);
        let metrics = self.meter.as_ref().map(SdkMeterProvider::force_flush);
        self.outcome("flush", traces, metrics)
    }

    /// Drops the guard, returning what went wrong with the last export
    /// (the drop ignores it).
    ///
    /// # Errors
    ///
    /// [`OpenError::Telemetry`]: the last export or the shutdown failed.
    pub fn shutdown(mut self) -> Result<(), OpenError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), OpenError> {
        // Spans first: their export can record nothing more, metrics can.
        let traces = self.tracer.take().map(|t| t.shutdown());
        let metrics = self.meter.take().map(|m| m.shutdown());
        self.outcome("shutdown", traces, metrics)
    }

    fn outcome(
        &self,
        what: &str,
        traces: Option<OTelSdkResult>,
        metrics: Option<OTelSdkResult>,
    ) -> Result<(), OpenError> {
        let failed: Vec<String> = [("spans", traces), ("metrics", metrics)]
            .into_iter()
            .filter_map(|(signal, result)| match result {
                Some(Err(e)) => Some(format!("{signal}: {e}")),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(OpenError::Telemetry {
            url: self.url.clone(),
            source: format!("{what} failed: {}", failed.join("; ")).into(),
        })
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
