//! Replies: content, tool calls, usage, invalid bodies.

use super::*;

#[tokio::test]
async fn reply_with_content() {
    let server = Server::start(vec![hello()]).await;
    let provider = builder(&server).build().unwrap();
    let reply = provider.chat(&ask("hi")).await.unwrap();
    assert_eq!(reply.message.role, Role::Assistant);
    assert_eq!(reply.message.text(), "Hello!");
    assert!(reply.message.tool_calls().is_empty());
    assert_eq!(
        reply.usage,
        Usage {
            prompt_tokens: 9,
            completion_tokens: 3
        }
    );
    assert_eq!(reply.finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn reply_with_tool_calls() {
    let server = Server::start(vec![Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "time", "arguments": "{}"}},
            ]}),
            "tool_calls",
            Some((50, 20)),
        ),
    )])
    .await;
    let provider = builder(&server).build().unwrap();
    let reply = provider.chat(&ask("weather?")).await.unwrap();
    assert_eq!(reply.message.text(), "");
    assert_eq!(
        reply.message.tool_calls(),
        [
            // The arguments exactly as the model wrote them.
            ToolCall::new("call_a", "weather", "{\"city\": \"Paris\"}"),
            ToolCall::new("call_b", "time", "{}"),
        ]
    );
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.usage.total(), 70);
}

#[tokio::test]
async fn missing_usage_counts_zero() {
    let server = Server::start(vec![Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": "ok"}),
            "length",
            None,
        ),
    )])
    .await;
    let reply = say_hi(builder(&server)).await.unwrap();
    assert_eq!(reply.usage, Usage::default());
    assert_eq!(reply.finish_reason, FinishReason::Length);
    assert_eq!(reply.message.text(), "ok");
}

#[tokio::test]
async fn invalid_bodies_are_invalid_responses() {
    let bodies = [
        Reply::raw(200, "<html>gateway</html>"),
        Reply::raw(200, ""),
        Reply::raw(200, "{\"choices\": [{\"message\": {\"content\": \"trunc"),
        Reply::json(200, json!({"id": "x", "object": "chat.completion"})),
        Reply::json(200, json!({"choices": []})),
        Reply::json(200, json!({"choices": [{"finish_reason": "stop"}]})),
        Reply::json(200, json!([1, 2, 3])),
        Reply::json(200, error_body("upstream failed", "server_error", None)),
    ];
    for reply in bodies {
        let server = Server::start(vec![reply.clone()]).await;
        let err = say_hi(builder(&server)).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidResponse { .. }),
            "{reply:?} gave {err:?}"
        );
        // An answer that arrived is not retried.
        assert_eq!(server.count(), 1, "{reply:?}");
    }
}
