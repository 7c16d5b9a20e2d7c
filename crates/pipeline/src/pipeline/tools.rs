//! Tool calls: the [`ToolHandler`] trait, the rounds of step 5 (run the
//! calls, ask the model again), what answers calls a turn cannot run, and
//! the results kept across attempts so that no call runs twice.

use std::sync::Arc;

use async_trait::async_trait;
use statestore_core::{BoxError, IdempotencyKey, Message, Pending, SessionId, ToolCall};

use tracing::Instrument;

use super::execute::Run;
use super::spans;
use super::{OnDelta, Pipeline, reborrow};
use crate::{ChatRequest, ChatResponse, Error, ToolSpec};

/// What answers a tool call the round limit left unrun.
const NOT_RUN_LIMIT: &str = "not run: tool round limit reached";
/// What answers a tool call when no [`ToolHandler`] is set.
const NOT_RUN_NO_HANDLER: &str = "not run: no tool handler";

/// Runs the tools a model asks for.
///
/// Within one execute a call is run at most once: when a concurrent turn
/// forces a retry ([`Concurrency::Retry`](super::Concurrency::Retry)), a
/// call the discarded attempts already ran — the same tool with the same
/// arguments, whatever its call id, since providers make fresh ids for each
/// reply — is answered with the result it had; each such result stands in
/// for one call per attempt.
#[async_trait]
pub trait ToolHandler: Send + Sync {
    /// The tools offered to the model.
    fn specs(&self) -> Vec<ToolSpec>;

    /// Runs one call; the returned text becomes the tool message.
    async fn call(&self, call: &ToolCall) -> Result<String, BoxError>;

    /// Runs one call knowing what it belongs to — the session, the turn
    /// and a stable [`ToolContext::idempotency_key`] to pass to a system
    /// with side effects (a payment API, a mailer), so that it can refuse
    /// to apply the call twice even when the turn is retried. The
    /// pipeline calls this; the default runs [`ToolHandler::call`].
    async fn call_in(&self, ctx: &ToolContext, call: &ToolCall) -> Result<String, BoxError> {
        let _ = ctx;
        self.call(call).await
    }
}

/// What a tool call belongs to (see [`ToolHandler::call_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolContext {
    /// The session.
    pub session_id: SessionId,
    /// The turn's id: the caller's, or the one the pipeline made.
    pub turn_id: IdempotencyKey,
    /// The call's id, as the model gave it.
    pub call_id: String,
    /// 32 hex digits derived from the session, the turn id and the call
    /// id alone (FNV-1a, 128 bits): the same for every run of this call,
    /// in any process — a retry of the turn with its turn id included —
    /// and different for any other call. Unique, not secret.
    pub idempotency_key: String,
}

impl ToolContext {
    /// The context of call `call_id` of turn `turn_id` in `session_id`.
    #[must_use]
    pub fn new(session_id: SessionId, turn_id: IdempotencyKey, call_id: impl Into<String>) -> Self {
        let call_id = call_id.into();
        let idempotency_key = format!(
            "{:032x}",
            fnv1a_128(&[
                session_id.as_str().as_bytes(),
                turn_id.as_str().as_bytes(),
                call_id.as_bytes()
            ])
        );
        Self {
            session_id,
            turn_id,
            call_id,
            idempotency_key,
        }
    }
}

