//! The decoded requests, flattened: one [`ReceivedSpan`] per span and one
//! [`ReceivedMetric`] per metric, each carrying its resource's attributes.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, NumberDataPoint, metric, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use crate::value::{Value, attributes, hex};

/// One span as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The span's name (`execute`, `chat gpt-4o`, …).
    pub name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id in hex, `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Internal, client, server, …
    pub kind: SpanKind,
    /// Unix time in nanoseconds.
    pub start_unix_nanos: u64,
    /// Unix time in nanoseconds.
    pub end_unix_nanos: u64,
    /// Unset, Ok or Error.
    pub status: StatusCode,
    /// The status's description (set with Error).
    pub status_message: String,
    /// The span's attributes.
    pub attributes: BTreeMap<String, Value>,
    /// The span's events, in order.
    pub events: Vec<ReceivedEvent>,
    /// The attributes of the resource that sent it (`service.name`, …).
    pub resource: BTreeMap<String, Value>,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl ReceivedSpan {
    /// The attribute `key`, if the span has it.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// The resource's `service.name`.
    pub fn service_name(&self) -> Option<&str> {
        self.resource.get("service.name").and_then(Value::as_str)
    }
}

/// One event of a span (a `tracing` event inside a span arrives as one).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The event's name (a `tracing` event's message).
    pub name: String,
    /// Unix time in nanoseconds.
    pub unix_nanos: u64,
    /// The event's attributes.
    pub attributes: BTreeMap<String, Value>,
}

/// One metric of one export: its points as of that export.
///
/// Exporters send cumulative metrics again at every export; the latest of a
/// name is what [`Receiver::metric`](crate::Receiver::metric) returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetric {
    /// The instrument's name.
    pub name: String,
    /// The instrument's description.
    pub description: String,
    /// The unit (`s`, `{token}`, …).
    pub unit: String,
    /// What kind of aggregation the points are.
    pub kind: MetricKind,
    /// Cumulative or delta (sums and histograms), `Unspecified` for gauges.
    pub temporality: AggregationTemporality,
    /// One point per attribute set.
    pub points: Vec<DataPoint>,
    /// The attributes of the resource that sent it.
    pub resource: BTreeMap<String, Value>,
    /// The meter's (instrumentation scope's) name.
    pub scope: String,
}

impl ReceivedMetric {
    /// The point whose attributes include all of `attrs`.
    pub fn point(&self, attrs: &[(&str, &str)]) -> Option<&DataPoint> {
        self.points.iter().find(|p| {
            attrs
                .iter()
                .all(|(k, v)| p.attributes.get(*k) == Some(&Value::String((*v).into())))
        })
    }
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A last value.
    Gauge,
    /// A sum: a counter when monotonic, an up-down counter otherwise.
    Sum {
        /// Whether it only goes up.
        monotonic: bool,
    },
    /// Explicit-bucket histogram.
    Histogram,
    /// Exponential-bucket histogram.
    ExponentialHistogram,
    /// Quantile summary (legacy).
    Summary,
    /// No data.
    Empty,
}

/// One data point: its attributes and value.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    /// The point's attributes.
    pub attributes: BTreeMap<String, Value>,
    /// Unix time in nanoseconds.
    pub unix_nanos: u64,
    /// The value.
    pub value: PointValue,
}

/// A data point's value.
#[derive(Debug, Clone, PartialEq)]
pub enum PointValue {
    /// A sum or gauge of integers.
    Int(i64),
    /// A sum or gauge of doubles.
    Double(f64),
    /// A histogram (explicit or exponential buckets) or summary: how many
    /// values and their sum.
    Histogram {
        /// How many values were recorded.
        count: u64,
        /// Their sum, when sent.
        sum: Option<f64>,
        /// The smallest, when sent.
        min: Option<f64>,
        /// The largest, when sent.
        max: Option<f64>,
    },
    /// A point with no value.
    Empty,
}

impl PointValue {
    /// The number of a sum or gauge, or the sum of a histogram.
    #[allow(
        clippy::cast_precision_loss,
        reason = "test values; an approximate comparison is what is asked"
    )]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PointValue::Int(i) => Some(*i as f64),
            PointValue::Double(d) => Some(*d),
            PointValue::Histogram { sum, .. } => *sum,
            PointValue::Empty => None,
        }
    }

    /// A histogram's count.
    pub fn count(&self) -> Option<u64> {
        match self {
            PointValue::Histogram { count, .. } => Some(*count),
            _ => None,
        }
    }
}

/// Every span of `request`, in the order sent.
pub(crate) fn spans(request: &ExportTraceServiceRequest, out: &mut Vec<ReceivedSpan>) {
    for rs in &request.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope = ss
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for span in &ss.spans {
                let status = span.status.clone().unwrap_or_default();
                out.push(ReceivedSpan {
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex(&span.parent_span_id)),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    status: StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset),
                    status_message: status.message,
                    attributes: attributes(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| ReceivedEvent {
                            name: e.name.clone(),
                            unix_nanos: e.time_unix_nano,
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
}

/// Every metric of `request`, in the order sent.
pub(crate) fn metrics(request: &ExportMetricsServiceRequest, out: &mut Vec<ReceivedMetric>) {
    for rm in &request.resource_metrics {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for sm in &rm.scope_metrics {
            let scope = sm
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for m in &sm.metrics {
                let (kind, temporality, points) = data(m.data.as_ref());
                out.push(ReceivedMetric {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    unit: m.unit.clone(),
                    kind,
                    temporality: AggregationTemporality::try_from(temporality)
                        .unwrap_or(AggregationTemporality::Unspecified),
                    points,
                    resource: resource.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
}

/// A histogram point (plain or exponential: the same fields are kept).
fn histogram(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    unix_nanos: u64,
    count: u64,
    [sum, min, max]: [Option<f64>; 3],
) -> DataPoint {
    DataPoint {
        attributes: attributes(attrs),
        unix_nanos,
        value: PointValue::Histogram {
            count,
            sum,
            min,
            max,
        },
    }
}

fn data(data: Option<&metric::Data>) -> (MetricKind, i32, Vec<DataPoint>) {
    use metric::Data;
    let number = |points: &[NumberDataPoint]| -> Vec<DataPoint> {
        points
            .iter()
            .map(|p| DataPoint {
                attributes: attributes(&p.attributes),
                unix_nanos: p.time_unix_nano,
                value: match p.value {
                    Some(number_data_point::Value::AsInt(i)) => PointValue::Int(i),
                    Some(number_data_point::Value::AsDouble(d)) => PointValue::Double(d),
                    None => PointValue::Empty,
                },
            })
            .collect()
    };
    match data {
        Some(Data::Gauge(g)) => (MetricKind::Gauge, 0, number(&g.data_points)),
        Some(Data::Sum(s)) => (
            MetricKind::Sum {
                monotonic: s.is_monotonic,
            },
            s.aggregation_temporality,
            number(&s.data_points),
        ),
        Some(Data::Histogram(h)) => (
            MetricKind::Histogram,
            h.aggregation_temporality,
            h.data_points
                .iter()
                .map(|p| {
                    histogram(
                        &p.attributes,
                        p.time_unix_nano,
                        p.count,
                        [p.sum, p.min, p.max],
                    )
                })
                .collect(),
        ),
        Some(Data::ExponentialHistogram(h)) => (
            MetricKind::ExponentialHistogram,
            h.aggregation_temporality,
            h.data_points
                .iter()
                .map(|p| {
                    histogram(
                        &p.attributes,
                        p.time_unix_nano,
                        p.count,
                        [p.sum, p.min, p.max],
                    )
                })
                .collect(),
        ),
        Some(Data::Summary(s)) => (
            MetricKind::Summary,
            0,
            s.data_points
                .iter()
                .map(|p| DataPoint {
                    attributes: attributes(&p.attributes),
                    unix_nanos: p.time_unix_nano,
                    value: PointValue::Histogram {
                        count: p.count,
                        sum: Some(p.sum),
                        min: None,
                        max: None,
                    },
                })
                .collect(),
        ),
        None => (MetricKind::Empty, 0, Vec::new()),
    }
}
