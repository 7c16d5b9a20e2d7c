//! The selection invariants of `src/select.rs`, checked on random
//! conversations with tool calls, missing answers (calls no result answers,
//! with or without text beside them), orphan tool results, summaries and
//! every combination of limits; and the walk that stops at the limits
//! checked window for window against the full-history selection it
//! replaced (`reference.rs`), on histories with far answers, reused call
//! ids, duplicate answers and several summaries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use context_window::count::REPLY_PRIMING;
use context_window::{
    CharEstimate, Error, History, TokenCounter, WindowPolicy, count_message, select,
    select_borrowed,
};
use proptest::prelude::*;
use statestore_core::{Message, Role, Summary, ToolCall};

#[path = "invariants/reference.rs"]
mod reference;

#[derive(Debug, Clone)]
enum Event {
    User(usize),
    Assistant(usize),
    /// Calls with argument lengths; which are answered; answers reversed?
    /// The length of the text beside the calls.
    Tools(Vec<usize>, Vec<bool>, bool, usize),
    Orphan(usize),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..120usize).prop_map(Event::User),
        3 => (0..120usize).prop_map(Event::Assistant),
        2 => (
            prop::collection::vec(0..60usize, 1..4),
            prop::collection::vec(any::<bool>(), 4),
            any::<bool>(),
            prop_oneof![Just(0usize), 1..30usize],
        )
            .prop_map(|(calls, answered, rev, text)| Event::Tools(calls, answered, rev, text)),
        1 => (0..40usize).prop_map(Event::Orphan),
    ]
}

fn build(events: &[Event]) -> Vec<Arc<Message>> {
    let mut out = Vec::new();
    let mut next_call = 0;
    for e in events {
        match e {
            Event::User(n) => out.push(Message::user("u".repeat(*n))),
            Event::Assistant(n) => out.push(Message::assistant("a".repeat(*n))),
            Event::Tools(args, answered, rev, text) => {
                let calls: Vec<ToolCall> = args
                    .iter()
                    .map(|n| {
                        next_call += 1;
                        ToolCall::new(format!("c{next_call}"), "f", "x".repeat(*n))
                    })
                    .collect();
                let mut answers: Vec<Message> = calls
                    .iter()
                    .zip(answered)
                    .filter(|(_, a)| **a)
                    .map(|(c, _)| Message::tool(c.id.clone(), "r".repeat(c.arguments.len())))
                    .collect();
                if *rev {
                    answers.reverse();
                }
                out.push(Message::assistant("t".repeat(*text)).with_tool_calls(calls));
                out.extend(answers);
            }
            Event::Orphan(n) => {
                next_call += 1;
                out.push(Message::tool(format!("gone{next_call}"), "o".repeat(*n)));
            }
        }
    }
    out.into_iter().map(Arc::new).collect()
}

fn policy() -> impl Strategy<Value = WindowPolicy> {
    (
        prop::option::of(0..25usize),
        prop::option::of(0..6usize),
        prop::option::of((0..600usize, 0..120usize)),
    )
        .prop_map(|(m, t, b)| {
            let mut p = WindowPolicy::default();
            if let Some(m) = m {
                p = p.max_messages(m);
            }
            if let Some(t) = t {
                p = p.max_user_turns(t);
            }
            if let Some((c, r)) = b {
                p = p.token_budget(c, r);
            }
            p
        })
}

