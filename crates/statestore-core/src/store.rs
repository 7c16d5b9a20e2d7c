//! The [`Store`] trait every backend implements.

use async_trait::async_trait;

use crate::{
    AddSummary, Append, Appended, ConversationState, Expect, IdempotencyKey, ListPage, ListQuery,
    Message, Metadata, Pending, PruneQuery, Pruned, RecentState, Result, Save, SessionId, Summary,
    Version,
};

/// How [`Store::load_with`] reads: as an access (the default), or as a
/// maintenance read that keeps the session's clocks.
///
/// ```
/// use statestore_core::Load;
///
/// let export = Load::new().keep_clocks();
/// assert!(export.keep_clocks);
/// assert!(!Load::default().keep_clocks);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct Load {
    /// A maintenance read — re-encryption, an export, inspection by an
    /// operator — that does not restart the expiry clock or move
    /// `last_accessed_at`: reading a conversation for upkeep is not using
    /// it, so its retention must not change. The state returned carries
    /// the `last_accessed_at` the store holds (the last access before this
    /// read) instead of the time of this read. The read's content is
    /// exactly what a plain load returns. Default: off.
    ///
    /// The counterpart of [`Save::keep_clocks`](Save#structfield.keep_clocks):
    /// a read with it and a save with it, guarded by the version read,
    /// rewrite a session without extending its retention.
    pub keep_clocks: bool,
}

impl Load {
    /// A plain load: counts as an access.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes it a maintenance read that keeps the session's clocks (see
    /// [`Load::keep_clocks`](Load#structfield.keep_clocks)).
    pub fn keep_clocks(mut self) -> Self {
        self.keep_clocks = true;
        self
    }
}

/// How [`Store::load_recent_as`] reads.
///
/// ```
/// use statestore_core::Recent;
///
/// // What `statestore list` reads of each session: no messages, no access.
/// let peek = Recent::new(0).keep_clocks();
/// assert!(peek.keep_clocks && peek.lookup.is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct Recent {
    /// The newest this many messages (`0`: none; more than the history:
    /// all of it).
    pub n: usize,
    /// The key whose write to report ([`RecentState::replay`]) and whose
    /// progress ([`RecentState::pending`]).
    pub lookup: Option<IdempotencyKey>,
    /// A maintenance read: not an access (see [`Load::keep_clocks`](Load#structfield.keep_clocks)).
    pub keep_clocks: bool,
}

impl Recent {
    /// The newest `n` messages, as an access.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            ..Self::default()
        }
    }

    /// Also reports what the write under `lookup` did.
    pub fn lookup(mut self, lookup: Option<IdempotencyKey>) -> Self {
        self.lookup = lookup;
        self
    }

    /// Makes it a maintenance read, not an access.
    pub fn keep_clocks(mut self) -> Self {
        self.keep_clocks = true;
        self
    }
}

/// How [`Store::delete_with`] deletes.
///
/// ```
/// use statestore_core::{Delete, Expect};
///
/// // Only if nobody wrote the session since it was read at version 4.
/// let guarded = Delete::new().expect(Expect::Version(4));
/// assert_eq!(guarded.expect, Expect::Version(4));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct Delete {
    /// What the session's version must be (default: any).
    pub expect: Expect,
}

impl Delete {
    /// A plain delete.
    pub fn new() -> Self {
        Self::default()
    }

    /// Guards the delete with `expect`.
    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }
}

