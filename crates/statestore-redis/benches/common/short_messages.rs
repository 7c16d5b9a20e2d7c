//! The short messages (about 60 B) most Redis benchmarks use, and the short
//! turn they append: defined once here, included (`#[path]`) by the Redis
//! suite and by the `server_work` example that `cargo xtask bench
//! --server-work` drives.

use statestore_core::Message;

/// `len` short user messages.
pub(crate) fn history(len: usize) -> Vec<Message> {
    (0..len)
        .map(|i| {
            Message::user(format!(
                "message {i}: some ordinary chat text of moderate length"
            ))
        })
        .collect()
}

/// The short turn appended: a question and its answer.
pub(crate) fn turn() -> Vec<Message> {
    vec![
        Message::user("What's my name?"),
        Message::assistant("Your name is Alice."),
    ]
}