/// Tokens the request for a window costs, computed independently.
fn request_cost(counter: &dyn TokenCounter, messages: &[Arc<Message>]) -> usize {
    REPLY_PRIMING
        + messages
            .iter()
            .map(|m| count_message(counter, m))
            .sum::<usize>()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn windows_never_break_a_conversation(
        events in prop::collection::vec(event(), 0..30),
        policy in policy(),
        prompt in prop::option::of(0..80usize),
        summary_end in prop::option::of(0..40u64),
        offset in 0..5u64,
    ) {
        let messages = build(&events);
        let prompt = prompt.map(|n| "s".repeat(n));
        let summaries: Vec<Summary> = summary_end
            .filter(|e| *e <= offset + messages.len() as u64)
            .map(|e| vec![Summary::new(0..e, "earlier")])
            .unwrap_or_default();
        let history = History {
            system_prompt: prompt.as_deref(),
            summaries: &summaries,
            messages: &messages,
            first_position: offset,
        };
        let counter = CharEstimate;
        let index: HashMap<*const Message, usize> =
            messages.iter().enumerate().map(|(i, m)| (Arc::as_ptr(m), i)).collect();
        let calls: HashMap<&str, usize> = messages
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.tool_calls().iter().map(move |c| (c.id.as_str(), i)))
            .collect();
        let orphan = |i: usize| {
            let m = &messages[i];
            m.role == Role::Tool
                && m.tool_call_id().and_then(|id| calls.get(id)).is_none_or(|&a| a >= i)
        };
        let newest_user = messages.iter().rposition(|m| m.role == Role::User);
        // What each message is sent as (`None`: never sent): orphan results
        // are not; calls with no result after them are stripped, and a
        // message left with no calls and no content is not sent.
        let answered = |i: usize, c: &ToolCall| {
            messages[i + 1..]
                .iter()
                .any(|r| r.role == Role::Tool && r.tool_call_id() == Some(c.id.as_str()))
        };
        let sent_as = |i: usize| -> Option<Message> {
            if orphan(i) {
                return None;
            }
            let m = &messages[i];
            let kept: Vec<ToolCall> =
                m.tool_calls().iter().filter(|c| answered(i, c)).cloned().collect();
            if kept.len() == m.tool_calls().len() {
                return Some((**m).clone());
            }
            if kept.is_empty() && m.content.is_empty() {
                return None;
            }
            let mut copy = (**m).clone();
            *copy.tool_calls_mut() = kept;
            copy.token_count = None;
            Some(copy)
        };
        let sent = |i: usize| sent_as(i).is_some();

        match select(history, &policy, &counter) {
            Ok(w) => {
                // 1. System prompt kept.
                prop_assert_eq!(w.system_prompt.as_deref(), prompt.as_deref());
                // 4. Order kept; a suffix minus what is never sent, each
                // message sent as stored (the same one) or stripped.
                let start = (w.first_position - offset) as usize;
                let picked: Vec<usize> = (start..messages.len()).filter(|&i| sent(i)).collect();
                prop_assert_eq!(w.messages.len(), picked.len());
                for (m, &i) in w.messages.iter().zip(&picked) {
                    let expected = sent_as(i).unwrap();
                    prop_assert_eq!(&**m, &expected, "message {} sent wrongly", i);
                    if expected == *messages[i] {
                        prop_assert!(index[&Arc::as_ptr(m)] == i, "message {} copied", i);
                    }
                }
                prop_assert_eq!(w.dropped, messages.len() - picked.len());
                // 2. No call is sent without its result.
                for (k, m) in w.messages.iter().enumerate() {
                    for c in m.tool_calls() {
                        prop_assert!(
                            w.messages[k + 1..].iter().any(|r| r.tool_call_id() == Some(c.id.as_str())),
                            "call {} sent without its result", c.id
                        );
                    }
                }
                // 1. Summaries of dropped history kept.
                for s in &summaries {
                    if s.covers.start < w.first_position || s.covers.is_empty() {
                        prop_assert!(w.summaries.contains(s));
                    }
                }
                // 2. Tool calls and their stored answers together.
                let set: HashSet<usize> = picked.iter().copied().collect();
                for &i in &picked {
                    let m = &messages[i];
                    for c in m.tool_calls() {
                        for (j, a) in messages.iter().enumerate() {
                            if j > i && a.tool_call_id() == Some(c.id.as_str()) {
                                prop_assert!(set.contains(&j), "answer {} of call at {} dropped", j, i);
                            }
                        }
                    }
                    if m.role == Role::Tool {
                        let call = calls[m.tool_call_id().unwrap()];
                        prop_assert!(set.contains(&call), "tool result {} sent without its call", i);
                    }
                }
                if let Some(first) = w.messages.first() {
                    prop_assert!(first.role != Role::Tool, "window starts with a tool result");
                }
                // 3. Newest user message kept.
                if let Some(u) = newest_user {
                    prop_assert!(set.contains(&u));
                }
                // Fits the budget, and says what it costs.
                let request = w.request_messages();
                if let Some(budget) = policy.prompt_budget() {
                    let cost = request_cost(&counter, &request);
                    prop_assert_eq!(w.tokens, Some(cost));
                    prop_assert!(cost <= budget, "cost {} over budget {}", cost, budget);
                }
                // Count limits hold unless the mandatory tail alone breaks them.
                let mandatory_from = newest_user.unwrap_or(messages.len());
                let mandatory_len = (mandatory_from..messages.len()).filter(|&i| sent(i)).count();
                if let Some(max) = policy.max_messages {
                    prop_assert!(picked.len() <= max.max(mandatory_len));
                }
                if let Some(turns) = policy.max_user_turns {
                    let users = picked.iter().filter(|&&i| messages[i].role == Role::User).count();
                    let mandatory_users = usize::from(newest_user.is_some());
                    prop_assert!(users <= turns.max(mandatory_users));
                }
                // 5. Maximal: the previous unit would break a limit.
                if start > 0 {
                    let grown = earlier_start(&messages, start);
                    let extra: Vec<usize> = (grown..messages.len()).filter(|&i| sent(i)).collect();
                    let users = extra.iter().filter(|&&i| messages[i].role == Role::User).count();
                    // A turn limit also ends the window at its oldest turn's user
                    // message: what precedes it belongs to an older turn.
                    let current_users = picked.iter().filter(|&&i| messages[i].role == Role::User).count();
                    let breaks_count = policy.max_messages.is_some_and(|m| extra.len() > m)
                        || policy.max_user_turns.is_some_and(|t| users > t || current_users >= t);
                    let breaks_budget = policy.prompt_budget().is_some_and(|budget| {
                        let sent: Vec<Arc<Message>> = extra.iter().map(|&i| Arc::new(sent_as(i).unwrap())).collect();
                        let mut req: Vec<Arc<Message>> = Vec::new();
                        if let Some(p) = &prompt {
                            req.push(Arc::new(Message::system(p.as_str())));
                        }
                        let pos = offset + grown as u64;
                        for s in summaries.iter().filter(|s| s.covers.start < pos || s.covers.is_empty()) {
                            req.push(Arc::new(context_window::summary_message(s)));
                        }
                        req.extend(sent);
                        request_cost(&counter, &req) > budget
                    });
                    prop_assert!(breaks_count || breaks_budget, "window could have started at {} instead of {}", grown, start);
                }
            }
            Err(Error::BudgetExceeded { required, budget, .. }) => {
                prop_assert!(policy.prompt_budget() == Some(budget));
                prop_assert!(required > budget);
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }
}

/// The start of the unit just before `start` (a call through its answers).
fn earlier_start(messages: &[Arc<Message>], start: usize) -> usize {
    // Walk back one message; if it is inside a call/answer span, go to the call.
    let mut s = start - 1;
    loop {
        let m = &messages[s];
        let span_start = if m.role == Role::Tool {
            m.tool_call_id().and_then(|id| {
                messages[..s]
                    .iter()
                    .rposition(|a| a.tool_calls().iter().any(|c| c.id == id))
            })
        } else {
            None
        };
        // Any call before s whose answers reach s or beyond also pulls back.
        let pulled = messages[..s].iter().enumerate().rev().find_map(|(a, msg)| {
            msg.tool_calls()
                .iter()
                .any(|c| {
                    messages[s..]
                        .iter()
                        .any(|t| t.tool_call_id() == Some(c.id.as_str()))
                })
                .then_some(a)
        });
        let target = span_start.into_iter().chain(pulled).min();
        match target {
            Some(t) if t < s => s = t,
            _ => return s,
        }
    }
}

/// One step of a history for the comparison with the reference: answers
/// may come long after their call, call ids may repeat, and a call may be
/// answered twice.
#[derive(Debug, Clone)]
enum Step {
    User(usize),
    Assistant(usize),
    /// Calls (argument lengths), each reusing an earlier id when `Some`
    /// (an index into the ids so far), and the text beside them.
    Calls(Vec<(usize, Option<usize>)>, usize),
    /// A result for an earlier id (an index into the ids so far, from the
    /// newest), or an orphan when there is none.
    Answer(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..60usize).prop_map(Step::User),
        3 => (0..60usize).prop_map(Step::Assistant),
        2 => (
            prop::collection::vec((0..30usize, prop::option::weighted(0.15, 0..40usize)), 1..4),
            prop_oneof![Just(0usize), 1..20usize],
        )
            .prop_map(|(calls, text)| Step::Calls(calls, text)),
        4 => (prop_oneof![4 => 0..3usize, 1 => 0..60usize], 0..30usize)
            .prop_map(|(back, n)| Step::Answer(back, n)),
    ]
}

