#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod envelope;
mod error;
mod key;
mod layer;
mod manifest;
mod rotate;
mod seal;
mod stores;
mod usage;

pub use envelope::Compression;
pub use error::{Error, Field, Result};
pub use key::{Key, KeyFileOptions, KeyRing};
pub use rotate::{Reencrypted, RotateOptions, RotationProgress, RotationReport};
pub use stores::{Compressed, Encrypted, EncryptedBuilder};
pub use usage::{KeyUsage, Sealing, key_usage, sealed_key_id};

/// Entry points for this crate's benchmarks. Not a public API.
#[doc(hidden)]
pub mod __bench {
    use statestore_core::SessionId;

    use crate::envelope::{Limits, Place, Scope, Sealer};
    use crate::{Compression, KeyRing};

    /// One value sealed as the system prompt of session `bench`.
    #[must_use]
    pub fn seal(keys: Option<&KeyRing>, compression: Compression, body: &[u8]) -> Option<String> {
        let id = SessionId::new("bench").ok()?;
        let sealer = Sealer {
            keys,
            compression,
            limits: Limits::default(),
        };
        Some(sealer.seal(body, &scope(&id), &Place::SystemPrompt))
    }

    /// [`seal`] undone.
    #[must_use]
    pub fn open(keys: Option<&KeyRing>, text: &str) -> Option<Vec<u8>> {
        let id = SessionId::new("bench").ok()?;
        let sealer = Sealer {
            keys,
            compression: Compression::none(),
            limits: Limits::default(),
        };
        sealer
            .open(text, &scope(&id), &Place::SystemPrompt, true)
            .ok()
    }

    fn scope(id: &SessionId) -> Scope<'_> {
        Scope {
            id,
            owner: None,
            context: "",
            epoch: Some(&[0; 16]),
        }
    }
}
