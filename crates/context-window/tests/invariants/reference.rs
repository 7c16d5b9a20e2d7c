//! The selection as it was before it stopped at the limits: it cuts the
//! whole history into units first. Kept as the oracle the incremental walk
//! of `src/select.rs` must agree with, window for window.
//!
//! It intentionally duplicates the selection logic of `src/select.rs` and
//! `src/select/walk.rs` (units, call matching, stripping, the limits) in
//! its simpler, whole-history form: an independent implementation to check
//! the optimized one against, not code to share or deduplicate with it.

use std::sync::Arc;

use context_window::count::{REPLY_PRIMING, count_message, message_tokens};
use context_window::{Error, History, TokenCounter, Window, WindowPolicy, summary_message};
use statestore_core::{Message, Role, Summary};

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
            calls.extend(m.tool_calls().iter().map(|c| (c.id.as_str(), i, false)));
        }
        if m.role == Role::Tool {
            let call = m
                .tool_call_id()
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
        copy.tool_calls_mut()
            .retain(|_| answered.next().unwrap_or(false));
        if copy.tool_calls().is_empty() && copy.content.is_empty() {
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

pub(crate) fn select<'a>(
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
