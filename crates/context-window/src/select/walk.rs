//! The history cut into units from the newest message backwards, only as
//! far as the caller asks: the walk behind [`select`](super::select).
//!
//! A unit is an assistant message with tool calls through the last stored
//! result answering it (overlapping spans merged), or a single message —
//! the finest cut where no call/answer span crosses a unit boundary.
//! Walking backwards, every tool result is matched to its call when it is
//! met (the newest assistant message before it holding a call with its
//! id, as a forward scan would have matched it), so a unit is complete —
//! which of its calls are answered, which results are orphans — as soon as
//! no result in it waits for a call further back.

use std::collections::HashMap;
use std::sync::Arc;

use statestore_core::{Encoding, Message, Role};

use crate::count::{TokenCounter, message_tokens};

/// How far back a result's call is searched message by message before the
/// walk indexes every call of the history instead. Results follow their
/// call within a few messages; only orphans (whose call is not stored at
/// all) and unusual histories go further, and the index keeps a history
/// full of those linear.
const SCAN: usize = 16;

/// `a == b`, inline: encoding names are a dozen bytes, compared once per
/// message walked, where a `bcmp` call (what a byte loop compiles to)
/// costs more than the comparison.
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let half = |s: Option<&[u8; 4]>| s.map_or(0, |w| u32::from_ne_bytes(*w));
    let word = |s: Option<&[u8; 8]>| s.map_or(0, |w| u64::from_ne_bytes(*w));
    // Two overlapping words cover 4 to 16 bytes.
    match a.len() {
        0..4 => a.iter().zip(b).all(|(p, q)| p == q),
        4..8 => {
            half(a.first_chunk()) == half(b.first_chunk())
                && half(a.last_chunk()) == half(b.last_chunk())
        }
        8..=16 => {
            word(a.first_chunk()) == word(b.first_chunk())
                && word(a.last_chunk()) == word(b.last_chunk())
        }
        _ => a == b,
    }
}

/// A run of messages that is sent or dropped as a whole.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Unit {
    /// Index of its first message (in the given history).
    pub(super) start: usize,
    /// Messages sent for it (those never sent excluded).
    pub(super) sendable: usize,
    /// Whether it holds a user message.
    pub(super) has_user: bool,
    /// Tokens its sent messages cost (only when the walk counts).
    pub(super) tokens: usize,
}

/// A message sent other than as stored.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// Never sent: a tool result answering no call stored before it, or a
    /// message whose calls were all unanswered and that holds nothing else.
    Skip,
    /// Sent as this copy, its unanswered calls stripped.
    Strip(Arc<Message>),
}

