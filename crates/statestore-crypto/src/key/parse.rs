//! The key ring text format, and reading it from a file or an environment
//! variable. Errors name the source and the line, never a field of a line:
//! a line written out of order may hold the key where the id belongs.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::{Key, KeyRing, id_problem};
use crate::{Error, Result};

/// The largest key file read, in bytes: a ring of a thousand keys is 100 KB.
const MAX_KEY_FILE: u64 = 1 << 20;

/// How [`KeyRing::from_file_with`] treats the key file.
///
/// By default a key file must be private: on Unix, no permission for its
/// group or other users (`chmod 600`) and owned by the user running the
/// program; otherwise reading it fails with [`Error::InsecureKeyFile`].
/// [`KeyFileOptions::allow_insecure`] reads it anyway, with a warning
/// logged — for a deliberate setup (a file shared with a group through
/// ACL-less permissions, a container whose files belong to another uid).
///
/// ```no_run
/// use statestore_crypto::{KeyFileOptions, KeyRing};
///
/// // What the CLI's --allow-insecure-key-file maps to.
/// let allow = true;
/// let ring = KeyRing::from_file_with(
///     "/etc/app/keys",
///     KeyFileOptions::new().allow_insecure(allow),
/// )?;
/// # Ok::<(), statestore_crypto::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct KeyFileOptions {
    allow_insecure: bool,
}

impl KeyFileOptions {
    /// The defaults: a key file must be private.
    pub const fn new() -> Self {
        Self {
            allow_insecure: false,
        }
    }

    /// Whether a key file that its group or other users can access, or
    /// that another user owns, is read anyway (with a warning logged).
    /// Default `false`: it is refused with [`Error::InsecureKeyFile`].
    pub const fn allow_insecure(mut self, allow: bool) -> Self {
        self.allow_insecure = allow;
        self
    }
}

impl KeyRing {
    /// A ring from its text format: one key per line, `#` comments and
    /// blank lines ignored; each line is
    ///
    /// ```text
    /// <key id> <key> [current]
    /// ```
    ///
    /// where `<key>` is `base64:` and the standard base64 of 32 bytes, or
    /// `hex:` and 64 hex digits. Exactly one line ends with `current`.
    /// Lines may also be separated by `;` (for environment variables).
    ///
    /// ```
    /// use statestore_crypto::KeyRing;
    ///
    /// let ring = KeyRing::parse(
    ///     "# rotated in June
    ///      2025-06 base64:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI= current
    ///      2025-01 hex:0101010101010101010101010101010101010101010101010101010101010101",
    /// )?;
    /// assert_eq!(ring.current_id(), "2025-06");
    /// assert!(ring.contains("2025-01"));
    /// # Ok::<(), statestore_crypto::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] naming the line — never any field of it, not
    /// even the id (a line written out of order may hold the key there).
    pub fn parse(text: &str) -> Result<Self> {
        parse_from(text, "text")
    }

    /// A ring from the environment variable `var`, in the
    /// [text format](KeyRing::parse) (`;` separates keys).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when the variable is unset, not Unicode, set
    /// but empty (or only whitespace, `;` and comments), or not a valid
    /// ring.
    pub fn from_env(var: &str) -> Result<Self> {
        from_env_value(var, std::env::var_os(var))
    }

    /// A ring from a file in the [text format](KeyRing::parse), which must
    /// be private: [`KeyRing::from_file_with`] with the default
    /// [`KeyFileOptions`].
    ///
    /// # Errors
    ///
    /// [`Error::InsecureKeyFile`] when, on Unix, the file's group or other
    /// users have any permission on it, or another user owns it (fix:
    /// `chmod 600`, `chown`). [`Error::KeyFileUnreadable`] when it cannot
    /// be opened; [`Error::InvalidKey`] when it cannot be read,
    /// holds no keys or is not a valid ring.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file_with(path, KeyFileOptions::new())
    }

    /// [`KeyRing::from_file`], with `options`: an insecure file is read
    /// anyway when [`KeyFileOptions::allow_insecure`] says so (logged as a
    /// warning). On platforms other than Unix the file's permissions are
    /// not checked.
    ///
    /// The file is read into memory that is zeroized afterwards.
    ///
    /// # Errors
    ///
    /// As [`KeyRing::from_file`].
    pub fn from_file_with(path: impl AsRef<Path>, options: KeyFileOptions) -> Result<Self> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let unreadable = |e: std::io::Error| Error::InvalidKey {
            source_name: source.clone(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(|source| Error::KeyFileUnreadable {
            path: path.to_owned(),
            source,
        })?;
        // The metadata of the file opened, not of the path (which could
        // be swapped in between).
        let meta = file.metadata().map_err(unreadable)?;
        if let Some(reason) = insecurity(&meta, path) {
            if !options.allow_insecure {
                return Err(Error::InsecureKeyFile {
                    path: path.to_owned(),
                    reason,
                });
            }
            tracing::warn!(path = %source, %reason, "reading a key file that is not private, as allowed");
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(Error::InvalidKey {
                source_name: source,
                reason: format!("it is larger than {MAX_KEY_FILE} bytes: not a key file"),
            });
        }
        let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            return Err(Error::InvalidKey {
                source_name: source,
                reason: format!("it is larger than {MAX_KEY_FILE} bytes: not a key file"),
            });
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::InvalidKey {
            source_name: source.clone(),
            reason: "it is not UTF-8 text".into(),
        })?;
        parse_from(text, &source)
    }
}

