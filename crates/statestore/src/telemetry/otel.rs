//! The OTLP/HTTP export behind `statestore::telemetry` (feature `otel`):
//! see the [module docs](super).

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use statestore_core::BoxError;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::client::BlockingClient;
pub use super::guard::TelemetryGuard;
use crate::OpenError;

/// The service name when neither the builder nor the environment gives one.
const DEFAULT_SERVICE_NAME: &str = "statestore";
/// Where OTLP/HTTP goes when nothing says otherwise (the specification's).
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
/// One export's time when nothing says otherwise (the specification's).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Targets whose spans and events are never exported: the HTTP and TLS
/// stacks the exporter itself sends with, and the exporter.
const QUIET_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

use statestore_core::telemetry::refresh_instruments;

/// Sets up telemetry for the whole process from the environment: spans
/// from `tracing` and metrics from the `opentelemetry` API, exported over
/// OTLP/HTTP (see the [module docs](super) for the variables).
///
/// The same as `Telemetry::from_env()?.init()`: installs a global `tracing`
/// subscriber (a registry with the OpenTelemetry layer only: to print logs
/// too, compose your own with [`Telemetry::layer`]) and the global tracer
/// and meter providers. Keep the returned guard alive for as long as the
/// process should export; dropping it sends what is pending.
///
/// # Errors
///
/// [`OpenError::Telemetry`]: a variable has a value this build does not
/// support (a protocol other than `http/protobuf`, an exporter other than
/// `otlp` or `none`), an endpoint is not a URL, or a global `tracing`
/// subscriber is already set.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let _telemetry = statestore::telemetry::init()?;
/// tracing::info!("exported as a span event when inside a span");
/// # Ok(())
/// # }
/// ```
pub fn init() -> Result<TelemetryGuard, OpenError> {
    Telemetry::from_env()?.init()
}

/// The telemetry setup: read from the environment by
/// [`Telemetry::from_env`], adjusted in code, then installed by
/// [`Telemetry::init`], or by [`Telemetry::layer`] and
/// [`Telemetry::install`] for an application's own subscriber.
///
/// The exporters are built when [`Telemetry::layer`] is first called (or
/// by `install`): set the endpoint and the rest before that.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tracing_subscriber::layer::SubscriberExt;
/// use statestore::telemetry::Telemetry;
///
/// let telemetry = Telemetry::from_env()?.service_name("chat-api");
/// let subscriber = tracing_subscriber::registry().with(telemetry.layer());
/// // .with(a fmt layer, filters, …)
/// tracing::subscriber::set_global_default(subscriber)?;
/// let _guard = telemetry.install()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Telemetry {
    endpoint: Option<String>,
    service_name: Option<String>,
    timeout: Option<Duration>,
    metric_interval: Option<Duration>,
    traces: bool,
    metrics: bool,
    built: OnceLock<Result<Providers, BoxError>>,
}

