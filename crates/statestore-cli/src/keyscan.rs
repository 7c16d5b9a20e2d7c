//! Which keys the store's values are under, read from their envelope
//! headers (no key ring): `keys usage`, the check `rotate-keys` makes
//! before saying a key can go, and the guard that keeps a command run
//! without `--keys` from writing plaintext into an encrypted store.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use statestore::crypto::{KeyUsage, key_usage};
use statestore::{ConversationState, ListQuery, Load, RecentState, SessionId, Store};

use crate::args::KeysUsageArgs;
use crate::error::CliError;
use crate::store::{all_ids, keys, open_backend, ordered};
use crate::ui::{self, Ui};

/// Sessions loaded at once by a scan.
const READ_WIDTH: usize = 32;

/// Sessions of the store, besides the ones a command writes, that the
/// write guard looks at to tell whether the store is encrypted.
const SAMPLE: usize = 8;

/// The metadata key prefix of a session's sealed manifest: statestore-crypto
/// writes one per session (`statestore.manifest.<epoch in hex>`), sealed
/// under the key of the write, and hides it from readers of the layer.
const MANIFEST_PREFIX: &str = "statestore.manifest.";

/// Whether metadata key `key` holds a session's sealed manifest.
pub(crate) fn is_manifest_key(key: &str) -> bool {
    key.starts_with(MANIFEST_PREFIX)
}

/// What a scan of the store's sessions found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Sessions scanned (deleted meanwhile: not counted).
    pub(crate) sessions: u64,
    /// Values per key, plaintext, malformed.
    pub(crate) usage: KeyUsage,
    /// Sessions with at least one value under each key.
    pub(crate) sessions_per_key: BTreeMap<String, u64>,
    /// Sessions with at least one plaintext value.
    pub(crate) plaintext_sessions: u64,
    /// The first session (in id order) holding a plaintext value.
    pub(crate) first_plaintext: Option<SessionId>,
    /// The first session holding a malformed value.
    pub(crate) first_malformed: Option<SessionId>,
    /// Session manifests among the values (one per session written with a
    /// key ring; counted in `usage` under their key like any value).
    pub(crate) manifests: u64,
}

impl Scan {
    /// Counts one session's usage.
    pub(crate) fn add(&mut self, id: &SessionId, usage: &KeyUsage) {
        self.sessions += 1;
        self.usage.add(usage);
        for (k, n) in &usage.keys {
            if *n > 0 {
                *self.sessions_per_key.entry(k.clone()).or_default() += 1;
            }
        }
        if usage.plaintext > 0 {
            self.plaintext_sessions += 1;
            self.first_plaintext.get_or_insert_with(|| id.clone());
        }
        if usage.malformed > 0 {
            self.first_malformed.get_or_insert_with(|| id.clone());
        }
    }
}

/// Scans `ids` in `store` (the backend, not an encryption layer), 32
/// sessions at a time: the envelope headers of every value.
pub(crate) async fn scan(store: &Arc<dyn Store>, ids: &[SessionId]) -> Result<Scan, CliError> {
    let mut found = Scan::default();
    let reader = Arc::clone(store);
    ordered(
        ids,
        READ_WIDTH,
        move |id| {
            let store = Arc::clone(&reader);
            async move {
                // A maintenance read: a scan is no access.
                let state = store
                    .load_with(&id, Load::new().keep_clocks())
                    .await
                    .map_err(CliError::read(format!("reading session {id}")))?;
                Ok(state.map(|s| {
                    let manifests = s.metadata.keys().filter(|k| is_manifest_key(k)).count();
                    (key_usage(&s), manifests as u64)
                }))
            }
        },
        |id, usage| {
            if let Some((usage, manifests)) = usage {
                found.add(id, &usage);
                found.manifests += manifests;
            }
            Ok(())
        },
    )
    .await?;
    Ok(found)
}

