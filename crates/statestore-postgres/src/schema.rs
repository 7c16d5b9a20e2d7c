//! The schema — every table and index this crate relies on is defined here,
//! as versioned migrations — and `migrate`, which brings a database to it.
//!
//! # Names
//!
//! Every object lives in the configured schema (default `public`) and its
//! name starts with the configured prefix (default `statestore_`): with the
//! defaults the sessions table is `public.statestore_sessions`. Both are
//! quoted with [`quote_ident`] wherever they appear in SQL, so any name
//! works, and two stores with different schemas or prefixes share a
//! database without touching each other's rows.
//!
//! # Tables (schema version 1)
//!
//! Times are milliseconds since the Unix epoch (`bigint`), as in the SQLite
//! backend; ids and keys use the `"C"` collation, so that the database
//! orders them bytewise, as Rust orders `str` (keyset pagination then
//! agrees with the other backends).
//!
//! | table | key | holds |
//! |-------|-----|-------|
//! | `sessions` | `id` | one row per session: `user_id`, `version`, `message_count`, `summary_count`, `system_prompt`, `metadata` (a JSON object, `jsonb`, so that a metadata patch is merged by the server in the write's own statement), `counters` (a `jsonb` object of name → integer), `created_at`, `updated_at`, `last_accessed_at`, `expires_at` (`NULL`: never), `write_seq` (the sequence number of the session's newest keyed write) |
//! | `messages` | `(session, position)` | the history, one row per message, append-only: `body` is one message as the codec wrote it (`text`, stored verbatim: the server never parses it); positions run `0..message_count` with no gap |
//! | `summaries` | `(session, idx)` | summaries, oldest first: `body` is one summary as JSON text; `idx` runs `0..summary_count` |
//! | `writes` | `(session, key)` | remembered keyed appends: what the write did (`version`, `first_position`, `count`) and its `seq`; `first_position` is `-1` once a save rewrote the history after the write; the newest remembered writes per session are kept |
//! | `pending` | `(session, key)` | progress of keyed writes still to be made (a turn between its tool rounds): `body` as JSON text, `expires_at` as for sessions; it may exist before its session does, and is deleted with it |
//! | `schema_version` | `version` | one row per migration step applied, with the time it was applied |
//!
//! | index | on | serves |
//! |-------|----|--------|
//! | `sessions_by_user` | `sessions(user_id, id)` where `user_id` is not `NULL` | listing one user's sessions in id order from a cursor (keyset pagination) |
//! | `sessions_by_expiry` | `sessions(expires_at)` where not `NULL` | the expiry sweep: the oldest expired sessions first, in bounded batches |
//! | `writes_by_seq` | `writes(session, seq)` | forgetting a session's oldest remembered writes |
//! | `pending_by_expiry` | `pending(expires_at)` where not `NULL` | the expiry sweep of progress no turn came back for |
//! | `by_recent` | `sessions(updated_at, id)` | listing all sessions newest first (read backwards) from a cursor `(updated_at, id) < ($1, $2)`, narrowed by an `updated` range (schema version 3) |
//! | `by_user_recent` | `sessions(user_id, updated_at, id)` where `user_id` is not `NULL` | the sidebar: one user's sessions newest first, likewise (schema version 3) |
//!
//! Every row of every table but `schema_version` belongs to one session and
//! starts its key with the session id, so every statement of the store
//! touches one session's rows.
//!
//! # Partitioning
//!
//! With [`partitions(n)`](crate::PostgresStoreBuilder::partitions) the
//! per-session tables are created `PARTITION BY HASH` of the session id,
//! `n` partitions each; see `partitions` for the names and the check at
//! connect.
//!
//! # Functions (schema version 2)
//!
//! Every write is one call of a PL/pgSQL function (see `functions`),
//! created by the second migration step; the fourth adds the guarded
//! delete (`fn_delete_guarded`).
//!
//! # Migrations
//!
//! `migrate` runs at connect. When the database is at
//! [`SCHEMA_VERSION`] it only verifies the tables. Otherwise it opens one
//! transaction, takes `pg_advisory_xact_lock` on a key derived from the
//! schema and prefix ([`lock_key`]), re-reads the version (another instance
//! may have migrated meanwhile), applies the missing steps, records each in
//! `schema_version`, and commits: ten instances starting at once migrate
//! exactly once, and a crash mid-migration leaves the old version. A newer
//! version is refused with [`Error::UnsupportedSchema`]. The verification
//! compares the columns (name and type, from `information_schema.columns`)
//! and indexes of the store's tables with what the migrations create: a
//! table, column or index missing, or a column added or retyped, is
//! [`Error::Corrupt`] naming it.

use tokio_postgres::{Client, GenericClient};

