//! Which store a command uses: `--store`, `STATESTORE_URL`, or the default
//! SQLite file; opening it; and listing its sessions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use statestore::crypto::{Encrypted, EncryptedBuilder, KeyFileOptions, KeyRing};
use statestore::{ListQuery, SessionId, Store};

use crate::error::CliError;
use crate::ui::Ui;

/// The file name of the default store.
const DB_FILE: &str = "sessions.db";

/// The default store's file: `$STATESTORE_HOME/sessions.db`, else
/// `$XDG_DATA_HOME/statestore/sessions.db`, else
/// `$HOME/.local/share/statestore/sessions.db`. Empty variables count as
/// unset (as the XDG spec says).
pub(crate) fn default_db_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(home) = var("STATESTORE_HOME") {
        return Some(PathBuf::from(home).join(DB_FILE));
    }
    if let Some(data) = var("XDG_DATA_HOME") {
        return Some(PathBuf::from(data).join("statestore").join(DB_FILE));
    }
    var("HOME").map(|home| {
        PathBuf::from(home)
            .join(".local/share/statestore")
            .join(DB_FILE)
    })
}

/// The long help of `--store`, naming where the default store is.
pub(crate) fn default_location_help() -> String {
    let here = default_db_path().map_or_else(
        || "(no HOME: set STATESTORE_HOME or --store)".to_owned(),
        |p| p.display().to_string(),
    );
    format!(
        "The store, as a URL:
  sqlite://PATH          an SQLite file: sqlite:///abs/path or sqlite://rel/path
  redis://[USER:PASSWORD@]HOST[:PORT][/DB]
                         Redis (rediss:// for TLS)
  redis+cluster://HOST:PORT,HOST:PORT
                         Redis Cluster
  postgres://[USER:PASSWORD@]HOST[:PORT]/DB
                         PostgreSQL (also postgresql://; ?schema= and ?prefix=
                         name the tables; ?sslmode=verify-full&sslrootcert=FILE
                         for TLS)
  memory://              in this process only, gone when it exits
Options follow a ?: redis://localhost:6379?prefix=app:&ttl=24h

Default: an SQLite file (created by chat or import), at
  $STATESTORE_HOME/sessions.db, else
  $XDG_DATA_HOME/statestore/sessions.db, else
  $HOME/.local/share/statestore/sessions.db
Here that is {here}"
    )
}

/// The store URL a command uses: `given` (`--store` or `STATESTORE_URL`),
/// or the default file's (whose directory a command that creates the
/// store makes: [`open_as`]).
pub(crate) fn resolve(given: Option<String>) -> Result<String, CliError> {
    if let Some(url) = given {
        return Ok(url);
    }
    let path = default_db_path().ok_or_else(|| CliError::Usage {
        message: "no store given and no default location: HOME is not set".into(),
        hint: Some("set STATESTORE_HOME to a directory, or pass --store URL".into()),
    })?;
    sqlite_url(&path)
}

/// Makes the default store's directory when `url` is the default store's.
fn make_default_dir(url: &str) -> Result<(), CliError> {
    let Some(path) = default_db_path() else {
        return Ok(());
    };
    if sqlite_url(&path).ok().as_deref() != Some(url) {
        return Ok(());
    }
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(CliError::io(format!(
            "cannot create the default store's directory {}",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// `sqlite://` + the absolute path, percent-encoding what would end the
/// path in a URL.
fn sqlite_url(path: &std::path::Path) -> Result<String, CliError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(CliError::io("cannot read the working directory"))?
            .join(path)
    };
    let text = absolute.to_str().ok_or_else(|| CliError::Usage {
        message: format!(
            "the default store's path is not UTF-8: {}",
            absolute.display()
        ),
        hint: Some("set STATESTORE_HOME to a UTF-8 path, or pass --store URL".into()),
    })?;
    let mut url = String::from("sqlite://");
    for c in text.chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    Ok(url)
}

/// The key ring of this run (`--keys`, `STATESTORE_KEYS_FILE` or
/// `STATESTORE_KEYS`) and its context (`--context`, `STATESTORE_CONTEXT`),
/// set once by `main` before any store is opened.
static KEYS: OnceLock<Option<Crypto>> = OnceLock::new();

/// A key ring and the application context its values are bound to.
#[derive(Debug)]
struct Crypto {
    ring: KeyRing,
    context: String,
}

/// How `main` reads the key ring: where from, and with which options.
#[derive(Debug, Default)]
pub(crate) struct KeySource<'a> {
    /// `--keys` or `STATESTORE_KEYS_FILE`.
    pub(crate) file: Option<&'a Path>,
    /// `--allow-insecure-key-file`: read a key file others can read.
    pub(crate) allow_insecure: bool,
    /// `--context` or `STATESTORE_CONTEXT` (empty: none).
    pub(crate) context: Option<String>,
}

/// Reads the key ring: `source.file` (`--keys` or `STATESTORE_KEYS_FILE`),
/// else the ring text in `STATESTORE_KEYS` when it is set (set but empty
/// is an error: a ring that went missing must not silently turn
/// encryption off), else none; and makes it, with the context, the one
/// every [`open`] of this run uses.
pub(crate) fn load_keys(source: KeySource<'_>) -> Result<(), CliError> {
    let ring = match source.file {
        Some(path) => Some(KeyRing::from_file_with(
            path,
            KeyFileOptions::new().allow_insecure(source.allow_insecure),
        )?),
        None if std::env::var_os("STATESTORE_KEYS").is_some() => {
            Some(KeyRing::from_env("STATESTORE_KEYS")?)
        }
        None => None,
    };
    let crypto = ring.map(|ring| Crypto {
        ring,
        context: source.context.unwrap_or_default(),
    });
    // Set once, from main; a second call keeps the first ring.
    let _ = KEYS.set(crypto);
    Ok(())
}

/// This run's key ring, if it has one.
pub(crate) fn keys() -> Option<&'static KeyRing> {
    KEYS.get().and_then(Option::as_ref).map(|c| &c.ring)
}

/// An encryption layer over `inner` with `ring` and this run's context
/// (`--context`): every layer the CLI builds goes through here, so they
/// all bind values to the same context.
pub(crate) fn layer(inner: Arc<dyn Store>, ring: &KeyRing) -> EncryptedBuilder {
    let context = KEYS
        .get()
        .and_then(Option::as_ref)
        .map_or("", |c| c.context.as_str());
    Encrypted::builder(inner, ring.clone()).context(context)
}

/// Whether a command may create the store it opens: only `chat`, `import`
/// and `migrate`'s target do; every other command opens a store that
/// exists, and a mistyped SQLite path is an error naming it, not an empty
/// database left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    Yes,
    No,
}

