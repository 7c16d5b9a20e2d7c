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
//! hold nothing else), with unanswered calls stripped. The units are cut
//! from the newest message backwards ([`walk`]) and only as far as needed:
//! first the mandatory tail (through the newest user message), then older
//! units while every limit — messages, user turns, tokens — still admits
//! them; the first that breaks one ends the walk, so selection costs what
//! the window holds, not what the history holds. Token costs come from
//! [`message_tokens`](crate::message_tokens), i.e. from each message's
//! cached count when it has one, so selecting over long stored histories
//! tokenizes nothing seen before (summaries are counted once each).

use std::sync::Arc;

use statestore_core::{ConversationState, Message, RecentState, Role, Summary};

use crate::Error;
use crate::count::{PER_MESSAGE, REPLY_PRIMING, TokenCounter, count_message};
pub use selection::{Selection, SentMessages};
use walk::{Change, Unit, Walk};

mod selection;
mod walk;

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
        request_messages(
            self.system_prompt.as_deref(),
            &self.summaries,
            self.messages.iter(),
        )
    }
}

/// The request's messages: the system prompt, the summaries, `messages`.
fn request_messages<'m, S: std::borrow::Borrow<Summary>>(
    system_prompt: Option<&str>,
    summaries: &[S],
    messages: impl ExactSizeIterator<Item = &'m Arc<Message>>,
) -> Vec<Arc<Message>> {
    let mut out = Vec::with_capacity(messages.len() + summaries.len() + 1);
    if let Some(p) = system_prompt {
        out.push(Arc::new(Message::system(p)));
    }
    out.extend(
        summaries
            .iter()
            .map(|s| Arc::new(summary_message(s.borrow()))),
    );
    out.extend(messages.cloned());
    out
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

/// The summaries' cost as the window's start moves back, each summary
/// counted once.
struct SummaryCost<'a> {
    summaries: &'a [Summary],
    /// Each summary's cost, once counted.
    each: Vec<Option<usize>>,
    /// The last answer, by how many summaries start before the window: the
    /// summaries sent depend on nothing else.
    last: Option<(usize, usize)>,
}

impl<'a> SummaryCost<'a> {
    fn new(summaries: &'a [Summary]) -> Self {
        Self {
            summaries,
            each: vec![None; summaries.len()],
            last: None,
        }
    }

    /// Tokens the summaries sent with a window starting at history
    /// position `start` cost.
    #[inline]
    fn at(&mut self, counter: &dyn TokenCounter, start: u64) -> usize {
        if self.summaries.is_empty() {
            return 0;
        }
        self.counted(counter, start)
    }

    fn counted(&mut self, counter: &dyn TokenCounter, start: u64) -> usize {
        let before = self
            .summaries
            .iter()
            .filter(|s| s.covers.start < start)
            .count();
        if let Some((b, cost)) = self.last
            && b == before
        {
            return cost;
        }
        let mut cost = 0;
        for s in summaries_for(self.summaries, start) {
            let k = self
                .summaries
                .iter()
                .position(|t| std::ptr::eq(t, s))
                .unwrap_or(0);
            cost += match self.each.get_mut(k) {
                Some(Some(c)) => *c,
                Some(slot) => *slot.insert(count_message(counter, &summary_message(s))),
                None => count_message(counter, &summary_message(s)),
            };
        }
        self.last = Some((before, cost));
        cost
    }
}

/// Selects the window for `history` under `policy`, counting tokens with
/// `counter` (only when the policy has a token budget).
///
/// The owned form of [`select_borrowed`]: every message sent is cloned
/// into the [`Window`] (a reference-count increment each). A caller that
/// only builds a request from the window can use [`select_borrowed`] and
/// skip that copy.
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
    select_borrowed(history, policy, counter).map(|s| s.to_window())
}