use crate::error::{Error, Result};
pub(crate) use crate::names::Names;
pub use crate::names::{lock_key, quote_ident};

/// The schema version this build creates, and the newest it opens.
pub const SCHEMA_VERSION: u32 = 4;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes); longer
/// ones are silently truncated, so they are refused instead.
pub(crate) const MAX_IDENT_BYTES: usize = 63;

/// The tables of the store, without prefix, in creation order.
pub(crate) const TABLES: [&str; 6] = [
    "schema_version",
    "sessions",
    "messages",
    "summaries",
    "writes",
    "pending",
];

/// Each table's columns (name, `information_schema` data type), as the
/// migrations create them; `verify` compares the database against this.
const COLUMNS: [(&str, &[(&str, &str)]); 6] = [
    (
        "schema_version",
        &[
            ("version", "integer"),
            ("applied_at", "timestamp with time zone"),
        ],
    ),
    (
        "sessions",
        &[
            ("id", "text"),
            ("user_id", "text"),
            ("version", "bigint"),
            ("message_count", "bigint"),
            ("summary_count", "bigint"),
            ("system_prompt", "text"),
            ("metadata", "jsonb"),
            ("counters", "jsonb"),
            ("created_at", "bigint"),
            ("updated_at", "bigint"),
            ("last_accessed_at", "bigint"),
            ("expires_at", "bigint"),
            ("write_seq", "bigint"),
        ],
    ),
    (
        "messages",
        &[
            ("session", "text"),
            ("position", "bigint"),
            ("body", "text"),
        ],
    ),
    (
        "summaries",
        &[("session", "text"), ("idx", "bigint"), ("body", "text")],
    ),
    (
        "writes",
        &[
            ("session", "text"),
            ("key", "text"),
            ("version", "bigint"),
            ("first_position", "bigint"),
            ("count", "bigint"),
            ("seq", "bigint"),
        ],
    ),
    (
        "pending",
        &[
            ("session", "text"),
            ("key", "text"),
            ("body", "text"),
            ("expires_at", "bigint"),
        ],
    ),
];

/// The indexes the migrations create, without prefix.
pub(crate) const INDEXES: [&str; 6] = [
    "sessions_by_user",
    "sessions_by_expiry",
    "writes_by_seq",
    "pending_by_expiry",
    "by_recent",
    "by_user_recent",
];

/// Migration `i` takes a database from schema version `i` to `i + 1`.
const MIGRATIONS: [fn(&Names) -> String; SCHEMA_VERSION as usize] = [
    create_v1,
    crate::functions::create_v2,
    add_recent_indexes_v3,
    crate::functions::create_v4,
];

/// Version 2 to 3: the indexes of `list` newest first.
fn add_recent_indexes_v3(n: &Names) -> String {
    let sessions = n.table("sessions");
    format!(
        "CREATE INDEX {} ON {sessions} (updated_at, id);
         CREATE INDEX {} ON {sessions} (user_id, updated_at, id) WHERE user_id IS NOT NULL;",
        n.ident("by_recent"),
        n.ident("by_user_recent"),
    )
}

/// Version 0 (nothing) to 1: every table and index.
fn create_v1(n: &Names) -> String {
    let (sessions, messages, summaries, writes, pending) = (
        n.table("sessions"),
        n.table("messages"),
        n.table("summaries"),
        n.table("writes"),
        n.table("pending"),
    );
    let index = |name: &str| n.ident(name);
    let by = |table: &str| crate::partitions::by_hash(n, table);
    let tables = format!(
        r#"CREATE TABLE {sessions} (
             id               text COLLATE "C" PRIMARY KEY,
             user_id          text COLLATE "C",
             version          bigint NOT NULL,
             message_count    bigint NOT NULL DEFAULT 0,
             summary_count    bigint NOT NULL DEFAULT 0,
             system_prompt    text,
             metadata         jsonb NOT NULL DEFAULT '{{}}',
             counters         jsonb NOT NULL DEFAULT '{{}}',
             created_at       bigint NOT NULL,
             updated_at       bigint NOT NULL,
             last_accessed_at bigint NOT NULL,
             expires_at       bigint,
             write_seq        bigint NOT NULL DEFAULT 0
         ){sessions_by};
         CREATE INDEX {by_user} ON {sessions} (user_id, id) WHERE user_id IS NOT NULL;
         CREATE INDEX {by_expiry} ON {sessions} (expires_at) WHERE expires_at IS NOT NULL;
         CREATE TABLE {messages} (
             session  text COLLATE "C" NOT NULL,
             position bigint NOT NULL,
             body     text NOT NULL,
             PRIMARY KEY (session, position)
         ){messages_by};
         CREATE TABLE {summaries} (
             session text COLLATE "C" NOT NULL,
             idx     bigint NOT NULL,
             body    text NOT NULL,
             PRIMARY KEY (session, idx)
         ){summaries_by};
         CREATE TABLE {writes} (
             session        text COLLATE "C" NOT NULL,
             key            text COLLATE "C" NOT NULL,
             version        bigint NOT NULL,
             first_position bigint NOT NULL,
             count          bigint NOT NULL,
             seq            bigint NOT NULL,
             PRIMARY KEY (session, key)
         ){writes_by};
         CREATE INDEX {writes_by_seq} ON {writes} (session, seq);
         CREATE TABLE {pending} (
             session    text COLLATE "C" NOT NULL,
             key        text COLLATE "C" NOT NULL,
             body       text NOT NULL,
             expires_at bigint,
             PRIMARY KEY (session, key)
         ){pending_by};
         CREATE INDEX {pending_by_expiry} ON {pending} (expires_at) WHERE expires_at IS NOT NULL;"#,
        by_user = index("sessions_by_user"),
        by_expiry = index("sessions_by_expiry"),
        writes_by_seq = index("writes_by_seq"),
        pending_by_expiry = index("pending_by_expiry"),
        sessions_by = by("sessions"),
        messages_by = by("messages"),
        summaries_by = by("summaries"),
        writes_by = by("writes"),
        pending_by = by("pending"),
    );
    // The partitions, after the indexes: each partition gets its own copy.
    tables + &crate::partitions::create(n)
}

