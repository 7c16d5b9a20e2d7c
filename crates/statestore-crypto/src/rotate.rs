//! Key rotation: [`Encrypted::reencrypt`] for one session,
//! [`Encrypted::rotate_all`] for every session.

use std::collections::HashSet;

use statestore_core::{Error as StoreError, Expect, ListQuery, Load, Save, SessionId, Version};

use crate::{Encrypted, Error, Result};

/// Attempts of [`Encrypted::reencrypt`] before [`Error::Busy`].
const MAX_ATTEMPTS: u32 = 32;
/// Attempts after which a re-encryption holds this layer's writers back
/// for the duration of one load and save.
const EXCLUSIVE_AFTER: u32 = 2;

/// What [`Encrypted::reencrypt`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reencrypted {
    /// The session's version afterwards; `None` when it does not exist.
    pub version: Option<Version>,
    /// Values re-encrypted (messages, summaries, metadata values, the
    /// system prompt); 0 when everything already was under the current
    /// key, and nothing was written.
    pub values: usize,
    /// Load-and-save attempts it took (more than 1: other writes landed
    /// in between and it retried).
    pub attempts: u32,
}

/// What [`Encrypted::rotate_all`] visits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotateOptions {
    /// Session ids per [`Store::list`](statestore_core::Store::list) page.
    pub page_size: usize,
    /// Start from this list cursor (a [`RotationProgress::resume_from`]
    /// of an interrupted run) instead of the beginning.
    pub cursor: Option<String>,
    /// Only this user's sessions.
    pub user_id: Option<String>,
}

impl Default for RotateOptions {
    fn default() -> Self {
        Self {
            page_size: 100,
            cursor: None,
            user_id: None,
        }
    }
}

impl RotateOptions {
    /// Resumes from `cursor`.
    #[must_use]
    pub fn resume_from(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    /// Sets the page size.
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n;
        self
    }

    /// Only this user's sessions.
    #[must_use]
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// Reported to [`Encrypted::rotate_all`]'s callback after each session.
#[derive(Debug)]
#[non_exhaustive]
pub struct RotationProgress<'a> {
    /// The session just visited.
    pub id: &'a SessionId,
    /// What happened to it.
    pub outcome: std::result::Result<&'a Reencrypted, &'a Error>,
    /// Sessions visited so far, this one included.
    pub sessions: u64,
    /// Of those, re-encrypted (the others were current, gone, or failed).
    pub reencrypted: u64,
    /// Of those, failed.
    pub failed: u64,
    /// The cursor to pass to [`RotateOptions::resume_from`] to continue
    /// from the page this session is on, were the run interrupted now.
    pub resume_from: Option<&'a str>,
}

/// What [`Encrypted::rotate_all`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RotationReport {
    /// Sessions visited (each once, even when listed on two pages).
    pub sessions: u64,
    /// Sessions re-encrypted.
    pub reencrypted: u64,
    /// Values re-encrypted, over all sessions.
    pub values: u64,
    /// Sessions that could not be re-encrypted, with why (a missing key,
    /// tampered data, [`Error::Busy`]). The rest of the run went on; run
    /// it again once fixed: sessions already current are skipped.
    pub failed: Vec<(SessionId, Error)>,
}

