//! Requests built by hand (prost-encoded, over a plain TCP socket) against a
//! started receiver: decoding, the span tree, keep-alive, refusals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    self as pm, Metric, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{self as pt, ResourceSpans, ScopeSpans};
use otlp_test_receiver::{
    MetricKind, PointValue, Receiver, SpanKind, StatusCode, Value, opentelemetry_proto,
};
use prost::Message;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", s(service))],
        ..Resource::default()
    })
}

fn span(name: &str, id: u8, parent: Option<u8>, start: u64) -> pt::Span {
    pt::Span {
        trace_id: vec![0xab; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 10,
        ..pt::Span::default()
    }
}

fn traces() -> ExportTraceServiceRequest {
    let mut execute = span("execute", 1, None, 100);
    execute.attributes = vec![
        kv("provider", s("offline")),
        kv("turn", any_value::Value::IntValue(3)),
    ];
    execute.events = vec![pt::span::Event {
        name: "retrying".into(),
        time_unix_nano: 105,
        attributes: vec![kv("attempt", any_value::Value::IntValue(2))],
        ..pt::span::Event::default()
    }];
    let mut save = span("save", 3, Some(1), 120);
    save.status = Some(pt::Status {
        message: "conflict".into(),
        code: StatusCode::Error as i32,
    });
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("receiver-test"),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "statestore".into(),
                    ..InstrumentationScope::default()
                }),
                // Children first, as batch exporters send them (they end first).
                spans: vec![save, span("chat offline", 2, Some(1), 110), execute],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let counter = Metric {
        name: "conflicts".into(),
        unit: "{conflict}".into(),
        description: "Turns restarted".into(),
        data: Some(metric::Data::Sum(pm::Sum {
            data_points: vec![pm::NumberDataPoint {
                attributes: vec![kv("db.system.name", s("memory"))],
                value: Some(number_data_point::Value::AsInt(2)),
                ..pm::NumberDataPoint::default()
            }],
            aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Metric::default()
    };
    let histogram = Metric {
        name: "db.client.operation.duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(pm::Histogram {
            data_points: vec![pm::HistogramDataPoint {
                attributes: vec![kv("db.operation.name", s("load"))],
                count: 3,
                sum: Some(0.5),
                bucket_counts: vec![1, 2],
                explicit_bounds: vec![0.1],
                ..pm::HistogramDataPoint::default()
            }],
            aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
        })),
        ..Metric::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("receiver-test"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![counter, histogram],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

/// One HTTP/1.1 exchange on `stream`: the status and the body.
fn exchange(
    stream: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let socket = stream.get_mut();
    socket.write_all(request.as_bytes()).unwrap();
    socket.write_all(body).unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut response_headers = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        response_headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
    }
    let length: usize = response_headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (status, response_headers, body)
}

fn connect(receiver: &Receiver) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(receiver.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    BufReader::new(stream)
}

const PROTOBUF: (&str, &str) = ("Content-Type", "application/x-protobuf");

#[tokio::test]
async fn decodes_spans_and_metrics_on_one_keep_alive_connection() {
    let receiver = Receiver::start().await.unwrap();
    assert!(receiver.endpoint().starts_with("http://127.0.0.1:"));
    let mut conn = connect(&receiver);

    let (status, headers, body) = exchange(
        &mut conn,
        "POST",
        "/v1/traces",
        &[PROTOBUF],
        &traces().encode_to_vec(),
    );
    assert_eq!(status, 200);
    assert!(body.is_empty(), "an empty ExportTraceServiceResponse");
    assert!(headers.contains(&("content-type".into(), "application/x-protobuf".into())));
    // Same connection, gzip-compressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&metrics().encode_to_vec()).unwrap();
    let (status, _, _) = exchange(
        &mut conn,
        "POST",
        "/v1/metrics",
        &[PROTOBUF, ("Content-Encoding", "gzip")],
        &gz.finish().unwrap(),
    );
    assert_eq!(status, 200);

    let spans = receiver.spans();
    assert_eq!(spans.len(), 3);
    let execute = receiver.span("execute").unwrap();
    assert_eq!(execute.trace_id, "ab".repeat(16));
    assert_eq!(execute.span_id, "01".repeat(8));
    assert_eq!(execute.parent_span_id, None);
    assert_eq!(execute.kind, SpanKind::Internal);
    assert_eq!(execute.attr("provider").unwrap(), "offline");
    assert_eq!(execute.attributes["turn"], 3);
    assert_eq!(execute.service_name(), Some("receiver-test"));
    assert_eq!(execute.scope, "statestore");
    assert_eq!(execute.events[0].name, "retrying");
    assert_eq!(execute.events[0].attributes["attempt"], Value::Int(2));
    let save = receiver.span("save").unwrap();
    assert_eq!(save.parent_span_id.as_deref(), Some("0101010101010101"));
    assert_eq!(save.status, StatusCode::Error);
    assert_eq!(save.status_message, "conflict");

    assert_eq!(
        receiver.span_tree(),
        "execute  provider=offline turn=3\n  chat offline\n  save  !error: conflict\n"
    );
    assert_eq!(
        receiver.span_tree_with(&["turn"]),
        "execute  turn=3\n  chat offline\n  save  !error: conflict\n"
    );

    let conflicts = receiver.metric("conflicts").unwrap();
    assert_eq!(conflicts.kind, MetricKind::Sum { monotonic: true });
    assert_eq!(conflicts.unit, "{conflict}");
    assert_eq!(conflicts.description, "Turns restarted");
    assert_eq!(conflicts.resource["service.name"], "receiver-test");
    let point = conflicts.point(&[("db.system.name", "memory")]).unwrap();
    assert_eq!(point.value, PointValue::Int(2));
    let duration = receiver.metric("db.client.operation.duration").unwrap();
    assert_eq!(duration.kind, MetricKind::Histogram);
    assert_eq!(duration.unit, "s");
    let point = duration.point(&[("db.operation.name", "load")]).unwrap();
    assert_eq!(point.value.count(), Some(3));
    assert_eq!(point.value.as_f64(), Some(0.5));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].path, "/v1/metrics");
    assert_eq!(requests[1].header("content-encoding"), Some("gzip"));
    assert!(requests.iter().all(|r| r.status == 200));

    receiver.clear();
    assert!(receiver.spans().is_empty() && receiver.metrics().is_empty());
}