/// Opens the store at `url`: encrypted with this run's key ring when it
/// has one, so commands see plaintext and the backend holds ciphertext.
/// Never creates it.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>, CliError> {
    open_as(url, Create::No).await
}

/// [`open`], creating the store when `create` says so.
pub(crate) async fn open_as(url: &str, create: Create) -> Result<Arc<dyn Store>, CliError> {
    let backend = open_backend_as(url, create).await?;
    Ok(match keys() {
        Some(ring) => Arc::new(layer(backend, ring).build()),
        None => backend,
    })
}

/// [`open`] for a command that writes `targets` (the sessions it changes;
/// none for one that creates sessions): without a key ring, refused when
/// the store holds encrypted values (`keyscan::refuse_plaintext_writes`).
/// `doing` names the command in the error.
pub(crate) async fn open_to_write(
    url: &str,
    targets: &[&SessionId],
    doing: &str,
    create: Create,
) -> Result<Arc<dyn Store>, CliError> {
    let store = open_as(url, create).await?;
    crate::keyscan::refuse_plaintext_writes(&*store, targets, doing).await?;
    Ok(store)
}

/// The store a command that may create it (`import`, `migrate --to`)
/// copies into: opened through the key ring's layer like [`open_to_write`],
/// or as it is with `as_stored` (ciphertext copied as it is). For a
/// `--dry-run`, nothing is created: a store that is not there yet is an
/// empty one standing in for it, so every session counts as one to write.
pub(crate) async fn open_destination(
    url: &str,
    doing: &str,
    as_stored: bool,
    dry_run: bool,
) -> Result<Arc<dyn Store>, CliError> {
    let create = if dry_run { Create::No } else { Create::Yes };
    let opened = if as_stored {
        open_backend_as(url, create).await
    } else {
        open_to_write(url, &[], doing, create).await
    };
    match opened {
        Err(CliError::Open(e)) if dry_run && crate::error::names_no_file(&e) => {
            Ok(Arc::new(statestore::memory::MemoryStore::new()))
        }
        other => other,
    }
}

