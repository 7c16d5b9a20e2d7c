//! Tool calls: the [`ToolHandler`] trait, the rounds of step 5 (run the
//! calls, ask the model again), what answers calls a turn cannot run, and
//! the results kept across attempts so that no call runs twice.

use std::sync::Arc;

use async_trait::async_trait;
use statestore_core::{BoxError, Message, ToolCall};

use super::execute::Run;
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
        attempt: u32,
        run: &mut Run,
        on_event: &mut OnDelta<'_>,
    ) -> Result<ChatResponse, Error> {
        let inner = &self.inner;
        let mut rounds = 0;
        // Results of discarded attempts already standing in for a call of
        // this attempt.
        let mut reused = Vec::new();
        while !response.message.tool_calls.is_empty() {
            let calls = response.message;
            let handler = inner
                .tools
                .as_ref()
                .filter(|_| rounds < inner.max_tool_rounds);
            let mut results = Vec::with_capacity(calls.tool_calls.len());
            if let Some(tools) = handler {
                rounds += 1;
                for call in &calls.tool_calls {
                    let output = run.tools.run(&**tools, call, attempt, &mut reused).await?;
                    results.push(Message::tool(call.id.clone(), output));
                }
            } else {
                let why = if inner.tools.is_some() {
                    NOT_RUN_LIMIT
                } else {
                    NOT_RUN_NO_HANDLER
                };
                tracing::debug!(
                    calls = calls.tool_calls.len(),
                    reason = why,
                    "tool calls answered without running them"
                );
                results.extend(
                    calls
                        .tool_calls
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
    /// The result of `call` in `attempt`: a stored one when this call id
    /// already ran with the same tool and arguments, or when a discarded
    /// attempt made the same call and its result is not yet used in this
    /// attempt (`reused`); otherwise the handler runs it.
    pub(super) async fn run(
        &mut self,
        handler: &dyn ToolHandler,
        call: &ToolCall,
        attempt: u32,
        reused: &mut Vec<usize>,
    ) -> Result<String, Error> {
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
            return Ok(output);
        }
        let output = handler.call(call).await.map_err(|source| Error::Tool {
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
        Ok(output)
    }
}
