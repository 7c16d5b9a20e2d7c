//! Window selection — what to send, chosen from stored history without
//! changing it.
//!
//! # Invariants (property-tested in `tests/invariants.rs`)
//!
//! 1. The system prompt is always sent, and so is every summary of messages
//!    before the window (unless a newer summary's range contains its range).
//! 2. An assistant message with tool calls and every stored tool result
//!    answering it (matched by `tool_call_id`, not by role) are sent or
//!    dropped together: the window never starts with a tool result and
//!    never ends with unanswered tool calls whose answers are stored. Tool
//!    results whose call is not in the history at all are never sent
//!    (the API would reject them).
//!    **No call is sent without its result**: a tool call with no result
//!    stored after it (older pipelines could end a turn on one) is
//!    stripped from the copy of its message that is sent — the stored
//!    message is unchanged, answered calls and the message's text are
//!    kept — and a message left with neither calls nor content is not sent
//!    at all. So a session holding such a message keeps working instead of
//!    being rejected on every later request.
//! 3. The newest user message, and everything after it, is always sent;
//!    when that alone does not fit the token budget the result is
//!    [`Error::BudgetExceeded`](crate::Error::BudgetExceeded), never an
//!    empty or truncated request.
//! 4. Messages keep their order; the window is a suffix of the history
//!    (minus unanswerable tool results) and fits the budget.
//! 5. Within those rules the window is as long as the limits allow: one
//!    more unit of history would break a limit.
//!
//! # How
//!
//! The history is cut into *units*: an assistant message with tool calls
//! through the last tool result answering it (overlapping spans merged), or
//! a single message. A window is a suffix of units, minus what is never
//! sent (orphan results, messages whose calls were all unanswered and that
//! hold nothing else), with unanswered calls stripped. Each limit — messages,
//! user turns, tokens — gives a lowest admissible start; the mandatory
//! tail (from the newest user message) caps it from above. Token costs come
//! from [`message_tokens`], i.e. from each message's cached count when it
//! has one, so selecting over long stored histories tokenizes nothing seen
//! before; scanning stops as soon as the messages alone exceed the budget.

use std::sync::Arc;

use statestore_core::{ConversationState, Message, RecentState, Role, Summary};

use crate::Error;
use crate::count::{REPLY_PRIMING, TokenCounter, count_message, message_tokens};

/// The limits a window must respect; all that are set apply at once.
///
/// ```
/// use context_window::WindowPolicy;
///
/// // The seed's "keep the last 10 messages", and a 4,000-token budget
/// // that leaves 500 tokens for the reply, together:
/// let policy = WindowPolicy::default()
///     .max_messages(10)
///     .token_budget(4_000, 500);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct WindowPolicy {
    /// At most this many messages (the seed's sliding window).
    pub max_messages: Option<usize>,
    /// At most this many user turns (a turn starts at a user message).
    pub max_user_turns: Option<usize>,
    /// The model's context size in tokens.
    pub context_tokens: Option<usize>,
    /// Tokens kept free for the model's reply (only with `context_tokens`).
    pub reserve_output: usize,
}

impl WindowPolicy {
    /// Keeps at most `n` messages.
    pub fn max_messages(mut self, n: usize) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// Keeps at most `n` user turns.
    pub fn max_user_turns(mut self, n: usize) -> Self {
        self.max_user_turns = Some(n);
        self
    }

    /// Fits the request into `context` tokens, leaving `reserve_output` for
    /// the reply.
    pub fn token_budget(mut self, context: usize, reserve_output: usize) -> Self {
        self.context_tokens = Some(context);
        self.reserve_output = reserve_output;
        self
    }

    /// Tokens available for the prompt, when a budget is set.
    #[must_use]
    pub fn prompt_budget(&self) -> Option<usize> {
        self.context_tokens
            .map(|c| c.saturating_sub(self.reserve_output))
    }
}

