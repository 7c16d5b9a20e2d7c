//! Writes of the layer that must say the truth when something fails
//! between plan and write, or after it: an append that landed elsewhere
//! than its messages were sealed for, a re-encryption whose save timed
//! out, a listing that repeats an id. Each over a real `MemoryStore`
//! behind [`Faulty`], which injects one fault.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use statestore_core::{
    Append, Appended, ConversationState, Error as StoreError, Expect, IdempotencyKey, ListPage,
    ListQuery, Message, Metadata, RecentState, Result, SessionId, Store, Version, WriteOutcome,
    async_trait,
};
use statestore_crypto::{Encrypted, Error, Field, RotateOptions};
use support::{key, ring, sid};

/// What [`Faulty::append_with`] does after the store applied the append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterAppend {
    Reply,
    /// The reply is lost: `Timeout`.
    LoseReply,
    /// Another writer, before the reply: puts a copy of the message just
    /// before the append's first one in front of it (ciphertext sealed for
    /// another position), moving the append's messages one place on.
    CopyInFront,
}

/// What [`Faulty::save`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SaveFault {
    None,
    /// Refused before it reaches the store: `Unavailable`.
    Unavailable,
    /// Applied, then the reply is lost: `Timeout`.
    TimeoutAfterApply,
    /// Another writer's metadata write lands just before it: `Conflict`.
    Race,
}

/// A `MemoryStore` with one injected fault at a time.
#[derive(Debug)]
struct Faulty {
    store: Arc<dyn Store>,
    after_append: Mutex<AfterAppend>,
    save: Mutex<SaveFault>,
    /// Each page after the first starts again with the previous page's
    /// last id (what a Redis `SCAN` may do).
    repeat_listed: AtomicBool,
    last_listed: Mutex<Option<statestore_core::SessionInfo>>,
}

impl Faulty {
    fn over(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            after_append: Mutex::new(AfterAppend::Reply),
            save: Mutex::new(SaveFault::None),
            repeat_listed: AtomicBool::new(false),
            last_listed: Mutex::new(None),
        })
    }

    fn after_append(&self, what: AfterAppend) {
        *self.after_append.lock().unwrap() = what;
    }

    fn save_fault(&self, fault: SaveFault) {
        *self.save.lock().unwrap() = fault;
    }
}

fn timeout(operation: &'static str) -> StoreError {
    StoreError::Timeout {
        operation,
        after: Duration::from_secs(2),
    }
}

#[async_trait]
impl Store for Faulty {
    async fn load_with(
        &self,
        id: &SessionId,
        options: statestore_core::Load,
    ) -> Result<Option<ConversationState>> {
        self.store.load_with(id, options).await
    }
    async fn load_recent_as(
        &self,
        id: &SessionId,
        read: statestore_core::Recent,
    ) -> Result<Option<RecentState>> {
        self.store.load_recent_as(id, read).await
    }
    async fn save_with(
        &self,
        state: &ConversationState,
        options: statestore_core::Save,
    ) -> Result<Version> {
        let fault = *self.save.lock().unwrap();
        match fault {
            SaveFault::None => self.store.save_with(state, options).await,
            SaveFault::Unavailable => Err(StoreError::Unavailable {
                operation: "save",
                source: "connection refused".into(),
            }),
            SaveFault::TimeoutAfterApply => {
                self.store.save_with(state, options).await?;
                Err(timeout("save"))
            }
            SaveFault::Race => {
                // Removes a key no one set: a write all the same.
                let mut patch = Metadata::new();
                patch.insert("other".into(), serde_json::Value::Null);
                self.store
                    .merge_metadata(&state.id, patch, Expect::Any)
                    .await?;
                self.store.save_with(state, options).await
            }
        }
    }
    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        let done = self.store.append_with(id, append).await?;
        let after = *self.after_append.lock().unwrap();
        match after {
            AfterAppend::Reply => Ok(done),
            AfterAppend::LoseReply => Err(timeout("append")),
            AfterAppend::CopyInFront => {
                let mut raw = self.store.load(id).await?.unwrap();
                let at = usize::try_from(done.first_position).unwrap();
                let copy = Arc::clone(&raw.messages[at - 1]);
                raw.messages.insert(at, copy);
                self.store.save(&raw, Expect::Version(raw.version)).await?;
                Ok(done)
            }
        }
    }
    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        self.store.fork(source, target).await
    }
    async fn delete_with(&self, id: &SessionId, options: statestore_core::Delete) -> Result<bool> {
        self.store.delete_with(id, options).await
    }
    async fn exists(&self, id: &SessionId) -> Result<bool> {
        self.store.exists(id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let mut page = self.store.list(query).await?;
        if self.repeat_listed.load(Ordering::Relaxed) {
            let mut last = self.last_listed.lock().unwrap();
            if let (Some(_), Some(previous)) = (&query.cursor, last.take()) {
                page.sessions.insert(0, previous);
            }
            last.clone_from(&page.sessions.last().cloned());
        }
        Ok(page)
    }
    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        self.store.merge_metadata(id, patch, expect).await
    }
    async fn add_summary_with(
        &self,
        id: &SessionId,
        add: statestore_core::AddSummary,
    ) -> Result<Version> {
        self.store.add_summary_with(id, add).await
    }
    async fn touch(&self, id: &SessionId) -> Result<bool> {
        self.store.touch(id).await
    }

    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &statestore_core::Pending,
    ) -> statestore_core::Result<()> {
        self.store.put_pending(id, key, pending).await
    }
    async fn load_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
    ) -> statestore_core::Result<Option<statestore_core::Pending>> {
        self.store.load_pending(id, key).await
    }
}

