//! [`Store::rewind`] and
//! [`Store::fork_at`]: going back to an earlier
//! point of a conversation, in place or as a branch. One general
//! implementation for every backend, over a consistent read and a guarded
//! or create-only save, so the rules are the same everywhere:
//!
//! - **What goes.** Every message at a position `>= to`; every summary
//!   that covers one of them (a summary of messages still there stays).
//!   Metadata, counters (usage already spent stays counted), the system
//!   prompt, the owner and `created_at` stay.
//! - **Remembered writes stay remembered**, so a keyed write can never
//!   apply twice: a retry of a write whose messages were rewound away is a
//!   replay — with its positions gone, as after any rewrite
//!   ([`Appended::rewritten`](crate::Appended::rewritten)) — and its key is
//!   added to the session's metadata under [`REWOUND_KEY`] (the newest
//!   [`REMEMBERED_WRITES`] keys), where a caller
//!   such as the pipeline tells a rewound turn from one that was trimmed
//!   or compacted (`pipeline::Error::TurnRewound`).
//! - **Atomic**: the read is one snapshot, and the write is guarded by the
//!   version read (a rewind) or create-only (a branch), so a write that
//!   lands in between makes the call fail with
//!   [`Error::Conflict`], having changed nothing.
//! - **Retries**: a rewind to where the history already ends writes
//!   nothing and returns the version, so repeating one is harmless (with
//!   [`Expect::Version`] a repeat after success is a conflict, which
//!   writes nothing either). A repeated branch finds its target and is
//!   [`Error::AlreadyExists`].

use serde_json::Value;

use crate::{
    ConversationState, Error, Expect, REMEMBERED_WRITES, Result, Save, SessionId, Store, Version,
};

/// The metadata key listing the keyed writes a rewind took away (a JSON
/// array of keys, oldest first; the newest
/// [`REMEMBERED_WRITES`] are kept).
pub const REWOUND_KEY: &str = "statestore.rewound";

/// `state` cut to its first `to` messages, as the module docs say.
fn cut(state: &mut ConversationState, to: u64) -> Result<()> {
    let total = state.messages.len() as u64;
    if to > total {
        return Err(Error::InvalidArgument {
            id: state.id.clone(),
            reason: format!("position {to} is past the end of the history of {total} messages"),
        });
    }
    let keep = usize::try_from(to).unwrap_or(usize::MAX);
    state.messages.truncate(keep);
    state.summaries.retain(|s| s.covers.end <= to);
    Ok(())
}

/// Whether the keys in `rewound` mention `key` ([`REWOUND_KEY`]).
#[must_use]
pub fn was_rewound(metadata: &crate::Metadata, key: &crate::IdempotencyKey) -> bool {
    metadata
        .get(REWOUND_KEY)
        .and_then(Value::as_array)
        .is_some_and(|keys| keys.iter().any(|k| k.as_str() == Some(key.as_str())))
}

pub(crate) async fn rewind<S: Store + ?Sized>(
    store: &S,
    id: &SessionId,
    to: u64,
    expect: Expect,
) -> Result<Version> {
    let Some(mut state) = store.load(id).await? else {
        return match expect {
            Expect::Any | Expect::Absent if to == 0 => Ok(0),
            _ => Err(Error::NotFound { id: id.clone() }),
        };
    };
    if !expect.admits(Some(state.version)) {
        return Err(Error::Conflict {
            id: id.clone(),
            expected: expect,
            actual: Some(state.version),
        });
    }
    let total = state.messages.len() as u64;
    if to == total {
        return Ok(state.version); // nothing to take away: nothing written
    }
    cut(&mut state, to)?;
    // Keyed writes with a message at or past `to` were rewound.
    let mut rewound: Vec<Value> = state
        .metadata
        .get(REWOUND_KEY)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for write in &state.writes {
        let done = write.outcome;
        let reaches = done.first_position.saturating_add(done.messages);
        if !done.rewritten && done.messages > 0 && reaches > to {
            let key = Value::from(write.key.as_str());
            if !rewound.contains(&key) {
                rewound.push(key);
            }
        }
    }
    let excess = rewound.len().saturating_sub(REMEMBERED_WRITES);
    rewound.drain(..excess);
    if !rewound.is_empty() {
        state
            .metadata
            .insert(REWOUND_KEY.to_owned(), rewound.into());
    }
    let version = state.version;
    store
        .save_with(&state, Save::new().expect(Expect::Version(version)))
        .await
}

pub(crate) async fn fork_at<S: Store + ?Sized>(
    store: &S,
    source: &SessionId,
    target: &SessionId,
    upto: u64,
) -> Result<Version> {
    crate::check_fork_ids(source, target)?;
    let mut state = store
        .load(source)
        .await?
        .ok_or_else(|| Error::NotFound { id: source.clone() })?;
    cut(&mut state, upto)?;
    state.id = target.clone();
    // A branch remembers no writes: they were its source's.
    state.writes.clear();
    state.metadata.remove(REWOUND_KEY);
    match store
        .save_with(&state, Save::new().expect(Expect::Absent))
        .await
    {
        Err(Error::Conflict { .. }) => Err(Error::AlreadyExists { id: target.clone() }),
        other => other,
    }
}
