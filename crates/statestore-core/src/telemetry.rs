//! Telemetry: the spans and metrics of every store operation, named after
//! the OpenTelemetry semantic conventions, version [`SEMCONV_VERSION`]
//! (database spans and metrics, and the GenAI conventions the `pipeline`
//! crate follows for model and tool calls).
//!
//! - **Spans go through [`tracing`] only.** No library crate depends on an
//!   OpenTelemetry SDK: an application installs a subscriber (the facade's
//!   `statestore::telemetry::init()`, or its own with
//!   `tracing-opentelemetry`) and the spans become OpenTelemetry spans.
//!   Attribute names are the conventions' own (`db.system.name`,
//!   `gen_ai.conversation.id`, …); `otel.name` carries the span name the
//!   conventions ask for, `otel.status_code` the failure.
//! - **Metrics go through the OpenTelemetry metrics API** (the `metrics`
//!   feature: the `opentelemetry` API crate, never the SDK). We chose the
//!   API over a facade such as `metrics` with a bridge because the
//!   conventions fix each instrument's unit, kind and bucket boundaries,
//!   which only the API can state; a bridge would drop them. With no meter
//!   provider installed the API's no-op costs a few nanoseconds, and
//!   without the feature the recording calls are empty.
//! - **Session ids are personal data**: `gen_ai.conversation.id` is
//!   recorded as [`ConversationIds`] says — by default a keyed hash when
//!   an operator key is configured, otherwise a short non-reversible tag.
//!   Message text is never recorded here.
//!
//! Every store gets its spans from one wrapper, [`Traced`], which the
//! pipeline and the facade's `open` put around the store they are given
//! ([`traced`] never wraps twice). Each span is named after the operation
//! (`db.operation.name`: `load`, `load_recent`, `append`, …) and records:
//!
//! | attribute | value |
//! |---|---|
//! | `db.system.name` | [`Store::system_name`](crate::Store::system_name): `memory`, `sqlite`, `redis`, `postgresql` |
//! | `db.operation.name` | the operation |
//! | `gen_ai.conversation.id` | the session, per [`ConversationIds`] (absent for operations on many sessions) |
//! | `statestore.outcome` | `found`, `not_found`, `applied`, `replayed`, `conflict`, `ok` or `error` |
//! | `error.type` | [`Error::kind`](crate::Error::kind) of a failure |
//! | `statestore.write_outcome` | a failed write's [`WriteOutcome`](crate::WriteOutcome) |
//!
//! # Metrics
//!
//! | instrument | kind, unit | attributes |
//! |---|---|---|
//! | `db.client.operation.duration` | histogram, `s` | `db.system.name`, `db.operation.name`, `error.type` |
//! | `gen_ai.client.operation.duration` | histogram, `s` | `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`, `error.type` |
//! | `gen_ai.client.token.usage` | histogram, `{token}` | as above (no `error.type`), and `gen_ai.token.type` (`input`, `output`) |
//! | `statestore.conflicts` | counter, `{conflict}` | `db.system.name`, `db.operation.name` |
//! | `statestore.replays` | counter, `{turn}` | `statestore.replay.source` |
//! | `statestore.resumed_turns` | counter, `{turn}` | |
//! | `statestore.retries` | counter, `{retry}` | `statestore.retry.cause` |
//! | `statestore.corrupt_sessions` | counter, `{session}` | `db.system.name` |
//! | `statestore.evictions` | counter, `{session}` | `db.system.name` |
//!
//! Instruments are made from the global meter provider the first time one
//! is used; after installing a provider later, call [`refresh_instruments`].

mod ids;
mod metrics;
mod traced;

pub use ids::{ConversationIds, HashKey, TELEMETRY_KEY_ENV, set_conversation_ids};
pub use metrics::{
    Count, ModelCall, count, record_model_call, record_store_op, refresh_instruments,
};
pub use traced::{Traced, traced};

/// The version of the OpenTelemetry semantic conventions (GenAI and
/// database) whose names the spans and metrics follow. The GenAI
/// conventions are still marked "development" there: a later version may
/// rename attributes, and this constant says which names we emit.
pub const SEMCONV_VERSION: &str = "1.42.0";
