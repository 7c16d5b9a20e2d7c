//! [`CliError`]: everything a command can fail with, its exit code, what to
//! do next, and whether anything was written.

use statestore::crypto::Error as CryptoError;
use statestore::pipeline;
use statestore::{OpenError, WriteOutcome};

/// Why a command failed. Messages never contain a password or an API key:
/// store URLs are shown redacted (`statestore::redact_url`), and the
/// library errors wrapped here redact theirs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    /// The command line asks for something impossible (exit 2).
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// What to do instead.
        hint: Option<String>,
    },

    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),

    /// A store operation failed.
    #[error("{doing}: {source}")]
    Store {
        /// What the command was doing, e.g. `deleting session "a"`.
        doing: String,
        /// Whether the operation writes (then the error says what was written).
        write: bool,
        /// The store's error.
        #[source]
        source: statestore::Error,
    },

    /// The key ring (`--keys`, `STATESTORE_KEYS`) could not be read. Not
    /// a `source`: the message is the error's own, reworded for some.
    #[error("{}", keys_message(.0))]
    Keys(CryptoError),

    /// A chat turn failed.
    #[error("{0}")]
    Chat(#[from] pipeline::Error),

    /// Compaction or trimming failed.
    #[error("{doing}: {source}")]
    Window {
        /// What the command was doing.
        doing: String,
        /// The error.
        #[source]
        source: statestore::window::Error,
    },

    /// Reading or writing a file or stream failed.
    #[error("{what}: {source}")]
    Io {
        /// Which file or stream, and what was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// Ctrl-C stopped the command (exit 130, as shells report SIGINT).
    #[error("interrupted: {left}")]
    Interrupted {
        /// What the interruption left behind.
        left: String,
    },

    /// The command ran and found something wrong (a session missing,
    /// conflicts, a corrupt import line, a failed check).
    #[error("{message}")]
    Failed {
        /// What happened, and what was and was not done.
        message: String,
        /// What to do next.
        hint: Option<String>,
    },
}

impl From<CryptoError> for CliError {
    fn from(e: CryptoError) -> Self {
        Self::Keys(e)
    }
}

impl CliError {
    /// A store error while `doing` something that only reads.
    pub(crate) fn read(doing: impl Into<String>) -> impl FnOnce(statestore::Error) -> Self {
        let doing = doing.into();
        move |source| Self::Store {
            doing,
            write: false,
            source,
        }
    }

    /// A store error while `doing` something that writes.
    pub(crate) fn write(doing: impl Into<String>) -> impl FnOnce(statestore::Error) -> Self {
        let doing = doing.into();
        move |source| Self::Store {
            doing,
            write: true,
            source,
        }
    }

    /// An I/O error on `what`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// A failure without a hint.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            hint: None,
        }
    }

    /// 2 for usage errors (bad options, URLs, ids), 1 for everything else.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage { .. }
            | Self::Keys(_)
            | Self::Open(
                OpenError::InvalidUrl { .. }
                | OpenError::UnknownScheme { .. }
                | OpenError::InvalidOption { .. }
                | OpenError::FeatureDisabled { .. },
            ) => 2,
            Self::Interrupted { .. } => 130,
            _ => 1,
        }
    }

    /// Whether this is stdout closed by its reader (`statestore list | head`):
    /// not an error.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// What a failed write left behind, for errors of writes (`None`
    /// where nothing was to be written, or for a turn [`Self::written`]
    /// words apart): for `--json`'s `write_outcome`.
    pub(crate) fn write_outcome(&self) -> Option<WriteOutcome> {
        Some(match self {
            Self::Store {
                write: true,
                source,
                ..
            } => source.write_outcome(),
            Self::Chat(
                pipeline::Error::TurnRewritten { .. } | pipeline::Error::TurnUnreadable { .. },
            ) => WriteOutcome::Written,
            Self::Chat(e) => e.write_outcome(),
            Self::Window { source, .. } => match source {
                statestore::window::Error::Store(e) => e.write_outcome(),
                _ => WriteOutcome::NotWritten,
            },
            Self::Keys(_) => WriteOutcome::NotWritten,
            _ => return None,
        })
    }

    /// What a failed write left behind, for errors of writes.
    pub(crate) fn written(&self) -> Option<&'static str> {
        let outcome = match self {
            Self::Store {
                write: true,
                source,
                ..
            } => source.write_outcome(),
            Self::Chat(
                pipeline::Error::TurnRewritten { .. } | pipeline::Error::TurnUnreadable { .. },
            ) => return Some("the turn is stored: do not send it again as a new turn"),
            Self::Chat(e) => e.write_outcome(),
            Self::Window { source, .. } => match source {
                statestore::window::Error::Store(e) => e.write_outcome(),
                _ => WriteOutcome::NotWritten,
            },
            // The key ring is read before any store is opened.
            Self::Keys(_) => return Some("nothing was read or written"),
            _ => return None,
        };
        Some(match outcome {
            WriteOutcome::NotWritten => "nothing was written",
            WriteOutcome::Written => {
                "the write was applied but may not be durable (not acknowledged by enough replicas)"
            }
            _ => {
                "the write may or may not have been applied: look with `statestore show` before \
                 running it again"
            }
        })
    }

    /// What to do next.
    pub(crate) fn hint(&self) -> Option<String> {
        use statestore::Error as E;
        let store_hint = |e: &E| -> Option<String> {
            if let Some(hint) = CryptoError::from_store(e).and_then(crypto_hint) {
                return Some(hint);
            }
            Some(match e {
                E::NotFound { .. } => "`statestore list` shows the sessions there are".into(),
                E::AlreadyExists { .. } => "choose another id, or delete that session first".into(),
                E::Conflict { .. } => {
                    "the session changed meanwhile (another process wrote to it): run the \
                     command again"
                        .into()
                }
                E::Unavailable { .. } | E::Timeout { .. } => {
                    "is the store running and reachable? `statestore doctor` checks the \
                     connection and the settings"
                        .into()
                }
                E::Refused { .. } => {
                    "this user cannot write the store (a read-only file or directory, or a \
                     read-only server): fix its permissions, or use a store you can write; \
                     `statestore doctor` checks it"
                        .into()
                }
                E::Decryption {
                    key_id: Some(k), ..
                } => format!(
                    "reading it needs key {k:?}, the very key that encrypted it: add its line to \
                     the key file (--keys) if it is missing; a different key under that id \
                     fails too"
                ),
                E::Decryption { key_id: None, .. } => {
                    "the value is not what this key ring encrypted: a store written without \
                     --keys is encrypted with `statestore rotate-keys --keys FILE \
                     --encrypt-plaintext`; otherwise `statestore doctor` checks the store"
                        .into()
                }
                E::Corrupt { .. } | E::UnsupportedSchema { .. } => {
                    "`statestore doctor` checks the store".into()
                }
                _ => return None,
            })
        };
        match self {
            Self::Usage { hint, .. } | Self::Failed { hint, .. } => hint.clone(),
            Self::Interrupted { .. } => Some("run the command again to do it whole".into()),
            Self::Keys(e) => Some(keys_hint(e)),
            Self::Open(e) => Some(match e {
                OpenError::InvalidUrl { .. }
                | OpenError::UnknownScheme { .. }
                | OpenError::InvalidOption { .. } => {
                    "store URLs look like sqlite:///var/lib/app/sessions.db, \
                     redis://user:password@host:6379/0, redis+cluster://h1:7000,h2:7001, \
                     postgres://user:password@host:5432/db or memory:// (see `statestore --help`)"
                        .into()
                }
                OpenError::Open { .. } if names_no_file(e) => {
                    "no store is there: check the path (for the default store, STATESTORE_HOME); \
                     only `statestore chat`, `import` and `migrate --to` create a store"
                        .into()
                }
                OpenError::Open { .. } => {
                    "check that the file's directory exists and is writable, and that the file \
                     is a statestore database; `statestore doctor` says more"
                        .into()
                }
                _ => "is the server running and reachable at that address, with those \
                      credentials? Set the store with --store or STATESTORE_URL"
                    .into(),
            }),
            Self::Store { source, .. } => store_hint(source),
            Self::Chat(e) => match e {
                pipeline::Error::Auth { .. } => {
                    Some("check OPENAI_API_KEY (and OPENAI_BASE_URL if you set it)".into())
                }
                pipeline::Error::Config { .. } => {
                    Some("check OPENAI_API_KEY, OPENAI_BASE_URL and OPENAI_MODEL".into())
                }
                pipeline::Error::Timeout { .. }
                | pipeline::Error::Transport(_)
                | pipeline::Error::RateLimited { .. } => Some(
                    "the model's endpoint did not answer: try again, or unset OPENAI_API_KEY to \
                     use the offline model"
                        .into(),
                ),
                pipeline::Error::ContextLengthExceeded { .. } => Some(
                    "send fewer messages (--window) or compact the session (`statestore \
                     compact`)"
                        .into(),
                ),
                pipeline::Error::Busy { .. } => {
                    Some("another process is writing to the session: try again".into())
                }
                pipeline::Error::Store(e) => store_hint(e),
                _ => None,
            },
            Self::Window { source, .. } => match source {
                statestore::window::Error::Store(e) => store_hint(e),
                _ => None,
            },
            Self::Io { .. } => None,
        }
    }
}

