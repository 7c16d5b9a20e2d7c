//! The metrics, through the OpenTelemetry metrics API (feature `metrics`;
//! without it every call here is empty).
//!
//! The instruments are listed in the [module documentation](crate::telemetry#metrics).
//!
//! Instruments are made from the global meter provider the first time one
//! is used. An application that installs its provider later (the facade's
//! `telemetry::init` does this for you) calls [`refresh_instruments`].

use std::time::Duration;

/// A counter to add one to (see the [metrics table](crate::telemetry#metrics)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Count<'a> {
    /// A write refused by its [`Expect`](crate::Expect), by the store
    /// (`system`) and operation.
    Conflict {
        /// `db.system.name`.
        system: &'a str,
        /// `db.operation.name`.
        operation: &'a str,
    },
    /// A turn answered from the store instead of the model: `source` is
    /// `lookup` (found at load) or `append` (the keyed append found it).
    Replay {
        /// `statestore.replay.source`.
        source: &'a str,
    },
    /// A turn that went on from the tool rounds an earlier run recorded.
    Resumed,
    /// A retry, by cause: `conflict` (a concurrent turn landed first),
    /// `rate_limited`, `server_error`, `timeout`, `connection`,
    /// `stream_broken` (provider retries).
    Retry {
        /// `statestore.retry.cause`.
        cause: &'a str,
    },
    /// A session refused as corrupt (or undecryptable).
    Corrupt {
        /// `db.system.name`.
        system: &'a str,
    },
    /// A session found partly evicted by the server.
    Eviction {
        /// `db.system.name`.
        system: &'a str,
    },
}

/// One model call, for `gen_ai.client.operation.duration` and
/// `gen_ai.client.token.usage`.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ModelCall<'a> {
    /// `gen_ai.operation.name` (`chat`).
    pub operation: &'a str,
    /// `gen_ai.provider.name`.
    pub provider: &'a str,
    /// `gen_ai.request.model`, when known.
    pub request_model: Option<&'a str>,
    /// `gen_ai.response.model`, when the provider said.
    pub response_model: Option<&'a str>,
    /// `error.type` of a failed call.
    pub error_type: Option<&'a str>,
    /// How long the call took.
    pub elapsed: Duration,
    /// Input and output tokens of a successful call.
    pub tokens: Option<(u64, u64)>,
}

