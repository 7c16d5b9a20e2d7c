//! `statestore chat`: one turn through the pipeline, or an interactive chat
//! ([`interactive`]).

mod interactive;
mod settle;

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use statestore::pipeline::{
    ChatRequest, ChatResponse, ExecContext, Executed, Middleware, OfflineProvider, Pipeline,
    Provider, StreamEvent, TitlePolicy,
};
use statestore::window::{CharEstimate, WindowPolicy};
use statestore::{Role, SessionId};

use crate::args::ChatArgs;
use crate::error::CliError;
use crate::ui::Ui;

/// The system prompt of a session that has none stored and no `--system`.
const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

/// The provider: OpenAI-compatible when `OPENAI_API_KEY` is set (with
/// `OPENAI_BASE_URL`, `OPENAI_MODEL`), the offline one otherwise.
pub(crate) fn provider() -> Result<Arc<dyn Provider>, CliError> {
    Ok(chosen()?.0)
}

/// [`provider`], and what the chat's banner says of it: the provider, the
/// model and the endpoint (its password, if any, redacted; the key is
/// never shown).
fn chosen() -> Result<(Arc<dyn Provider>, String), CliError> {
    let has_key = std::env::var_os("OPENAI_API_KEY").is_some_and(|k| !k.is_empty());
    if !has_key {
        let said = "the offline model (built in; set OPENAI_API_KEY for a real one)";
        return Ok((Arc::new(OfflineProvider::new()), said.to_owned()));
    }
    let openai = statestore::pipeline::OpenAiProvider::from_env()?;
    let said = format!(
        "model {} from {} at {}",
        openai.model(),
        openai.name(),
        statestore::redact_url(openai.base_url())
    );
    Ok((Arc::new(openai), said))
}

/// A middleware that notes when a turn's reply is complete and its write
/// is about to begin: `after` hooks are the last step before the write
/// (see the pipeline's steps 6 and 7), `before` hooks start each attempt.
/// Ctrl-C drops a turn only before that point, so a cancelled turn is
/// known to have stored nothing.
#[derive(Debug, Default)]
struct Stage {
    writing: AtomicBool,
}

impl Stage {
    fn writing(&self) -> bool {
        self.writing.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.writing.store(false, Ordering::SeqCst);
    }
}

#[statestore::async_trait]
impl Middleware for Stage {
    async fn before(
        &self,
        _ctx: &ExecContext,
        _request: &mut ChatRequest,
    ) -> Result<(), statestore::pipeline::Error> {
        self.reset();
        Ok(())
    }

