#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod envelope;
mod error;
mod key;
mod layer;
mod rotate;
mod seal;

pub use envelope::Compression;
pub use error::{Error, Field, Result};
pub use key::{Key, KeyRing};
pub use layer::{Compressed, Encrypted, EncryptedBuilder};
pub use rotate::{Reencrypted, RotateOptions, RotationProgress, RotationReport};