/// `statestore keys usage`.
pub(crate) async fn usage(ui: &Ui, url: &str, args: KeysUsageArgs) -> Result<(), CliError> {
    let store = open_backend(url).await?;
    let ids = all_ids(&*store, args.user.as_deref()).await?;
    let found = scan(&store, &ids).await?;
    let ring = keys();
    // The ring's keys that nothing uses are listed too, with 0.
    let mut per_key: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for k in ring.into_iter().flat_map(|r| r.key_ids()) {
        per_key.insert(k, (0, 0));
    }
    for (k, n) in &found.usage.keys {
        let sessions = found.sessions_per_key.get(k).copied().unwrap_or(0);
        per_key.insert(k, (*n, sessions));
    }
    let in_ring = |k: &str| ring.map(|r| r.contains(k));
    if ui.json {
        let keys: serde_json::Map<String, serde_json::Value> = per_key
            .iter()
            .map(|(k, (values, sessions))| {
                let mut doc = json!({ "values": values, "sessions": sessions });
                if let (Some(o), Some(held)) = (doc.as_object_mut(), in_ring(k)) {
                    o.insert("in_key_ring".into(), json!(held));
                    o.insert(
                        "current".into(),
                        json!(ring.is_some_and(|r| r.current_id() == *k)),
                    );
                }
                ((*k).to_owned(), doc)
            })
            .collect();
        return ui.out_json(&json!({
            "sessions": found.sessions,
            "values": found.usage.encrypted() + found.usage.plaintext + found.usage.malformed,
            "keys": keys,
            "plaintext": { "values": found.usage.plaintext, "sessions": found.plaintext_sessions },
            "malformed": found.usage.malformed,
            "manifests": found.manifests,
        }));
    }
    let manifests = match found.manifests {
        0 => String::new(),
        n => format!(" ({} among them)", ui::count(n, "session manifest")),
    };
    let mut text = format!(
        "{}: {} encrypted{manifests}, {} plaintext",
        ui::count(found.sessions, "session"),
        ui::count(found.usage.encrypted(), "value"),
        ui::count(found.usage.plaintext, "value"),
    );
    if found.usage.malformed > 0 {
        text.push_str(&format!(
            ", {} malformed (first in session {})",
            ui::count(found.usage.malformed, "value"),
            found
                .first_malformed
                .as_ref()
                .map(SessionId::to_string)
                .unwrap_or_default()
        ));
    }
    text.push('\n');
    if !per_key.is_empty() {
        let rows: Vec<Vec<String>> = per_key
            .iter()
            .map(|(k, (values, sessions))| {
                let mut row = vec![
                    (*k).to_owned(),
                    ui::thousands(*values),
                    ui::thousands(*sessions),
                ];
                if let Some(held) = in_ring(k) {
                    let current = ring.is_some_and(|r| r.current_id() == *k);
                    row.push(match (held, current) {
                        (true, true) => "current".into(),
                        (true, false) => "yes".into(),
                        (false, _) => "MISSING".into(),
                    });
                }
                row
            })
            .collect();
        let mut header = vec![
            ("KEY", ui::Align::Left),
            ("VALUES", ui::Align::Right),
            ("SESSIONS", ui::Align::Right),
        ];
        if ring.is_some() {
            header.push(("IN KEY RING", ui::Align::Left));
        }
        text.push('\n');
        text.push_str(&ui::table(&header, &rows));
    }
    ui.out(&text)
}

/// A recent state's values as a state, for [`key_usage`].
fn as_state(recent: RecentState) -> ConversationState {
    let mut state = ConversationState::new(recent.id);
    state.messages = recent.messages;
    state.system_prompt = recent.system_prompt;
    state.summaries = recent.summaries;
    state.metadata = recent.metadata;
    state
}

/// The key usage of `id`'s system prompt, summaries, metadata and newest
/// message; `None` when it does not exist.
async fn recent_usage(store: &dyn Store, id: &SessionId) -> Result<Option<KeyUsage>, CliError> {
    let recent = store
        .load_recent(id, 1)
        .await
        .map_err(CliError::read(format!("reading session {id}")))?;
    Ok(recent.map(|r| key_usage(&as_state(r))))
}

/// The key usage of every value of `id`, read with a maintenance read
/// (`Load::keep_clocks`): a look at a session the command does not write
/// must not extend its retention. `None` when it does not exist.
async fn sampled_usage(store: &dyn Store, id: &SessionId) -> Result<Option<KeyUsage>, CliError> {
    let state = store
        .load_with(id, Load::new().keep_clocks())
        .await
        .map_err(CliError::read(format!("reading session {id}")))?;
    Ok(state.map(|s| key_usage(&s)))
}

/// Refuses, when this run has no key ring, a write of `doing` to a store
/// that holds encrypted values: in one of `targets` (the sessions it
/// writes), or — when one of them is new, or for a command that creates
/// sessions (no `targets`) — in the first few sessions the store lists.
/// Reads only, before anything is written: of a target, the newest
/// message, prompt, summaries and metadata (an access, as its write will
/// be); of the sessions listed, every value, with maintenance reads. A guard against accidents, not
/// against a race with a process encrypting the store meanwhile.
pub(crate) async fn refuse_plaintext_writes(
    store: &dyn Store,
    targets: &[&SessionId],
    doing: &str,
) -> Result<(), CliError> {
    if keys().is_some() {
        return Ok(());
    }
    let refuse = |what: String, usage: &KeyUsage| {
        let under: Vec<String> = usage.keys.keys().map(|k| format!("{k:?}")).collect();
        CliError::Failed {
            message: format!(
                "{what} holds encrypted values (under key {}): {doing} needs the key ring to \
                 write there, or it would store plaintext beside ciphertext. Nothing was written",
                under.join(", ")
            ),
            hint: Some(
                "give the key file with --keys FILE (or STATESTORE_KEYS_FILE, STATESTORE_KEYS)"
                    .into(),
            ),
        }
    };
    let mut absent = targets.is_empty();
    for id in targets {
        match recent_usage(store, id).await? {
            Some(usage) if usage.encrypted() > 0 => {
                return Err(refuse(format!("session {id}"), &usage));
            }
            Some(_) => {}
            None => absent = true,
        }
    }
    // Sessions that exist and hold no ciphertext may be written as they
    // are; only a new session needs a look at others — whole, with
    // maintenance reads, which are no accesses (so not on every turn).
    if !absent {
        return Ok(());
    }
    let page = store
        .list(&ListQuery::new().with_limit(SAMPLE + targets.len()))
        .await
        .map_err(CliError::read("listing sessions"))?;
    for id in page.ids().filter(|id| !targets.contains(id)).take(SAMPLE) {
        if let Some(usage) = sampled_usage(store, id).await?
            && usage.encrypted() > 0
        {
            return Err(refuse(
                format!("the store is encrypted: session {id}"),
                &usage,
            ));
        }
    }
    Ok(())
}
