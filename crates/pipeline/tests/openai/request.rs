//! The request JSON, field by field.

use super::*;

#[tokio::test]
async fn request_json_field_by_field() {
    let server = Server::start(vec![hello()]).await;
    let provider = builder(&server)
        .temperature(0.7)
        .max_tokens(2000)
        .build()
        .unwrap();

    let mut system = Message::system("You are terse.").with_metadata("tenant", "acme");
    system.token_count = Some(TokenCount {
        encoding: "o200k_base".into(),
        tokens: 9,
    });
    let image = Message::user(vec![
        ContentPart::text("What is in this image?"),
        ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: "https://example.invalid/cat.png".into(),
                detail: Some("low".into()),
            },
        },
        ContentPart::image_url("data:image/png;base64,iVBORw0KGgo="),
    ]);
    let named = Message::user("And the weather and time in Paris?").with_name("alice");
    let calls = Message::assistant("").with_tool_calls(vec![
        ToolCall::new("call_1", "weather", r#"{"city": "Paris"}"#),
        ToolCall::new("call_2", "time", r#"{"tz":"Europe/Paris"}"#),
    ]);
    let weather = Message::tool("call_1", r#"{"celsius":21}"#).with_metadata("ms", 12);
    let time = Message::tool("call_2", "14:05");
    let request = ChatRequest {
        messages: [system, image, named, calls, weather, time]
            .into_iter()
            .map(Arc::new)
            .collect(),
        tools: vec![ToolSpec {
            name: "weather".into(),
            description: "Current weather for a city".into(),
            parameters: json!({
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }),
        }],
        temperature: None,
        max_tokens: None,
    };
    provider.chat(&request).await.unwrap();

    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("authorization").map(str::to_owned),
        Some(format!("Bearer {KEY}"))
    );

    let body = r.json();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["temperature"], json!(0.7));
    assert_eq!(body["max_tokens"], 2000);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 6);
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]})
    );
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": "And the weather and time in Paris?", "name": "alice"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "time", "arguments": "{\"tz\":\"Europe/Paris\"}"}},
        ]})
    );
    // `content: null` is really there, not just missing.
    assert!(messages[3].as_object().unwrap().contains_key("content"));
    assert_eq!(
        messages[4],
        json!({"role": "tool", "content": "{\"celsius\":21}", "tool_call_id": "call_1"})
    );
    assert_eq!(
        messages[5],
        json!({"role": "tool", "content": "14:05", "tool_call_id": "call_2"})
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }}])
    );
    // Exactly these keys: nothing internal, no stream flags.
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["max_tokens", "messages", "model", "temperature", "tools"]
    );
    let raw = String::from_utf8(r.body.clone()).unwrap();
    for internal in [
        "metadata",
        "token_count",
        "timestamp",
        "tenant",
        "o200k_base",
    ] {
        assert!(!raw.contains(internal), "{internal} leaked into {raw}");
    }
}

#[tokio::test]
async fn defaults_overrides_and_no_key() {
    let server = Server::start(vec![hello()]).await;
    let with_defaults = builder(&server)
        .temperature(0.7)
        .max_tokens(2000)
        .build()
        .unwrap();
    let mut request = ask("hi");
    request.temperature = Some(0.2);
    request.max_tokens = Some(64);
    with_defaults.chat(&request).await.unwrap();

    // No defaults, no key (a local server), nothing in the request.
    let bare = OpenAiProvider::builder()
        .base_url(server.base_url())
        .model("llama3.1:8b")
        .api_key("")
        .build()
        .unwrap();
    bare.chat(&ask("hi")).await.unwrap();

    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    let overridden = seen[0].json();
    // The f32 is written in its shortest form, not widened to 0.20000000298….
    assert_eq!(overridden["temperature"], json!(0.2));
    assert!(String::from_utf8_lossy(&seen[0].body).contains(r#""temperature":0.2,"#));
    assert_eq!(overridden["max_tokens"], 64);
    assert!(seen[0].header("authorization").is_some());

    let plain = seen[1].json();
    assert_eq!(plain["model"], "llama3.1:8b");
    assert_eq!(
        plain,
        json!({"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]})
    );
    assert_eq!(seen[1].header("authorization"), None);
}
