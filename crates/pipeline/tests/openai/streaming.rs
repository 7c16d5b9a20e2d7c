//! Streaming: reassembly, and retries before and during a stream.

use super::*;

pub(crate) const STREAM: &[&str] = &[
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Bonjour"},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":", ça va"},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" ? 🙂"},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":"{\"tz\":"}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\": \"Par"}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\"UTC\"}"}},{"index":0,"function":{"arguments":"is\"}"}}]},"finish_reason":null}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#,
    r#"{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":31,"completion_tokens":17,"total_tokens":48}}"#,
    "[DONE]",
];

pub(crate) async fn stream_with(
    provider: &OpenAiProvider,
    request: &ChatRequest,
) -> (Result<ChatResponse, Error>, Vec<String>) {
    let mut deltas = Vec::new();
    let result = provider
        .chat_stream(request, &mut |e: StreamEvent<'_>| {
            if let StreamEvent::Delta(d) = e {
                deltas.push(d.to_owned());
            }
        })
        .await;
    (result, deltas)
}

#[tokio::test]
async fn streaming_reassembles_content_and_tool_calls() {
    // Pieces of 7 bytes cut through lines, JSON and multi-byte characters.
    for piece in [7, 64, 100_000] {
        let server = Server::start(vec![Reply::sse(STREAM, piece)]).await;
        let provider = builder(&server).temperature(0.7).build().unwrap();
        let (reply, deltas) = stream_with(&provider, &ask("Salut")).await;
        let reply = reply.unwrap();

        assert_eq!(deltas, ["Bonjour", ", ça va", " ? 🙂"], "pieces of {piece}");
        assert_eq!(reply.message.text(), "Bonjour, ça va ? 🙂");
        assert_eq!(
            reply.message.tool_calls(),
            [
                ToolCall::new("call_a", "weather", "{\"city\": \"Paris\"}"),
                ToolCall::new("call_b", "time", "{\"tz\":\"UTC\"}"),
            ]
        );
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            reply.usage,
            Usage {
                prompt_tokens: 31,
                completion_tokens: 17
            }
        );

        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let body = seen[0].json();
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["temperature"], json!(0.7));
        assert_eq!(seen[0].header("accept"), Some("text/event-stream"));
    }
}

#[tokio::test]
async fn streaming_retries_before_the_stream_starts() {
    let server = Server::start(vec![
        Reply::json(429, error_body("slow down", "requests", None)).header("retry-after", "0"),
        Reply::raw(500, ""),
        Reply::sse(STREAM, 50),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, deltas) = stream_with(&provider, &ask("Salut")).await;
    assert_eq!(reply.unwrap().message.text(), "Bonjour, ça va ? 🙂");
    assert_eq!(deltas.len(), 3);
    assert_eq!(server.count(), 3);
}

/// What a streaming callback saw, owned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seen {
    Delta(String),
    Restart,
    Done,
}

pub(crate) fn delta(text: &str) -> Seen {
    Seen::Delta(text.to_owned())
}

/// Records every event, not only the text.
pub(crate) fn recorder(seen: &mut Vec<Seen>) -> impl FnMut(StreamEvent<'_>) + Send + '_ {
    move |e: StreamEvent<'_>| {
        seen.push(match e {
            StreamEvent::Delta(d) => Seen::Delta(d.to_owned()),
            StreamEvent::Restart => Seen::Restart,
            StreamEvent::Done => Seen::Done,
            other => panic!("unexpected event {other:?}"),
        });
    }
}

pub(crate) async fn stream_events(
    provider: &OpenAiProvider,
    request: &ChatRequest,
) -> (Result<ChatResponse, Error>, Vec<Seen>) {
    let mut seen = Vec::new();
    let result = provider
        .chat_stream(request, &mut recorder(&mut seen))
        .await;
    (result, seen)
}