/// The SQLite stores this run opened, for [`close_all`].
static SQLITE: Mutex<Vec<statestore::sqlite::SqliteStore>> = Mutex::new(Vec::new());

/// Opens the store at `url` as it is, without the encryption layer; never
/// creates it.
pub(crate) async fn open_backend(url: &str) -> Result<Arc<dyn Store>, CliError> {
    open_backend_as(url, Create::No).await
}

pub(crate) async fn open_backend_as(url: &str, create: Create) -> Result<Arc<dyn Store>, CliError> {
    if create == Create::Yes {
        make_default_dir(url)?;
    }
    let options = statestore::Options::new().create(create == Create::Yes);
    let backend = statestore::open_backend(url, options).await?;
    if let statestore::Backend::Sqlite(store) = &backend {
        SQLITE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(store.clone());
    }
    Ok(backend.into_store())
}

/// Closes the SQLite stores this run opened (`SqliteStore::close`: the
/// WAL checkpointed into the file and truncated, so its `-wal` file keeps
/// no old versions of rewritten values, such as the plaintext
/// `rotate-keys --encrypt-plaintext` replaced). Run by `main` at exit,
/// after the command, whether it succeeded or not; a failure is a warning
/// (every write is committed already).
pub(crate) async fn close_all(ui: &Ui) {
    let stores = std::mem::take(&mut *SQLITE.lock().unwrap_or_else(PoisonError::into_inner));
    for store in stores {
        if let Err(e) = store.close().await {
            ui.warn(&format!(
                "every write is committed, but {}-wal could not be truncated ({e}): it may keep \
                 old versions of rewritten values until SQLite checkpoints it; with no process \
                 using the file, `sqlite3 FILE 'PRAGMA wal_checkpoint(TRUNCATE)'` does it",
                store.path().display()
            ));
        }
    }
}

/// The `ttl` option of a store URL, when it has a valid one (for `show`'s
/// "expires"; the store itself parsed and applied it already).
pub(crate) fn url_ttl(url: &str) -> Option<Duration> {
    let (_, query) = url.split_once('?')?;
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("ttl="))?;
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let seconds = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// Every session id of the store (one user's, with `user`), sorted. Holds
/// ids only — tens of bytes each — never sessions.
pub(crate) async fn all_ids(
    store: &dyn Store,
    user: Option<&str>,
) -> Result<Vec<SessionId>, CliError> {
    let mut ids = Vec::new();
    let mut query = ListQuery::new()
        .user(user.map(str::to_owned))
        .with_limit(1000);
    loop {
        let page = store
            .list(&query)
            .await
            .map_err(CliError::read("listing sessions"))?;
        ids.extend(page.ids().cloned());
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Runs `work` for each of `ids`, at most `width` at once, and hands the
/// results to `sink` in the order of `ids`: concurrent round trips, ordered
/// output, and never more than `width` results held.
pub(crate) async fn ordered<T, W, F>(
    ids: &[SessionId],
    width: usize,
    work: W,
    mut sink: impl FnMut(&SessionId, T) -> Result<(), CliError>,
) -> Result<(), CliError>
where
    T: Send + 'static,
    W: Fn(SessionId) -> F,
    F: std::future::Future<Output = Result<T, CliError>> + Send + 'static,
{
    let mut pending = std::collections::VecDeque::with_capacity(width);
    let mut next = ids.iter();
    loop {
        while pending.len() < width.max(1) {
            let Some(id) = next.next() else { break };
            pending.push_back((id, tokio::spawn(work(id.clone()))));
        }
        let Some((id, task)) = pending.pop_front() else {
            return Ok(());
        };
        let result = task.await.map_err(|e| CliError::Io {
            what: "a worker task stopped".into(),
            source: std::io::Error::other(e),
        })??;
        sink(id, result)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_from_url() {
        assert_eq!(
            url_ttl("redis://h?prefix=a&ttl=30m"),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(url_ttl("sqlite:///x?ttl=90"), Some(Duration::from_secs(90)));
        assert_eq!(url_ttl("sqlite:///x"), None);
        assert_eq!(url_ttl("memory://?ttl=1y"), None);
    }

    #[test]
    fn sqlite_urls_escape_what_ends_a_path() {
        assert_eq!(
            sqlite_url(std::path::Path::new("/a b/50%?#/s.db"))
                .ok()
                .as_deref(),
            Some("sqlite:///a b/50%25%3F%23/s.db")
        );
    }
}
