//! `chat --user` and `chat --system`: stored with the session.

use statestore::{ConversationState, Error, Expect, SessionId, Store};

use crate::error::CliError;
use crate::ui::{Paint, Ui, clean};

/// What `--user` and `--system` ask to store with a session.
#[derive(Debug, Clone, Default)]
pub(super) struct Keep {
    pub(super) user: Option<String>,
    pub(super) system: Option<String>,
}

impl Keep {
    /// Stores the user and system prompt with `session`. A session with no
    /// user takes `--user`; one of another user is refused (a chat never
    /// takes a session over). `--system` replaces a different stored
    /// prompt, and says so. A session that does not exist is created with
    /// them only when `create` (just before its first turn).
    ///
    /// Returns whether nothing is left to do for `session`.
    pub(super) async fn settle(
        &self,
        ui: &Ui,
        store: &dyn Store,
        session: &SessionId,
        create: bool,
    ) -> Result<bool, CliError> {
        if self.user.is_none() && self.system.is_none() {
            return Ok(true);
        }
        // Twice at most: a session created by another process between the
        // read and the create is settled as an existing one.
        for _ in 0..2 {
            let recent = store
                .load_recent(session, 0)
                .await
                .map_err(CliError::read(format!("reading session {session}")))?;
            let Some(recent) = recent else {
                if !create {
                    return Ok(false);
                }
                let mut state = ConversationState::new(session.clone());
                state.user_id.clone_from(&self.user);
                state.system_prompt.clone_from(&self.system);
                match store.save(&state, Expect::Absent).await {
                    Ok(_) => return Ok(true),
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => {
                        return Err(CliError::write(format!("creating session {session}"))(e));
                    }
                }
            };
            if let (Some(want), Some(have)) = (&self.user, &recent.user_id)
                && want != have
            {
                return Err(CliError::Failed {
                    message: format!("session {session} belongs to user {have:?}, not {want:?}"),
                    hint: Some("leave out --user, or choose another --session".into()),
                });
            }
            let new_user = self.user.is_some() && recent.user_id.is_none();
            let new_system = self.system.is_some() && self.system != recent.system_prompt;
            if !new_user && !new_system {
                return Ok(true);
            }
            let doing = format!("storing the user and system prompt of session {session}");
            let Some(mut state) = store.load(session).await.map_err(CliError::read(&doing))? else {
                continue;
            };
            let version = state.version;
            if new_user {
                state.user_id.clone_from(&self.user);
            }
            let old = state.system_prompt.clone();
            state.system_prompt.clone_from(&self.system);
            match store.save(&state, Expect::Version(version)).await {
                Ok(_) => {}
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(CliError::write(doing)(e)),
            }
            if new_system && let Some(old) = old {
                ui.note(&ui.paint(
                    true,
                    Paint::Dim,
                    &format!(
                        "(session {session}: its system prompt was replaced; it was \"{}\")",
                        clean(&old)
                    ),
                ));
            }
            return Ok(true);
        }
        Err(CliError::failed(format!(
            "session {session} kept changing while its user and system prompt were stored"
        )))
    }
}