/// A layer over `faulty` that last saw session `aba` at version 1 with
/// one message, after which another writer deleted it and re-created it
/// up to version 1 with two (`x`, `y`): the layer's next append with
/// `Expect::Version(1)` is sealed for position 1 and lands at 2.
async fn stale_layer(faulty: &Arc<Faulty>) -> (Encrypted, SessionId) {
    let layer = Encrypted::new(Arc::clone(faulty) as Arc<dyn Store>, ring("k1", 1));
    let other = Encrypted::new(Arc::clone(&faulty.store), ring("k1", 1));
    let id = sid("aba");
    layer
        .append(&id, vec![Message::user("one")], Expect::Any)
        .await
        .unwrap();
    other.delete(&id).await.unwrap();
    other
        .append(
            &id,
            vec![Message::user("x"), Message::user("y")],
            Expect::Any,
        )
        .await
        .unwrap();
    (layer, id)
}

fn mine(key: &str) -> Append {
    Append::new([Message::user("mine")])
        .expect(Expect::Version(1))
        .key(IdempotencyKey::new(key).unwrap())
}

async fn texts(layer: &Encrypted, id: &SessionId) -> Vec<String> {
    let state = layer.load(id).await.unwrap().unwrap();
    state
        .messages
        .iter()
        .map(|m| m.text().into_owned())
        .collect()
}

/// Another writer moved the append's messages one place on and put a copy
/// of message 1 (sealed for position 1) where the append landed: the layer
/// re-binds its own message where it now is, and leaves the copy as it
/// is — re-sealing it would hide that it was moved.
#[tokio::test]
async fn repair_reseals_only_the_appends_own_bytes_wherever_they_are() {
    let faulty = Faulty::over(support::memory());
    let (layer, id) = stale_layer(&faulty).await;
    faulty.after_append(AfterAppend::CopyInFront);
    let done = layer.append_with(&id, mine("t1")).await.unwrap();
    assert_eq!((done.first_position, done.replayed), (2, false));
    faulty.after_append(AfterAppend::Reply);

    let raw = faulty.store.load(&id).await.unwrap().unwrap();
    assert_eq!(raw.messages.len(), 4);
    assert_eq!(raw.messages[2], raw.messages[1], "the copy is untouched");
    let e = layer.load(&id).await.unwrap_err();
    assert!(
        matches!(
            Error::from_store(&e),
            Some(Error::Integrity {
                field: Field::Message(2),
                ..
            })
        ),
        "{e:?}"
    );
    let last = layer.load_recent(&id, 1).await.unwrap().unwrap();
    assert_eq!(last.messages[0].text(), "mine");
}

