//! The interactive chat: line editing and a history kept across runs
//! (rustyline), one turn per line, slash commands handled here, Ctrl-C to
//! stop a reply.

use std::path::{Path, PathBuf};

use rustyline::error::ReadlineError;
use statestore::{IdempotencyKey, SessionId};

use super::{Chat, stream_turn};
use crate::error::CliError;
use crate::ui::{Paint, Ui, clean};

/// The commands, as `/help` lists them.
const HELP: &str = "\
/help      this list
/session   the session's id and store
/new       start a fresh session, with a new id
/quit      leave (also /exit, /q, or Ctrl-D)
//TEXT     send the message /TEXT (a line starting with one / is a command)
Ctrl-C stops a reply as it streams (nothing is stored) or clears the line.";

/// The history file's name, in the data directory (beside the default store).
const HISTORY_FILE: &str = "chat_history";

/// What a line typed at the prompt asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Empty,
    /// A message for the model.
    Send(&'a str),
    Help,
    Session,
    New,
    Quit,
    /// A line starting with `/` that names no command.
    Unknown(&'a str),
}

/// Reads a typed line: `/word` is a command, `//…` a message starting with
/// `/`, anything else a message.
fn parse(line: &str) -> Line<'_> {
    let text = line.trim();
    let Some(command) = text.strip_prefix('/') else {
        return if text.is_empty() {
            Line::Empty
        } else {
            Line::Send(text)
        };
    };
    if command.starts_with('/') {
        return Line::Send(command);
    }
    match command {
        "help" | "?" => Line::Help,
        "session" => Line::Session,
        "new" => Line::New,
        "quit" | "exit" | "q" => Line::Quit,
        _ => Line::Unknown(text),
    }
}

/// The history file: `chat_history` in the directory of the default store
/// (`$STATESTORE_HOME`, else `$XDG_DATA_HOME/statestore`, else
/// `$HOME/.local/share/statestore`), whichever store the chat uses. Not
/// made for the history alone: where the directory does not exist (the
/// default store was never used), the history lasts for this run only.
fn history_path() -> Option<PathBuf> {
    let dir = crate::store::default_db_path()?.parent()?.to_path_buf();
    dir.is_dir().then(|| dir.join(HISTORY_FILE))
}

/// A dim line on stderr (none with `--quiet`).
fn note(ui: &Ui, text: &str) {
    ui.note(&ui.paint(true, Paint::Dim, text));
}

/// The banner: the session, the store, the model.
async fn banner(chat: &Chat<'_>, session: &SessionId) -> Result<(), CliError> {
    let state = chat
        .store
        .load_recent(session, 0)
        .await
        .map_err(CliError::read(format!("reading session {session}")))?;
    let so_far = match state.as_ref().map_or(0, |r| r.total_messages) {
        0 => "new".to_owned(),
        1 => "1 message so far".to_owned(),
        n => format!("{n} messages so far"),
    };
    let user = state
        .and_then(|r| r.user_id)
        .or_else(|| chat.keep.user.clone())
        .map_or_else(String::new, |u| format!(", user {}", clean(&u)));
    note(
        chat.ui,
        &format!(
            "session {session} ({so_far}{user}) on {}",
            statestore::redact_url(chat.url)
        ),
    );
    note(chat.ui, &chat.model);
    note(
        chat.ui,
        "Type a message; /help lists the commands, /quit or Ctrl-D leaves.",
    );
    Ok(())
}

/// A line editor error as the command's error.
fn editor_error(what: &str) -> impl FnOnce(ReadlineError) -> CliError + '_ {
    move |e| CliError::Io {
        what: what.to_owned(),
        source: std::io::Error::other(e),
    }
}

pub(super) async fn run(chat: &Chat<'_>, mut session: SessionId) -> Result<(), CliError> {
    let ui = chat.ui;
    // Ctrl-C is the chat's from here on: it stops a reply (see [`send`])
    // and never ends the process, not even in the moment between a line
    // read and the turn's wait for Ctrl-C (at the prompt, the line editor
    // reads it as a key).
    let _sigint = crate::ui::ctrl_c().ok();
    banner(chat, &session).await?;
    let config = rustyline::Config::builder()
        .max_history_size(1000)
        .map_err(editor_error("cannot start the line editor"))?
        .auto_add_history(false)
        .build();
    let mut editor = rustyline::DefaultEditor::with_config(config)
        .map_err(editor_error("cannot start the line editor"))?;
    let history = history_path();
    if let Some(path) = &history {
        match editor.load_history(path) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => ui.warn(&format!(
                "cannot read the chat history {}: {e}",
                path.display()
            )),
        }
    }
    // Warned of once: a history that cannot be written is kept for this
    // run only.
    let mut history_ok = true;
    // Whether `--user` and `--system` are stored with the session.
    let mut settled = false;
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
            Err(ReadlineError::Interrupted) => {
                note(ui, "(to leave, type /quit or press Ctrl-D)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(editor_error("reading from the terminal")(e)),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.trim());
            if let Some(path) = history.as_deref().filter(|_| history_ok) {
                history_ok = keep_history(ui, &mut editor, path);
            }
        }
        match parse(&line) {
            Line::Empty => {}
            Line::Quit => break,
            Line::Help => note(ui, HELP),
            Line::Unknown(command) => {
                note(
                    ui,
                    &format!("unknown command {}; /help lists them", clean(command)),
                );
            }
            Line::Session => {
                note(
                    ui,
                    &format!("session {session} on {}", statestore::redact_url(chat.url)),
                );
            }
            Line::New => {
                session = fresh_id()?;
                settled = false;
                note(
                    ui,
                    &format!(
                        "new session {session} (to continue it later: statestore chat -s {})",
                        session.as_str()
                    ),
                );
            }
            Line::Send(text) => {
                if !settled {
                    match chat.keep.settle(ui, &*chat.store, &session, true).await {
                        Ok(done) => settled = done,
                        Err(e) => {
                            let _ = ui.fail(&e);
                            continue;
                        }
                    }
                }
                send(chat, &session, text).await?;
            }
        }
    }
    Ok(())
}