/// Selects the window for `history` under `policy` as a [`Selection`]
/// borrowing the history: what [`select`] returns, without copying the
/// messages sent (the selection is where the window starts, plus the few
/// messages not sent as stored). Its cost is the walk's, which stops at the
/// first limit.
///
/// ```
/// use std::sync::Arc;
///
/// use context_window::{CharEstimate, History, WindowPolicy, select_borrowed};
/// use statestore_core::Message;
///
/// let messages: Vec<Arc<Message>> = (0..10)
///     .map(|i| Arc::new(Message::user(format!("message {i}"))))
///     .collect();
/// let history = History {
///     system_prompt: Some("Be brief."),
///     summaries: &[],
///     messages: &messages,
///     first_position: 0,
/// };
/// let policy = WindowPolicy::default().max_messages(3);
/// let selection = select_borrowed(history, &policy, &CharEstimate)?;
/// assert_eq!(selection.start(), 7);
/// assert_eq!(selection.len(), 3);
/// assert!(selection.messages().zip(&messages[7..]).all(|(a, b)| Arc::ptr_eq(a, b)));
/// // The request: the system prompt, then the three messages.
/// assert_eq!(selection.request_messages().len(), 4);
/// # Ok::<(), context_window::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::BudgetExceeded`] when the system prompt, the summaries and the
/// newest user message with everything after it do not fit the budget.
pub fn select_borrowed<'a>(
    history: impl Into<History<'a>>,
    policy: &WindowPolicy,
    counter: &dyn TokenCounter,
) -> Result<Selection<'a>, Error> {
    let h = history.into();
    let n = h.messages.len();
    let budget = policy.prompt_budget();
    let mut walk = Walk::new(h.messages, budget.map(|_| (counter, counter.encoding())));

    // The mandatory tail: the units from the newest back to the one holding
    // the newest user message. With no user message nothing is mandatory,
    // and the units walked are the first candidates.
    let mut tail: Vec<Unit> = Vec::new();
    let mut mandatory = false;
    while let Some(u) = walk.next_unit() {
        tail.push(u);
        if u.has_user {
            mandatory = true;
            break;
        }
    }
    let (mut start, mut sent, mut users, mut tokens) = (n, 0, 0, 0);
    let mut candidates = Vec::new();
    if mandatory {
        for u in &tail {
            start = u.start;
            sent += u.sendable;
            users += usize::from(u.has_user);
            tokens += u.tokens;
        }
    } else {
        candidates = tail;
    }
    let position = |start: usize| h.first_position + start as u64;

    let mut summaries = SummaryCost::new(h.summaries);
    let mut cost = None;
    let fixed = REPLY_PRIMING
        + h.system_prompt.map_or(0, |p| {
            // `count_message` of the system message, without building it.
            PER_MESSAGE + counter.count_text(Role::System.as_str()) + counter.count_text(p)
        });
    if let Some(budget) = budget {
        let required = fixed + tokens + summaries.at(counter, position(start));
        if required > budget {
            return Err(Error::BudgetExceeded {
                required,
                budget,
                context: policy.context_tokens.unwrap_or(0),
                reserved: policy.reserve_output,
            });
        }
        cost = Some(required);
    }

    // Older units while every limit admits them: the count limits hold
    // for a suffix, and the messages alone only cost more further back, so
    // the walk stops at the first unit that breaks one.
    // One unit older: whether the walk goes on.
    let mut admit = |u: Unit| -> bool {
        if policy
            .max_messages
            .is_some_and(|max| sent + u.sendable > max)
            || policy.max_user_turns.is_some_and(|turns| users >= turns)
        {
            return false;
        }
        sent += u.sendable;
        users += usize::from(u.has_user);
        match budget {
            Some(budget) => {
                tokens += u.tokens;
                if fixed + tokens > budget {
                    return false;
                }
                // Fewer summaries are sent from further back: a start
                // whose summaries do not fit may be followed by one whose do.
                let total = fixed + tokens + summaries.at(counter, position(u.start));
                if total <= budget {
                    start = u.start;
                    cost = Some(total);
                }
            }
            None => start = u.start,
        }
        true
    };
    if candidates.into_iter().all(&mut admit) {
        while let Some(u) = walk.next_unit() {
            if !admit(u) {
                break;
            }
        }
    }

    // The messages from `start` not sent as stored, oldest first.
    let mut changes = walk.into_changes();
    changes.truncate(changes.partition_point(|(i, _)| *i >= start));
    changes.reverse();
    let skipped = changes
        .iter()
        .filter(|(_, c)| matches!(c, Change::Skip))
        .count();
    let sent = n - start - skipped;
    let first_position = position(start);
    Ok(Selection {
        system_prompt: h.system_prompt,
        summaries: summaries_for(h.summaries, first_position),
        messages: h.messages.get(start..).unwrap_or_default(),
        start,
        changes,
        sent,
        dropped: n - sent,
        first_position,
        tokens: cost,
    })
}