/// A place conversations live between pipeline executions.
///
/// Backends: `statestore-memory` (development, tests, single-instance apps)
/// and `statestore-redis` (production). Every backend passes the same
/// conformance suite (`statestore_core::conformance`, feature
/// `conformance`), so code written against `Arc<dyn Store>` behaves the same
/// on each.
///
/// # Contract
///
/// - Missing sessions are `Ok(None)` / `Ok(false)` for reads, never errors.
/// - Every write is atomic: afterwards the session is either entirely before
///   or entirely after it, for every reader, on every backend.
/// - Every write returns the session's new [`Version`] (1 on creation, one
///   more per write) and can carry an [`Expect`]; when the expectation does
///   not hold the write fails with [`Error::Conflict`](crate::Error::Conflict)
///   and changes nothing.
/// - Sessions never see each other's data, whatever their ids.
/// - Backends with expiry (TTL) count every read and write of a session as
///   an access that restarts its clock; [`Store::touch`] does so explicitly.
///   The exceptions are [`Store::exists`] and maintenance reads and saves
///   ([`Load::keep_clocks`](Load#structfield.keep_clocks),
///   [`Save::keep_clocks`](Save#structfield.keep_clocks)).
///
/// # Example: the seed's "Save and Load"
///
/// ```
/// # async fn demo(store: &dyn statestore_core::Store) -> statestore_core::Result<()> {
/// use statestore_core::{ConversationState, Expect, Message, SessionId};
///
/// let id = SessionId::new("session-1")?;
/// let state = ConversationState::new(id.clone())
///     .with_messages([Message::user("Hello"), Message::assistant("Hi there!")]);
/// store.save(&state, Expect::Any).await?;
///
/// if let Some(loaded) = store.load(&id).await? {
///     for msg in &loaded.messages {
///         println!("{}: {}", msg.role, msg.text());
///     }
/// }
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The backend, as OpenTelemetry's `db.system.name` records it:
    /// `memory`, `sqlite`, `redis`, `postgresql`; `other` unless a store
    /// says. Layers over another store report the store beneath.
    fn system_name(&self) -> &'static str {
        "other"
    }

    /// Whether this store records telemetry spans itself (it is a
    /// [`Traced`](crate::telemetry::Traced)), so that
    /// [`traced`](crate::telemetry::traced) does not wrap it twice. Layers
    /// report the store beneath.
    fn is_traced(&self) -> bool {
        false
    }

    /// The whole session, or `None` when it does not exist. Counts as an
    /// access.
    ///
    /// The same as [`Store::load_with`] with [`Load::new`].
    async fn load(&self, id: &SessionId) -> Result<Option<ConversationState>> {
        self.load_with(id, Load::new()).await
    }

    /// The whole session as [`Store::load`] reads it, or `None` when it
    /// does not exist; with
    /// [`options.keep_clocks`](Load#structfield.keep_clocks) a maintenance
    /// read (re-encryption, export, inspection by an operator): does not
    /// restart the expiry clock or move `last_accessed_at`, and reports
    /// the `last_accessed_at` the store holds. A session that has expired
    /// is still `None`.
    ///
    /// A retry is safe: a read writes nothing of the session's content. A
    /// maintenance read changes nothing at all, so it may be repeated any
    /// number of times; a plain one records one more access.
    async fn load_with(&self, id: &SessionId, options: Load) -> Result<Option<ConversationState>>;

    /// The newest `n` messages and everything a context window needs
    /// (system prompt, summaries, metadata, counters, version), without
    /// reading the rest of the history. `n = 0` returns no messages; `n`
    /// larger than the history returns all of it. `None` when the session
    /// does not exist.
    async fn load_recent(&self, id: &SessionId, n: usize) -> Result<Option<RecentState>> {
        self.load_recent_with(id, n, None).await
    }

    /// [`Store::load_recent`], and in the same consistent read, what the
    /// write made under `lookup` did ([`RecentState::replay`]) if the
    /// session remembers it: one round trip tells a retried turn both
    /// whether it already landed and what the window holds.
    async fn load_recent_with(
        &self,
        id: &SessionId,
        n: usize,
        lookup: Option<&IdempotencyKey>,
    ) -> Result<Option<RecentState>> {
        let read = Recent::new(n).lookup(lookup.cloned());
        self.load_recent_as(id, read).await
    }

    /// [`Store::load_recent_with`] as `read` says: the newest
    /// [`Recent::n`](Recent#structfield.n) messages, what the write under
    /// [`Recent::lookup`](Recent#structfield.lookup) did, and — with
    /// [`Recent::keep_clocks`](Recent#structfield.keep_clocks) — as a
    /// maintenance read (a peek: an operator's listing, a tool) that is
    /// not an access, so it restarts no expiry clock and reports the
    /// `last_accessed_at` the store holds.
    ///
    /// A retry is safe: a read writes nothing of the session's content; a
    /// peek writes nothing at all.
    async fn load_recent_as(&self, id: &SessionId, read: Recent) -> Result<Option<RecentState>>;

    /// Replaces the whole session with `state` (creating it if needed) — the
    /// seed's `Save`. `state.version` is ignored; `expect` guards the write.
    /// `created_at` is kept from the stored session when there is one, and
    /// taken from `state` when the session is created (so imports keep it).
    ///
    /// Remembered writes are not replaced: the session keeps every key it
    /// remembers — without positions, since the history is replaced
    /// ([`Appended::rewritten`](crate::Appended::rewritten)) — and adds the
    /// keys of `state.writes` it does not remember yet
    /// ([`RememberedWrite::carried`](crate::RememberedWrite::carried)), up to
    /// [`REMEMBERED_WRITES`](crate::REMEMBERED_WRITES) in all. A retry of
    /// a keyed write is a replay after any save, never a second copy.
    ///
    /// The same as [`Store::save_with`] guarded by `expect`, clocks not
    /// kept.
    async fn save(&self, state: &ConversationState, expect: Expect) -> Result<Version> {
        self.save_with(state, Save::new().expect(expect)).await
    }

    /// Replaces the whole session with `state` as [`Store::save`] does,
    /// guarded by `options.expect`; with
    /// [`options.keep_clocks`](Save#structfield.keep_clocks) a maintenance
    /// write (re-encryption, a migration of the storage format) that keeps
    /// the session's `updated_at`, `last_accessed_at` and expiry time
    /// instead of restarting them, so that it does not extend the
    /// session's retention. Everything else — `created_at`, the remembered
    /// writes, the new version — is as for [`Store::save`].
    ///
    /// A retry is what a retry of a save is: guarded by a version, a repeat
    /// after the save landed is a [`Conflict`](crate::Error::Conflict) and
    /// writes nothing; with [`Expect::Any`] it applies the same content
    /// again (one more version), keeping the clocks again.
    async fn save_with(&self, state: &ConversationState, options: Save) -> Result<Version>;

    /// Appends `messages` to the history without reading or rewriting it:
    /// the per-turn hot path. Creates the session when it does not exist
    /// (unless `expect` forbids it). All messages land together, in order,
    /// with nothing from another writer between them.
    ///
    /// The same as [`Store::append_with`] with no key and no counters.
    async fn append(
        &self,
        id: &SessionId,
        messages: Vec<Message>,
        expect: Expect,
    ) -> Result<Version> {
        let appended = self
            .append_with(id, Append::new(messages).expect(expect))
            .await?;
        Ok(appended.version)
    }

    /// Appends `append.messages` and adds `append.counters`, in one atomic
    /// step guarded by `append.expect` — at most once per session for a
    /// given `append.key` (see [`crate::write`]): a repeat writes nothing
    /// and returns the first outcome with [`Appended::replayed`] set, even
    /// when its expectation no longer holds.
    ///
    /// Backends that could re-send a request on their own (a cluster client
    /// retrying after a dropped connection) attach a fresh key to unkeyed
    /// appends, so no append is ever applied twice.
    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended>;

    /// Copies `source` to a new session `target`, as one consistent
    /// snapshot; the target starts at version 1.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) when `source` does not
    /// exist; [`Error::AlreadyExists`](crate::Error::AlreadyExists) when
    /// `target` does (nothing is overwritten or mixed);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when they are
    /// the same id.
    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version>;

    /// Removes idle or old sessions, a bounded number per call, resumable
    /// by cursor; a session written since the walk found it is kept. The
    /// rules are in the [`crate::prune`] module docs; every backend uses
    /// that one implementation, over [`list`](Self::list) and
    /// [`delete_with`](Self::delete_with).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`](crate::Error::InvalidQuery) with neither
    /// criterion; a listing's or a delete's error, which stops the call
    /// (sessions removed before it stay removed: run it again from the
    /// same cursor).
    async fn prune(&self, query: &PruneQuery) -> Result<Pruned> {
        crate::prune::run(self, query).await
    }

    /// Takes the history back to its first `to` messages: every message at
    /// a position `>= to` goes, with the summaries that cover one of them;
    /// metadata, counters, prompt and owner stay. Keyed writes it took away
    /// stay remembered (a retry replays, never re-applies) and are listed
    /// under [`REWOUND_KEY`](crate::rewind::REWOUND_KEY). A rewind to where
    /// the history already ends writes nothing. Rules in
    /// [`crate::rewind`]; one implementation for every backend.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`](crate::Error::Conflict) when `expect` does not
    /// admit the session's version or a write lands meanwhile;
    /// [`Error::NotFound`](crate::Error::NotFound);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a `to`
    /// past the end. None of them wrote anything.
    async fn rewind(&self, id: &SessionId, to: u64, expect: Expect) -> Result<Version> {
        crate::rewind::rewind(self, id, to, expect).await
    }

    /// A branch: a new session `target` holding `source`'s first `upto`
    /// messages (and the summaries within them, its metadata, counters,
    /// prompt and owner) from one consistent read; the target starts at
    /// version 1 and remembers no writes. `fork` with `upto` the whole
    /// history is [`Store::fork`]. A retry finds the target:
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists).
    ///
    /// # Errors
    ///
    /// As [`Store::fork`], and
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an
    /// `upto` past the end of the source.
    async fn fork_at(&self, source: &SessionId, target: &SessionId, upto: u64) -> Result<Version> {
        crate::rewind::fork_at(self, source, target, upto).await
    }

    /// Deletes the session; `true` when it existed.
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.delete_with(id, Delete::new()).await
    }

    /// Deletes the session, guarded: with
    /// [`Delete::expect`](Delete#structfield.expect) a
    /// [`Expect::Version`] it deletes only a session still at that
    /// version — one written since (or gone) is
    /// [`Error::Conflict`](crate::Error::Conflict) and nothing is deleted.
    /// `true` when it deleted the session.
    ///
    /// A retry of a guarded delete that ran finds the session gone: a
    /// conflict whose `actual` is `None`, which says the session is gone
    /// (by this delete or another), never that a newer session was
    /// deleted.
    async fn delete_with(&self, id: &SessionId, options: Delete) -> Result<bool>;

    /// Whether the session exists. Does not count as an access.
    async fn exists(&self, id: &SessionId) -> Result<bool>;

    /// One page of sessions — by id or newest first, filtered by user,
    /// metadata and time ranges — with what a session list shows (owner,
    /// title, clocks), read without loading any history. Does not count as
    /// an access. The order, the cursor rules and the cost are in
    /// [`crate::list`] module docs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCursor`](crate::Error::InvalidCursor) for a cursor
    /// this store did not produce for a listing in this order.
    async fn list(&self, query: &ListQuery) -> Result<ListPage>;

    /// Merges `patch` into the session's metadata: keys in `patch` overwrite,
    /// a `null` value removes the key, other keys are kept. Creates the
    /// session when it does not exist (unless `expect` forbids it).
    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version>;

    /// Adds a summary of older messages: [`Store::add_summary_with`] with
    /// no metadata.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) when the session does not
    /// exist; [`Error::InvalidArgument`](crate::Error::InvalidArgument) when
    /// the summary's range is empty or reaches past the history.
    async fn add_summary(
        &self,
        id: &SessionId,
        summary: Summary,
        expect: Expect,
    ) -> Result<Version> {
        self.add_summary_with(id, AddSummary::new(summary).expect(expect))
            .await
    }

    /// Adds `add.summary` after the session's summaries and merges
    /// `add.metadata` into its metadata, in one atomic step guarded by
    /// `add.expect`.
    ///
    /// # Errors
    ///
    /// As [`Store::add_summary`]; nothing is written on any error but a
    /// store failure (whose `write_outcome()` says).
    async fn add_summary_with(&self, id: &SessionId, add: AddSummary) -> Result<Version>;

    /// Records `pending` as the progress of the keyed write `key` is still
    /// to make on session `id` (the pipeline: a turn between its tool
    /// rounds), replacing what was recorded before under `key`.
    ///
    /// Progress is invisible to every read but [`Store::load_pending`] and
    /// a [`Store::load_recent_with`] that asks about `key`
    /// ([`RecentState::pending`](crate::RecentState::pending)), and only
    /// while no write under `key` is remembered: the append under `key`
    /// removes it in its atomic step. It neither creates the session nor
    /// changes its version, never appears in `load`, `list`, exports or
    /// windows, is removed by `delete`, is not copied by `fork`, and lasts
    /// no longer than the store's TTL from the last `put_pending`.
    ///
    /// A retry is safe: it records the same progress again.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`](crate::Error::TooLarge) for a message over the
    /// size limit; store failures.
    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> Result<()>;

    /// The progress recorded under `key` ([`Store::put_pending`]), when
    /// there is some and no write under `key` is remembered — whether or
    /// not the session exists yet (a session's first turn). Sessions that
    /// exist answer the same in [`Store::load_recent_with`], in the read
    /// that loads the window.
    async fn load_pending(&self, id: &SessionId, key: &IdempotencyKey) -> Result<Option<Pending>>;

    /// Records an access: restarts the session's expiry clock and updates
    /// `last_accessed_at`, without changing its version. `false` when the
    /// session does not exist.
    async fn touch(&self, id: &SessionId) -> Result<bool>;
}

/// The argument check every backend's [`Store::fork`] starts with.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `source`
/// and `target` are the same id.
pub fn check_fork_ids(source: &SessionId, target: &SessionId) -> Result<()> {
    if source == target {
        return Err(crate::Error::InvalidArgument {
            id: source.clone(),
            reason: "cannot fork a session onto itself".into(),
        });
    }
    Ok(())
}