/// The re-binding save cannot reach the store: the append was written,
/// so the error says so (typed, not `NotWritten`); a retry with the same
/// key is not `Ok` until the messages are re-bound, then it is the replay.
#[tokio::test]
async fn a_failed_rebinding_is_a_typed_error_and_a_keyed_retry_rebinds() {
    let faulty = Faulty::over(support::memory());
    let (layer, id) = stale_layer(&faulty).await;
    faulty.save_fault(SaveFault::Unavailable);
    let e = layer.append_with(&id, mine("t1")).await.unwrap_err();
    assert_ne!(e.write_outcome(), WriteOutcome::NotWritten, "{e:?}");
    let Some(typed @ Error::NotRebound { positions, .. }) = Error::from_store(&e) else {
        panic!("{e:?}");
    };
    assert_eq!(positions, &(2..3));
    assert_eq!(typed.write_outcome(), WriteOutcome::Written);
    assert_eq!(typed.session(), Some(&id));
    assert!(!e.to_string().contains("mine"), "{e}");

    // Retried while the store still refuses: the same error, not `Ok`.
    let again = layer.append_with(&id, mine("t1")).await.unwrap_err();
    assert!(
        matches!(Error::from_store(&again), Some(Error::NotRebound { .. })),
        "{again:?}"
    );

    faulty.save_fault(SaveFault::None);
    let replay = layer.append_with(&id, mine("t1")).await.unwrap();
    assert_eq!((replay.first_position, replay.replayed), (2, true));
    assert_eq!(texts(&layer, &id).await, ["x", "y", "mine"]);
}

/// Every re-binding save loses a race: after its attempts, a typed error
/// (the messages are still where they landed, sealed for elsewhere).
#[tokio::test]
async fn a_rebinding_that_keeps_losing_races_is_a_typed_error() {
    let faulty = Faulty::over(support::memory());
    let (layer, id) = stale_layer(&faulty).await;
    faulty.save_fault(SaveFault::Race);
    let e = layer.append_with(&id, mine("t1")).await.unwrap_err();
    assert!(
        matches!(Error::from_store(&e), Some(Error::NotRebound { .. })),
        "{e:?}"
    );
    assert_eq!(e.write_outcome(), WriteOutcome::Unknown);
    assert_eq!(
        faulty
            .store
            .load(&id)
            .await
            .unwrap()
            .unwrap()
            .messages
            .len(),
        3
    );

    faulty.save_fault(SaveFault::None);
    let replay = layer.append_with(&id, mine("t1")).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(texts(&layer, &id).await, ["x", "y", "mine"]);
}

/// The append landed elsewhere and its reply was lost: no re-binding ran.
/// The retry with the same key finds the replay and re-binds first.
#[tokio::test]
async fn a_lost_reply_that_landed_elsewhere_is_rebound_by_the_keyed_retry() {
    let faulty = Faulty::over(support::memory());
    let (layer, id) = stale_layer(&faulty).await;
    faulty.after_append(AfterAppend::LoseReply);
    let e = layer.append_with(&id, mine("t1")).await.unwrap_err();
    assert_eq!(e.write_outcome(), WriteOutcome::Unknown);
    faulty.after_append(AfterAppend::Reply);

    let replay = layer.append_with(&id, mine("t1")).await.unwrap();
    assert_eq!((replay.first_position, replay.replayed), (2, true));
    assert_eq!(texts(&layer, &id).await, ["x", "y", "mine"]);
}