/// The message of a key ring that could not be read: the library's, but
/// for a key file that is not private, which says what the CLI does.
fn keys_message(e: &CryptoError) -> String {
    match e {
        CryptoError::KeyFileUnreadable { path, source }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            format!("key file {} not found", path.display())
        }
        CryptoError::InsecureKeyFile { path, reason } => format!(
            "key file {} is not private, so it is not used: {reason}",
            path.display()
        ),
        other => other.to_string(),
    }
}

/// What to do about a key ring that could not be read.
fn keys_hint(e: &CryptoError) -> String {
    match e {
        CryptoError::InsecureKeyFile { path, .. } => format!(
            "make it readable by its owner alone (`chmod 600 {}`, owned by the user running \
             statestore), or pass --allow-insecure-key-file to use it as it is",
            path.display()
        ),
        CryptoError::KeyFileUnreadable { .. } => {
            "check the path given with --keys (or STATESTORE_KEYS_FILE), and that this user may \
             read it; `statestore rotate-keys --help` shows how to make a key file"
                .into()
        }
        CryptoError::InvalidKey { source_name, .. } if source_name.contains("STATESTORE_KEYS") => {
            "STATESTORE_KEYS holds the key ring itself: `ID base64:KEY` entries (32 bytes; `ID \
             hex:KEY` too) separated by `;`, exactly one ending in `current`; unset it to run \
             without a key ring"
                .into()
        }
        _ => "a key file has one key per line, `ID base64:KEY` (32 bytes) or `ID hex:KEY`, \
              exactly one ending in `current`; `statestore rotate-keys --help` shows how to make \
              one"
        .into(),
    }
}

