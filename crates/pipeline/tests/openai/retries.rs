//! Retries and their limits, and how errors map.

use super::*;

#[tokio::test]
async fn rate_limit_honours_retry_after_then_succeeds() {
    let (logs, _guard) = capture_logs();
    let limited = || Reply::json(429, error_body("Rate limit reached", "requests", None));
    let server = Server::start(vec![
        // Retry-After shorter than the backoff (which would be 40 ms)...
        limited().header("retry-after", "0"),
        // ... OpenAI's millisecond header, preferred over Retry-After ...
        limited()
            .header("retry-after-ms", "15")
            .header("retry-after", "20"),
        // ... and one longer than the configured maximum: capped.
        limited().header("retry-after", "3"),
        hello(),
    ])
    .await;
    let provider = builder(&server)
        .max_retries(3)
        .retry_base_delay(Duration::from_millis(40))
        .max_retry_delay(Duration::from_millis(60))
        .build()
        .unwrap();
    let reply = provider.chat(&ask("hi")).await.unwrap();
    assert_eq!(reply.message.text(), "Hello!");
    assert_eq!(server.count(), 4);
    assert_eq!(logs.delays_ms(), [0, 15, 60]);
    let lines = logs.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("DEBUG:")
            && l.contains("attempt=1")
            && l.contains("status=429")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("attempt=4") && l.contains("status=200")),
        "{lines:?}"
    );
    // Every attempt was the same request.
    let bodies: Vec<Vec<u8>> = server.requests().into_iter().map(|r| r.body).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test]
