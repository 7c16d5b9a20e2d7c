//! `statestore chat` with `OTEL_EXPORTER_OTLP_ENDPOINT` set: its spans reach
//! an OTLP receiver started on loopback by the time the process exits, and
//! telemetry that cannot be set up or reach its collector never fails the
//! command.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Env, Run};
use otlp_test_receiver::Receiver;

#[test]
fn chat_exports_its_spans_to_the_collector_named_by_the_environment() {
    let receiver = Receiver::start_blocking().unwrap();
    let env = Env::new();
    let run = Run::from(
        env.cmd()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
            .env("OTEL_SERVICE_NAME", "cli-test")
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=test",
            )
            .env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-tenant=acme,authorization=Bearer%20t0ken",
            )
            .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
            .args(["chat", "Hi, I'm Alice"])
            .output()
            .unwrap(),
    );
    run.assert_code(0);
    assert_eq!(run.stdout, "Nice to meet you, Alice!\n");
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);

    // The process has exited: what it exported is already here.
    let spans = receiver.spans();
    let execute = receiver
        .span("execute")
        .unwrap_or_else(|| panic!("no execute span:\n{}", receiver.span_tree()));
    assert_eq!(execute.service_name(), Some("cli-test"));
    assert_eq!(execute.resource["deployment.environment.name"], "test");
    assert!(
        spans.iter().all(|s| s.service_name() == Some("cli-test")),
        "{spans:?}"
    );
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.status, 200, "{request:?}");
        assert_eq!(request.header("x-tenant"), Some("acme"));
        assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(request.header("content-encoding"), Some("gzip"));
    }
}

#[test]
fn a_setting_this_build_lacks_is_a_warning_not_a_failure() {
    let receiver = Receiver::start_blocking().unwrap();
    let env = Env::new();
    let run = Run::from(
        env.cmd()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .args(["chat", "Hi, I'm Bob"])
            .output()
            .unwrap(),
    );
    run.assert_code(0);
    assert_eq!(run.stdout, "Nice to meet you, Bob!\n");
    assert!(
        run.stderr.starts_with("warning: no telemetry: ") && run.stderr.contains("grpc"),
        "{}",
        run.stderr
    );
    assert!(receiver.requests().is_empty());
}

#[test]
fn a_collector_that_is_down_does_not_fail_or_hang_the_command() {
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let env = Env::new();
    let started = Instant::now();
    let run = Run::from(
        env.cmd()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
            .args(["chat", "Hi, I'm Carol"])
            .output()
            .unwrap(),
    );
    run.assert_code(0);
    assert_eq!(run.stdout, "Nice to meet you, Carol!\n");
    // The exit waits for the retries of one export per signal, refused at once.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