/// What a window is selected from: a whole state or the tail a
/// `load_recent` returned.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// The system prompt.
    pub system_prompt: Option<&'a str>,
    /// Stored summaries, oldest first.
    pub summaries: &'a [Summary],
    /// Messages, oldest first.
    pub messages: &'a [Arc<Message>],
    /// The history position of `messages[0]`.
    pub first_position: u64,
}

impl<'a> From<&'a ConversationState> for History<'a> {
    fn from(s: &'a ConversationState) -> Self {
        Self {
            system_prompt: s.system_prompt.as_deref(),
            summaries: &s.summaries,
            messages: &s.messages,
            first_position: 0,
        }
    }
}

impl<'a> From<&'a RecentState> for History<'a> {
    fn from(s: &'a RecentState) -> Self {
        Self {
            system_prompt: s.system_prompt.as_deref(),
            summaries: &s.summaries,
            messages: &s.messages,
            first_position: s.first_position(),
        }
    }
}

/// A selected window: what to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The system prompt.
    pub system_prompt: Option<String>,
    /// Summaries of history before the window, oldest first.
    pub summaries: Vec<Summary>,
    /// The messages to send, oldest first (shared with the history, except
    /// copies with unanswered tool calls stripped — invariant 2).
    pub messages: Vec<Arc<Message>>,
    /// History position of the first message sent (the window's start).
    pub first_position: u64,
    /// Messages of the history given that are not sent.
    pub dropped: usize,
    /// Tokens the request costs (prompt side), when a budget was set.
    pub tokens: Option<usize>,
}

/// How a summary is presented to the model: a system message.
#[must_use]
pub fn summary_message(summary: &Summary) -> Message {
    Message::system(format!(
        "Summary of the earlier conversation: {}",
        summary.content
    ))
}

impl Window {
    /// The request's messages: the system prompt, the summaries (as system
    /// messages, see [`summary_message`]), then the window's messages.
    #[must_use]
    pub fn request_messages(&self) -> Vec<Arc<Message>> {
        let mut out = Vec::with_capacity(self.messages.len() + self.summaries.len() + 1);
        if let Some(p) = &self.system_prompt {
            out.push(Arc::new(Message::system(p.as_str())));
        }
        out.extend(self.summaries.iter().map(|s| Arc::new(summary_message(s))));
        out.extend(self.messages.iter().cloned());
        out
    }
}

/// A run of messages that is sent or dropped as a whole.
#[derive(Debug, Clone, Copy)]
struct Unit {
    /// Index of the first message (in the given history).
    start: usize,
    /// Messages sent for this unit (those never sent excluded).
    sendable: usize,
    /// Whether it holds a user message.
    has_user: bool,
}

/// How the history's messages are sent, besides as stored.
#[derive(Debug, Default)]
struct Sending {
    /// Messages never sent: tool results answering no call stored before
    /// them, and messages whose calls were all unanswered with no content.
    skip: Vec<bool>,
    /// Copies of messages with their unanswered calls stripped, by index,
    /// ascending.
    stripped: Vec<(usize, Arc<Message>)>,
}

impl Sending {
    fn skipped(&self, i: usize) -> bool {
        self.skip.get(i).copied().unwrap_or(true)
    }

    fn stripped(&self, i: usize) -> Option<&Arc<Message>> {
        self.stripped
            .binary_search_by_key(&i, |(j, _)| *j)
            .ok()
            .and_then(|k| self.stripped.get(k))
            .map(|(_, m)| m)
    }
}