#[test]
fn refuses_what_it_does_not_decode() {
    let receiver = Receiver::start_blocking().unwrap();
    let mut conn = connect(&receiver);
    let garbage = [0xff, 0xff, 0xff, 0xff, 0x0f];

    let (status, _, _) = exchange(&mut conn, "POST", "/v1/logs", &[PROTOBUF], b"");
    assert_eq!(status, 404);
    let (status, _, body) = exchange(&mut conn, "POST", "/v1/traces", &[PROTOBUF], &garbage);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = exchange(&mut conn, "POST", "/v1/metrics", &[PROTOBUF], &garbage);
    assert_eq!(status, 400);
    let json = [("Content-Type", "application/json")];
    let (status, _, _) = exchange(&mut conn, "POST", "/v1/traces", &json, b"{}");
    assert_eq!(status, 415);
    let zstd = [PROTOBUF, ("Content-Encoding", "zstd")];
    let (status, _, _) = exchange(&mut conn, "POST", "/v1/traces", &zstd, b"x");
    assert_eq!(status, 415);
    let (status, headers, _) = exchange(&mut conn, "GET", "/v1/traces", &[], b"");
    assert_eq!(status, 405);
    assert!(headers.contains(&("allow".into(), "POST".into())));
    // The connection survived every refusal, and still decodes.
    let (status, _, _) = exchange(
        &mut conn,
        "POST",
        "/v1/traces",
        &[PROTOBUF],
        &traces().encode_to_vec(),
    );
    assert_eq!(status, 200);

    let statuses: Vec<u16> = receiver.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [404, 400, 400, 415, 415, 405, 200]);
    assert_eq!(receiver.spans().len(), 3, "refused bodies are not kept");
}

#[test]
fn connection_close_and_wait_for() {
    let receiver = Receiver::start_blocking().unwrap();
    let mut conn = connect(&receiver);
    let (status, headers, _) = exchange(
        &mut conn,
        "POST",
        "/v1/traces",
        &[PROTOBUF, ("Connection", "close")],
        &traces().encode_to_vec(),
    );
    assert_eq!(status, 200);
    assert!(headers.contains(&("connection".into(), "close".into())));
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the reply");

    assert!(receiver.wait_for(|r| r.spans().len() == 3, Duration::from_secs(5)));
    assert!(!receiver.wait_for(|r| r.spans().len() == 4, Duration::from_millis(50)));
}

#[test]
fn a_dropped_receiver_stops_listening() {
    let receiver = Receiver::start_blocking().unwrap();
    let addr = receiver.addr();
    drop(receiver);
    assert!(TcpStream::connect(addr).is_err());
}