fn build_steps(steps: &[Step]) -> Vec<Arc<Message>> {
    let mut ids: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for s in steps {
        match s {
            Step::User(n) => out.push(Message::user("u".repeat(*n))),
            Step::Assistant(n) => out.push(Message::assistant("a".repeat(*n))),
            Step::Calls(calls, text) => {
                let calls: Vec<ToolCall> = calls
                    .iter()
                    .map(|(n, reuse)| {
                        let id = match reuse.and_then(|k| ids.get(k)) {
                            Some(id) => id.clone(),
                            None => format!("c{}", ids.len()),
                        };
                        ids.push(id.clone());
                        ToolCall::new(id, "f", "x".repeat(*n))
                    })
                    .collect();
                out.push(Message::assistant("t".repeat(*text)).with_tool_calls(calls));
            }
            Step::Answer(back, n) => {
                let id = ids
                    .len()
                    .checked_sub(back + 1)
                    .map_or_else(|| format!("gone{}", out.len()), |k| ids[k].clone());
                out.push(Message::tool(id, "r".repeat(*n)));
            }
        }
    }
    // Half the messages carry a cached count, as stored messages do.
    out.into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            if i % 2 == 0 {
                context_window::annotate(&CharEstimate, &mut m);
            }
            Arc::new(m)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_walk_selects_what_the_full_history_selection_did(
        steps in prop::collection::vec(step(), 0..120),
        limits in (
            prop::option::of(0..60usize),
            prop::option::of(0..12usize),
            prop::option::of((0..3_000usize, 0..200usize)),
        ),
        prompt in prop::option::of(0..80usize),
        ranges in prop::collection::vec((0..130u64, 0..40u64), 0..4),
        offset in 0..5u64,
    ) {
        let messages = build_steps(&steps);
        let (m, t, b) = limits;
        let mut policy = WindowPolicy::default();
        if let Some(m) = m {
            policy = policy.max_messages(m);
        }
        if let Some(t) = t {
            policy = policy.max_user_turns(t);
        }
        if let Some((c, r)) = b {
            policy = policy.token_budget(c, r);
        }
        let prompt = prompt.map(|n| "s".repeat(n));
        let summaries: Vec<Summary> = ranges
            .iter()
            .map(|&(start, len)| Summary::new(start..start + len, format!("summary {start}")))
            .collect();
        let history = History {
            system_prompt: prompt.as_deref(),
            summaries: &summaries,
            messages: &messages,
            first_position: offset,
        };
        let stored = |m: &Arc<Message>| messages.iter().any(|s| Arc::ptr_eq(s, m));
        match (select(history, &policy, &CharEstimate), reference::select(history, &policy, &CharEstimate)) {
            (Ok(walked), Ok(full)) => {
                prop_assert_eq!(&walked, &full);
                // The borrowed selection is the same window, sharing every
                // message with the history from its start (or the copy).
                let borrowed = select_borrowed(history, &policy, &CharEstimate).unwrap();
                prop_assert_eq!(borrowed.len(), full.messages.len());
                prop_assert_eq!(borrowed.messages().len(), full.messages.len());
                prop_assert_eq!(borrowed.is_empty(), full.messages.is_empty());
                prop_assert_eq!(borrowed.dropped(), full.dropped);
                prop_assert_eq!(borrowed.tokens(), full.tokens);
                prop_assert_eq!(borrowed.first_position(), full.first_position);
                prop_assert_eq!(borrowed.start() as u64 + offset, full.first_position);
                // (The system messages built for the request are stamped
                // with the time they are built: compared without it.)
                let unstamped = |request: Vec<Arc<Message>>| -> Vec<Message> {
                    request.iter().map(|m| (**m).clone().with_timestamp(None)).collect()
                };
                prop_assert_eq!(
                    unstamped(borrowed.request_messages()),
                    unstamped(full.request_messages())
                );
                prop_assert_eq!(&borrowed.to_window(), &full);
                for (b, w) in borrowed.messages().zip(&walked.messages) {
                    prop_assert!(Arc::ptr_eq(b, w) || !stored(w), "the borrowed selection copied a stored message");
                }
                if borrowed.is_contiguous() {
                    prop_assert!(borrowed.messages().eq(&messages[borrowed.start()..]));
                }
                for (w, f) in walked.messages.iter().zip(&full.messages) {
                    prop_assert_eq!(stored(w), stored(f), "a stored message copied, or a copy not made");
                    if stored(w) {
                        prop_assert!(Arc::ptr_eq(w, f));
                    }
                }
            }
            (
                Err(Error::BudgetExceeded { required: a, budget: x, .. }),
                Err(Error::BudgetExceeded { required: b, budget: y, .. }),
            ) => {
                prop_assert_eq!(a, b);
                prop_assert_eq!(x, y);
            }
            (walked, full) => prop_assert!(false, "walk {:?}, full history {:?}", walked, full),
        }
    }
}
