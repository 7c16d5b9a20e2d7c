//! One execution, as the [module documentation](super) lists its steps: the
//! attempt loop under the session lock (step 1), the load (2), one attempt
//! — window, middleware, model and tool calls, the write, the summary (3 to
//! 8) — and counting each model call.

use std::sync::Arc;
use std::time::Instant;

use context_window::{History, Selection, annotate, select_borrowed};
use statestore_core::rewind::was_rewound;
use statestore_core::telemetry::{Count, count};
use statestore_core::{
    Append, Appended, Counters, Error as StoreError, Expect, IdempotencyKey, Message, Pending,
    SessionId, Summary, TITLE_KEY,
};
use tracing::Instrument;

use super::spans;
use super::title;
use super::tools::ToolRuns;
use super::{
    Concurrency, ExecContext, Executed, MIN_MESSAGE_TOKENS, OnDelta, Pipeline, counters, reborrow,
    usage_counters,
};
use crate::{ChatRequest, ChatResponse, Error, StreamEvent, Usage};

/// Loaded history: what the window is chosen from.
struct Loaded {
    messages: Vec<Arc<Message>>,
    first_position: u64,
    total: u64,
    system_prompt: Option<String>,
    summaries: Vec<Summary>,
    expect: Expect,
    /// What the turn's earlier write did, when it already landed.
    replay: Option<Appended>,
    /// Whether that write was taken away by a rewind since.
    rewound: bool,
    /// Whether the session has a title already.
    titled: bool,
    /// What an earlier run of the turn recorded before it stopped.
    pending: Option<Pending>,
}

/// One execute's running state, kept across attempts.
pub(super) struct Run {
    pub(super) session_id: SessionId,
    pub(super) turn_id: IdempotencyKey,
    /// Whether the caller chose the turn id (it may then be a retry of a
    /// turn an earlier call stored).
    pub(super) chosen: bool,
    /// Every model call's usage so far.
    pub(super) usage: Usage,
    /// Model calls so far.
    pub(super) model_calls: u64,
    /// Tool calls run so far.
    pub(super) tools: ToolRuns,
    /// The session as telemetry records it (`None`: not recorded, or no
    /// subscriber is listening).
    pub(super) conversation: Option<String>,
    /// Whether the turn went on from an earlier run's recorded rounds.
    pub(super) resumed: bool,
    /// Attempts discarded because a concurrent turn landed first.
    pub(super) restarts: u32,
}

impl Run {
    /// The usage so far as the counters a turn adds to.
    pub(super) fn counters(&self) -> Counters {
        usage_counters(self.usage, self.model_calls)
    }

    /// Adds what an earlier run of the turn spent ([`Run::counters`]).
    fn absorb(&mut self, spent: &Counters) {
        let get = |name: &str| spent.get(name).copied().unwrap_or(0);
        self.usage += Usage {
            prompt_tokens: get(counters::PROMPT_TOKENS),
            completion_tokens: get(counters::COMPLETION_TOKENS),
        };
        self.model_calls += get(counters::MODEL_CALLS);
    }
}

impl Pipeline {
    /// Steps 1 to 8 under the session lock: attempts until one is stored,
    /// is found stored, fails, or the concurrency policy gives up.
    pub(super) async fn execute_message(
        &self,
        id: SessionId,
        message: Message,
        turn_id: Option<IdempotencyKey>,
        on_event: OnDelta<'_>,
    ) -> Result<Executed, Error> {
        let span = spans::execute_span(&*self.inner.provider, on_event.is_some());
        let conversation = match span.is_disabled() {
            true => None,
            false => self.inner.conversation_ids.value(&id),
        };
        if let Some(c) = &conversation {
            span.record("gen_ai.conversation.id", c.as_str());
        }
        let mut run = Run {
            session_id: id.clone(),
            chosen: turn_id.is_some(),
            turn_id: turn_id.unwrap_or_else(IdempotencyKey::random),
            usage: Usage::default(),
            model_calls: 0,
            tools: ToolRuns::default(),
            conversation,
            resumed: false,
            restarts: 0,
        };
        span.record("statestore.turn.id", run.turn_id.as_str());
        let result = self
            .attempts(id, &message, &mut run, on_event)
            .instrument(span.clone())
            .await;
        span.record("statestore.turn.resumed", run.resumed);
        span.record("statestore.turn.conflict_restarts", run.restarts);
        span.record("statestore.model_calls", run.model_calls);
        match &result {
            Ok(done) => {
                span.record("statestore.turn.replayed", done.replayed);
                span.record("statestore.messages.sent", done.context_messages + 1);
                span.record("statestore.messages.stored", done.stored);
            }
            Err(e) => {
                spans::fail(&span, e.kind());
                span.record("statestore.write_outcome", e.write_outcome().as_str());
            }
        }
        result
    }

