//! Compression of sealed bodies: what is compressed ([`Compression`]), and
//! how much a read may decompress ([`Limits`], [`LoadBudget`]).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;

use statestore_core::Role;

use super::{Fault, Place};

/// Compression of sealed bodies: zstd above a size threshold, or none.
///
/// A body is compressed before it is encrypted when it is at least
/// `threshold` bytes long, and stored compressed only when that made it
/// smaller; the envelope records which. See the crate README for the
/// measurements behind the defaults.
///
/// [`Encrypted`](crate::Encrypted) does **not** compress unless told to;
/// [`Compressed`](crate::Compressed) compresses with [`Compression::zstd`]
/// (this type's `Default`).
///
/// # Compression before encryption leaks
///
/// Encryption hides content, not length, and compression makes the length
/// depend on content: how well a body compresses says how much of it
/// repeats. When an attacker can put text into a conversation (a user
/// message, a web page a tool fetched, a document) **and** see the stored
/// sizes (read access to the backend, a backup, a metrics dashboard of
/// value sizes), they can guess a secret that shares the value with their
/// text a few characters at a time: a guess that repeats the secret
/// compresses better (the CRIME and BREACH attacks on TLS and HTTP).
/// Compress only values that never mix attacker-chosen text with secrets,
/// or where sizes are not observable — [`Compression::roles`] compresses
/// the messages of chosen roles only (e.g. the model's answers and tool
/// results, which are long and repetitive) and nothing else.
///
/// ```
/// use statestore_core::Role;
/// use statestore_crypto::Compression;
///
/// let c = Compression::zstd().level(3).threshold(256);
/// assert_eq!(c.threshold_bytes(), Some(256));
/// assert_eq!(Compression::none().threshold_bytes(), None);
///
/// let answers = Compression::zstd().roles(&[Role::Assistant, Role::Tool]);
/// assert!(answers.compresses_role(Role::Tool));
/// assert!(!answers.compresses_role(Role::User));
/// assert!(!answers.compresses_other_values());
/// assert!(Compression::zstd().compresses_other_values());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    pub(super) zstd: Option<(i32, usize)>,
    /// `None`: every value; else only messages of these roles.
    roles: Option<Roles>,
}

impl Compression {
    /// The default zstd level.
    pub const DEFAULT_LEVEL: i32 = 1;
    /// The default threshold, in bytes of the serialized body.
    pub const DEFAULT_THRESHOLD: usize = 256;
    /// The default limit on what one value may decompress to (8 MiB); see
    /// [`EncryptedBuilder::max_decompressed_bytes`](crate::EncryptedBuilder::max_decompressed_bytes).
    pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 8 << 20;
    /// The default limit on what the values of one read may decompress to
    /// together (256 MiB); see
    /// [`EncryptedBuilder::max_decompressed_bytes_per_load`](crate::EncryptedBuilder::max_decompressed_bytes_per_load).
    pub const DEFAULT_MAX_DECOMPRESSED_BYTES_PER_LOAD: u64 = 256 << 20;

    /// No compression.
    #[must_use]
    pub const fn none() -> Self {
        Self {
            zstd: None,
            roles: None,
        }
    }

    /// zstd at [`Compression::DEFAULT_LEVEL`] for bodies of at least
    /// [`Compression::DEFAULT_THRESHOLD`] bytes, of every value: messages
    /// of all roles, summaries, the system prompt, metadata values (of an
    /// encrypting layer) and the progress of keyed writes. Read the
    /// [warning](Compression#compression-before-encryption-leaks) before
    /// using it with [`Encrypted`](crate::Encrypted).
    #[must_use]
    pub const fn zstd() -> Self {
        Self {
            zstd: Some((Self::DEFAULT_LEVEL, Self::DEFAULT_THRESHOLD)),
            roles: None,
        }
    }

    /// Sets the zstd level (1 fastest … 19 smallest; negative: faster still).
    #[must_use]
    pub const fn level(self, level: i32) -> Self {
        match self.zstd {
            Some((_, t)) => Self {
                zstd: Some((level, t)),
                ..self
            },
            None => self,
        }
    }

    /// Compresses only bodies of at least `bytes` bytes.
    #[must_use]
    pub const fn threshold(self, bytes: usize) -> Self {
        match self.zstd {
            Some((l, _)) => Self {
                zstd: Some((l, bytes)),
                ..self
            },
            None => self,
        }
    }

    /// Compresses only the messages of `roles`, and no other value: not
    /// summaries, the system prompt, metadata values or the progress of
    /// keyed writes. For an [`Encrypted`](crate::Encrypted) layer, choose
    /// roles whose messages do not mix attacker-chosen text with secrets
    /// (see the [warning](Compression#compression-before-encryption-leaks)).
    /// An empty list compresses nothing. No effect on
    /// [`Compression::none`].
    #[must_use]
    pub fn roles(self, roles: &[Role]) -> Self {
        if self.zstd.is_none() {
            return self;
        }
        Self {
            roles: Some(roles.iter().fold(Roles(0), |set, r| set.with(*r))),
            ..self
        }
    }

    /// The threshold, or `None` when compression is off.
    #[must_use]
    pub const fn threshold_bytes(&self) -> Option<usize> {
        match self.zstd {
            Some((_, t)) => Some(t),
            None => None,
        }
    }