impl Encrypted {
    /// Moves one session to the current key: loads it, re-encrypts every
    /// value that is not under the current key (values that are, are kept
    /// byte for byte), and saves it guarded by the version it loaded, so a
    /// turn appended meanwhile is never lost — the save fails, and it
    /// starts over. A session already current is not written at all.
    ///
    /// The save keeps the session's remembered idempotency keys (every
    /// backend's `save` does, checked by this crate's tests), so a turn
    /// retried across a rotation is still applied once. The load is a
    /// maintenance read ([`Load::keep_clocks`](statestore_core::Load#structfield.keep_clocks))
    /// and the save a maintenance save
    /// ([`Save::keep_clocks`](statestore_core::Save#structfield.keep_clocks)):
    /// the session keeps its `updated_at`, `last_accessed_at` and expiry,
    /// on a store whose reads count as accesses too, so rotation does not
    /// extend its retention.
    ///
    /// After two lost races it holds this layer's own writers back for
    /// one load and save (milliseconds) so a busy session cannot starve
    /// it; writers in other processes can still win, up to 32 times,
    /// then [`Error::Busy`].
    ///
    /// # Errors
    ///
    /// A value that cannot be decrypted ([`Error::UnknownKey`],
    /// [`Error::Integrity`], …) or [`Error::Busy`]: nothing was written.
    /// The store's errors ([`Error::Store`]): [`Error::write_outcome`]
    /// keeps the store's answer — a `Timeout` or `Unavailable` of the save
    /// is `Unknown` (it may have been applied; running this again finds
    /// out, and writes nothing when it was).
    pub async fn reencrypt(&self, id: &SessionId) -> Result<Reencrypted> {
        let layer = &self.layer;
        for attempt in 1..=MAX_ATTEMPTS {
            let (_shared, _exclusive) = if attempt > EXCLUSIVE_AFTER {
                (None, Some(layer.gate.write().await))
            } else {
                (Some(layer.gate.read().await), None)
            };
            // A maintenance read: no access recorded, no expiry restarted.
            let Some(raw) = layer.inner.load_with(id, Load::new().keep_clocks()).await? else {
                return Ok(Reencrypted {
                    version: None,
                    values: 0,
                    attempts: attempt,
                });
            };
            let keys = self.keyring();
            let rekeyed = {
                let _budget = crate::envelope::LoadBudget::start(layer.limits.per_load);
                layer.rekey(layer.codec(Some(&keys)), &raw)?
            };
            let Some((state, values, bound)) = rekeyed else {
                return Ok(Reencrypted {
                    version: Some(raw.version),
                    values: 0,
                    attempts: attempt,
                });
            };
            // A maintenance write: the session's clocks and expiry stay, so
            // rotation does not extend its retention.
            let rekey = Save::new()
                .expect(Expect::Version(raw.version))
                .keep_clocks();
            match layer.inner.save_with(&state, rekey).await {
                Ok(version) => {
                    layer.remember(id, version, state.messages.len() as u64, Some(bound));
                    tracing::debug!(session = %id, values, attempt, "re-encrypted");
                    return Ok(Reencrypted {
                        version: Some(version),
                        values,
                        attempts: attempt,
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    yield_now().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Busy {
            id: id.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// [`Encrypted::reencrypt`] for every session the store lists (one
    /// [`Store::list`](statestore_core::Store::list) page at a time),
    /// calling `progress` after each. What the CLI's `rotate-keys` runs.
    ///
    /// Each listed session is visited once, even when the store lists it
    /// on two pages (a Redis `SCAN` may): the run keeps the ids it visited
    /// (some tens of bytes each).
    ///
    /// Resumable: running it again skips sessions already under the
    /// current key (one load each, no write), and
    /// [`RotationProgress::resume_from`] restarts from the page where a
    /// run stopped. A session that fails is reported in
    /// [`RotationReport::failed`] and the run goes on.
    ///
    /// Rotation procedure: give every process a ring whose current key is
    /// the new one, keeping the old one ([`KeyRing::with_current_key`](crate::KeyRing::with_current_key)
    /// / [`Encrypted::set_keyring`]); run this; when it reports no
    /// failures, drop the old key from the rings.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use statestore_core::{Expect, Message, SessionId, Store};
    /// use statestore_crypto::{Encrypted, Key, KeyRing, RotateOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let old = KeyRing::new(Key::from_bytes("k1", &[1; 32])?);
    /// let store = Encrypted::new(Arc::new(statestore_memory::MemoryStore::new()), old.clone());
    /// let id = SessionId::new("s")?;
    /// store.append(&id, vec![Message::user("hello")], Expect::Any).await?;
    ///
    /// store.set_keyring(old.with_current_key(Key::from_bytes("k2", &[2; 32])?)?).await;
    /// let report = store
    ///     .rotate_all(RotateOptions::default(), |p| println!("{} done", p.id))
    ///     .await?;
    /// assert_eq!((report.sessions, report.reencrypted), (1, 1));
    /// assert!(report.failed.is_empty());
    ///
    /// // k1 is no longer needed.
    /// store.set_keyring(store.keyring().without_key("k1")?).await;
    /// assert_eq!(store.load(&id).await?.unwrap().messages[0].text(), "hello");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The store's errors from listing (nothing was written by the failed
    /// call; sessions before it were re-encrypted).
    pub async fn rotate_all<F>(
        &self,
        options: RotateOptions,
        mut progress: F,
    ) -> Result<RotationReport>
    where
        F: FnMut(&RotationProgress<'_>) + Send,
    {
        let mut report = RotationReport::default();
        let mut visited: HashSet<SessionId> = HashSet::new();
        let mut query = ListQuery::new()
            .user(options.user_id)
            .after(options.cursor)
            .with_limit(options.page_size.max(1));
        loop {
            let page = self.layer.inner.list(&query).await?;
            for id in page.ids() {
                if !visited.insert(id.clone()) {
                    continue;
                }
                let outcome = self.reencrypt(id).await;
                report.sessions += 1;
                match &outcome {
                    Ok(done) if done.values > 0 => {
                        report.reencrypted += 1;
                        report.values += done.values as u64;
                    }
                    Ok(_) => {}
                    // Reported to the caller (the callback and the report),
                    // which says it to the user: a warning here would say it
                    // twice.
                    Err(e) => {
                        tracing::debug!(session = %id, error = %e, "re-encryption failed");
                    }
                }
                let failed = report.failed.len() as u64 + u64::from(outcome.is_err());
                progress(&RotationProgress {
                    id,
                    outcome: outcome.as_ref(),
                    sessions: report.sessions,
                    reencrypted: report.reencrypted,
                    failed,
                    resume_from: query.cursor.as_deref(),
                });
                if let Err(e) = outcome {
                    report.failed.push((id.clone(), e));
                }
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return Ok(report),
            }
        }
    }
}

/// Lets other tasks run before the next attempt (without needing a
/// particular runtime).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}
