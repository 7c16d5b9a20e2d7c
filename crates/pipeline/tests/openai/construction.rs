//! Construction, and that the API key never shows.

use super::*;

#[tokio::test]
async fn construction() {
    let server = Server::start(vec![hello()]).await;
    let provider = builder(&server).context_tokens(128_000).build().unwrap();
    assert_eq!(provider.name(), "openai");
    assert_eq!(provider.context_tokens(), Some(128_000));
    assert_eq!(provider.model(), "gpt-4o-mini");
    assert_eq!(provider.base_url(), server.base_url());
    let trailing = builder(&server)
        .base_url(format!("{}/", server.base_url()))
        .build()
        .unwrap();
    trailing.chat(&ask("hi")).await.unwrap();
    assert_eq!(server.requests()[0].path, "/v1/chat/completions");
    assert_eq!(
        OpenAiProvider::builder()
            .api_key(KEY)
            .build()
            .unwrap()
            .context_tokens(),
        None
    );

    for bad in [
        OpenAiProvider::builder(), // OpenAI without a key
        OpenAiProvider::builder().api_key(KEY).base_url("ftp://x"), // not http
        OpenAiProvider::builder().api_key(KEY).base_url("not a url"),
        OpenAiProvider::builder().api_key("sk-with\nnewline"),
        OpenAiProvider::builder().api_key(KEY).temperature(f32::NAN),
        OpenAiProvider::builder().api_key(KEY).model(""),
    ] {
        let shown = format!("{bad:?}");
        let err = bad.build().unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{shown}: {err:?}");
        assert_no_key("a configuration error", &format!("{err} {err:?}"));
    }
}

#[tokio::test]
async fn the_key_never_shows() {
    let (logs, _guard) = capture_logs();
    let echo = format!("Incorrect API key provided: {KEY}");
    let scenarios = vec![
        Reply::json(
            401,
            error_body(&echo, "invalid_request_error", Some("invalid_api_key")),
        ),
        Reply::json(500, error_body(&echo, "server_error", None)),
        Reply::raw(502, &format!("proxy saw Authorization: Bearer {KEY}")),
        Reply::json(
            400,
            error_body(
                &format!("{echo}; maximum context length"),
                "x",
                Some("context_length_exceeded"),
            ),
        ),
        Reply::json(429, error_body(&echo, "requests", None)),
        Reply::json(200, json!({"error": {"message": echo}})),
        Reply::raw(200, &format!("not json {KEY}")),
        Reply::hang(),
    ];
    let mut errors = Vec::new();
    for reply in scenarios {
        let server = Server::start(vec![reply]).await;
        let provider = builder(&server)
            .timeout(Duration::from_millis(200))
            .max_retries(1)
            .build()
            .unwrap();
        errors.push(provider.chat(&ask("hi")).await.unwrap_err());
        // Streaming too, including an error reported inside the stream.
        let (result, _) = stream_with(&provider, &ask("hi")).await;
        errors.push(result.unwrap_err());
    }
    let server = Server::start(vec![Reply::sse(
        &[&json!({"error": {"message": echo, "type": "server_error"}}).to_string()],
        1000,
    )])
    .await;
    let (result, _) = stream_with(&builder(&server).build().unwrap(), &ask("hi")).await;
    errors.push(result.unwrap_err());
    errors.push(
        OpenAiProvider::builder()
            .base_url(format!("http://127.0.0.1:{}/v1", refused_port()))
            .api_key(KEY)
            .max_retries(0)
            .build()
            .unwrap()
            .chat(&ask("hi"))
            .await
            .unwrap_err(),
    );

    let kinds: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            Error::Auth { .. } => "auth",
            Error::Status { .. } => "status",
            Error::ContextLengthExceeded { .. } => "context",
            Error::RateLimited { .. } => "rate",
            Error::InvalidResponse { .. } => "invalid",
            Error::Timeout { .. } => "timeout",
            Error::Transport(_) => "transport",
            _ => "other",
        })
        .collect();
    for kind in [
        "auth",
        "status",
        "context",
        "rate",
        "invalid",
        "timeout",
        "transport",
    ] {
        assert!(kinds.contains(&kind), "no {kind} error among {kinds:?}");
    }
    for err in &errors {
        assert_no_key("an error's Display", &err.to_string());
        assert_no_key("an error's Debug", &format!("{err:?}"));
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            assert_no_key("an error's source", &s.to_string());
            source = s.source();
        }
    }
    // Redacted, not dropped: the rest of the message is still there.
    assert!(errors.iter().any(|e| {
        e.to_string()
            .contains("Incorrect API key provided: <redacted>")
    }));

    let provider = OpenAiProvider::builder()
        .api_key(KEY)
        .base_url("http://127.0.0.1:9/v1");
    assert_no_key("the builder's Debug", &format!("{provider:?}"));
    let provider = provider.build().unwrap();
    let shown = format!("{provider:?}");
    assert_no_key("the provider's Debug", &shown);
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains("http://127.0.0.1:9/v1"), "{shown}");
    assert!(shown.contains("gpt-4o-mini"), "{shown}");

    let lines = logs.lines();
    assert!(!lines.is_empty());
    for line in &lines {
        assert_no_key("a log event", line);
        assert!(
            !line.contains("hi\""),
            "message content in a log event: {line}"
        );
    }
}