    /// The attempt loop of step 1, under the session lock.
    async fn attempts(
        &self,
        id: SessionId,
        message: &Message,
        run: &mut Run,
        mut on_event: OnDelta<'_>,
    ) -> Result<Executed, Error> {
        let lock = self.session_lock(&id);
        let _guard = lock.lock().await;
        let attempts = match self.inner.concurrency {
            Concurrency::Retry { attempts } => attempts.max(1),
            Concurrency::Reject => 1,
        };
        for attempt in 1..=attempts {
            if attempt > 1
                && let Some(f) = on_event.as_mut()
            {
                f(StreamEvent::Restart);
            }
            if let Some(done) = self
                .attempt(&id, message, attempt, run, reborrow(&mut on_event))
                .await?
            {
                return Ok(done);
            }
            run.restarts += 1;
            count(Count::Retry { cause: "conflict" });
            tracing::debug!(attempt, "a concurrent turn landed first");
        }
        Err(Error::Busy {
            id,
            attempts,
            usage: run.usage,
        })
    }

    async fn load(&self, id: &SessionId, run: &Run) -> Result<Loaded, Error> {
        let turn_id = &run.turn_id;
        let policy = &self.inner.policy;
        let by_budget = policy.prompt_budget().map(|b| b / MIN_MESSAGE_TOKENS + 1);
        let bound = match (policy.max_messages, by_budget) {
            (Some(m), Some(b)) => Some(m.min(b)),
            (m, b) => m.or(b),
        };
        // One more than the window can hold, so a tool exchange cut at the
        // edge is recognized and left out whole; unbounded: everything.
        let n = bound.map_or(usize::MAX, |n| n.saturating_add(1));
        let started = Instant::now();
        let loaded = self
            .inner
            .store
            .load_recent_with(id, n, Some(turn_id))
            .await?;
        let loaded = match loaded {
            Some(r) => Loaded {
                first_position: r.first_position(),
                total: r.total_messages,
                messages: r.messages,
                system_prompt: r.system_prompt,
                summaries: r.summaries,
                expect: Expect::Version(r.version),
                rewound: r.replay.is_some() && was_rewound(&r.metadata, turn_id),
                titled: r.metadata.contains_key(TITLE_KEY),
                replay: r.replay,
                pending: r.pending,
            },
            None => Loaded {
                messages: Vec::new(),
                first_position: 0,
                total: 0,
                system_prompt: None,
                summaries: Vec::new(),
                expect: Expect::Absent,
                replay: None,
                rewound: false,
                titled: false,
                // A session's first turn may have stopped between rounds
                // too; only a turn id the caller chose can have (one more
                // read, on a new session only).
                pending: if run.chosen {
                    self.inner.store.load_pending(id, turn_id).await?
                } else {
                    None
                },
            },
        };
        tracing::debug!(
            messages = loaded.messages.len(),
            replay = loaded.replay.is_some(),
            elapsed = ?started.elapsed(),
            "loaded"
        );
        Ok(loaded)
    }

    /// One attempt at the turn: `Ok(None)` when a concurrent turn landed
    /// first (the attempt is discarded).
    async fn attempt(
        &self,
        id: &SessionId,
        message: &Message,
        attempt: u32,
        run: &mut Run,
        mut on_event: OnDelta<'_>,
    ) -> Result<Option<Executed>, Error> {
        let inner = &self.inner;
        let mut loaded = match self.load(id, run).await {
            Ok(loaded) => loaded,
            // Whether an earlier call (or another instance, meanwhile)
            // stored this turn is not known: only a turn id made here is
            // surely not stored.
            Err(Error::Store(source)) if run.chosen => {
                return Err(Error::Lookup {
                    id: id.clone(),
                    turn_id: run.turn_id.clone(),
                    source,
                });
            }
            Err(e) => return Err(e),
        };
        if loaded.rewound {
            return Err(Error::TurnRewound {
                id: id.clone(),
                turn_id: run.turn_id.clone(),
            });
        }
        if let Some(appended) = loaded.replay {
            count(Count::Replay { source: "lookup" });
            let tail = (&loaded.messages[..], loaded.first_position, loaded.total);
            let turn = self
                .stored_turn(id, &run.turn_id, appended, Some(tail))
                .await?;
            return Ok(Some(Self::replayed(
                id, run, appended, &turn, on_event, false,
            )?));
        }
        let discarded = run.usage;
        // An earlier run of this turn stopped between tool rounds: go on
        // from its last completed round (a restart after a conflict starts
        // over on the new history instead, reusing the tools' results).
        let resumed = match loaded.pending.take() {
            Some(p) if attempt == 1 && !p.messages.is_empty() => Some(p),
            _ => None,
        };
        let mut turn: Vec<Message> = match &resumed {
            Some(p) => {
                run.resumed = true;
                count(Count::Resumed);
                run.absorb(&p.counters);
                run.tools.seed(&p.messages);
                tracing::debug!(messages = p.messages.len(), "resuming the turn");
                p.messages.clone()
            }
            None => vec![message.clone()],
        };
        let prompt = loaded
            .system_prompt
            .take()
            .or_else(|| inner.system_prompt.clone());
        let mut history = std::mem::take(&mut loaded.messages);
        history.push(Arc::new(turn.first().unwrap_or(message).clone()));
        // Borrowed: the request is built straight from the history.
        let window: Selection<'_> = select_borrowed(
            History {
                system_prompt: prompt.as_deref(),
                summaries: &loaded.summaries,
                messages: &history,
                first_position: loaded.first_position,
            },
            &inner.policy,
            &*inner.counter,
        )?;
        tracing::debug!(
            sent = window.len(),
            dropped = window.dropped(),
            tokens = window.tokens(),
            "window selected"
        );
        let ctx = ExecContext {
            session_id: id.clone(),
            turn_id: run.turn_id.clone(),
            attempt,
        };
        let mut request = ChatRequest {
            messages: window.request_messages(),
            tools: inner.tools.as_ref().map(|t| t.specs()).unwrap_or_default(),
            temperature: inner.temperature,
            max_tokens: inner.max_tokens,
        };
        // Resumed rounds follow the window, where they were sent before.
        let rounds_done = turn.iter().filter(|m| !m.tool_calls().is_empty()).count();
        request
            .messages
            .extend(turn.iter().skip(1).cloned().map(Arc::new));
        for m in &inner.middleware {
            m.before(&ctx, &mut request).await?;
        }