    /// Whether messages of `role` are compressed (when long enough).
    #[must_use]
    pub fn compresses_role(&self, role: Role) -> bool {
        self.zstd.is_some() && self.roles.is_none_or(|set| set.has(role))
    }

    /// Whether values other than messages (summaries, the system prompt,
    /// metadata values, progress) are compressed (when long enough).
    #[must_use]
    pub fn compresses_other_values(&self) -> bool {
        self.zstd.is_some() && self.roles.is_none()
    }

    /// The zstd level and threshold that apply to the value at `place`.
    pub(super) fn for_place(&self, place: &Place<'_>) -> Option<(i32, usize)> {
        let applies = match place {
            Place::Message { role, .. } => self.compresses_role(*role),
            _ => self.compresses_other_values(),
        };
        self.zstd.filter(|_| applies)
    }
}

impl Default for Compression {
    /// [`Compression::zstd`]: what [`Compressed`](crate::Compressed) uses.
    fn default() -> Self {
        Self::zstd()
    }
}

/// A set of roles.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Roles(u8);

impl Roles {
    const ALL: [Role; 4] = [Role::System, Role::User, Role::Assistant, Role::Tool];

    fn bit(role: Role) -> u8 {
        match role {
            Role::System => 1,
            Role::User => 2,
            Role::Assistant => 4,
            Role::Tool => 8,
        }
    }

    fn with(self, role: Role) -> Self {
        Self(self.0 | Self::bit(role))
    }

    fn has(self, role: Role) -> bool {
        self.0 & Self::bit(role) != 0
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Self::ALL.iter().filter(|r| self.has(**r)))
            .finish()
    }
}

/// How much a layer decompresses: per value, and per read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The most one value may decompress to. Bodies longer than this are
    /// sealed uncompressed, so what a layer writes it can read.
    pub(crate) per_value: u64,
    /// The most the values of one read ([`LoadBudget`]) may decompress to.
    pub(crate) per_load: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_value: Compression::DEFAULT_MAX_DECOMPRESSED_BYTES,
            per_load: Compression::DEFAULT_MAX_DECOMPRESSED_BYTES_PER_LOAD,
        }
    }
}

thread_local! {
    /// The budget of the read running on this thread: (limit, used).
    static BUDGET: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// While it lives, every value opened on this thread counts what it
/// decompresses against one budget: a read (`load`, `load_recent_with`, a
/// re-encryption) holds one while it opens its values, synchronously. Not
/// `Send`, so it cannot be held across an `.await` (where the task could
/// move to another thread). Nested budgets restore the outer one.
#[derive(Debug)]
pub(crate) struct LoadBudget {
    outer: Option<(u64, u64)>,
    _not_send: PhantomData<*const ()>,
}

impl LoadBudget {
    /// A budget of `limit` bytes for the values opened until it is dropped.
    pub(crate) fn start(limit: u64) -> Self {
        Self {
            outer: BUDGET.with(|b| b.replace(Some((limit, 0)))),
            _not_send: PhantomData,
        }
    }
}

impl Drop for LoadBudget {
    fn drop(&mut self) {
        BUDGET.with(|b| b.set(self.outer));
    }
}

/// Counts `size` bytes against the running read's budget, if any.
fn charge(size: u64) -> Result<(), Fault> {
    BUDGET.with(|b| match b.get() {
        None => Ok(()),
        Some((limit, used)) => {
            let used = used.saturating_add(size);
            if used > limit {
                return Err(Fault::LoadTooLarge(limit));
            }
            b.set(Some((limit, used)));
            Ok(())
        }
    })
}

/// `body` compressed with zstd at `level`, when that is smaller. The
/// compression contexts are kept per thread: making one costs more than
/// compressing a message.
pub(super) fn compress(body: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        let (_, compressor) = slot.as_mut()?;
        let packed = compressor.compress(body).ok()?;
        (packed.len() < body.len()).then_some(packed)
    })
}

/// The body of zstd frame `packed`. The size the frame declares is checked
/// against the per-value limit and counted against the read's budget
/// before anything is allocated; the output buffer has exactly that size,
/// and a frame that would decompress to more fails.
pub(super) fn decompress(packed: &[u8], limits: Limits) -> Result<Vec<u8>, Fault> {
    let size = match zstd::zstd_safe::get_frame_content_size(packed) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(Fault::Malformed("a zstd frame without its size".into())),
        Err(_) => return Err(Fault::Malformed("not a zstd frame".into())),
    };
    if size > limits.per_value {
        return Err(Fault::BodyTooLarge(limits.per_value));
    }
    let capacity = usize::try_from(size).map_err(|_| Fault::BodyTooLarge(limits.per_value))?;
    charge(size)?;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Decompressor::new().ok();
        }
        let decompressor = slot
            .as_mut()
            .ok_or_else(|| Fault::Malformed("no zstd context".into()))?;
        let body = decompressor
            .decompress(packed, capacity)
            .map_err(|_| Fault::Malformed("the zstd frame does not decompress".into()))?;
        if body.len() as u64 != size {
            return Err(Fault::Malformed(
                "the zstd frame is shorter than it claims".into(),
            ));
        }
        Ok(body)
    })
}
