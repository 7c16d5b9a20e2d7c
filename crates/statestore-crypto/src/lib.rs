#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod envelope;
mod error;
mod key;
mod layer;
mod rotate;
mod seal;
mod stores;
mod usage;

pub use envelope::Compression;
pub use error::{Error, Field, Result};
pub use key::{Key, KeyRing};
pub use rotate::{Reencrypted, RotateOptions, RotationProgress, RotationReport};
pub use stores::{Compressed, Encrypted, EncryptedBuilder};
pub use usage::{KeyUsage, Sealing, key_usage, sealed_key_id};

/// Entry points for this crate's benchmarks. Not a public API.
#[doc(hidden)]
pub mod __bench {
    use statestore_core::SessionId;

    use crate::envelope::{Place, Sealer};
    use crate::{Compression, KeyRing};

    /// One value sealed as the system prompt of session `bench`.
    #[must_use]
    pub fn seal(keys: Option<&KeyRing>, compression: Compression, body: &[u8]) -> Option<String> {
        let id = SessionId::new("bench").ok()?;
        Some(Sealer { keys, compression }.seal(body, &id, &Place::SystemPrompt))
    }

    /// [`seal`] undone.
    #[must_use]
    pub fn open(keys: Option<&KeyRing>, text: &str) -> Option<Vec<u8>> {
        let id = SessionId::new("bench").ok()?;
        let sealer = Sealer {
            keys,
            compression: Compression::none(),
        };
        sealer.open(text, &id, &Place::SystemPrompt, true).ok()
    }
}
