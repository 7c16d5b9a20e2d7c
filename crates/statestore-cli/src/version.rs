//! `statestore --version`: the version, the commit it was built from, the
//! backends and features compiled in, and the SQLite library linked.

use std::sync::OnceLock;

/// The backends this build opens (the `statestore` facade's features the
/// CLI enables: `Cargo.toml`).
const BACKENDS: &str = "memory, sqlite, redis, redis-cluster, redis-tls, postgres, postgres-tls";

/// The other features compiled in.
const FEATURES: &str = "pipeline, openai, crypto, otel";

/// The long version text (`--version`; `-V` prints the first line's
/// number alone).
pub(crate) fn long() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (commit {})\nbackends: {BACKENDS}\nfeatures: {FEATURES}\nSQLite {}",
            env!("CARGO_PKG_VERSION"),
            env!("STATESTORE_COMMIT"),
            statestore::sqlite::sqlite_version(),
        )
    })
}