/// FNV-1a over `parts`, each followed by its length (so that no two lists
/// of parts hash the same bytes).
fn fnv1a_128(parts: &[&[u8]]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for part in parts {
        for b in part
            .iter()
            .copied()
            .chain((part.len() as u64).to_le_bytes())
        {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

impl Pipeline {
    /// The tool rounds of step 5, after the first call's `response`: while
    /// the reply asks for tools, answers each call — run by the handler,
    /// reused from a discarded attempt, or "not run: …" past the round
    /// limit or without a handler — and calls the model again (without
    /// tools offered, once, when the calls were not run). The calls and
    /// their results are added to `request` and to `turn`. Returns the
    /// last reply.
    pub(super) async fn tool_rounds(
        &self,
        request: &mut ChatRequest,
        mut response: ChatResponse,
        turn: &mut Vec<Message>,
        (attempt, mut rounds): (u32, usize),
        run: &mut Run,
        on_event: &mut OnDelta<'_>,
    ) -> Result<ChatResponse, Error> {
        let inner = &self.inner;
        // Results of discarded attempts already standing in for a call of
        // this attempt.
        let mut reused = Vec::new();
        while !response.message.tool_calls().is_empty() {
            let calls = response.message;
            let handler = inner
                .tools
                .as_ref()
                .filter(|_| rounds < inner.max_tool_rounds);
            let mut results = Vec::with_capacity(calls.tool_calls().len());
            if let Some(tools) = handler {
                rounds += 1;
                for call in calls.tool_calls() {
                    let content = inner.record_content;
                    let span = spans::tool_span(
                        &call.name,
                        &call.id,
                        run.turn_id.as_str(),
                        run.conversation.as_deref(),
                        content.then_some(call.arguments.as_str()),
                    );
                    let owner = (&run.session_id, &run.turn_id);
                    let ran = run
                        .tools
                        .run(&**tools, owner, call, attempt, &mut reused)
                        .instrument(span.clone())
                        .await;
                    let output = match ran {
                        Ok((output, was_reused)) => {
                            span.record("statestore.tool.reused", was_reused);
                            if content {
                                span.record("gen_ai.tool.call.result", output.as_str());
                            }
                            output
                        }
                        Err(e) => {
                            spans::fail(&span, e.kind());
                            return Err(e);
                        }
                    };
                    results.push(Message::tool(call.id.clone(), output));
                }
            } else {
                let why = if inner.tools.is_some() {
                    NOT_RUN_LIMIT
                } else {
                    NOT_RUN_NO_HANDLER
                };
                tracing::debug!(
                    calls = calls.tool_calls().len(),
                    reason = why,
                    "tool calls answered without running them"
                );
                results.extend(
                    calls
                        .tool_calls()
                        .iter()
                        .map(|call| Message::tool(call.id.clone(), why)),
                );
            }
            request.messages.push(Arc::new(calls.clone()));
            request
                .messages
                .extend(results.iter().cloned().map(Arc::new));
            turn.push(calls);
            turn.extend(results);
            if handler.is_some() {
                self.record_progress(turn, run).await;
            }
            if handler.is_none() {
                // The final answer, with no tools to ask for.
                request.tools.clear();
                response = self.call(request, reborrow(on_event), run).await?;
                break;
            }
            response = self.call(request, reborrow(on_event), run).await?;
        }
        Ok(response)
    }
}

impl Pipeline {
    /// Records the turn so far under its id (`Store::put_pending`), so
    /// that a retry — in any process — goes on from this round. Best
    /// effort: when the store fails, the turn goes on without it.
    async fn record_progress(&self, turn: &[Message], run: &Run) {
        let pending = Pending::new(turn.to_vec(), run.counters());
        if let Err(e) = (self.inner.store)
            .put_pending(&run.session_id, &run.turn_id, &pending)
            .await
        {
            tracing::warn!(error = %e, "the turn's progress could not be recorded");
        }
    }
}

/// A tool call that ran, with its result.
struct ToolRun {
    id: String,
    name: String,
    arguments: String,
    output: String,
    /// The attempt that ran it.
    attempt: u32,
}

/// The tool calls one execute has run, so that a retried attempt does not
/// run them again.
#[derive(Default)]
pub(super) struct ToolRuns {
    done: Vec<ToolRun>,
}

impl ToolRuns {
    /// Takes the calls an earlier run of the turn completed (its recorded
    /// progress) as run by this execute's first attempt, so that a
    /// restart after a conflict reuses their results too.
    pub(super) fn seed(&mut self, turn: &[Message]) {
        for m in turn {
            for call in m.tool_calls() {
                let output = turn
                    .iter()
                    .find(|r| r.tool_call_id() == Some(&call.id))
                    .map(|r| r.text().into_owned());
                if let Some(output) = output {
                    self.done.push(ToolRun {
                        id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                        output,
                        attempt: 1,
                    });
                }
            }
        }
    }

    /// The result of `call` in `attempt`: a stored one when this call id
    /// already ran with the same tool and arguments, or when a discarded
    /// attempt made the same call and its result is not yet used in this
    /// attempt (`reused`); otherwise the handler runs it.
    pub(super) async fn run(
        &mut self,
        handler: &dyn ToolHandler,
        (session, turn_id): (&SessionId, &IdempotencyKey),
        call: &ToolCall,
        attempt: u32,
        reused: &mut Vec<usize>,
    ) -> Result<(String, bool), Error> {
        let found = self
            .done
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                r.name == call.name
                    && r.arguments == call.arguments
                    && (r.id == call.id || (r.attempt < attempt && !reused.contains(i)))
            })
            .min_by_key(|(_, r)| r.id != call.id)
            .map(|(i, r)| (i, r.output.clone()));
        if let Some((i, output)) = found {
            tracing::debug!(tool = %call.name, "tool call already ran in this execute: result reused");
            reused.push(i);
            return Ok((output, true));
        }
        let ctx = ToolContext::new(session.clone(), turn_id.clone(), call.id.clone());
        let output = handler
            .call_in(&ctx, call)
            .await
            .map_err(|source| Error::Tool {
                name: call.name.clone(),
                source,
            })?;
        self.done.push(ToolRun {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            output: output.clone(),
            attempt,
        });
        Ok((output, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_keys_are_stable_and_tell_calls_apart() {
        let ctx = |s: &str, t: &str, c: &str| {
            ToolContext::new(
                SessionId::new(s).unwrap(),
                IdempotencyKey::new(t).unwrap(),
                c,
            )
            .idempotency_key
        };
        let key = ctx("s", "turn-1", "call_a");
        assert_eq!(key.len(), 32);
        assert_eq!(key, ctx("s", "turn-1", "call_a"), "stable");
        // The value itself is fixed: another process derives the same.
        assert_eq!(
            key,
            format!("{:032x}", fnv1a_128(&[b"s", b"turn-1", b"call_a"]))
        );
        for other in [
            ctx("s2", "turn-1", "call_a"),
            ctx("s", "turn-2", "call_a"),
            ctx("s", "turn-1", "call_b"),
            // Where one part ends matters.
            ctx("s", "turn-1c", "all_a"),
        ] {
            assert_ne!(key, other);
        }
    }
}
