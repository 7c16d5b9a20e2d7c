//! A realistic conversation, defined once here and included by the Redis
//! and PostgreSQL suites (`#[path]`), used by both sides of each
//! realistic-mix comparison: a user message of 300 B, an assistant reply
//! of 1.2 KB, and every third turn, before the reply, an assistant tool call
//! (about 100 B of arguments) and the tool's result of 3 KB. So 8 messages
//! per 3 turns, about 950 B per message on average. The turn measured
//! appends an ordinary user message and reply of the same sizes.

use statestore_core::{Message, ToolCall};

/// How the page states the mix (a `bench-metric:` line).
pub(crate) const DEFINITION: &str = "user 300 B, assistant 1.2 KB, and every third turn a \
    tool call (100 B of arguments) and its 3 KB result before the reply: 8 messages per 3 \
    turns, about 950 B per message";
const USER: usize = 300;
const ASSISTANT: usize = 1_200;
const TOOL_ARGUMENTS: usize = 100;
const TOOL_RESULT: usize = 3_000;

/// Text of exactly `bytes` bytes, starting with `tag`.
fn text(tag: &str, bytes: usize) -> String {
    let mut s = format!("{tag}: ");
    while s.len() < bytes {
        s.push_str("ordinary words of a conversation, ");
    }
    s.truncate(bytes);
    s
}

/// The first `len` messages of the conversation.
pub(crate) fn history(len: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(len + 3);
    let mut turn = 0;
    while out.len() < len {
        out.push(Message::user(text(&format!("user {turn}"), USER)));
        if turn % 3 == 2 {
            let id = format!("call-{turn}");
            let arguments = format!("{{\"query\":\"{}\"}}", text("q", TOOL_ARGUMENTS - 13));
            out.push(
                Message::assistant("")
                    .with_tool_calls(vec![ToolCall::new(&id, "search", arguments)]),
            );
            out.push(Message::tool(
                id,
                text(&format!("result {turn}"), TOOL_RESULT),
            ));
        }
        out.push(Message::assistant(text(
            &format!("assistant {turn}"),
            ASSISTANT,
        )));
        turn += 1;
    }
    out.truncate(len);
    out
}

/// The turn appended: a user message and the reply.
pub(crate) fn turn() -> Vec<Message> {
    vec![
        Message::user(text("user, now", USER)),
        Message::assistant(text("assistant, now", ASSISTANT)),
    ]
}