/// The text a caller that honours `Restart` ends up showing.
pub(crate) fn shown(seen: &[Seen]) -> String {
    let last = seen.iter().rposition(|e| *e == Seen::Restart);
    seen[last.map_or(0, |i| i + 1)..]
        .iter()
        .filter_map(|e| match e {
            Seen::Delta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect()
}

/// A complete text-only stream: `pieces`, `stop`, usage, `[DONE]`.
pub(crate) fn text_stream(pieces: &[&str]) -> Reply {
    let mut events: Vec<String> = pieces
        .iter()
        .map(|p| {
            json!({"id": "c2", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
            .to_string()
        })
        .collect();
    events.push(
        json!({"id": "c2", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        .to_string(),
    );
    events.push(
        json!({"id": "c2", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}})
        .to_string(),
    );
    events.push("[DONE]".to_owned());
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    Reply::sse(&events, 30)
}

/// The first stream's text, `Restart`, the second stream's text.
pub(crate) fn restarted_once() -> Vec<Seen> {
    vec![
        delta("Bonjour"),
        delta(", ça va"),
        Seen::Restart,
        delta("Salut"),
        delta(" !"),
    ]
}

/// Checks a reply that came from `text_stream(["Salut", " !"])` alone:
/// nothing of the abandoned stream (its text, its tool call) is in it.
pub(crate) fn assert_second_reply(reply: &ChatResponse) {
    assert_eq!(reply.message.text(), "Salut !");
    assert!(reply.message.tool_calls().is_empty(), "{reply:?}");
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    assert_eq!(
        reply.usage,
        Usage {
            prompt_tokens: 7,
            completion_tokens: 2
        }
    );
}

#[tokio::test]
async fn a_truncated_stream_is_retried_after_a_restart() {
    // Text and the start of a tool call, then the body ends properly but
    // without a finish_reason and without [DONE].
    let server = Server::start(vec![
        Reply::sse(&STREAM[..6], 40),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    let reply = reply.unwrap();
    assert_second_reply(&reply);
    let mut expected = restarted_once();
    expected.insert(2, delta(" ? 🙂"));
    assert_eq!(seen, expected);
    assert_eq!(shown(&seen), reply.message.text());
    // The same request, sent twice.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn a_stream_cut_in_the_middle_of_an_event_is_retried() {
    // The body ends properly, but in the middle of a chunk's JSON: that is
    // a cut, not garbage.
    let whole = sse_text(&STREAM[..4]);
    let cut = String::from_utf8(whole[..whole.len() - 20].to_vec()).unwrap();
    let server = Server::start(vec![
        Reply::sse_body(Body::Chunks(vec![cut.into_bytes()])),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    assert_second_reply(&reply.unwrap());
    assert_eq!(seen, restarted_once());
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_retried() {
    let server = Server::start(vec![
        Reply::sse_then_close(&STREAM[..3]),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    let reply = reply.unwrap();
    assert_second_reply(&reply);
    assert_eq!(seen, restarted_once());
    assert_eq!(shown(&seen), reply.message.text());
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_stalled_stream_is_retried_after_the_idle_timeout() {
    let server = Server::start(vec![
        Reply::sse_then_hang(&STREAM[..3]),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    // The attempt's timeout stays long: the idle timeout alone ends the
    // stalled stream.
    let provider = builder(&server)
        .timeout(Duration::from_secs(30))
        .stream_idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    let reply = reply.unwrap();
    assert_second_reply(&reply);
    assert_eq!(seen, restarted_once());
    assert_eq!(shown(&seen), reply.message.text());
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_stream_that_keeps_breaking_fails_transiently_after_the_last_attempt() {
    let idle = Duration::from_millis(150);
    let faults = [
        ("truncated", Reply::sse(&STREAM[..4], 40)),
        ("dropped", Reply::sse_then_close(&STREAM[..4])),
        ("stalled", Reply::sse_then_hang(&STREAM[..4])),
        (
            "malformed",
            Reply::sse(
                &[
                    STREAM[0], STREAM[1], STREAM[2], STREAM[3], "{oops", STREAM[4],
                ],
                40,
            ),
        ),
    ];
    for (fault, reply) in faults {
        let (logs, _guard) = capture_logs();
        let server = Server::start(vec![reply]).await;
        let provider = builder(&server)
            .max_retries(2)
            .stream_idle_timeout(idle)
            .build()
            .unwrap();
        let (result, seen) = stream_events(&provider, &ask("Salut")).await;
        let err = result.unwrap_err();
        assert!(err.is_transient(), "{fault}: {err:?}");
        match (fault, &err) {
            ("stalled", Error::Timeout { after }) => assert_eq!(*after, idle),
            ("truncated" | "dropped", Error::Transport(_)) => {}
            ("malformed", Error::MalformedStream { attempts, detail }) => {
                assert_eq!(*attempts, 3);
                assert!(detail.contains("not JSON"), "{detail}");
            }
            _ => panic!("{fault}: unexpected {err:?}"),
        }
        // Exactly `max_retries + 1` attempts, with the non-streaming backoff.
        assert_eq!(server.count(), 3, "{fault}");
        assert_eq!(logs.delays_ms(), [5, 10], "{fault}");
        // A Restart before each retry, none after the last attempt.
        let text = [delta("Bonjour"), delta(", ça va"), delta(" ? 🙂")];
        let mut expected = Vec::new();
        for attempt in 1..=3 {
            expected.extend(text.iter().cloned());
            if attempt < 3 {
                expected.push(Seen::Restart);
            }
        }
        assert_eq!(seen, expected, "{fault}");
    }
}

#[tokio::test]
async fn broken_streams_and_statuses_share_one_attempt_budget() {
    let server = Server::start(vec![
        Reply::sse_then_close(&STREAM[..3]),
        Reply::raw(503, "busy"),
        Reply::sse(&STREAM[..3], 40),
        text_stream(&["never", " sent"]),
    ])
    .await;
    let provider = builder(&server).max_retries(2).build().unwrap();
    let (result, seen) = stream_events(&provider, &ask("Salut")).await;
    assert!(matches!(result, Err(Error::Transport(_))), "{result:?}");
    assert_eq!(server.count(), 3);
    // The 503 delivered nothing, so it needed no Restart.
    assert_eq!(
        seen,
        [
            delta("Bonjour"),
            delta(", ça va"),
            Seen::Restart,
            delta("Bonjour"),
            delta(", ça va"),
        ]
    );
}

/// Stream chunks that are not chat completion chunks, by what is wrong.
const MALFORMED: &[(&str, &str)] = &[
    ("unfinished JSON", r#"{"choices": [{"delta": {"content": "#),
    ("plain text", "Bonjour, this is not JSON"),
    ("not an object", "[1, 2, 3]"),
    ("a string", r#""chat.completion.chunk""#),
    ("null", "null"),
    ("an object that is no chunk", r#"{"hello": "world"}"#),
    ("an empty object", "{}"),
    ("choices not a list", r#"{"choices": "secret words"}"#),
    (
        "content not a string",
        r#"{"choices": [{"index": 0, "delta": {"content": 42}}]}"#,
    ),
];

#[tokio::test]
async fn a_malformed_chunk_ends_the_attempt_and_is_retried() {
    let mut cases: Vec<(&str, Reply)> = MALFORMED
        .iter()
        .map(|(what, bad)| {
            (
                *what,
                Reply::sse_then_watch(&[STREAM[1], bad], &STREAM[2..]),
            )
        })
        .collect();
    // A data line that is not UTF-8.
    let mut not_utf8 = sse_text(&[STREAM[1]]);
    not_utf8.extend_from_slice(b"data: \xff\xfe\n\n");
    cases.push((
        "not UTF-8",
        Reply::sse_body(Body::ChunksThenWatch {
            chunks: vec![not_utf8],
            rest: vec![sse_text(&STREAM[2..])],
        }),
    ));
    for (what, bad) in cases {
        let (logs, _guard) = capture_logs();
        let server = Server::start(vec![bad, text_stream(&["Salut", " !"])]).await;
        let provider = builder(&server).build().unwrap();
        let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
        let reply = reply.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_second_reply(&reply);
        assert_eq!(
            seen,
            [delta("Bonjour"), Seen::Restart, delta("Salut"), delta(" !")],
            "{what}"
        );
        assert_eq!(shown(&seen), reply.message.text(), "{what}");
        // The attempt ended at the bad chunk: the client hung up while the
        // server still had the rest of the stream to send.
        assert_eq!(server.hangups().await, 1, "{what}: the client kept reading");
        assert_eq!(server.count(), 2, "{what}");
        // The retry waited the first backoff, like any broken stream.
        assert_eq!(logs.delays_ms(), [5], "{what}");
    }
}

#[tokio::test]
async fn a_malformed_chunk_before_any_text_needs_no_restart() {
    let server = Server::start(vec![
        Reply::sse_then_watch(&[STREAM[0], "not json"], &STREAM[1..]),
        text_stream(&["Salut", " !"]),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    assert_second_reply(&reply.unwrap());
    assert_eq!(seen, [delta("Salut"), delta(" !")]);
    assert_eq!(server.hangups().await, 1);
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_malformed_chunk_after_the_finish_reason_ends_a_complete_reply() {
    // Like a stream cut after its finish_reason: the reply is complete, the
    // rest (here the usage and [DONE]) is not read.
    let stop = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    let server = Server::start(vec![
        Reply::sse_then_watch(&[STREAM[1], stop, "garbage"], &STREAM[10..]),
        text_stream(&["never", " sent"]),
    ])
    .await;
    let provider = builder(&server).build().unwrap();
    let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
    let reply = reply.unwrap();
    assert_eq!(reply.message.text(), "Bonjour");
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    assert_eq!(reply.usage, Usage::default());
    assert_eq!(seen, [delta("Bonjour")]);
    assert_eq!(server.hangups().await, 1);
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn a_malformed_error_names_no_content() {
    for (what, bad) in MALFORMED {
        let server = Server::start(vec![Reply::sse(&[STREAM[1], bad], 40)]).await;
        let provider = builder(&server).max_retries(0).build().unwrap();
        let (result, _) = stream_events(&provider, &ask("Salut")).await;
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::MalformedStream { attempts: 1, .. }),
            "{what}: {err:?}"
        );
        let text = format!("{err} {err:?}");
        for content in ["secret words", "Bonjour", "hello", "world"] {
            assert!(!text.contains(content), "{what}: {text}");
        }
    }
}

fn error_event(code: Option<Value>) -> String {
    let mut error =
        json!({"message": format!("the model crashed ({KEY})"), "type": "server_error"});
    if let Some(code) = code {
        error["code"] = code;
    }
    json!({ "error": error }).to_string()
}

#[tokio::test]
async fn an_error_event_without_a_retryable_status_is_refused_without_a_retry() {
    for code in [
        None,
        Some(json!(null)),
        Some(json!("server_error")),
        Some(json!(400)),
        Some(json!("404")),
    ] {
        let bad = error_event(code.clone());
        // On the first attempt: one request, and reading stops there.
        let server = Server::start(vec![
            Reply::sse_then_watch(&[STREAM[1], &bad], &STREAM[2..]),
            text_stream(&["Salut", " !"]),
        ])
        .await;
        let provider = builder(&server).build().unwrap();
        let (result, seen) = stream_events(&provider, &ask("Salut")).await;
        match &result {
            Err(Error::InvalidResponse { detail }) => {
                assert!(detail.contains("the model crashed"), "{detail}");
                assert_no_key("the error", detail);
            }
            other => panic!("{code:?}: {other:?}"),
        }
        assert_eq!(seen, [delta("Bonjour")], "{code:?}");
        assert_eq!(server.count(), 1, "{code:?}");
        assert_eq!(server.hangups().await, 1, "{code:?}");

        // After a retried fault: refused on the attempt it comes in.
        let server = Server::start(vec![
            Reply::sse(&STREAM[..3], 40),
            Reply::sse(&[STREAM[1], &bad, STREAM[2]], 40),
            text_stream(&["Salut", " !"]),
        ])
        .await;
        let provider = builder(&server).build().unwrap();
        let (result, seen) = stream_events(&provider, &ask("Salut")).await;
        assert!(
            matches!(result, Err(Error::InvalidResponse { .. })),
            "{code:?}: {result:?}"
        );
        assert_eq!(
            seen,
            [
                delta("Bonjour"),
                delta(", ça va"),
                Seen::Restart,
                delta("Bonjour")
            ]
        );
        assert_eq!(server.count(), 2, "{code:?}");
    }
}

#[tokio::test]
async fn an_error_event_with_a_retryable_status_is_retried() {
    for code in [json!(503), json!(500), json!(429), json!("502")] {
        let bad = error_event(Some(code.clone()));
        let server = Server::start(vec![
            Reply::sse_then_watch(&[STREAM[1], &bad], &STREAM[2..]),
            text_stream(&["Salut", " !"]),
        ])
        .await;
        let provider = builder(&server).build().unwrap();
        let (reply, seen) = stream_events(&provider, &ask("Salut")).await;
        assert_second_reply(&reply.unwrap());
        assert_eq!(
            seen,
            [delta("Bonjour"), Seen::Restart, delta("Salut"), delta(" !")],
            "{code}"
        );
        assert_eq!(server.hangups().await, 1, "{code}");
        assert_eq!(server.count(), 2, "{code}");
    }
}

#[tokio::test]
async fn an_error_event_that_keeps_coming_fails_like_its_status() {
    let (logs, _guard) = capture_logs();
    let bad = error_event(Some(json!(503)));
    let server = Server::start(vec![Reply::sse(&[STREAM[1], &bad], 40)]).await;
    let provider = builder(&server).max_retries(2).build().unwrap();
    let (result, seen) = stream_events(&provider, &ask("Salut")).await;
    let err = result.unwrap_err();
    match &err {
        Error::Status {
            status: 503,
            attempts: 3,
            message,
        } => {
            assert!(message.contains("the model crashed"), "{message}");
            assert_no_key("the error", message);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(server.count(), 3);
    assert_eq!(logs.delays_ms(), [5, 10]);
    assert_eq!(
        seen,
        [
            delta("Bonjour"),
            Seen::Restart,
            delta("Bonjour"),
            Seen::Restart,
            delta("Bonjour")
        ]
    );

    let bad = error_event(Some(json!(429)));
    let server = Server::start(vec![Reply::sse(&[STREAM[1], &bad], 40)]).await;
    let provider = builder(&server).max_retries(1).build().unwrap();
    let (result, _) = stream_events(&provider, &ask("Salut")).await;
    assert!(
        matches!(
            result,
            Err(Error::RateLimited {
                attempts: 2,
                retry_after: None
            })
        ),
        "{result:?}"
    );
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn streaming_from_a_server_that_ignores_stream() {
    let server = Server::start(vec![hello()]).await;
    let provider = builder(&server).build().unwrap();
    let (reply, deltas) = stream_with(&provider, &ask("hi")).await;
    assert_eq!(reply.unwrap().message.text(), "Hello!");
    assert_eq!(deltas, ["Hello!"]);
}
