//! The export format (JSON Lines: a header line, then one session per
//! line) and the one routine import and migrate copy a session with.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use statestore::{
    Appended, ConversationState, Counters, Expect, IdempotencyKey, Load, Message, Metadata,
    RememberedWrite, SessionId, Store, Summary, Timestamp,
};

use crate::error::CliError;
use crate::ui::{self, Ui};

/// The `format` of an export's header line.
pub(crate) const FORMAT: &str = "statestore-export";

/// The format version of a plaintext export, and of an export without a
/// say about encryption (versions 1 and 2). Version 2 added each session's
/// remembered writes (`writes`); version 1 files, which have none, still
/// import.
pub(crate) const VERSION: u32 = 2;

/// The format version of an encrypted export (`export --encrypted`):
/// version 2 with the header's `key_ids`. Numbered apart so that a
/// statestore from before it refuses the file instead of importing
/// ciphertext as text.
pub(crate) const VERSION_ENCRYPTED: u32 = 3;

/// Conflicting ids listed on stderr before "… and N more".
const CONFLICTS_LISTED: usize = 20;

/// The first line of an export. `encrypted` and `key_ids` are written
/// since version 3 of this build (a plaintext export stays version 2, with
/// `"encrypted":false`); a file without them says nothing about its
/// values, which import then checks one by one.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    format: String,
    version: u32,
    /// Whether the values are ciphertext, as the store held them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) encrypted: Option<bool>,
    /// The key ids the values are encrypted under, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) key_ids: Vec<String>,
}

impl Header {
    /// The header line of an export, newline included: plaintext
    /// (`key_ids` empty) or encrypted under `key_ids`.
    pub(crate) fn line(encrypted: bool, key_ids: Vec<String>) -> String {
        let header = Self {
            format: FORMAT.into(),
            version: if encrypted {
                VERSION_ENCRYPTED
            } else {
                VERSION
            },
            encrypted: Some(encrypted),
            key_ids,
        };
        format!("{}\n", serde_json::to_string(&header).unwrap_or_default())
    }
}

/// One session as exported: everything it holds except the store's
/// bookkeeping (version, `updated_at`, `last_accessed_at`, expiry), which
/// an import starts afresh. Fields in this order on every line.
///
/// `writes` are the keyed writes (turn ids) the session remembers, in key
/// order, each with its message count: an import carries them into the
/// new store (`Store::save`), so a turn retried after a cutover is a replay
/// there, not a second copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Exported {
    pub(crate) id: SessionId,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "valid_user"
    )]
    user_id: Option<String>,
    created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
    #[serde(default, skip_serializing_if = "Counters::is_empty")]
    counters: Counters,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    summaries: Vec<Summary>,
    #[serde(default)]
    messages: Vec<Arc<Message>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    writes: Vec<ExportedWrite>,
}

/// A user id read from a file, held to the rules of a session id (as
/// `--user` is): text without control characters, 1 to 512 bytes.
fn valid_user<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let user = Option::<String>::deserialize(d)?;
    if let Some(u) = &user
        && let Err(e) = SessionId::new(u)
    {
        let reason = match e {
            statestore::Error::InvalidId { reason, .. } => reason,
            other => other.to_string(),
        };
        return Err(serde::de::Error::custom(format!(
            "user_id {u:?}: {reason} (a user id is 1 to {} bytes of text without control \
             characters)",
            SessionId::MAX_LEN
        )));
    }
    Ok(user)
}

/// A remembered write as exported: what survives a move (its positions
/// and version belong to the old store).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportedWrite {
    key: IdempotencyKey,
    messages: u64,
}

impl From<ConversationState> for Exported {
    fn from(s: ConversationState) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            created_at: s.created_at,
            system_prompt: s.system_prompt,
            metadata: s.metadata,
            counters: s.counters,
            summaries: s.summaries,
            messages: s.messages,
            // In key order: the same session exports the same line from
            // any store (at most REMEMBERED_WRITES of them, all of which
            // an import keeps, so their order does not matter).
            writes: s
                .writes
                .into_iter()
                .map(|w| ExportedWrite {
                    key: w.key,
                    messages: w.outcome.messages,
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }
}

impl Exported {
    /// The state to save (messages shared, not copied).
    pub(crate) fn to_state(&self) -> ConversationState {
        let mut state = ConversationState::new(self.id.clone());
        state.user_id.clone_from(&self.user_id);
        state.created_at = self.created_at;
        state.system_prompt.clone_from(&self.system_prompt);
        state.metadata.clone_from(&self.metadata);
        state.counters.clone_from(&self.counters);
        state.summaries.clone_from(&self.summaries);
        state.messages.clone_from(&self.messages);
        state.writes = self
            .writes
            .iter()
            .map(|w| RememberedWrite::new(w.key.clone(), Appended::new(0, 0, w.messages)))
            .collect();
        state
    }