/// Why the key file is not private, with the fix; `None` when it is.
#[cfg(unix)]
fn insecurity(meta: &std::fs::Metadata, path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let euid = rustix::process::geteuid().as_raw();
    unix_insecurity(meta.mode(), meta.uid(), euid, path)
}

#[cfg(not(unix))]
fn insecurity(_meta: &std::fs::Metadata, _path: &Path) -> Option<String> {
    None
}

/// [`insecurity`] of a file with `mode` owned by `owner`, read by `euid`.
#[cfg(unix)]
fn unix_insecurity(mode: u32, owner: u32, euid: u32, path: &Path) -> Option<String> {
    if owner != euid {
        return Some(format!(
            "it is owned by user {owner}, not by the user running this program ({euid}); \
             give that user its own copy (`chown {euid}` and `chmod 600 {}`)",
            path.display()
        ));
    }
    if mode & 0o077 != 0 {
        return Some(format!(
            "its group or other users have access to it (mode {:04o}); run `chmod 600 {}`",
            mode & 0o7777,
            path.display()
        ));
    }
    None
}

/// [`KeyRing::from_env`] of the variable's value.
fn from_env_value(var: &str, value: Option<OsString>) -> Result<KeyRing> {
    let source = format!("environment variable {var}");
    let invalid = |reason: &str| Error::InvalidKey {
        source_name: source.clone(),
        reason: reason.to_owned(),
    };
    let Some(value) = value else {
        return Err(invalid("it is not set"));
    };
    let text = match value.into_string() {
        Ok(text) => Zeroizing::new(text),
        Err(raw) => {
            forget_os_string(raw);
            // Not `VarError`'s message: it quotes the value.
            return Err(invalid("it is not valid Unicode"));
        }
    };
    parse_from(&text, &source)
}

/// Zeroizes a value that was not Unicode before dropping it.
fn forget_os_string(raw: OsString) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt as _;
        drop(Zeroizing::new(raw.into_vec()));
    }
    #[cfg(not(unix))]
    drop(raw);
}

/// The entries of ring text: (where, entry), blank entries and comments
/// left out. `where` is the line (and the entry within the line, when a
/// line holds several `;`-separated ones; `entry n` alone for one-line
/// text).
fn entries<'t>(text: &'t str, source: &str) -> Vec<(String, &'t str)> {
    let multiline = text.contains('\n');
    let mut out = Vec::new();
    for (l, line) in text.split('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let several = line.contains(';');
        for (e, entry) in line.split(';').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let at = match (multiline, several) {
                (true, true) => format!("{source}, line {}, entry {}", l + 1, e + 1),
                (true, false) => format!("{source}, line {}", l + 1),
                (false, _) => format!("{source}, entry {}", e + 1),
            };
            out.push((at, entry));
        }
    }
    out
}

