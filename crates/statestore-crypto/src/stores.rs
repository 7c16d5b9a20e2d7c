//! [`Encrypted`] and [`Compressed`]: the public `Store`s, each a thin
//! wrapper that delegates every operation to the shared [`Layer`].

use std::sync::{Arc, PoisonError, RwLock};

use statestore_core::{
    AddSummary, Append, Appended, ConversationState, Expect, IdempotencyKey, ListPage, ListQuery,
    Load, Metadata, Pending, RecentState, Result as StoreResult, Save, SessionId, Store, Version,
    async_trait,
};

use crate::envelope::Limits;
use crate::layer::Layer;
use crate::{Compression, KeyRing};

/// A [`Store`] that encrypts (and compresses) what it writes to another
/// store, and decrypts what it reads. See the [crate docs](crate).
///
/// ```
/// use std::sync::Arc;
/// use statestore_core::{Expect, Message, SessionId, Store};
/// use statestore_crypto::{Encrypted, Key, KeyRing};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let plain = Arc::new(statestore_memory::MemoryStore::new());
/// let keys = KeyRing::new(Key::from_bytes("2025-06", &[42u8; 32])?);
/// let store = Encrypted::new(plain.clone(), keys);
///
/// let id = SessionId::new("s")?;
/// store.append(&id, vec![Message::user("my card is 4111 1111")], Expect::Any).await?;
/// assert_eq!(store.load(&id).await?.unwrap().messages[0].text(), "my card is 4111 1111");
/// // What the backend holds:
/// let raw = plain.load(&id).await?.unwrap();
/// assert!(!format!("{raw:?}").contains("4111"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Encrypted {
    pub(crate) layer: Layer,
    keys: Arc<RwLock<KeyRing>>,
}

/// Builds an [`Encrypted`] layer with options.
#[derive(Debug)]
#[must_use]
pub struct EncryptedBuilder {
    inner: Arc<dyn Store>,
    keys: KeyRing,
    compression: Compression,
    limits: Limits,
    plaintext_ok: bool,
    context: String,
}

impl EncryptedBuilder {
    /// The application context every value and manifest is bound to, for
    /// example a tenant (`"tenant-a"`) or the store's prefix: a session
    /// copied into a store read under another context fails to decrypt
    /// ([`Error::Integrity`](crate::Error::Integrity)). Default: empty.
    /// Every process reading the same sessions must use the same context.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = context.into();
        self
    }

    /// Compression of bodies before encryption. Default:
    /// [`Compression::none`] — compressing before encrypting lets whoever
    /// can both put text into a conversation and see stored sizes learn
    /// about the secrets next to their text (see the
    /// [warning](Compression#compression-before-encryption-leaks)); turn it
    /// on knowingly, preferably for chosen roles only
    /// ([`Compression::roles`]). Values compressed by another writer are
    /// read whatever this says.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The most one stored value may decompress to, in bytes (default
    /// [`Compression::DEFAULT_MAX_DECOMPRESSED_BYTES`], 8 MiB). A value
    /// whose zstd frame declares more fails with
    /// [`Error::BodyTooLarge`](crate::Error::BodyTooLarge) before anything
    /// is allocated, so a small planted value cannot make a read allocate
    /// gigabytes. Bodies longer than this are written uncompressed, so what
    /// this layer writes it can read.
    pub fn max_decompressed_bytes(mut self, bytes: u64) -> Self {
        self.limits.per_value = bytes;
        self
    }

    /// The most the values one read opens (a `load`, a `load_recent_with`,
    /// a re-encryption) may decompress to together, in bytes (default
    /// [`Compression::DEFAULT_MAX_DECOMPRESSED_BYTES_PER_LOAD`], 256 MiB).
    /// Over it, the read fails with
    /// [`Error::LoadTooLarge`](crate::Error::LoadTooLarge) naming the
    /// session. Messages this layer opened before and kept are not counted
    /// again.
    pub fn max_decompressed_bytes_per_load(mut self, bytes: u64) -> Self {
        self.limits.per_load = bytes;
        self
    }

    /// Whether values stored unencrypted (by the store alone, or a
    /// [`Compressed`] layer) are read as they are — for migrating an
    /// existing store: turn it on, run [`Encrypted::rotate_all`], turn it
    /// off. Default `false`: such a value is an error
    /// ([`Error::NotEncrypted`](crate::Error::NotEncrypted)), so no one
    /// who can write to the backend can slip clear text into a
    /// conversation.
    pub fn accept_plaintext(mut self, accept: bool) -> Self {
        self.plaintext_ok = accept;
        self
    }

    /// The layer.
    #[must_use]
    pub fn build(self) -> Encrypted {
        let keys = Arc::new(RwLock::new(self.keys));
        Encrypted {
            layer: Layer::new(
                self.inner,
                Some(Arc::clone(&keys)),
                self.compression,
                self.plaintext_ok,
                self.context,
                self.limits,
            ),
            keys,
        }
    }
}

impl Encrypted {
    /// Encrypts with `keys`' current key, does not compress (see
    /// [`EncryptedBuilder::compression`]), refuses unencrypted values.
    #[must_use]
    pub fn new(inner: Arc<dyn Store>, keys: KeyRing) -> Self {
        Self::builder(inner, keys).build()
    }

    /// A builder, to turn compression on, set decompression limits or
    /// accept unencrypted values.
    pub fn builder(inner: Arc<dyn Store>, keys: KeyRing) -> EncryptedBuilder {
        EncryptedBuilder {
            inner,
            keys,
            compression: Compression::none(),
            limits: Limits::default(),
            plaintext_ok: false,
            context: String::new(),
        }
    }