/// The walk: units from the newest backwards, and how the messages walked
/// are sent.
#[derive(Debug)]
pub(super) struct Walk<'a> {
    messages: &'a [Arc<Message>],
    /// `messages[..next]` are not walked yet.
    next: usize,
    /// Counts each unit's tokens with this counter (under its encoding),
    /// when set.
    counter: Option<(&'a dyn TokenCounter, &'a str)>,
    /// An encoding of a cached count already found to be the counter's.
    matched: Option<&'a Encoding>,
    /// Calls answered by results of the open unit, as (index of the
    /// assistant message, position of the call in it); the unit closes
    /// when none waits for a message further back.
    answered: Vec<(usize, usize)>,
    /// Every assistant call by id, as (message index, call position)
    /// ascending; built the first time a search goes past [`SCAN`].
    index: Option<HashMap<&'a str, Vec<(usize, usize)>>>,
    /// Messages walked that are not sent as stored, newest first.
    changes: Vec<(usize, Change)>,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        messages: &'a [Arc<Message>],
        counter: Option<(&'a dyn TokenCounter, &'a str)>,
    ) -> Self {
        Self {
            messages,
            next: messages.len(),
            counter,
            matched: None,
            answered: Vec::new(),
            index: None,
            changes: Vec::new(),
        }
    }

    /// Messages walked that are not sent as stored, newest first.
    pub(super) fn into_changes(self) -> Vec<(usize, Change)> {
        self.changes
    }

    /// The call the tool result at `r` answers: the last call with `id` in
    /// the newest assistant message before `r` that has one.
    fn call_of(&mut self, r: usize, id: &str) -> Option<(usize, usize)> {
        let before = self.messages.get(..r).unwrap_or_default();
        if self.index.is_none() {
            for (a, m) in before.iter().enumerate().rev().take(SCAN) {
                if m.role == Role::Assistant
                    && let Some(p) = m.tool_calls().iter().rposition(|c| c.id == id)
                {
                    return Some((a, p));
                }
            }
            if r <= SCAN {
                return None;
            }
        }
        let messages = self.messages;
        let index = self.index.get_or_insert_with(|| {
            let mut index: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
            for (a, m) in messages.iter().enumerate() {
                if m.role == Role::Assistant {
                    for (p, c) in m.tool_calls().iter().enumerate() {
                        index.entry(c.id.as_str()).or_default().push((a, p));
                    }
                }
            }
            index
        });
        let calls = index.get(id)?;
        let k = calls.partition_point(|(a, _)| *a < r);
        k.checked_sub(1).and_then(|k| calls.get(k)).copied()
    }

    /// What the assistant message at `i` with calls is sent as: `None` when
    /// every call is answered (as stored), else its change.
    fn strip(&mut self, i: usize, m: &Message) -> Option<Change> {
        let answered = &self.answered;
        let is_answered = |p: usize| answered.contains(&(i, p));
        let change = if (0..m.tool_calls().len()).all(is_answered) {
            None
        } else {
            let mut copy = m.clone();
            let mut p = 0;
            copy.tool_calls_mut().retain(|_| {
                p += 1;
                is_answered(p - 1)
            });
            Some(if copy.tool_calls().is_empty() && copy.content.is_empty() {
                Change::Skip
            } else {
                // Counted again when sent: the cached count included the calls.
                copy.token_count = None;
                Change::Strip(Arc::new(copy))
            })
        };
        self.answered.retain(|(a, _)| *a != i);
        change
    }

    /// Tokens `m` costs as sent, when the walk counts.
    #[inline]
    fn tokens(&mut self, m: &'a Message) -> usize {
        let Some((counter, encoding)) = self.counter else {
            return 0;
        };
        if let Some(c) = &m.token_count {
            // The cache check of `message_tokens`, with the encoding looked
            // up once per selection: a count tagged with the interned
            // encoding already matched is the same encoding, by pointer.
            if self
                .matched
                .is_some_and(|e| e.shares_name_with(&c.encoding))
            {
                return c.tokens as usize;
            }
            if same(c.encoding.as_str(), encoding) {
                self.matched = Some(&c.encoding);
                return c.tokens as usize;
            }
        }
        message_tokens(counter, m)
    }

    /// The next unit back, or `None` once the oldest message is walked.
    #[inline]
    pub(super) fn next_unit(&mut self) -> Option<Unit> {
        let i = self.next.checked_sub(1)?;
        let m = self.messages.get(i)?;
        // Most units are one message sent as stored: no call, no result.
        let plain = match m.role {
            Role::Tool => false,
            Role::Assistant => m.tool_calls().is_empty(),
            _ => true,
        };
        if plain && self.answered.is_empty() {
            self.next = i;
            return Some(Unit {
                start: i,
                sendable: 1,
                has_user: m.role == Role::User,
                tokens: self.tokens(m),
            });
        }
        self.exchange()
    }

    /// The next unit back when it may hold calls and results.
    #[inline(never)]
    fn exchange(&mut self) -> Option<Unit> {
        if self.next == 0 {
            return None;
        }
        let messages = self.messages;
        let mut unit = Unit::default();
        while let Some(i) = self.next.checked_sub(1) {
            self.next = i;
            unit.start = i;
            let Some(m) = messages.get(i) else { break };
            let change = match m.role {
                Role::Tool => {
                    let call = m.tool_call_id().and_then(|id| self.call_of(i, id));
                    match call {
                        Some(call) => {
                            self.answered.push(call);
                            None
                        }
                        None => Some(Change::Skip),
                    }
                }
                Role::Assistant if !m.tool_calls().is_empty() => self.strip(i, m),
                Role::User => {
                    unit.has_user = true;
                    None
                }
                _ => None,
            };
            let tokens = match &change {
                None => Some(self.tokens(m)),
                // Stripped copies carry no count: counted now.
                Some(Change::Strip(copy)) => Some(match self.counter {
                    Some((counter, _)) => message_tokens(counter, copy),
                    None => 0,
                }),
                Some(Change::Skip) => None,
            };
            if let Some(tokens) = tokens {
                unit.sendable += 1;
                unit.tokens += tokens;
            }
            if let Some(change) = change {
                self.changes.push((i, change));
            }
            if self.answered.is_empty() {
                break;
            }
        }
        Some(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_is_string_equality() {
        let names = [
            "",
            "a",
            "cl100k_base",
            "o200k_base",
            "o200k_basf",
            "12345678",
            "123456789",
        ];
        for a in names {
            for b in names {
                assert_eq!(same(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
