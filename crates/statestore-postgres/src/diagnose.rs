//! [`PostgresStore::diagnose`]: what the server says about the store —
//! its settings that matter for durability, and each table's size and
//! dead rows.

use std::time::Duration;

use statestore_core::{Error, Result};

use crate::schema::TABLES;
use crate::{PostgresStore, SCHEMA_VERSION};

/// What [`PostgresStore::diagnose`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnosis {
    /// `SHOW server_version` (`15.8 (Debian 15.8-1)`).
    pub server_version: String,
    /// `SHOW synchronous_commit` for the store's connections: `on` (the
    /// default; a commit waits for its WAL flush), `off` (a server crash
    /// may lose the last few hundred milliseconds of acknowledged turns),
    /// `local`, `remote_write` or `remote_apply` (with synchronous
    /// replicas).
    pub synchronous_commit: String,
    /// The schema holding the store's tables.
    pub schema: String,
    /// The prefix of their names.
    pub prefix: String,
    /// The schema version of the tables (the connect migrated them to it).
    pub schema_version: u32,
    /// Hash partitions per table (`None`: not partitioned).
    pub partitions: Option<u32>,
    /// The store's TTL, if it has one.
    pub ttl: Option<Duration>,
    /// Every table of the store, in creation order.
    pub tables: Vec<TableStats>,
}

/// One table's size and rows, its partitions included.
///
/// The row counts are the statistics system's estimates
/// (`pg_stat_all_tables.n_live_tup` and `n_dead_tup`): they trail the
/// writes by up to a second, and are zero until the table was first
/// written or analyzed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableStats {
    /// The table's name without the prefix (`messages`).
    pub table: String,
    /// Its qualified name in the database (`public.statestore_messages`).
    pub qualified: String,
    /// `pg_total_relation_size`: the table, its indexes and TOAST, in bytes.
    pub total_bytes: u64,
    /// Live rows (an estimate).
    pub live_rows: u64,
    /// Dead rows (an estimate): versions that updates and deletes left
    /// behind and vacuum has not reclaimed yet — the table's bloat.
    pub dead_rows: u64,
}

impl TableStats {
    /// Dead rows as a share of all rows, 0.0 to 1.0 (0.0 for an empty table).
    #[must_use]
    pub fn dead_ratio(&self) -> f64 {
        let all = self.live_rows.saturating_add(self.dead_rows);
        if all == 0 {
            0.0
        } else {
            // Row counts far below 2^52: exact as f64.
            #[allow(clippy::cast_precision_loss, reason = "a ratio for display")]
            let ratio = self.dead_rows as f64 / all as f64;
            ratio
        }
    }
}

impl PostgresStore {
    /// Asks the server for its version, `synchronous_commit`, and each of
    /// the store's tables' size and live and dead rows (partitions summed):
    /// two statements, for diagnostics (`statestore doctor`).
    ///
    /// ```no_run
    /// # async fn run(store: statestore_postgres::PostgresStore) -> statestore_core::Result<()> {
    /// let d = store.diagnose().await?;
    /// for t in &d.tables {
    ///     println!("{}: {} bytes, {:.0}% dead", t.qualified, t.total_bytes, t.dead_ratio() * 100.0);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Store failures: the server cannot be reached, no pooled connection
    /// became free.
    pub async fn diagnose(&self) -> Result<Diagnosis> {
        let id = crate::store_id()?;
        let settings = self
            .rows(
                "diagnose",
                &id,
                "SELECT current_setting('server_version'), current_setting('synchronous_commit')",
                &[],
            )
            .await?;
        let row = settings.first().ok_or_else(|| no_row(&id))?;
        let text = |i: usize| -> Result<String> { row.try_get(i).map_err(|e| bad(&id, e)) };
        let (server_version, synchronous_commit) = (text(0)?, text(1)?);

        let bases: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        let names: Vec<String> = TABLES.iter().map(|t| self.names.raw(t)).collect();
        let rows = self
            .rows(
                "diagnose",
                &id,
                "SELECT t.base, c.relname::text,
                        coalesce(sum(pg_total_relation_size(r.relid)), 0)::bigint,
                        coalesce(sum(s.n_live_tup), 0)::bigint,
                        coalesce(sum(s.n_dead_tup), 0)::bigint
                   FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(base, name, ord)
                   JOIN pg_class c ON c.relname = t.name
                   JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = $3
                   -- A plain table, or every member of a partition tree.
                   CROSS JOIN LATERAL (
                        SELECT c.oid::regclass AS relid WHERE c.relkind <> 'p'
                        UNION ALL SELECT p.relid FROM pg_partition_tree(c.oid) p) r
                   LEFT JOIN pg_stat_all_tables s ON s.relid = r.relid::oid
                  GROUP BY t.base, c.relname, t.ord
                  ORDER BY t.ord",
                &[&bases, &names, &self.names.schema],
            )
            .await?;
        let mut tables = Vec::with_capacity(rows.len());
        for row in &rows {
            let count = |i: usize| -> Result<u64> {
                let v: i64 = row.try_get(i).map_err(|e| bad(&id, e))?;
                Ok(v.max(0).cast_unsigned())
            };
            let relname: String = row.try_get(1).map_err(|e| bad(&id, e))?;
            tables.push(TableStats {
                table: row.try_get(0).map_err(|e| bad(&id, e))?,
                qualified: format!("{}.{relname}", self.names.schema),
                total_bytes: count(2)?,
                live_rows: count(3)?,
                dead_rows: count(4)?,
            });
        }
        Ok(Diagnosis {
            server_version,
            synchronous_commit,
            schema: self.names.schema.clone(),
            prefix: self.names.prefix.clone(),
            schema_version: SCHEMA_VERSION,
            partitions: self.partitions,
            ttl: self.ttl,
            tables,
        })
    }
}

fn no_row(id: &statestore_core::SessionId) -> Error {
    Error::Corrupt {
        id: id.clone(),
        detail: "the server returned no settings row".into(),
        source: None,
    }
}

fn bad(id: &statestore_core::SessionId, e: tokio_postgres::Error) -> Error {
    crate::Error::from(e).into_store("diagnose", id, std::time::Duration::ZERO)
}
