//! Unit tests of messages: the stored JSON, sizes, timestamps.

use super::*;

/// What a store holds per message, and a window selection reads, is
/// this size (plus the text): the rare fields boxed, the count's
/// encoding shared, the timestamp's `None` in a spare value.
#[test]
fn a_message_is_small() {
    assert_eq!(std::mem::size_of::<Option<Timestamp>>(), 8);
    assert!(
        std::mem::size_of::<Message>() <= 72,
        "Message is {} bytes",
        std::mem::size_of::<Message>()
    );
    // Setting a rare field boxes; emptying it again is equal to never.
    let mut m = Message::user("x");
    m.tool_calls_mut().clear();
    let plain = Message::user("x").with_timestamp(m.timestamp);
    assert_eq!(m, plain);
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        serde_json::to_string(&plain).unwrap()
    );
}

#[test]
fn timestamps_keep_every_millisecond_but_the_last() {
    for ms in [0, 1, 1_234, u64::MAX - 1] {
        let t = Timestamp::from_unix_millis(ms);
        assert_eq!(t.as_unix_millis(), ms);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, ms.to_string());
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
    assert_eq!(
        Timestamp::from_unix_millis(u64::MAX).as_unix_millis(),
        u64::MAX - 1
    );
    assert_eq!(Timestamp::default().as_unix_millis(), 0);
    assert!(Timestamp::from_unix_millis(1) < Timestamp::from_unix_millis(2));
    assert!(serde_json::from_str::<Timestamp>("-1").is_err());
}

#[test]
fn json_shape_is_stable() {
    let m = Message::assistant("")
        .with_tool_calls(vec![ToolCall::new("c1", "f", "{\"a\":1}")])
        .with_name("bot");
    let mut v = serde_json::to_value(&m).unwrap();
    v.as_object_mut().unwrap().remove("timestamp");
    assert_eq!(
        v,
        serde_json::json!({
            "role": "assistant",
            "content": "",
            "name": "bot",
            "tool_calls": [{"id": "c1", "name": "f", "arguments": "{\"a\":1}"}],
        })
    );
}

/// Every field, in the order the derived form wrote them: the stored
/// JSON did not change when the rare fields moved into a box.
#[test]
fn every_field_is_written_in_the_stored_order() {
    let m = Message::tool("c0", "out")
        .with_name("bot")
        .with_tool_calls(vec![ToolCall::new("c1", "f", "{}")])
        .with_metadata("k", 1)
        .with_token_count(TokenCount::new("o200k_base", 7))
        .with_timestamp(Some(Timestamp::from_unix_millis(5)));
    let json = concat!(
        r#"{"role":"tool","content":"out","name":"bot","#,
        r#""tool_calls":[{"id":"c1","name":"f","arguments":"{}"}],"#,
        r#""tool_call_id":"c0","metadata":{"k":1},"#,
        r#""token_count":{"encoding":"o200k_base","tokens":7},"timestamp":5}"#,
    );
    assert_eq!(serde_json::to_string(&m).unwrap(), json);
    assert_eq!(serde_json::from_str::<Message>(json).unwrap(), m);
    let bare = r#"{"role":"user","content":"hi"}"#;
    let back: Message = serde_json::from_str(bare).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), bare);
    assert!(back.tool_calls().is_empty() && back.metadata().is_empty());
}

#[test]
fn tolerates_unknown_fields_and_missing_optionals() {
    let m: Message =
        serde_json::from_str(r#"{"role":"tool","tool_call_id":"x","future_field":[1,2]}"#).unwrap();
    assert_eq!(m.role, Role::Tool);
    assert!(m.content.is_empty());
    assert_eq!(m.tool_call_id(), Some("x"));
    assert!(serde_json::from_str::<Message>(r#"{"role":"wizard"}"#).is_err());
}

#[test]
fn multi_part_content_round_trips() {
    let m = Message::user(vec![
        ContentPart::text("look"),
        ContentPart::image_url("https://example.invalid/cat.png"),
        ContentPart::text("at this"),
    ]);
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.contains(r#""type":"image_url""#), "{json}");
    let back: Message = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.text(), "look\nat this");
}

#[test]
fn content_is_text_or_parts_and_nothing_else() {
    let text: Content = serde_json::from_str(r#""a \"quoted\" line\n""#).unwrap();
    assert_eq!(text, Content::Text("a \"quoted\" line\n".into()));
    let parts: Content = serde_json::from_str(r#"[{"type":"text","text":"x"}]"#).unwrap();
    assert_eq!(parts, Content::Parts(vec![ContentPart::text("x")]));
    assert_eq!(
        serde_json::from_str::<Content>("[]").unwrap(),
        Content::Parts(Vec::new())
    );
    for other in [
        "null",
        "1",
        "true",
        r#"{"text":"x"}"#,
        r#"[{"type":"video"}]"#,
    ] {
        assert!(serde_json::from_str::<Content>(other).is_err(), "{other}");
    }
}