/// What to do about a value the encryption layer could not open, by the
/// layer's own error; `None` for the ones the store's error says enough
/// about.
pub(crate) fn crypto_hint(e: &CryptoError) -> Option<String> {
    Some(match e {
        CryptoError::WrongKey { key_id, .. } => format!(
            "the key under id {key_id:?} in the key file is not the one that encrypted this: a \
             key file from another deployment, or the id reused for a new key. Use the key file \
             that holds the original key {key_id:?} (keys are never replaced under the same id: \
             add a new key under a new id)"
        ),
        CryptoError::Integrity { key_id, .. } => format!(
            "the value failed authentication under key {key_id:?}: its bytes were changed, it \
             was moved from another session or place, or it was written under another \
             --context (STATESTORE_CONTEXT) than this run's; `statestore doctor` checks the \
             store"
        ),
        CryptoError::Inconsistent { .. } => {
            "the session does not match its sealed manifest: changed outside statestore (cut, \
             rolled back, a value removed), or written without --keys or by an older version \
             of statestore. In the second case `statestore --keys FILE rotate-keys \
             --encrypt-plaintext` binds it (a changed session stays refused); in the first, \
             restore it from a backup or delete it"
                .into()
        }
        CryptoError::BodyTooLarge { limit, .. } | CryptoError::LoadTooLarge { limit, .. } => {
            format!(
                "a stored value decompresses to more than the limit ({limit} bytes): planted to \
                 exhaust memory, or compressed by a writer with larger limits; the CLI reads with \
                 the library's defaults (8 MiB per value, 256 MiB per read). Nothing was \
                 decompressed past the limit"
            )
        }
        _ => return None,
    })
}

/// `e`'s message followed by those of its causes, each once (thiserror's
/// `transparent` and `{source}` in messages already show some).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Whether `e` failed because its file does not exist (an `io::Error` of
/// kind `NotFound` among its causes: `Options::create(false)`).
pub(crate) fn names_no_file(e: &OpenError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        {
            return true;
        }
        source = s.source();
    }
    false
}