/// Appends the new history entries to its file; `false` (after a
/// warning) when it cannot be written.
fn keep_history(ui: &Ui, editor: &mut rustyline::DefaultEditor, path: &Path) -> bool {
    match editor.append_history(path) {
        Ok(()) => true,
        Err(e) => {
            ui.warn(&format!(
                "cannot save the chat history to {}: {e} (kept for this run only)",
                path.display()
            ));
            false
        }
    }
}

/// A new session id: `chat-` and 12 hex digits.
fn fresh_id() -> Result<SessionId, CliError> {
    let random: String = IdempotencyKey::random().as_str().chars().take(12).collect();
    SessionId::new(format!("chat-{random}")).map_err(|e| CliError::failed(e.to_string()))
}

/// What became of a turn Ctrl-C interrupted.
enum Cancelled {
    /// Before its write began: nothing was stored.
    Nothing,
    /// During its write (a second Ctrl-C): it may or may not have landed.
    Unknown,
}

/// Waits for Ctrl-C; never, when it cannot be listened for.
async fn ctrl_c() {
    match crate::ui::ctrl_c() {
        Ok(interrupted) => interrupted.await,
        Err(_) => std::future::pending::<()>().await,
    }
}

/// One turn, its reply streamed; Ctrl-C stops it.
///
/// The pipeline stores a turn in one write after the model's reply is
/// complete, so dropping the turn before that write begins stores nothing.
/// Ctrl-C while the reply streams drops it there. Once the reply is
/// complete (the middleware [`super::Stage`] marks it), the write is under
/// way and Ctrl-C waits for it; only a second Ctrl-C stops waiting, and
/// then whether the turn was stored is not known.
async fn send(chat: &Chat<'_>, session: &SessionId, text: &str) -> Result<(), CliError> {
    let ui = chat.ui;
    chat.stage.reset();
    ui.out(&ui.paint(false, Paint::Bold, "assistant> "))?;
    let mut turn = Box::pin(stream_turn(ui, &chat.pipe, session, text));
    let result = tokio::select! {
        result = &mut turn => Ok(result),
        () = ctrl_c() => Err(Cancelled::Nothing),
    };
    let result = match result {
        Err(Cancelled::Nothing) if chat.stage.writing() => {
            note(
                ui,
                "\n(the reply is complete and being stored; Ctrl-C again to stop waiting)",
            );
            tokio::select! {
                result = &mut turn => Ok(result),
                () = ctrl_c() => Err(Cancelled::Unknown),
            }
        }
        other => other,
    };
    drop(turn);
    ui.out("\n")?;
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.is_broken_pipe() => return Err(e),
        Ok(Err(e)) => {
            let _ = ui.fail(&e);
        }
        Err(Cancelled::Nothing) => note(ui, "(cancelled; nothing was stored)"),
        Err(Cancelled::Unknown) => note(
            ui,
            "(cancelled; the reply may or may not have been stored: /session names the \
             session, statestore show prints it)",
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Line, parse};

    #[test]
    fn lines_are_messages_commands_or_escaped_slashes() {
        assert_eq!(parse("  hello "), Line::Send("hello"));
        assert_eq!(parse("   "), Line::Empty);
        assert_eq!(parse("/quit"), Line::Quit);
        assert_eq!(parse(" /q "), Line::Quit);
        assert_eq!(parse("/exit"), Line::Quit);
        assert_eq!(parse("/new"), Line::New);
        assert_eq!(parse("/session"), Line::Session);
        assert_eq!(parse("/help"), Line::Help);
        assert_eq!(parse("/hlep"), Line::Unknown("/hlep"));
        assert_eq!(parse("/quit now"), Line::Unknown("/quit now"));
        assert_eq!(parse("/"), Line::Unknown("/"));
        assert_eq!(parse("//etc/hosts"), Line::Send("/etc/hosts"));
    }
}