    /// The session's line, newline included.
    pub(crate) fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// What copying one session into a store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    /// It was absent and is now written.
    Written,
    /// It was there already, equal.
    Unchanged,
    /// It was there already, different: left as it is.
    Conflict,
}

/// Writes `session` into `store` if it is absent (create-only, so a
/// repeated or concurrent copy cannot apply twice), else compares. With
/// `dry_run`, only compares: what a copy would do, nothing written.
pub(crate) async fn put(
    store: &dyn Store,
    session: &Exported,
    dry_run: bool,
) -> Result<Copied, CliError> {
    let id = &session.id;
    if dry_run {
        return Ok(compare(store, session).await?.unwrap_or(Copied::Written));
    }
    let state = session.to_state();
    // A session deleted between the refused write and the comparing read
    // is written on the next round.
    for _ in 0..3 {
        match store.save(&state, Expect::Absent).await {
            Ok(_) => return Ok(Copied::Written),
            Err(statestore::Error::Conflict { .. } | statestore::Error::AlreadyExists { .. }) => {
                if let Some(there) = compare(store, session).await? {
                    return Ok(there);
                }
            }
            Err(e) => return Err(CliError::write(format!("writing session {id}"))(e)),
        }
    }
    Err(CliError::failed(format!(
        "session {id} was deleted and recreated by someone else while it was being copied; run \
         the command again"
    )))
}

/// The session of `session`'s id in `store` compared with it: equal
/// ([`Copied::Unchanged`]), different ([`Copied::Conflict`]), or `None`
/// when absent. A maintenance read: comparing is no access.
async fn compare(store: &dyn Store, session: &Exported) -> Result<Option<Copied>, CliError> {
    let id = &session.id;
    let existing = store
        .load_with(id, Load::new().keep_clocks())
        .await
        .map_err(CliError::read(format!("reading session {id} to compare")))?;
    Ok(existing.map(|existing| {
        if Exported::from(existing) == *session {
            Copied::Unchanged
        } else {
            Copied::Conflict
        }
    }))
}

/// Tallies of a copy (or, for a dry run, of what a copy would do).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    written: u64,
    unchanged: u64,
    conflicts: Vec<SessionId>,
    dry_run: bool,
}

impl Tally {
    pub(crate) fn new(dry_run: bool) -> Self {
        Self {
            dry_run,
            ..Self::default()
        }
    }

    pub(crate) fn add(&mut self, id: SessionId, copied: Copied) {
        match copied {
            Copied::Written => self.written += 1,
            Copied::Unchanged => self.unchanged += 1,
            Copied::Conflict => self.conflicts.push(id),
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.written + self.unchanged + self.conflicts.len() as u64
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        let conflicts: Vec<&str> = self.conflicts.iter().map(SessionId::as_str).collect();
        json!({
            "written": self.written,
            "unchanged": self.unchanged,
            "conflicts": conflicts,
            "dry_run": self.dry_run,
        })
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} {}, {} already there and equal, {}{}",
            ui::thousands(self.written),
            if self.dry_run { "to write" } else { "written" },
            ui::thousands(self.unchanged),
            ui::count(self.conflicts.len() as u64, "conflict"),
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        )
    }

    /// Lists the conflicts on stderr; the error that makes them exit 1
    /// unless `ignore`.
    pub(crate) fn conflicts(&mut self, ui: &Ui, ignore: bool) -> Result<(), CliError> {
        if self.conflicts.is_empty() {
            return Ok(());
        }
        self.conflicts.sort();
        for id in self.conflicts.iter().take(CONFLICTS_LISTED) {
            ui.warn(&format!(
                "conflict: session {id} exists with different content; left as it is"
            ));
        }
        if self.conflicts.len() > CONFLICTS_LISTED {
            ui.warn(&format!(
                "… and {} more conflicts",
                self.conflicts.len() - CONFLICTS_LISTED
            ));
        }
        if ignore {
            return Ok(());
        }
        Err(CliError::Failed {
            message: format!(
                "{} conflicted: present in the destination with different content, not \
                 overwritten",
                ui::count(self.conflicts.len() as u64, "session")
            ),
            hint: Some(
                "compare them with `statestore show`; delete the destination's copy to take the \
                 imported one, or pass --ignore-conflicts to keep the destination's"
                    .into(),
            ),
        })
    }
}