/// Whether the relation `name` exists in `schema`, read from the catalog
/// tables with the statement's own snapshot.
///
/// Not `to_regclass`, nor `IF NOT EXISTS`: those consult the backend's
/// catalog cache, which is not refreshed when a transaction wakes up from
/// an advisory lock, so they can miss a table another instance created and
/// committed while this one waited for the lock.
async fn relation_exists(client: &impl GenericClient, schema: &str, name: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = $1 AND c.relname = $2)",
            &[&schema, &name],
        )
        .await?
        .try_get(0)?)
}

/// The schema version recorded in the database (0: none), read without
/// failing when the version table does not exist yet.
async fn recorded_version(client: &impl GenericClient, names: &Names) -> Result<u32> {
    if !relation_exists(client, &names.schema, &names.raw("schema_version")).await? {
        return Ok(0);
    }
    let version: i32 = client
        .query_one(
            &format!(
                "SELECT coalesce(max(version), 0) FROM {}",
                names.table("schema_version")
            ),
            &[],
        )
        .await?
        .try_get(0)?;
    Ok(u32::try_from(version).unwrap_or(0))
}

/// Brings the database to [`SCHEMA_VERSION`] (see the module docs) and
/// verifies the tables; returns the version found before.
pub(crate) async fn migrate(client: &mut Client, names: &Names) -> Result<u32> {
    // Fast path, without a lock: most connects find the schema current.
    let found = recorded_version(client, names).await?;
    if found > SCHEMA_VERSION {
        return Err(newer(found));
    }
    if found == SCHEMA_VERSION {
        verify(client, names).await?;
        return Ok(found);
    }
    // The schema itself, under a lock of its own: stores with different
    // prefixes may create the same schema at once, and CREATE SCHEMA IF NOT
    // EXISTS is not safe against a concurrent one.
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(&names.schema, "")],
    )
    .await?;
    let schema_exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
            &[&names.schema],
        )
        .await?
        .try_get(0)?;
    if !schema_exists {
        tx.batch_execute(&format!("CREATE SCHEMA {}", names.quoted_schema))
            .await?;
    }
    tx.commit().await?;

    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(&names.schema, &names.prefix)],
    )
    .await?;
    // Another instance may have migrated while we waited for the lock.
    let found = recorded_version(&tx, names).await?;
    if found > SCHEMA_VERSION {
        return Err(newer(found));
    }
    let version_table = names.table("schema_version");
    if !relation_exists(&tx, &names.schema, &names.raw("schema_version")).await? {
        tx.batch_execute(&format!(
            "CREATE TABLE {version_table} (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )"
        ))
        .await?;
    }
    let start = usize::try_from(found).unwrap_or(usize::MAX);
    for (from, step) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.batch_execute(&step(names)).await?;
        let to = i32::try_from(from + 1).unwrap_or(i32::MAX);
        tx.execute(
            &format!("INSERT INTO {version_table} (version) VALUES ($1)"),
            &[&to],
        )
        .await?;
        tracing::info!(
            schema = %names.schema,
            prefix = %names.prefix,
            from,
            to,
            "migrated the statestore schema"
        );
    }
    tx.commit().await?;
    verify(client, names).await?;
    Ok(found)
}

fn newer(found: u32) -> Error {
    Error::UnsupportedSchema {
        found,
        supported: SCHEMA_VERSION,
    }
}