    /// The store underneath (holding ciphertext).
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.layer.inner
    }

    /// The key ring in use.
    #[must_use]
    pub fn keyring(&self) -> KeyRing {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the key ring: every write that starts afterwards uses its
    /// current key. Waits for writes already sealing with the old ring to
    /// finish, so when it returns nothing sealed with the old key is still
    /// on its way to the store (from this layer; other processes switch
    /// when they load the new ring).
    pub async fn set_keyring(&self, keys: KeyRing) {
        let _exclusive = self.layer.gate.write().await;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        // Cached plaintext must not outlive a key removed from the ring.
        self.layer.clear_opened();
    }
}

/// A [`Store`] that compresses large bodies it writes to another store
/// (zstd), without encryption: smaller Redis memory and SQLite files.
/// Values below the threshold, and values that do not shrink, are stored
/// as they are; metadata is never compressed. Reads both. Decompression is
/// limited per value and per read as in [`Encrypted`]
/// ([`Compressed::max_decompressed_bytes`]).
///
/// ```
/// use std::sync::Arc;
/// use statestore_core::{Expect, Message, SessionId, Store};
/// use statestore_crypto::Compressed;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> statestore_core::Result<()> {
/// let store = Compressed::new(Arc::new(statestore_memory::MemoryStore::new()));
/// let id = SessionId::new("s")?;
/// let long = "the same sentence, said again. ".repeat(100);
/// store.append(&id, vec![Message::user(long.clone())], Expect::Any).await?;
/// assert_eq!(store.load(&id).await?.unwrap().messages[0].text(), long);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Compressed {
    layer: Layer,
}

impl Compressed {
    /// Compresses with the default [`Compression`] (zstd).
    #[must_use]
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self::with_compression(inner, Compression::default())
    }

    /// Compresses as `compression` says.
    #[must_use]
    pub fn with_compression(inner: Arc<dyn Store>, compression: Compression) -> Self {
        Self {
            layer: Layer::new(
                inner,
                None,
                compression,
                true,
                String::new(),
                Limits::default(),
            ),
        }
    }

    /// The most one stored value may decompress to, in bytes; as
    /// [`EncryptedBuilder::max_decompressed_bytes`] (default 8 MiB; the
    /// error, through [`Store`], is a `Corrupt` whose source is
    /// [`Error::BodyTooLarge`](crate::Error::BodyTooLarge)).
    #[must_use]
    pub fn max_decompressed_bytes(mut self, bytes: u64) -> Self {
        self.layer.limits.per_value = bytes;
        self
    }

    /// The most the values of one read may decompress to together, in
    /// bytes; as [`EncryptedBuilder::max_decompressed_bytes_per_load`]
    /// (default 256 MiB; [`Error::LoadTooLarge`](crate::Error::LoadTooLarge)).
    #[must_use]
    pub fn max_decompressed_bytes_per_load(mut self, bytes: u64) -> Self {
        self.layer.limits.per_load = bytes;
        self
    }

    /// The store underneath.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.layer.inner
    }
}

macro_rules! delegate_store {
    ($ty:ty) => {
        #[async_trait]
        impl Store for $ty {
            fn system_name(&self) -> &'static str {
                self.layer.inner.system_name()
            }
            fn is_traced(&self) -> bool {
                self.layer.inner.is_traced()
            }
            async fn load_with(
                &self,
                id: &SessionId,
                options: Load,
            ) -> StoreResult<Option<ConversationState>> {
                self.layer.load_with(id, options).await
            }
            async fn load_recent_as(
                &self,
                id: &SessionId,
                read: statestore_core::Recent,
            ) -> StoreResult<Option<RecentState>> {
                self.layer.load_recent_as(id, read).await
            }
            async fn save_with(
                &self,
                state: &ConversationState,
                options: Save,
            ) -> StoreResult<Version> {
                self.layer.save_with(state, options).await
            }
            async fn append_with(&self, id: &SessionId, append: Append) -> StoreResult<Appended> {
                self.layer.append_with(id, append).await
            }
            async fn fork(&self, source: &SessionId, target: &SessionId) -> StoreResult<Version> {
                self.layer.fork(source, target).await
            }
            async fn delete_with(
                &self,
                id: &SessionId,
                options: statestore_core::Delete,
            ) -> StoreResult<bool> {
                self.layer.delete_with(id, options).await
            }
            async fn exists(&self, id: &SessionId) -> StoreResult<bool> {
                self.layer.inner.exists(id).await
            }
            async fn list(&self, query: &ListQuery) -> StoreResult<ListPage> {
                self.layer.list(query).await
            }
            async fn merge_metadata(
                &self,
                id: &SessionId,
                patch: Metadata,
                expect: Expect,
            ) -> StoreResult<Version> {
                self.layer.merge_metadata(id, patch, expect).await
            }
            async fn add_summary_with(
                &self,
                id: &SessionId,
                add: AddSummary,
            ) -> StoreResult<Version> {
                self.layer.add_summary_with(id, add).await
            }
            async fn touch(&self, id: &SessionId) -> StoreResult<bool> {
                self.layer.inner.touch(id).await
            }
            async fn put_pending(
                &self,
                id: &SessionId,
                key: &IdempotencyKey,
                pending: &Pending,
            ) -> StoreResult<()> {
                self.layer.put_pending(id, key, pending).await
            }
            async fn load_pending(
                &self,
                id: &SessionId,
                key: &IdempotencyKey,
            ) -> StoreResult<Option<Pending>> {
                self.layer.load_pending(id, key).await
            }
        }
    };
}

delegate_store!(Encrypted);
delegate_store!(Compressed);