/// Appends left misplaced — one unkeyed whose re-binding failed, one
/// keyed whose reply was lost and that is never retried — are re-bound by
/// the session's next append through the layer.
#[tokio::test]
async fn misplaced_appends_are_rebound_by_the_next_append() {
    for keyed in [false, true] {
        let faulty = Faulty::over(support::memory());
        let (layer, id) = stale_layer(&faulty).await;
        let e = if keyed {
            faulty.after_append(AfterAppend::LoseReply);
            layer.append_with(&id, mine("t1")).await.unwrap_err()
        } else {
            faulty.save_fault(SaveFault::Unavailable);
            let unkeyed = Append::new([Message::user("mine")]).expect(Expect::Version(1));
            let e = layer.append_with(&id, unkeyed).await.unwrap_err();
            assert!(
                matches!(Error::from_store(&e), Some(Error::NotRebound { .. })),
                "{e:?}"
            );
            e
        };
        assert_ne!(e.write_outcome(), WriteOutcome::NotWritten);
        faulty.after_append(AfterAppend::Reply);
        faulty.save_fault(SaveFault::None);

        let next = Append::new([Message::user("next")]).key(IdempotencyKey::new("t2").unwrap());
        layer.append_with(&id, next).await.unwrap();
        assert_eq!(
            texts(&layer, &id).await,
            ["x", "y", "mine", "next"],
            "keyed: {keyed}"
        );
    }
}

/// The re-encryption's save was applied and its reply lost: the error
/// keeps the store's outcome (`Unknown`), in `rotate_all`'s report too, and
/// a rerun finds it done.
#[tokio::test]
async fn reencrypt_after_a_save_timeout_reports_unknown() {
    let faulty = Faulty::over(support::memory());
    let layer = Encrypted::new(Arc::clone(&faulty) as Arc<dyn Store>, ring("k1", 1));
    for s in ["a", "b"] {
        layer
            .append(&sid(s), vec![Message::user("hi")], Expect::Any)
            .await
            .unwrap();
    }
    layer
        .set_keyring(layer.keyring().with_current_key(key("k2", 2)).unwrap())
        .await;
    faulty.save_fault(SaveFault::TimeoutAfterApply);
    let e = layer.reencrypt(&sid("a")).await.unwrap_err();
    assert!(
        matches!(e, Error::Store(StoreError::Timeout { .. })),
        "{e:?}"
    );
    assert_eq!(e.write_outcome(), WriteOutcome::Unknown);
    // `a` is done (its save was applied); `b` times out the same way.
    let report = layer
        .rotate_all(RotateOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((report.sessions, report.reencrypted), (2, 0));
    let [(failed, e)] = &report.failed[..] else {
        panic!("{:?}", report.failed);
    };
    assert_eq!(failed, &sid("b"));
    assert_eq!(e.write_outcome(), WriteOutcome::Unknown);

    faulty.save_fault(SaveFault::None);
    assert_eq!(
        layer.reencrypt(&sid("b")).await.unwrap().values,
        0,
        "it was applied"
    );
}

/// A listing repeats ids across pages: each session is visited, counted
/// and reported once.
#[tokio::test]
async fn rotate_all_visits_an_id_listed_twice_once() {
    let faulty = Faulty::over(support::memory());
    let layer = Encrypted::new(Arc::clone(&faulty) as Arc<dyn Store>, ring("k1", 1));
    for s in 0..10 {
        layer
            .append(
                &sid(&format!("s{s}")),
                vec![Message::user("hi")],
                Expect::Any,
            )
            .await
            .unwrap();
    }
    // One session no ring can read: it fails, once.
    faulty.store.delete(&sid("s5")).await.unwrap();
    Encrypted::new(Arc::clone(&faulty.store), ring("lost", 7))
        .append(&sid("s5"), vec![Message::user("x")], Expect::Any)
        .await
        .unwrap();
    layer
        .set_keyring(layer.keyring().with_current_key(key("k2", 2)).unwrap())
        .await;
    faulty.repeat_listed.store(true, Ordering::Relaxed);

    let mut visited = Vec::new();
    let report = layer
        .rotate_all(RotateOptions::default().page_size(3), |p| {
            visited.push(p.id.clone());
            assert_eq!(p.sessions, visited.len() as u64);
        })
        .await
        .unwrap();
    let mut unique = visited.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(visited.len(), 10, "{visited:?}");
    assert_eq!(unique.len(), 10);
    assert_eq!(
        (report.sessions, report.reencrypted, report.failed.len()),
        (10, 9, 1)
    );
    assert_eq!(report.values, 9);
}