impl<'a> ModelCall<'a> {
    /// A `chat` call to `provider`.
    #[must_use]
    pub fn chat(provider: &'a str, request_model: Option<&'a str>, elapsed: Duration) -> Self {
        Self {
            operation: "chat",
            provider,
            request_model,
            elapsed,
            ..Self::default()
        }
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use std::sync::{Arc, RwLock};

    use opentelemetry::KeyValue;
    use opentelemetry::metrics::{Counter, Histogram, Meter};

    use super::{Count, Duration, ModelCall};

    pub(super) struct Instruments {
        db_duration: Histogram<f64>,
        model_duration: Histogram<f64>,
        token_usage: Histogram<u64>,
        conflicts: Counter<u64>,
        replays: Counter<u64>,
        resumed: Counter<u64>,
        retries: Counter<u64>,
        corrupt: Counter<u64>,
        evictions: Counter<u64>,
    }

    fn counter(
        meter: &Meter,
        name: &'static str,
        unit: &'static str,
        what: &'static str,
    ) -> Counter<u64> {
        meter
            .u64_counter(name)
            .with_unit(unit)
            .with_description(what)
            .build()
    }

    impl Instruments {
        fn new(meter: &Meter) -> Self {
            Self {
                db_duration: meter
                    .f64_histogram("db.client.operation.duration")
                    .with_unit("s")
                    .with_description("Duration of database client operations.")
                    .with_boundaries(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
                    .build(),
                model_duration: meter
                    .f64_histogram("gen_ai.client.operation.duration")
                    .with_unit("s")
                    .with_description("GenAI operation duration.")
                    .with_boundaries(vec![
                        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                        40.96, 81.92,
                    ])
                    .build(),
                token_usage: meter
                    .u64_histogram("gen_ai.client.token.usage")
                    .with_unit("{token}")
                    .with_description("Number of input and output tokens used.")
                    .with_boundaries(vec![
                        1.0,
                        4.0,
                        16.0,
                        64.0,
                        256.0,
                        1024.0,
                        4096.0,
                        16384.0,
                        65536.0,
                        262_144.0,
                        1_048_576.0,
                        4_194_304.0,
                        16_777_216.0,
                        67_108_864.0,
                    ])
                    .build(),
                conflicts: counter(
                    meter,
                    "statestore.conflicts",
                    "{conflict}",
                    "Writes refused because the session changed.",
                ),
                replays: counter(
                    meter,
                    "statestore.replays",
                    "{turn}",
                    "Turns answered from the store, not the model.",
                ),
                resumed: counter(
                    meter,
                    "statestore.resumed_turns",
                    "{turn}",
                    "Turns resumed from their recorded tool rounds.",
                ),
                retries: counter(meter, "statestore.retries", "{retry}", "Retries, by cause."),
                corrupt: counter(
                    meter,
                    "statestore.corrupt_sessions",
                    "{session}",
                    "Sessions refused as corrupt or undecryptable.",
                ),
                evictions: counter(
                    meter,
                    "statestore.evictions",
                    "{session}",
                    "Sessions found partly evicted by the server.",
                ),
            }
        }
    }

    static INSTRUMENTS: RwLock<Option<Arc<Instruments>>> = RwLock::new(None);

    pub(super) fn refresh() {
        let made = Arc::new(Instruments::new(&opentelemetry::global::meter(
            "statestore",
        )));
        *INSTRUMENTS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(made);
    }

    fn get() -> Arc<Instruments> {
        if let Some(i) = INSTRUMENTS
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            return Arc::clone(i);
        }
        let mut slot = INSTRUMENTS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(slot.get_or_insert_with(|| {
            Arc::new(Instruments::new(&opentelemetry::global::meter(
                "statestore",
            )))
        }))
    }

    fn kv(key: &'static str, value: &str) -> KeyValue {
        KeyValue::new(key, value.to_owned())
    }

    pub(super) fn store_op(
        system: &'static str,
        operation: &'static str,
        error_type: Option<&'static str>,
        elapsed: Duration,
    ) {
        let mut attrs = vec![
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", operation),
        ];
        if let Some(e) = error_type {
            attrs.push(KeyValue::new("error.type", e));
        }
        get().db_duration.record(elapsed.as_secs_f64(), &attrs);
    }

    pub(super) fn model_call(call: &ModelCall<'_>) {
        let mut attrs = vec![
            kv("gen_ai.operation.name", call.operation),
            kv("gen_ai.provider.name", call.provider),
        ];
        if let Some(m) = call.request_model {
            attrs.push(kv("gen_ai.request.model", m));
        }
        if let Some(m) = call.response_model {
            attrs.push(kv("gen_ai.response.model", m));
        }
        let instruments = get();
        if let Some((input, output)) = call.tokens {
            for (kind, n) in [("input", input), ("output", output)] {
                attrs.push(KeyValue::new("gen_ai.token.type", kind));
                instruments.token_usage.record(n, &attrs);
                attrs.pop();
            }
        }
        if let Some(e) = call.error_type {
            attrs.push(kv("error.type", e));
        }
        instruments
            .model_duration
            .record(call.elapsed.as_secs_f64(), &attrs);
    }

    pub(super) fn count(what: Count<'_>) {
        let i = get();
        match what {
            Count::Conflict { system, operation } => i.conflicts.add(
                1,
                &[
                    kv("db.system.name", system),
                    kv("db.operation.name", operation),
                ],
            ),
            Count::Replay { source } => i.replays.add(1, &[kv("statestore.replay.source", source)]),
            Count::Resumed => i.resumed.add(1, &[]),
            Count::Retry { cause } => i.retries.add(1, &[kv("statestore.retry.cause", cause)]),
            Count::Corrupt { system } => i.corrupt.add(1, &[kv("db.system.name", system)]),
            Count::Eviction { system } => i.evictions.add(1, &[kv("db.system.name", system)]),
        }
    }
}

/// Makes the instruments again from the current global meter provider:
/// call it after installing one (`statestore::telemetry::init` does),
/// since instruments made from the no-op provider stay no-ops.
pub fn refresh_instruments() {
    #[cfg(feature = "metrics")]
    imp::refresh();
}

/// Records one store operation in `db.client.operation.duration`.
pub fn record_store_op(
    system: &'static str,
    operation: &'static str,
    error_type: Option<&'static str>,
    elapsed: Duration,
) {
    #[cfg(feature = "metrics")]
    imp::store_op(system, operation, error_type, elapsed);
    #[cfg(not(feature = "metrics"))]
    let _ = (system, operation, error_type, elapsed);
}

/// Records one model call in `gen_ai.client.operation.duration` and, when
/// it succeeded, `gen_ai.client.token.usage`.
pub fn record_model_call(call: &ModelCall<'_>) {
    #[cfg(feature = "metrics")]
    imp::model_call(call);
    #[cfg(not(feature = "metrics"))]
    let _ = call;
}

/// Adds one to a counter.
pub fn count(what: Count<'_>) {
    #[cfg(feature = "metrics")]
    imp::count(what);
    #[cfg(not(feature = "metrics"))]
    let _ = what;
}