/// The providers, once built; `None` where the signal is off.
#[derive(Debug)]
struct Providers {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// The setup the environment describes (see the [module docs](super)).
    /// Endpoints, headers, timeouts and resource attributes are read when
    /// the exporters are built; the switches and the protocol now.
    ///
    /// # Errors
    ///
    /// [`OpenError::Telemetry`]: `OTEL_EXPORTER_OTLP_PROTOCOL` (or a
    /// signal's) is set to something other than `http/protobuf`, or
    /// `OTEL_TRACES_EXPORTER`/`OTEL_METRICS_EXPORTER` to something other
    /// than `otlp` or `none`.
    pub fn from_env() -> Result<Self, OpenError> {
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut telemetry = Telemetry {
            endpoint: None,
            service_name: None,
            timeout: None,
            metric_interval: None,
            traces: !disabled,
            metrics: !disabled,
            built: OnceLock::new(),
        };
        let fail = |message: String| OpenError::Telemetry {
            url: redacted_default_target(),
            source: message.into(),
        };
        for var in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ] {
            if let Some(value) = env(var).filter(|v| !v.eq_ignore_ascii_case("http/protobuf")) {
                return Err(fail(format!(
                    "{var}={value}: this build exports http/protobuf only"
                )));
            }
        }
        for (var, on) in [
            ("OTEL_TRACES_EXPORTER", &mut telemetry.traces),
            ("OTEL_METRICS_EXPORTER", &mut telemetry.metrics),
        ] {
            match env(var).map(|v| v.to_ascii_lowercase()).as_deref() {
                None | Some("otlp") => {}
                Some("none") => *on = false,
                Some(other) => {
                    return Err(fail(format!(
                        "{var}={other}: only `otlp` and `none` are supported"
                    )));
                }
            }
        }
        Ok(telemetry)
    }

    /// The collector's base URL (`http://127.0.0.1:4318`): spans go to
    /// `<url>/v1/traces`, metrics to `<url>/v1/metrics`. Wins over every
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variable.
    #[must_use]
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The resource's `service.name`. Wins over `OTEL_SERVICE_NAME` and
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// How long one export may take, connecting and retries included. Wins
    /// over `OTEL_EXPORTER_OTLP_TIMEOUT`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How often metrics are exported. Wins over
    /// `OTEL_METRIC_EXPORT_INTERVAL`.
    #[must_use]
    pub fn metric_interval(mut self, interval: Duration) -> Self {
        self.metric_interval = Some(interval);
        self
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans for
    /// this setup's exporter, to add to an application's own subscriber;
    /// then call [`Telemetry::install`]. It has its own filter: spans and
    /// events at `INFO` and above, none of the HTTP stack's.
    ///
    /// Builds the exporters on its first call. If they cannot be built, or
    /// traces are off, the layer does nothing, and `install` reports why.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let tracer = match self.built.get_or_init(|| self.build()) {
            Ok(providers) => providers.tracer.as_ref().map(|provider| {
                provider.tracer_with_scope(
                    InstrumentationScope::builder("statestore")
                        .with_version(env!("CARGO_PKG_VERSION"))
                        .build(),
                )
            }),
            Err(_) => None,
        };
        let layer = tracer.map(|tracer| {
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
        });
        layer.with_filter(tracing_subscriber::filter::filter_fn(exported))
    }

    /// Sets the global tracer and meter providers of the `opentelemetry`
    /// API (the `tracing` subscriber is the application's: see
    /// [`Telemetry::layer`]) and returns the guard that flushes them.
    ///
    /// # Errors
    ///
    /// [`OpenError::Telemetry`]: an exporter could not be built (an
    /// endpoint is not a URL, a compression this build lacks).
    pub fn install(mut self) -> Result<TelemetryGuard, OpenError> {
        let url = self.target();
        let built = self.built.take().unwrap_or_else(|| self.build());
        let providers = built.map_err(|source| OpenError::Telemetry {
            url: url.clone(),
            source,
        })?;
        if let Some(tracer) = &providers.tracer {
            opentelemetry::global::set_tracer_provider(tracer.clone());
        }
        if let Some(meter) = &providers.meter {
            opentelemetry::global::set_meter_provider(meter.clone());
            // Instruments made before now belong to the no-op provider.
            refresh_instruments();
        }
        Ok(TelemetryGuard::new(url, providers.tracer, providers.meter))
    }

    /// Installs a global `tracing` subscriber (a registry with
    /// [`Telemetry::layer`]), then [`Telemetry::install`]s: what [`init`]
    /// does, with this setup.
    ///
    /// # Errors
    ///
    /// As [`Telemetry::install`], and [`OpenError::Telemetry`] when a
    /// global `tracing` subscriber is already set.
    pub fn init(mut self) -> Result<TelemetryGuard, OpenError> {
        use tracing_subscriber::layer::SubscriberExt;
        // Build first: a setup that cannot export sets no subscriber.
        let built = self.built.take().unwrap_or_else(|| self.build());
        match built {
            Ok(providers) => {
                let _ = self.built.set(Ok(providers));
            }
            Err(source) => {
                return Err(OpenError::Telemetry {
                    url: self.target(),
                    source,
                });
            }
        }
        let subscriber = tracing_subscriber::registry().with(self.layer());
        tracing::subscriber::set_global_default(subscriber).map_err(|e| OpenError::Telemetry {
            url: self.target(),
            source: Box::new(e),
        })?;
        self.install()
    }

    /// The endpoint errors name: the builder's, a signal's, the base, or
    /// the default; redacted.
    fn target(&self) -> String {
        match &self.endpoint {
            Some(url) => crate::redact_url(url),
            None => redacted_default_target(),
        }
    }

    /// The exporters and providers of this setup.
    fn build(&self) -> Result<Providers, BoxError> {
        let resource = self.resource();
        let tracer = if self.traces {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_http_client(BlockingClient::new(
                    self.timeout_of("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
                ));
            if let Some(base) = &self.endpoint {
                exporter = exporter.with_endpoint(signal_url(base, "v1/traces"));
            }
            if let Some(timeout) = self.timeout {
                exporter = exporter.with_timeout(timeout);
            }
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter.build()?)
                    .with_resource(resource.clone())
                    .build(),
            )
        } else {
            None
        };
        let meter = if self.metrics {
            let mut exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_http_client(BlockingClient::new(
                    self.timeout_of("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"),
                ));
            if let Some(base) = &self.endpoint {
                exporter = exporter.with_endpoint(signal_url(base, "v1/metrics"));
            }
            if let Some(timeout) = self.timeout {
                exporter = exporter.with_timeout(timeout);
            }
            let mut reader = PeriodicReader::builder(exporter.build()?);
            if let Some(interval) = self.metric_interval {
                reader = reader.with_interval(interval);
            }
            Some(
                SdkMeterProvider::builder()
                    .with_reader(reader.build())
                    .with_resource(resource)
                    .build(),
            )
        } else {
            None
        };
        Ok(Providers { tracer, meter })
    }

    /// The SDK's detected resource (`OTEL_RESOURCE_ATTRIBUTES`, the SDK's
    /// own attributes) with `service.name` decided here: the builder's,
    /// `OTEL_SERVICE_NAME`, the one in `OTEL_RESOURCE_ATTRIBUTES`, or
    /// `statestore` (the SDK's default would be `unknown_service:<exe>`).
    fn resource(&self) -> Resource {
        let name = self
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .or_else(|| {
                EnvResourceDetector::new()
                    .detect()
                    .get(&opentelemetry::Key::new("service.name"))
                    .map(|v| v.to_string())
            })
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        Resource::builder().with_service_name(name).build()
    }

    /// The client's timeout for one signal: the builder's, the signal's
    /// variable, `OTEL_EXPORTER_OTLP_TIMEOUT`, or 10 s (as the exporter
    /// resolves its own deadline).
    fn timeout_of(&self, signal_var: &str) -> Duration {
        let millis = |var: &str| env(var).and_then(|v| v.trim().parse::<u64>().ok());
        self.timeout
            .or_else(|| millis(signal_var).map(Duration::from_millis))
            .or_else(|| millis("OTEL_EXPORTER_OTLP_TIMEOUT").map(Duration::from_millis))
            .unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// Whether a span or event is exported (see [`Telemetry::layer`]).
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    exported_at(meta.target(), *meta.level())
}