async fn rate_limit_storm_gives_up_after_max_retries() {
    let (logs, _guard) = capture_logs();
    let server = Server::start(vec![
        Reply::json(429, error_body("Rate limit reached", "requests", None))
            .header("retry-after", "7"),
    ])
    .await;
    let err = say_hi(builder(&server).max_retries(3)).await.unwrap_err();
    match err {
        Error::RateLimited {
            attempts,
            retry_after,
        } => {
            assert_eq!(attempts, 4);
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(server.count(), 4);
    // Three waits, each Retry-After capped at the 50 ms maximum.
    assert_eq!(logs.delays_ms(), [50, 50, 50]);
}

#[tokio::test]
async fn server_error_storm_gives_up_after_max_retries() {
    let (logs, _guard) = capture_logs();
    let server = Server::start(vec![Reply::json(
        500,
        error_body(
            "The server had an error while processing your request.",
            "server_error",
            None,
        ),
    )])
    .await;
    let err = say_hi(
        builder(&server)
            .max_retries(2)
            .retry_base_delay(Duration::from_millis(10)),
    )
    .await
    .unwrap_err();
    match &err {
        Error::Status {
            status,
            attempts,
            message,
        } => {
            assert_eq!(*status, 500);
            assert_eq!(*attempts, 3);
            assert_eq!(
                message,
                "The server had an error while processing your request."
            );
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(server.count(), 3);
    // Exponential backoff: 10 ms, then 20 ms.
    assert_eq!(logs.delays_ms(), [10, 20]);
}

#[tokio::test]
async fn an_injected_random_source_makes_the_jittered_backoff_exact() {
    let (logs, _guard) = capture_logs();
    let server = Server::start(vec![Reply::json(
        503,
        error_body("overloaded", "server_error", None),
    )])
    .await;
    // The jitter factor is 0.5 + r / 2 for each draw r of the source.
    const DRAWS: [f64; 4] = [0.0, 0.5, 1.0, 0.25];
    let next = Arc::new(AtomicUsize::new(0));
    let source = Arc::clone(&next);
    let policy = RetryPolicy::default()
        .max_retries(4)
        .initial_backoff(Duration::from_millis(8))
        .max_backoff(Duration::from_millis(40))
        .random_source(move || DRAWS[source.fetch_add(1, Ordering::SeqCst) % DRAWS.len()]);
    // Backoffs 8, 16, 32 and 64 capped at 40 ms, scaled by 0.5, 0.75, 1
    // and 0.625.
    let expected = [4, 12, 32, 25];

    let err = say_hi(builder(&server).retry(policy.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: 503,
                attempts: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.count(), 5);
    assert_eq!(logs.delays_ms(), expected);
    assert_eq!(next.load(Ordering::SeqCst), 4, "one draw per retry");

    // The same sequence from the policy itself, to the nanosecond.
    next.store(0, Ordering::SeqCst);
    let delays: Vec<Duration> = (1..=4).map(|retry| policy.delay(retry, None)).collect();
    assert_eq!(delays, expected.map(Duration::from_millis));
    // A server's wait is not jittered: no draw.
    assert_eq!(
        policy.delay(1, Some(Duration::from_millis(7))),
        Duration::from_millis(7)
    );
    assert_eq!(next.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn transient_5xx_then_success() {
    let server = Server::start(vec![
        Reply::raw(502, "<html>Bad Gateway</html>"),
        Reply::raw(503, ""),
        hello(),
    ])
    .await;
    let reply = say_hi(builder(&server)).await.unwrap();
    assert_eq!(reply.message.text(), "Hello!");
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn non_json_error_body_becomes_the_message_truncated() {
    let server = Server::start(vec![Reply::raw(503, &"overloaded ".repeat(100))]).await;
    let err = say_hi(builder(&server).max_retries(0)).await.unwrap_err();
    let Error::Status {
        status,
        attempts,
        message,
    } = err
    else {
        panic!("expected Status, got {err:?}");
    };
    assert_eq!((status, attempts), (503, 1));
    assert!(message.starts_with("overloaded overloaded"));
    assert!(message.chars().count() <= 301, "{}", message.len());
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn context_length_exceeded_is_distinct_and_not_retried() {
    let server = Server::start(vec![Reply::json(
        400,
        error_body(
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130012 tokens.",
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
    )])
    .await;
    let err = say_hi(builder(&server)).await.unwrap_err();
    match &err {
        Error::ContextLengthExceeded { message } => {
            assert!(message.starts_with("This model's maximum context length is 128000"));
        }
        other => panic!("expected ContextLengthExceeded, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    let server = Server::start(vec![Reply::json(
        400,
        error_body(
            "Invalid value for 'temperature'",
            "invalid_request_error",
            Some("invalid_value"),
        ),
    )])
    .await;
    let err = say_hi(builder(&server)).await.unwrap_err();
    match err {
        Error::Status {
            status: 400,
            attempts: 1,
            message,
        } => assert_eq!(message, "Invalid value for 'temperature'"),
        other => panic!("expected Status 400, got {other:?}"),
    }
    assert_eq!(server.count(), 1);

    let server = Server::start(vec![Reply::raw(404, "")]).await;
    let err = say_hi(builder(&server)).await.unwrap_err();
    match err {
        Error::Status {
            status: 404,
            attempts: 1,
            message,
        } => assert_eq!(message, "Not Found"),
        other => panic!("expected Status 404, got {other:?}"),
    }
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn auth_failures_are_not_retried() {
    for status in [401, 403] {
        let server = Server::start(vec![Reply::json(
            status,
            error_body(
                "Incorrect API key provided: sk-test-****cdef.",
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
        )])
        .await;
        let err = say_hi(builder(&server)).await.unwrap_err();
        match err {
            Error::Auth { status: s, message } => {
                assert_eq!(s, status);
                assert_eq!(message, "Incorrect API key provided: sk-test-****cdef.");
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        assert_eq!(server.count(), 1);
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_after_the_retries() {
    let server = Server::start(vec![Reply::hang()]).await;
    let err = say_hi(
        builder(&server)
            .timeout(Duration::from_millis(200))
            .max_retries(2),
    )
    .await
    .unwrap_err();
    match err {
        Error::Timeout { after } => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn connection_refused_is_transport_after_the_retries() {
    let (logs, _guard) = capture_logs();
    let port = refused_port();
    let err = OpenAiProvider::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .max_retries(2)
        .retry_base_delay(Duration::from_millis(5))
        .jitter(false)
        .build()
        .unwrap()
        .chat(&ask("hi"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.is_transient());
    // Retried like a 5xx: two waits before the third and last attempt.
    assert_eq!(logs.delays_ms(), [5, 10]);
    assert!(
        logs.lines().iter().any(|l| l.contains("connection failed")),
        "{:?}",
        logs.lines()
    );
}
