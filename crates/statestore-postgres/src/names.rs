//! The names of the store's objects: identifiers quoted so that any schema
//! or prefix is taken literally, and the migrations' advisory-lock key.

use crate::error::{Error, Result};
use crate::schema::{INDEXES, MAX_IDENT_BYTES, TABLES};

/// Quotes `name` as a PostgreSQL identifier: in double quotes, with inner
/// double quotes doubled, so that any name is taken literally (never as SQL).
///
/// # Errors
///
/// [`Error::Config`] for an empty name, a NUL (PostgreSQL cannot store it)
/// or more than 63 bytes (PostgreSQL would silently truncate it, so two
/// long names could become one).
pub fn quote_ident(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::Config("an identifier cannot be empty".to_owned()));
    }
    if name.contains('\0') {
        return Err(Error::Config("an identifier cannot contain NUL".to_owned()));
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err(Error::Config(format!(
            "the identifier {name:?} is {} bytes; PostgreSQL keeps {MAX_IDENT_BYTES}",
            name.len()
        )));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// The advisory-lock key of the migrations of the store in `schema` with
/// `prefix`: FNV-1a (64 bits) of both, so that stores with different names
/// migrate independently and the same names always take the same lock.
pub fn lock_key(schema: &str, prefix: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        b"statestore-postgres".as_slice(),
        schema.as_bytes(),
        prefix.as_bytes(),
    ];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash ^= 0xff; // a separator no UTF-8 string contains
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    i64::from_be_bytes(hash.to_be_bytes())
}

/// The store's schema and prefix, and the quoted, qualified names built
/// from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    pub(crate) schema: String,
    pub(crate) prefix: String,
    /// `"schema"`, quoted.
    pub(crate) quoted_schema: String,
    /// Hash partitions per table when the tables are created (`None`: none).
    pub(crate) partitions: Option<u32>,
}

impl Names {
    /// Validates `schema` and `prefix`: both must make identifiers
    /// PostgreSQL keeps whole (see [`quote_ident`]).
    pub(crate) fn new(schema: &str, prefix: &str) -> Result<Self> {
        let quoted_schema = quote_ident(schema)?;
        let longest = TABLES
            .iter()
            .chain(INDEXES.iter())
            .map(|name| name.len())
            .max()
            .unwrap_or_default();
        if prefix.contains('\0') || prefix.len() + longest > MAX_IDENT_BYTES {
            return Err(Error::Config(format!(
                "the table prefix must have at most {} bytes and no NUL",
                MAX_IDENT_BYTES - longest
            )));
        }
        Ok(Self {
            schema: schema.to_owned(),
            prefix: prefix.to_owned(),
            quoted_schema,
            partitions: None,
        })
    }

    /// The unquoted name of table or index `base`: the prefix and `base`.
    pub(crate) fn raw(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// `"schema"."prefixbase"`, quoted: a table in SQL.
    pub(crate) fn table(&self, base: &str) -> String {
        format!("{}.{}", self.quoted_schema, self.ident(base))
    }

    /// `"prefixbase"`, quoted: an index name in `CREATE INDEX`.
    pub(crate) fn ident(&self, base: &str) -> String {
        format!("\"{}\"", self.raw(base).replace('"', "\"\""))
    }
}
