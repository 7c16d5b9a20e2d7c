//! `statestore chat`: one turn through the pipeline, or an interactive chat.

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;

use serde_json::json;
use statestore::pipeline::{
    Executed, OfflineProvider, Pipeline, Provider, StreamEvent, TitlePolicy,
};
use statestore::window::{CharEstimate, WindowPolicy};
use statestore::{Role, SessionId, Store};

use crate::args::ChatArgs;
use crate::error::CliError;
use crate::ui::{Paint, Ui};

/// The provider: OpenAI-compatible when `OPENAI_API_KEY` is set (with
/// `OPENAI_BASE_URL`, `OPENAI_MODEL`), the offline one otherwise.
pub(crate) fn provider() -> Result<Arc<dyn Provider>, CliError> {
    let has_key = std::env::var_os("OPENAI_API_KEY").is_some_and(|k| !k.is_empty());
    if has_key {
        Ok(Arc::new(statestore::pipeline::OpenAiProvider::from_env()?))
    } else {
        Ok(Arc::new(OfflineProvider::new()))
    }
}

/// The provider as people read it: `offline`, or `openai (gpt-4o-mini at https://…)`.
fn describe(provider: &dyn Provider) -> String {
    if provider.name() == "offline" {
        return "the offline model (set OPENAI_API_KEY for a real one)".into();
    }
    let model = std::env::var("OPENAI_MODEL").unwrap_or_default();
    if model.is_empty() {
        provider.name().to_owned()
    } else {
        format!("{} ({model})", provider.name())
    }
}

pub(crate) async fn run(ui: &Ui, url: &str, args: ChatArgs) -> Result<(), CliError> {
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
    let provider = provider()?;
    let mut builder = Pipeline::builder(Arc::clone(&store), Arc::clone(&provider))
        // `list` shows it: the first message, cut short.
        .title(TitlePolicy::FirstMessage { max_chars: 48 })
        .system_prompt(args.system.clone())
        .window(WindowPolicy::default().max_messages(args.window.max(1)));
    if provider.name() == "offline" {
        // Exact OpenAI token counts are for OpenAI's models; building the
        // tokenizer is most of the start-up time of a one-turn run.
        builder = builder.token_counter(Arc::new(CharEstimate));
    }
    let pipe = builder.build();
    // The turn's futures are boxed: nested inline, the pipeline's streaming
    // future makes this one too deep for rustc's layout computation on a
    // fresh (non-incremental) build ("queries overflow the depth limit").
    if args.regenerate || args.edit {
        let last = statestore::pipeline::TurnRef::Last;
        let redo = statestore::pipeline::Redo::new();
        let session = args.session.as_str();
        let executed = if args.edit {
            Box::pin(pipe.edit(session, last, args.message.join(" "), redo)).await?
        } else {
            Box::pin(pipe.regenerate(session, last, redo)).await?
        };
        return print_turn(ui, &args.session, &executed);
    }
    if !args.message.is_empty() {
        return Box::pin(turn(ui, &pipe, &args.session, &args.message.join(" "))).await;
    }
    if std::io::stdin().is_terminal() && !ui.json {
        return Box::pin(interactive(
            ui,
            &pipe,
            &*store,
            &args.session,
            url,
            &*provider,
        ))
        .await;
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(CliError::io("reading the message from stdin"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(CliError::Usage {
            message: "no message: give one as an argument or on stdin".into(),
            hint: Some("statestore chat \"Hi, I'm Alice\"".into()),
        });
    }
    Box::pin(turn(ui, &pipe, &args.session, text)).await
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

/// The interactive loop: line editing and history (rustyline), one turn
/// per line, `/quit` or Ctrl-D to leave.
async fn interactive(
    ui: &Ui,
    pipe: &Pipeline,
    store: &dyn Store,
    session: &SessionId,
    url: &str,
    provider: &dyn Provider,
) -> Result<(), CliError> {
    let so_far = store
        .load_recent(session, 0)
        .await
        .map_err(CliError::read(format!("reading session {session}")))?
        .map_or(0, |r| r.total_messages);
    let dim = |s: &str| ui.paint(true, Paint::Dim, s);
    ui.note(&dim(&format!(
        "session {session} on {} ({}), {}.",
        statestore::redact_url(url),
        if so_far == 0 {
            "new".to_owned()
        } else {
            format!("{so_far} messages so far")
        },
        describe(provider)
    )));
    ui.note(&dim("Type a message; /quit or Ctrl-D to leave."));
    let mut editor = rustyline::DefaultEditor::new().map_err(|e| CliError::Io {
        what: "cannot start the line editor".into(),
        source: std::io::Error::other(e),
    })?;
    let prompt = ui.paint(true, Paint::Bold, "you> ");
    loop {
        // Reading a line blocks: off the async thread, so the store's
        // connections stay serviced meanwhile.
        let p = prompt.clone();
        let (back, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(&p);
            (editor, line)
        })
        .await
        .map_err(|e| CliError::Io {
            what: "the line editor stopped".into(),
            source: std::io::Error::other(e),
        })?;
        editor = back;
        let line = match line {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => {
                return Err(CliError::Io {
                    what: "reading from the terminal".into(),
                    source: std::io::Error::other(e),
                });
            }
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if matches!(text, "/quit" | "/exit" | "/q") {
            break;
        }
        let _ = editor.add_history_entry(text);
        ui.out(&ui.paint(false, Paint::Bold, "assistant> "))?;
        match stream_turn(ui, pipe, session, text).await {
            Ok(_) => ui.out("\n")?,
            Err(e) if e.is_broken_pipe() => return Err(e),
            Err(e) => {
                ui.out("\n")?;
                let _ = ui.fail(&e);
            }
        }
    }
    Ok(())
}
