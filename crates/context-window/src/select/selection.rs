//! [`Selection`]: a selected window that borrows the history it was
//! selected from instead of copying the messages it sends.

use std::iter::FusedIterator;
use std::sync::Arc;

use statestore_core::{Message, Summary};

use super::walk::Change;
use super::{Window, request_messages};

/// A selected window, borrowed from the [`History`](super::History) it was
/// selected from: what [`select_borrowed`](super::select_borrowed)
/// returns.
///
/// The window is a suffix of the history's messages — from
/// [`start`](Self::start) on — minus the few not sent as stored (tool
/// results whose call is not stored, messages whose calls were all
/// unanswered and that hold nothing else) and with copies of the messages
/// whose unanswered calls are stripped (see the module's invariant 2).
/// Holding it costs nothing per message: [`messages`](Self::messages)
/// iterates the window, [`request_messages`](Self::request_messages)
/// builds a request directly, and [`to_window`](Self::to_window) makes the
/// owned [`Window`] [`select`](super::select) returns.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    pub(super) system_prompt: Option<&'a str>,
    pub(super) summaries: Vec<&'a Summary>,
    /// The history's messages from `start` on.
    pub(super) messages: &'a [Arc<Message>],
    pub(super) start: usize,
    /// The messages from `start` not sent as stored, by index in the
    /// history, ascending.
    pub(super) changes: Vec<(usize, Change)>,
    pub(super) sent: usize,
    pub(super) dropped: usize,
    pub(super) first_position: u64,
    pub(super) tokens: Option<usize>,
}

impl<'a> Selection<'a> {
    /// The system prompt.
    #[must_use]
    pub fn system_prompt(&self) -> Option<&'a str> {
        self.system_prompt
    }

    /// Summaries of history before the window, oldest first.
    #[must_use]
    pub fn summaries(&self) -> &[&'a Summary] {
        &self.summaries
    }

    /// Index in the history's messages where the window starts: the
    /// window is sent from `history.messages[start..]`.
    #[must_use]
    pub fn start(&self) -> usize {
        self.start
    }

    /// History position of the first message sent (the window's start).
    #[must_use]
    pub fn first_position(&self) -> u64 {
        self.first_position
    }

    /// How many messages are sent.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sent
    }

    /// Whether no message is sent.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sent == 0
    }

    /// Messages of the history given that are not sent.
    #[must_use]
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Tokens the request costs (prompt side), when a budget was set.
    #[must_use]
    pub fn tokens(&self) -> Option<usize> {
        self.tokens
    }

    /// Whether the window sends every message from [`start`](Self::start)
    /// exactly as stored (nothing skipped, no calls stripped): then the
    /// window is `history.messages[start..]`.
    #[must_use]
    pub fn is_contiguous(&self) -> bool {
        self.changes.is_empty()
    }

    /// The messages sent, oldest first: the history's own, except the
    /// copies with unanswered tool calls stripped.
    #[must_use]
    pub fn messages(&self) -> SentMessages<'_> {
        SentMessages {
            rest: self.messages,
            index: self.start,
            changes: &self.changes,
            remaining: self.sent,
        }
    }

    /// The request's messages: the system prompt, the summaries (as system
    /// messages, see [`summary_message`](super::summary_message)), then
    /// the window's messages — as [`Window::request_messages`] makes them.
    #[must_use]
    pub fn request_messages(&self) -> Vec<Arc<Message>> {
        request_messages(self.system_prompt, &self.summaries, self.messages())
    }

    /// The owned [`Window`]: the same selection with its messages and
    /// summaries copied out of the history.
    #[must_use]
    pub fn to_window(&self) -> Window {
        Window {
            system_prompt: self.system_prompt.map(str::to_owned),
            summaries: self.summaries.iter().map(|s| (*s).clone()).collect(),
            messages: self.messages().cloned().collect(),
            first_position: self.first_position,
            dropped: self.dropped,
            tokens: self.tokens,
        }
    }
}

impl<'a> From<Selection<'a>> for Window {
    fn from(selection: Selection<'a>) -> Self {
        selection.to_window()
    }
}

/// The messages a [`Selection`] sends, oldest first: see
/// [`Selection::messages`].
#[derive(Debug, Clone)]
pub struct SentMessages<'s> {
    /// The history's messages not iterated yet.
    rest: &'s [Arc<Message>],
    /// History index of `rest[0]`.
    index: usize,
    /// Changes not reached yet, ascending.
    changes: &'s [(usize, Change)],
    remaining: usize,
}

impl<'s> Iterator for SentMessages<'s> {
    type Item = &'s Arc<Message>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (m, rest) = self.rest.split_first()?;
            let i = self.index;
            self.rest = rest;
            self.index += 1;
            let sent = match self.changes.split_first() {
                Some(((at, change), more)) if *at == i => {
                    self.changes = more;
                    match change {
                        Change::Skip => continue,
                        Change::Strip(copy) => copy,
                    }
                }
                _ => m,
            };
            self.remaining = self.remaining.saturating_sub(1);
            return Some(sent);
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for SentMessages<'_> {}

impl FusedIterator for SentMessages<'_> {}