    async fn after(
        &self,
        _ctx: &ExecContext,
        _response: &mut ChatResponse,
    ) -> Result<(), statestore::pipeline::Error> {
        self.writing.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// What one run of `chat` works with.
pub(super) struct Chat<'a> {
    ui: &'a Ui,
    url: &'a str,
    store: Arc<dyn statestore::Store>,
    pipe: Pipeline,
    stage: Arc<Stage>,
    /// The provider as the banner names it.
    model: String,
    /// What `--user` and `--system` ask to store with a session.
    keep: settle::Keep,
}

pub(crate) async fn run(ui: &Ui, url: &str, args: ChatArgs) -> Result<(), CliError> {
    let interactive =
        args.message.is_empty() && !args.regenerate && std::io::stdin().is_terminal() && !ui.json;
    // The message, read before the store is opened: an empty one is refused
    // with nothing opened, made or stored.
    let mut message = args.message.join(" ");
    if !args.message.is_empty() && message.trim().is_empty() {
        return Err(no_message());
    }
    if args.message.is_empty() && !args.regenerate && !interactive {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(CliError::io("reading the message from stdin"))?;
        message = text.trim().to_owned();
        if message.is_empty() {
            return Err(no_message());
        }
    }
    let store =
        crate::store::open_to_write(url, &[&args.session], "chat", crate::store::Create::Yes)
            .await?;
    // A store this user cannot write refuses the turn before the model is
    // called, not after (a `touch` writes nothing new: it only moves the
    // session's clock, and a store that cannot write refuses it).
    store
        .touch(&args.session)
        .await
        .map_err(CliError::write(format!(
            "checking that session {} can be written",
            args.session
        )))?;
    let (provider, model) = chosen()?;
    let stage = Arc::new(Stage::default());
    let mut builder = Pipeline::builder(Arc::clone(&store), Arc::clone(&provider))
        // `list` shows it: the first message, cut short.
        .title(TitlePolicy::FirstMessage { max_chars: 48 })
        // For a session with none stored (`--system` is stored before
        // the session's first turn).
        .system_prompt(
            args.system
                .clone()
                .unwrap_or_else(|| DEFAULT_SYSTEM.to_owned()),
        )
        .window(WindowPolicy::default().max_messages(args.window.max(1)))
        .middleware(Arc::clone(&stage) as Arc<dyn Middleware>);
    if provider.name() == "offline" {
        // Exact OpenAI token counts are for OpenAI's models; building the
        // tokenizer is most of the start-up time of a one-turn run.
        builder = builder.token_counter(Arc::new(CharEstimate));
    }
    let chat = Chat {
        ui,
        url,
        store,
        pipe: builder.build(),
        stage,
        model,
        keep: settle::Keep {
            user: args.user.clone(),
            system: args.system.clone(),
        },
    };
    let session = &args.session;
    // The session's user and system prompt: refused or replaced now; a
    // session that does not exist yet is created with them by its first
    // turn (an interactive chat left without a message stores nothing).
    chat.keep
        .settle(ui, &*chat.store, session, !interactive)
        .await?;
    let pipe = &chat.pipe;
    // The turn's futures are boxed: nested inline, the pipeline's streaming
    // future makes this one too deep for rustc's layout computation on a
    // fresh (non-incremental) build ("queries overflow the depth limit").
    if args.regenerate || args.edit {
        let last = statestore::pipeline::TurnRef::Last;
        let redo = statestore::pipeline::Redo::new();
        let executed = if args.edit {
            Box::pin(pipe.edit(session.as_str(), last, message, redo)).await?
        } else {
            Box::pin(pipe.regenerate(session.as_str(), last, redo)).await?
        };
        return print_turn(ui, session, &executed);
    }
    if interactive {
        return Box::pin(interactive::run(&chat, session.clone())).await;
    }
    Box::pin(turn(ui, pipe, session, &message)).await
}

/// An empty message (an empty argument, or nothing on stdin): a usage error.
fn no_message() -> CliError {
    CliError::Usage {
        message: "no message: give one as an argument or on stdin".into(),
        hint: Some("statestore chat \"Hi, I'm Alice\"".into()),
    }
}

/// One turn: the reply streamed to stdout (or, with `--json`, one document
/// at the end).
async fn turn(ui: &Ui, pipe: &Pipeline, session: &SessionId, text: &str) -> Result<(), CliError> {
    let executed = if ui.json {
        pipe.execute(session.as_str(), Role::User, text).await?
    } else {
        let executed = stream_turn(ui, pipe, session, text).await?;
        ui.out("\n")?;
        executed
    };
    if ui.json {
        return print_turn(ui, session, &executed);
    }
    Ok(())
}

/// A turn's reply on stdout: the text, or with `--json` one document.
fn print_turn(ui: &Ui, session: &SessionId, executed: &Executed) -> Result<(), CliError> {
    if !ui.json {
        return ui.out(&format!("{}\n", executed.reply.text()));
    }
    ui.out_json(&json!({
        "session": session.as_str(),
        "reply": executed.reply.text(),
        "version": executed.version,
        "turn_id": executed.turn_id.as_str(),
        "replayed": executed.replayed,
        "context_messages": executed.context_messages,
        "usage": {
            "prompt_tokens": executed.usage.prompt_tokens,
            "completion_tokens": executed.usage.completion_tokens,
            "model_calls": executed.model_calls,
        },
    }))
}

/// Runs a turn with its reply streamed to stdout as it arrives.
async fn stream_turn(
    ui: &Ui,
    pipe: &Pipeline,
    session: &SessionId,
    text: &str,
) -> Result<Executed, CliError> {
    let mut write_failed: Option<std::io::Error> = None;
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let mut on_event = |event: StreamEvent<'_>| {
        let mut out = std::io::stdout().lock();
        let result = match event {
            StreamEvent::Delta(delta) => out.write_all(delta.as_bytes()).and_then(|()| out.flush()),
            StreamEvent::Restart => {
                restarted.store(true, std::sync::atomic::Ordering::Relaxed);
                out.write_all(b"\n").and_then(|()| out.flush())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            write_failed.get_or_insert(e);
        }
    };
    let executed = pipe
        .execute_streaming(session.as_str(), Role::User, text, &mut on_event)
        .await?;
    if restarted.load(std::sync::atomic::Ordering::Relaxed) {
        ui.warn(
            "another process wrote to this session during the turn: the reply above the \
             restart was discarded and the model asked again",
        );
    }
    if let Some(e) = write_failed {
        return Err(CliError::io("writing the reply to stdout")(e));
    }
    Ok(executed)
}