/// Compares the store's tables and indexes in the database with
/// [`COLUMNS`] and [`INDEXES`]; the first difference is [`Error::Corrupt`].
pub(crate) async fn verify(client: &Client, names: &Names) -> Result<()> {
    let tables: Vec<String> = TABLES.iter().map(|t| names.raw(t)).collect();
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text
               FROM information_schema.columns
              WHERE table_schema = $1 AND table_name = ANY($2)
              ORDER BY table_name, ordinal_position",
            &[&names.schema, &tables],
        )
        .await?;
    let mut found: Vec<(String, String, String)> = Vec::with_capacity(rows.len());
    for row in rows {
        found.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    for (base, columns) in COLUMNS {
        let table = names.raw(base);
        let qualified = format!("{}.{table}", names.schema);
        let actual: Vec<(&str, &str)> = found
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, c, ty)| (c.as_str(), ty.as_str()))
            .collect();
        if actual.is_empty() {
            return Err(corrupt(format!("table {qualified} is missing")));
        }
        for (column, ty) in columns {
            match actual.iter().find(|(c, _)| c == column) {
                None => {
                    return Err(corrupt(format!("column {qualified}.{column} is missing")));
                }
                Some((_, actual_ty)) if actual_ty != ty => {
                    return Err(corrupt(format!(
                        "column {qualified}.{column} is {actual_ty}, not {ty}"
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some((extra, _)) = actual
            .iter()
            .find(|(c, _)| !columns.iter().any(|(expected, _)| expected == c))
        {
            return Err(corrupt(format!(
                "column {qualified}.{extra} was added; the store does not know it"
            )));
        }
    }
    let indexes: Vec<String> = client
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = ANY($2)",
            &[&names.schema, &tables],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    for index in INDEXES {
        let name = names.raw(index);
        if !indexes.contains(&name) {
            return Err(corrupt(format!("index {}.{name} is missing", names.schema)));
        }
    }
    Ok(())
}

fn corrupt(what: String) -> Error {
    Error::Corrupt { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_literally() {
        assert_eq!(quote_ident("sessions").expect("quoted"), r#""sessions""#);
        assert_eq!(quote_ident(r#"a"b"#).expect("quoted"), r#""a""b""#);
        assert_eq!(
            quote_ident("'; DROP TABLE x; --").expect("quoted"),
            r#""'; DROP TABLE x; --""#
        );
        assert_eq!(quote_ident(r#"""#).expect("quoted"), r#""""""#);
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0b").is_err());
        assert!(quote_ident(&"x".repeat(63)).is_ok());
        assert!(quote_ident(&"x".repeat(64)).is_err());
        // 63 bytes, not characters.
        assert!(quote_ident(&"é".repeat(32)).is_err());
    }

    #[test]
    fn names_are_quoted_and_qualified() {
        let names = Names::new(r#"my "app""#, "x\"_").expect("names");
        assert_eq!(names.table("sessions"), r#""my ""app"""."x""_sessions""#);
        assert_eq!(names.raw("writes_by_seq"), "x\"_writes_by_seq");
        assert!(Names::new("s", &"p".repeat(46)).is_err());
        assert!(Names::new("s", &"p".repeat(45)).is_ok());
        assert!(Names::new("", "p").is_err());
        assert!(Names::new("s", "a\0").is_err());
    }

    #[test]
    fn lock_keys_depend_on_schema_and_prefix_and_are_stable() {
        assert_eq!(
            lock_key("public", "statestore_"),
            lock_key("public", "statestore_")
        );
        assert_ne!(lock_key("public", "a"), lock_key("public", "b"));
        assert_ne!(lock_key("ab", "c"), lock_key("a", "bc"));
        assert_ne!(lock_key("public", ""), lock_key("public", "statestore_"));
        // The key is part of the on-database protocol: instances of different
        // builds must agree on it.
        assert_eq!(lock_key("public", "statestore_"), STABLE_KEY);
    }

    /// Pinned by `lock_keys_depend_on_schema_and_prefix_and_are_stable`.
    const STABLE_KEY: i64 = -4_711_307_707_221_105;

    #[test]
    fn the_column_and_index_lists_name_what_the_migrations_create() {
        assert_eq!(COLUMNS.map(|(table, _)| table), TABLES);
        let names = Names::new("s", "p_").expect("names");
        let sql = MIGRATIONS
            .iter()
            .map(|step| step(&names))
            .collect::<String>();
        for (table, columns) in COLUMNS.iter().skip(1) {
            assert!(sql.contains(&format!(r#""s"."p_{table}""#)), "{table}");
            for (column, _) in *columns {
                assert!(sql.contains(column), "{table}.{column}");
            }
        }
        for index in INDEXES {
            assert!(sql.contains(&format!(r#""p_{index}""#)), "{index}");
        }
    }
}