/// Cuts `messages` into units, and finds what is not sent as stored: tool
/// results that answer no call stored before them, and calls no result
/// answers.
fn units(messages: &[Arc<Message>]) -> (Vec<Unit>, Sending) {
    let n = messages.len();
    // Every tool call so far, as (id, index of the assistant message that
    // made it, answered yet). Answers almost always follow their call
    // closely, so a search from the newest end finds them in a step or
    // two: cheaper than hashing every id of a long history.
    let mut calls: Vec<(&str, usize, bool)> = Vec::new();
    // For each assistant-with-calls index, the last index answering it.
    let mut span_end: Vec<usize> = (0..n).collect();
    let mut skip = vec![false; n];
    for (i, m) in messages.iter().enumerate() {
        if m.role == Role::Assistant {
            calls.extend(m.tool_calls.iter().map(|c| (c.id.as_str(), i, false)));
        }
        if m.role == Role::Tool {
            let call = m
                .tool_call_id
                .as_deref()
                .and_then(|id| calls.iter_mut().rev().find(|(c, _, _)| *c == id));
            match call {
                Some((_, a, answered)) => {
                    *answered = true;
                    if let Some(end) = span_end.get_mut(*a) {
                        *end = (*end).max(i);
                    }
                }
                None => {
                    if let Some(o) = skip.get_mut(i) {
                        *o = true;
                    }
                }
            }
        }
    }
    // Assistant messages with unanswered calls: sent stripped, or not at all.
    let mut stripped = Vec::new();
    let mut k = 0;
    while k < calls.len() {
        let Some(&(_, a, _)) = calls.get(k) else {
            break;
        };
        let made = calls.get(k..).map_or(0, |rest| {
            rest.iter().take_while(|(_, owner, _)| *owner == a).count()
        });
        let own = calls.get(k..k + made).unwrap_or_default();
        k += made.max(1);
        if own.iter().all(|(_, _, answered)| *answered) {
            continue;
        }
        let Some(original) = messages.get(a) else {
            continue;
        };
        let mut copy = Message::clone(original);
        let mut answered = own.iter().map(|(_, _, answered)| *answered);
        copy.tool_calls.retain(|_| answered.next().unwrap_or(false));
        if copy.tool_calls.is_empty() && copy.content.is_empty() {
            if let Some(o) = skip.get_mut(a) {
                *o = true;
            }
        } else {
            // Counted again when sent: the cached count included the calls.
            copy.token_count = None;
            stripped.push((a, Arc::new(copy)));
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        // Merge overlapping call/answer spans into one unit.
        let mut end = span_end.get(i).copied().unwrap_or(i);
        let mut j = i;
        while j <= end {
            end = end.max(span_end.get(j).copied().unwrap_or(j));
            j += 1;
        }
        let range = i..=end;
        let slice = messages.get(range.clone()).unwrap_or_default();
        let flags = skip.get(range).unwrap_or_default();
        out.push(Unit {
            start: i,
            sendable: flags.iter().filter(|o| !**o).count(),
            has_user: slice.iter().any(|m| m.role == Role::User),
        });
        i = end + 1;
    }
    (out, Sending { skip, stripped })
}

/// Summaries sent with a window starting at history position `start`:
/// those about earlier messages (or about messages no longer stored), minus
/// those a later summary's range contains.
fn summaries_for(summaries: &[Summary], start: u64) -> Vec<&Summary> {
    let relevant = |s: &Summary| s.covers.start < start || s.covers.end <= s.covers.start;
    summaries
        .iter()
        .enumerate()
        .filter(|(_, s)| relevant(s))
        .filter(|(i, s)| {
            !summaries.iter().skip(i + 1).any(|later| {
                relevant(later)
                    && later.covers.start <= s.covers.start
                    && s.covers.end <= later.covers.end
            })
        })
        .map(|(_, s)| s)
        .collect()
}

/// Selects the window for `history` under `policy`, counting tokens with
/// `counter` (only when the policy has a token budget).
///
/// # Errors
///
/// [`Error::BudgetExceeded`] when the system prompt, the summaries and the
/// newest user message with everything after it do not fit the budget.
pub fn select<'a>(
    history: impl Into<History<'a>>,
    policy: &WindowPolicy,
    counter: &dyn TokenCounter,
) -> Result<Window, Error> {
    let h = history.into();
    let (units, sending) = units(h.messages);
    let position =
        |k: usize| h.first_position + units.get(k).map_or(h.messages.len(), |u| u.start) as u64;

    // The mandatory tail starts at the unit holding the newest user message.
    let mandatory = units
        .iter()
        .rposition(|u| u.has_user)
        .unwrap_or(units.len());

    // Lowest start each count limit allows.
    let mut lowest = 0;
    if let Some(max) = policy.max_messages {
        let mut sent = 0;
        let mut k = units.len();
        while k > 0 {
            let next = sent + units.get(k - 1).map_or(0, |u| u.sendable);
            if next > max {
                break;
            }
            sent = next;
            k -= 1;
        }
        lowest = lowest.max(k);
    }
    if let Some(turns) = policy.max_user_turns {
        let mut seen = 0;
        let mut k = units.len();
        while k > 0 && seen < turns {
            k -= 1;
            if units.get(k).is_some_and(|u| u.has_user) {
                seen += 1;
            }
        }
        if seen < turns {
            k = 0;
        }
        lowest = lowest.max(k);
    }
    let lowest = lowest.min(mandatory);

    let mut start = lowest;
    let mut tokens = None;
    if let Some(budget) = policy.prompt_budget() {
        let fixed = REPLY_PRIMING
            + h.system_prompt
                .map_or(0, |p| count_message(counter, &Message::system(p)));
        let summary_cost = |k: usize| -> usize {
            if h.summaries.is_empty() {
                return 0;
            }
            summaries_for(h.summaries, position(k))
                .into_iter()
                .map(|s| count_message(counter, &summary_message(s)))
                .sum()
        };
        let encoding = counter.encoding();
        let unit_cost = |k: usize| -> usize {
            let Some(u) = units.get(k) else { return 0 };
            let end = units.get(k + 1).map_or(h.messages.len(), |next| next.start);
            (u.start..end)
                .filter(|&i| !sending.skipped(i))
                .filter_map(|i| sending.stripped(i).or_else(|| h.messages.get(i)))
                .map(|m| match &m.token_count {
                    // The cache check of `message_tokens`, with the
                    // encoding looked up once per selection.
                    Some(c) if c.encoding == encoding => c.tokens as usize,
                    _ => message_tokens(counter, m),
                })
                .sum()
        };
        // Messages from the end back to the mandatory start.
        let mut messages_cost: usize = (mandatory..units.len()).map(unit_cost).sum();
        let required = fixed + messages_cost + summary_cost(mandatory);
        if required > budget {
            return Err(Error::BudgetExceeded {
                required,
                budget,
                context: policy.context_tokens.unwrap_or(0),
                reserved: policy.reserve_output,
            });
        }
        start = mandatory;
        let mut best = required;
        let mut k = mandatory;
        while k > lowest {
            k -= 1;
            messages_cost += unit_cost(k);
            if fixed + messages_cost > budget {
                break; // more history only costs more
            }
            let total = fixed + messages_cost + summary_cost(k);
            if total <= budget {
                start = k;
                best = total;
            }
        }
        tokens = Some(best);
    }

    let first = units.get(start).map_or(h.messages.len(), |u| u.start);
    let messages: Vec<Arc<Message>> = h
        .messages
        .iter()
        .enumerate()
        .skip(first)
        .filter(|(i, _)| !sending.skipped(*i))
        .map(|(i, m)| Arc::clone(sending.stripped(i).unwrap_or(m)))
        .collect();
    let first_position = position(start);
    Ok(Window {
        system_prompt: h.system_prompt.map(str::to_owned),
        summaries: summaries_for(h.summaries, first_position)
            .into_iter()
            .cloned()
            .collect(),
        dropped: h.messages.len() - messages.len(),
        messages,
        first_position,
        tokens,
    })
}