/// Checks an export's first line; returns it.
pub(crate) fn check_header(line: &str, file: &str) -> Result<Header, CliError> {
    let not_export = |why: String| CliError::Failed {
        message: format!("{file} is not a statestore export: {why}; nothing was imported"),
        hint: Some("import reads files written by `statestore export`".into()),
    };
    if line.trim().is_empty() {
        return Err(not_export("it is empty".into()));
    }
    let header: Header = serde_json::from_str(line.trim_end())
        .map_err(|e| not_export(format!("its first line is not the header ({e})")))?;
    if header.format != FORMAT {
        return Err(not_export(format!(
            "its format is {:?}, not {FORMAT:?}",
            header.format
        )));
    }
    if header.version > VERSION_ENCRYPTED {
        return Err(CliError::Failed {
            message: format!(
                "{file} was written in export format version {}; this statestore reads up to \
                 version {VERSION_ENCRYPTED}. Nothing was imported",
                header.version
            ),
            hint: Some("import it with a newer statestore".into()),
        });
    }
    if header.version == VERSION_ENCRYPTED && header.encrypted != Some(true) {
        return Err(not_export(
            "version 3 is an encrypted export's, but its header does not say \"encrypted\":true"
                .into(),
        ));
    }
    Ok(header)
}

/// Why `session` cannot be imported as the file and the command say: a
/// plain import (`encrypted` false) takes no encrypted value (it would be
/// encrypted again, or stored as text); an encrypted one takes only
/// well-formed envelopes, under the header's key ids when it lists them.
/// Headers are read, nothing is decrypted.
pub(crate) fn check_values(
    session: &Exported,
    header: &Header,
    encrypted: bool,
) -> Result<(), String> {
    let usage = statestore::crypto::key_usage(&session.to_state());
    let keys = || {
        let ids: Vec<String> = usage.keys.keys().map(|k| format!("{k:?}")).collect();
        ids.join(", ")
    };
    if !encrypted {
        if usage.encrypted() > 0 {
            return Err(format!(
                "holds encrypted values (session {}, under key {}): it is an encrypted export",
                session.id,
                keys()
            ));
        }
        return Ok(());
    }
    if usage.plaintext > 0 {
        return Err(format!(
            "holds {} (session {}): it is not an encrypted export",
            ui::count(usage.plaintext, "plaintext value"),
            session.id
        ));
    }
    if usage.malformed > 0 {
        return Err(format!(
            "holds {} whose envelope header does not parse (session {}): changed or damaged",
            ui::count(usage.malformed, "value"),
            session.id
        ));
    }
    if let Some(other) = usage
        .keys
        .keys()
        .find(|k| !header.key_ids.is_empty() && !header.key_ids.contains(k))
    {
        return Err(format!(
            "holds values under key {other:?} (session {}), which its header does not list",
            session.id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked() {
        for version in [1, 2] {
            let line = format!("{{\"format\":\"statestore-export\",\"version\":{version}}}\n");
            assert!(check_header(&line, "f").is_ok(), "{line}");
        }
        let newer = check_header("{\"format\":\"statestore-export\",\"version\":4}", "f")
            .unwrap_err()
            .to_string();
        assert!(newer.contains("version 4"), "{newer}");
        let sealed = check_header(&Header::line(true, vec!["k1".into()]), "f")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (sealed.encrypted, sealed.key_ids),
            (Some(true), vec!["k1".into()])
        );
        let plain = Header::line(false, Vec::new());
        assert_eq!(
            plain,
            "{\"format\":\"statestore-export\",\"version\":2,\"encrypted\":false}\n"
        );
        assert!(check_header("{\"format\":\"other\",\"version\":1}", "f").is_err());
        assert!(check_header("", "f").is_err());
        assert!(check_header("{\"id\":\"a\"}", "f").is_err());
    }

    #[test]
    fn lines_round_trip_and_refuse_unknown_fields() {
        let mut state =
            ConversationState::new(SessionId::new("a").unwrap_or_else(|_| unreachable!()));
        state.push(Message::user("hi"));
        state.version = 7;
        let line = Exported::from(state).line();
        assert!(!line.contains("version"), "{line}");
        assert!(!line.contains("updated_at"), "{line}");
        let back: Exported = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.line(), line);
        let extra = line.replacen("{", "{\"surprise\":1,", 1);
        assert!(serde_json::from_str::<Exported>(&extra).is_err());
    }
}