/// The ring in `text`, read from `source`.
fn parse_from(text: &str, source: &str) -> Result<KeyRing> {
    let entries = entries(text, source);
    if entries.is_empty() {
        return Err(Error::InvalidKey {
            source_name: source.to_owned(),
            reason: "it holds no keys (it is empty, or only whitespace, `;` and comments)".into(),
        });
    }
    let mut parsed: Vec<(Key, bool, String)> = Vec::new();
    for (at, entry) in entries {
        let (key, is_current) = parse_entry(entry).map_err(|reason| Error::InvalidKey {
            source_name: at.clone(),
            reason,
        })?;
        if let Some((_, _, first_at)) = parsed
            .iter()
            .find(|(k, _, _)| k.id == key.id && !k.same_bytes(&key))
        {
            return Err(Error::InvalidKey {
                source_name: at,
                reason: format!(
                    "this key id is also on {first_at}, with another key; an id must always \
                     mean one key"
                ),
            });
        }
        if is_current && let Some((_, _, first_at)) = parsed.iter().find(|(_, c, _)| *c) {
            return Err(Error::InvalidKey {
                source_name: at,
                reason: format!("a second key is marked current (the first is on {first_at})"),
            });
        }
        parsed.push((key, is_current, at));
    }
    let Some(i) = parsed.iter().position(|(_, c, _)| *c) else {
        return Err(Error::InvalidKey {
            source_name: source.to_owned(),
            reason: "no key is marked current (add `current` after the key that encrypts)".into(),
        });
    };
    let (current, _, _) = parsed.swap_remove(i);
    let mut ring = KeyRing::new(current);
    for (key, _, at) in parsed {
        ring = ring.insert(key, false, &at)?;
    }
    Ok(ring)
}

/// One entry's key, and whether it is marked current. The reason of an
/// error never quotes the entry.
fn parse_entry(entry: &str) -> std::result::Result<(Key, bool), String> {
    let mut words = entry.split_whitespace();
    let (Some(id), Some(material)) = (words.next(), words.next()) else {
        return Err("expected `<key id> base64:<key>` or `<key id> hex:<key>`, \
                    then `current` on the key that encrypts"
            .into());
    };
    let is_current = match (words.next(), words.next()) {
        (None, _) => false,
        (Some("current"), None) => true,
        _ => return Err("only `current` may follow the key".into()),
    };
    if is_key_material(id) {
        return Err("the line starts with the key: the key id comes first, \
                    as in `<key id> base64:<key>`"
            .into());
    }
    if let Some(reason) = id_problem(id) {
        return Err(format!(
            "{reason} (each line is `<key id> base64:<key>` or `<key id> hex:<key>`)"
        ));
    }
    let bytes = decode_material(material)?;
    Ok((Key::from_array(id.to_owned(), bytes), is_current))
}

fn is_key_material(field: &str) -> bool {
    field.starts_with("base64:") || field.starts_with("hex:")
}

/// Key bytes from `base64:…` or `hex:…`, decoded straight into zeroizing
/// storage (no plain copy). The reason of an error never quotes `material`.
fn decode_material(material: &str) -> std::result::Result<Zeroizing<[u8; Key::LEN]>, String> {
    if let Some(b64) = material.strip_prefix("base64:") {
        // Room for a key and more, so a wrong length can be told apart.
        let mut buffer = Zeroizing::new([0u8; 2 * Key::LEN]);
        if b64.len() > 4 * Key::LEN {
            return Err(format!(
                "the base64 is {} characters long; a key's is 44",
                b64.len()
            ));
        }
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(b64, buffer.as_mut_slice())
            .map_err(|_| "the key is not valid standard base64 (with `=` padding)".to_owned())?;
        let Some(decoded) = buffer.get(..Key::LEN).filter(|_| n == Key::LEN) else {
            return Err(format!(
                "the key is {n} bytes long; keys are {} bytes",
                Key::LEN
            ));
        };
        let mut out = Zeroizing::new([0u8; Key::LEN]);
        out.copy_from_slice(decoded);
        Ok(out)
    } else if let Some(hex) = material.strip_prefix("hex:") {
        if hex.len() != 2 * Key::LEN {
            return Err(format!(
                "the key has {} hex digits; keys have {}",
                hex.len(),
                2 * Key::LEN
            ));
        }
        let mut out = Zeroizing::new([0u8; Key::LEN]);
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let digit = |b: &u8| char::from(*b).to_digit(16);
            let (Some(hi), Some(lo)) = (pair.first().and_then(digit), pair.get(1).and_then(digit))
            else {
                return Err("the key has characters other than hex digits".into());
            };
            *byte = u8::try_from(hi * 16 + lo).map_err(|_| "not hex digits".to_owned())?;
        }
        Ok(out)
    } else {
        Err("the key must start with `base64:` or `hex:`".into())
    }
}

#[cfg(test)]
mod tests;
