//! [`TokenCount`], the cached count a message carries, and [`Encoding`],
//! the shared name of the tokenizer encoding that made it.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

/// How many distinct encoding names are interned; names beyond these are
/// still accepted, each value then holding its own copy. A process meets a
/// handful of encodings, so the table never fills unless stored data names
/// encodings no counter uses.
const INTERNED: usize = 64;

/// The names interned so far, oldest first.
static TABLE: RwLock<Vec<Encoding>> = RwLock::new(Vec::new());

/// The name of a tokenizer encoding, e.g. `"o200k_base"`: the tag of a
/// [`TokenCount`].
///
/// Interned: every [`Encoding`] made from the same name (by
/// [`Encoding::new`], a `From` conversion or deserialization) shares one
/// allocation, so the count cached on each stored message costs a pointer
/// and no allocation of its own, and comparing two encodings usually
/// compares two pointers. It derefs to the name, compares with `str` and
/// serializes as a JSON string.
///
/// ```
/// use statestore_core::Encoding;
///
/// let a = Encoding::new("o200k_base");
/// let b = Encoding::from(String::from("o200k_base"));
/// assert_eq!(a, b);
/// assert!(a.shares_name_with(&b));
/// assert_eq!(a, "o200k_base");
/// assert_eq!(a.as_str(), "o200k_base");
/// assert_eq!(serde_json::to_string(&a).unwrap(), r#""o200k_base""#);
/// ```
#[derive(Clone)]
pub struct Encoding(Arc<Box<str>>);

impl Encoding {
    /// The encoding named `name`, shared with every other value of that
    /// name.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self::interned_in(&TABLE, name)
    }

    /// [`Encoding::new`] with `table` as the table of shared names.
    fn interned_in(table: &RwLock<Vec<Self>>, name: &str) -> Self {
        let shared = table;
        let table = shared.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = table.iter().find(|e| e.as_str() == name) {
            return e.clone();
        }
        drop(table);
        let mut table = shared.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = table.iter().find(|e| e.as_str() == name) {
            return e.clone();
        }
        let e = Self(Arc::new(name.into()));
        if table.len() < INTERNED {
            table.push(e.clone());
        }
        e
    }

    /// The encoding's name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` and `other` are the same interned value, which
    /// implies they name the same encoding (equal names interned by this
    /// process always are).
    #[must_use]
    pub fn shares_name_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for Encoding {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Encoding {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Encoding {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for Encoding {
    fn from(name: String) -> Self {
        Self::new(&name)
    }
}

impl From<&String> for Encoding {
    fn from(name: &String) -> Self {
        Self::new(name)
    }
}

impl PartialEq for Encoding {
    fn eq(&self, other: &Self) -> bool {
        self.shares_name_with(other) || self.as_str() == other.as_str()
    }
}

impl Eq for Encoding {}

impl std::hash::Hash for Encoding {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Encoding {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Encoding {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Encoding> for str {
    fn eq(&self, other: &Encoding) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Encoding> for &str {
    fn eq(&self, other: &Encoding) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Debug for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Encoding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Encoding;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an encoding name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Encoding, E> {
                Ok(Encoding::new(name))
            }
        }
        d.deserialize_str(Name)
    }
}

/// A cached token count for one message, tagged with the encoding that
/// produced it so that a count from another tokenizer is never reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCount {
    /// The encoding's name, e.g. `"o200k_base"` (interned: see
    /// [`Encoding`]).
    pub encoding: Encoding,
    /// Tokens the whole message costs in a request under that encoding.
    pub tokens: u32,
}

impl TokenCount {
    /// `tokens` under `encoding`.
    #[must_use]
    pub fn new(encoding: impl Into<Encoding>, tokens: u32) -> Self {
        Self {
            encoding: encoding.into(),
            tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_allocation() {
        let a = Encoding::new("test-encoding-a");
        let b: Encoding = serde_json::from_str(r#""test-encoding-a""#).unwrap();
        assert!(a.shares_name_with(&b));
        assert_eq!(a, b);
        assert_ne!(a, Encoding::new("test-encoding-b"));
        assert_eq!(
            std::mem::size_of::<Encoding>(),
            std::mem::size_of::<usize>()
        );
        assert_eq!(
            std::mem::size_of::<Option<TokenCount>>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn names_beyond_the_table_still_work() {
        // A table of its own: the process's is shared with the other tests.
        let table = RwLock::new(Vec::new());
        let names: Vec<String> = (0..2 * INTERNED).map(|i| format!("overflow-{i}")).collect();
        let made: Vec<Encoding> = names
            .iter()
            .map(|n| Encoding::interned_in(&table, n))
            .collect();
        for (i, (name, e)) in names.iter().zip(&made).enumerate() {
            assert_eq!(e.as_str(), name);
            let again = Encoding::interned_in(&table, name);
            assert_eq!(again, *e);
            // The first INTERNED names are shared; the rest are copies.
            assert_eq!(again.shares_name_with(e), i < INTERNED, "{name}");
        }
        let json = serde_json::to_string(&TokenCount::new("overflow-1", 7)).unwrap();
        assert_eq!(json, r#"{"encoding":"overflow-1","tokens":7}"#);
    }
}