fn exported_at(target: &str, level: tracing::Level) -> bool {
    let quiet = QUIET_TARGETS.iter().any(|q| {
        target
            .strip_prefix(q)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    !quiet && level <= tracing::Level::INFO
}

/// `base` with `path` appended, one `/` between them.
fn signal_url(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

/// A variable's value, unset when empty or not Unicode.
fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// The endpoint the environment names (the traces one, the base one, or
/// the default), redacted, for errors.
fn redacted_default_target() -> String {
    let url = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    crate::redact_url(&url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_urls_join_with_one_slash() {
        assert_eq!(
            signal_url("http://127.0.0.1:4318", "v1/traces"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            signal_url("http://c:4318/otlp/", "v1/metrics"),
            "http://c:4318/otlp/v1/metrics"
        );
    }

    #[test]
    fn the_http_stack_is_not_exported() {
        use tracing::Level;
        let meta = |target: &str, level: Level| exported_at(target, level);
        assert!(meta("pipeline::pipeline", Level::INFO));
        assert!(meta("statestore_redis::store", Level::WARN));
        assert!(!meta("pipeline::pipeline", Level::DEBUG));
        assert!(!meta("h2::proto", Level::INFO));
        assert!(!meta("hyper", Level::ERROR));
        assert!(
            meta("hyperloop", Level::INFO),
            "a prefix of a name is not the name"
        );
    }
}