        // The first turn's title (unless one is set): asked for beside the
        // turn's first call.
        let new_session = loaded.total == 0 && !loaded.titled;
        let first_text = message.text();
        let conversation = run.conversation.clone();
        let title_call = async {
            match new_session && rounds_done == 0 {
                true => {
                    let conversation = conversation.as_deref();
                    title::call(&inner.title, &*inner.provider, &first_text, conversation).await
                }
                false => None,
            }
        };
        let (response, titled) = tokio::join!(
            self.call(&request, reborrow(&mut on_event), run),
            title_call
        );
        if let Some(Ok(answer)) = &titled {
            run.usage += answer.usage;
            run.model_calls += 1;
        }
        let response = response?;
        let mut response = self
            .tool_rounds(
                &mut request,
                response,
                &mut turn,
                (attempt, rounds_done),
                run,
                &mut on_event,
            )
            .await?;
        for m in inner.middleware.iter().rev() {
            m.after(&ctx, &mut response).await?;
        }
        if !response.message.tool_calls().is_empty() {
            tracing::warn!(
                calls = response.message.tool_calls().len(),
                "the final reply still asks for tools: its calls are not stored"
            );
            response.message.tool_calls_mut().clear();
        }

        // Returned as stored (token count included), as a replay returns it.
        let mut reply = response.message;
        annotate(&*inner.counter, &mut reply);
        // Stamped with its turn, so that a retry finds it wherever a
        // rewrite of the history moved it.
        reply.metadata_mut().insert(
            super::TURN_METADATA_KEY.to_owned(),
            run.turn_id.as_str().into(),
        );
        turn.push(reply.clone());
        for m in &mut turn {
            annotate(&*inner.counter, m);
        }
        let stored = turn.len();
        let mut append = Append::new(turn)
            .expect(loaded.expect)
            .key(run.turn_id.clone());
        if new_session && let Some(title) = inner.title.title(&first_text, titled.as_ref()) {
            append = append.merge_metadata(TITLE_KEY, title.into());
        }
        append.counters = run.counters();
        let append = append.count(counters::TURNS, 1);
        let started = Instant::now();
        let appended = match inner.store.append_with(id, append).await {
            Ok(appended) => appended,
            Err(StoreError::Conflict { .. }) => return Ok(None),
            Err(source) => {
                return Err(Error::Save {
                    id: id.clone(),
                    turn_id: run.turn_id.clone(),
                    source,
                });
            }
        };
        if appended.replayed {
            // The same turn id landed from another execute since the load:
            // that turn is the one stored, and this one's reply is void.
            tracing::debug!("the turn was stored by another execute meanwhile");
            count(Count::Replay { source: "append" });
            let turn = self.stored_turn(id, &run.turn_id, appended, None).await?;
            return Ok(Some(Self::replayed(
                id, run, appended, &turn, on_event, true,
            )?));
        }
        tracing::debug!(
            stored,
            version = appended.version,
            elapsed = ?started.elapsed(),
            "turn saved"
        );
        if let Some(summarizer) = &inner.summarizer {
            self.maybe_summarize(id, &window, &**summarizer).await;
        }
        Ok(Some(Executed {
            reply,
            usage: run.usage,
            discarded_usage: discarded,
            model_calls: run.model_calls,
            version: appended.version,
            stored,
            context_messages: window.len().saturating_sub(1),
            turn_id: run.turn_id.clone(),
            replayed: false,
        }))
    }

    /// Sends one request, counting its usage into `run`.
    pub(super) async fn call(
        &self,
        request: &ChatRequest,
        on_event: OnDelta<'_>,
        run: &mut Run,
    ) -> Result<ChatResponse, Error> {
        let inner = &self.inner;
        let conversation = run.conversation.as_deref();
        let result = spans::chat(
            &*inner.provider,
            request,
            on_event,
            conversation,
            inner.record_content,
        )
        .await;
        if let Ok(r) = &result {
            run.usage += r.usage;
            run.model_calls += 1;
        }
        result
    }
}
