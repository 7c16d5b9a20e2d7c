//! Declarative hash partitioning by session id, a creation option
//! ([`PostgresStoreBuilder::partitions`](crate::PostgresStoreBuilder::partitions)).
//!
//! With `partitions(n)`, the first migration creates every per-session
//! table — `sessions` (by `id`), `messages`, `summaries`, `writes` and
//! `pending` (by `session`) — as `PARTITION BY HASH`, each with `n`
//! partitions named `<prefix><table>_p<i>` (`FOR VALUES WITH (MODULUS n,
//! REMAINDER i)`). The keys and indexes are declared on the parent and
//! exist in every partition; every key starts with the session id, so one
//! session's rows are in partition `i` of each table, and every statement
//! of the store (each names one session) is pruned to one partition per
//! table. Only `list` and the expiry sweep read every partition (each
//! through its own index).
//!
//! Partitioning is chosen when the tables are created and never changes:
//! opening an existing store with `partitions(n)` checks that each table
//! has `n` hash partitions and is [`Error::Config`]
//! otherwise (an unpartitioned store cannot be partitioned in place: copy
//! it into a new one, for example with `statestore migrate`). Opening
//! without `partitions` opens either kind.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::schema::Names;

/// The most partitions per table.
pub(crate) const MAX_PARTITIONS: u32 = 1024;

/// Each partitioned table and the column it is partitioned by.
pub(crate) const PARTITIONED: [(&str, &str); 5] = [
    ("sessions", "id"),
    ("messages", "session"),
    ("summaries", "session"),
    ("writes", "session"),
    ("pending", "session"),
];

/// ` PARTITION BY HASH (column)` for `table` when partitioned, else nothing.
pub(crate) fn by_hash(n: &Names, table: &str) -> String {
    match (n.partitions, PARTITIONED.iter().find(|(t, _)| *t == table)) {
        (Some(_), Some((_, column))) => format!(" PARTITION BY HASH ({column})"),
        _ => String::new(),
    }
}

/// The partitions of every partitioned table, as SQL statements.
pub(crate) fn create(n: &Names) -> String {
    let Some(count) = n.partitions else {
        return String::new();
    };
    let mut sql = String::new();
    for (table, _) in PARTITIONED {
        for i in 0..count {
            sql.push_str(&format!(
                "\nCREATE TABLE {} PARTITION OF {} FOR VALUES WITH (MODULUS {count}, REMAINDER {i});",
                n.table(&format!("{table}_p{i}")),
                n.table(table),
            ));
        }
    }
    sql
}

/// Checks `want` against the number of `n` hash partitions found in the
/// database (see the module docs); returns how many partitions the store's
/// tables have (`None`: not partitioned).
pub(crate) async fn check(client: &Client, n: &Names, want: Option<u32>) -> Result<Option<u32>> {
    let tables: Vec<String> = PARTITIONED.iter().map(|(t, _)| n.raw(t)).collect();
    let rows = client
        .query(
            "SELECT c.relname::text, coalesce(pt.partstrat::text, ''),
                    (SELECT count(*) FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid)
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
               LEFT JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = c.oid
              WHERE s.nspname = $1 AND c.relname = ANY($2)",
            &[&n.schema, &tables],
        )
        .await?;
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let (name, strategy, children): (String, String, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        // 'h': hash; anything else was not made by this crate.
        let count = match strategy.as_str() {
            "" => None,
            "h" => Some(u32::try_from(children).unwrap_or(u32::MAX)),
            other => {
                return Err(Error::Corrupt {
                    what: format!(
                        "table {}.{name} is partitioned by {other:?}, not hash",
                        n.schema
                    ),
                });
            }
        };
        found.push((name, count));
    }
    let messages = n.raw("messages");
    let kept = found
        .iter()
        .find(|(name, _)| *name == messages)
        .and_then(|(_, count)| *count);
    let Some(want) = want else {
        return Ok(kept);
    };
    for (name, count) in &found {
        if *count != Some(want) {
            let had = count.map_or_else(
                || "no partitions".to_owned(),
                |c| format!("{c} hash partitions"),
            );
            return Err(Error::Config(format!(
                "the store's table {}.{name} has {had}, not the {want} asked for: \
                 partitioning applies only when the tables are created \
                 (copy the sessions into a new store to change it)",
                n.schema
            )));
        }
    }
    Ok(kept)
}

/// Refuses a partition count outside `1..=MAX_PARTITIONS`.
pub(crate) fn validate(partitions: Option<u32>) -> Result<()> {
    match partitions {
        Some(p) if p == 0 || p > MAX_PARTITIONS => Err(Error::Config(format!(
            "partitions must be between 1 and {MAX_PARTITIONS}, not {p}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioned_tables_get_a_clause_and_their_partitions() {
        let mut names = Names::new("s", "p_").expect("names");
        assert_eq!(by_hash(&names, "messages"), "");
        assert_eq!(create(&names), "");
        names.partitions = Some(3);
        assert_eq!(by_hash(&names, "sessions"), " PARTITION BY HASH (id)");
        assert_eq!(by_hash(&names, "pending"), " PARTITION BY HASH (session)");
        assert_eq!(by_hash(&names, "schema_version"), "");
        let sql = create(&names);
        assert_eq!(sql.matches("PARTITION OF").count(), 15);
        assert!(
            sql.contains(r#"CREATE TABLE "s"."p_writes_p2" PARTITION OF "s"."p_writes" FOR VALUES WITH (MODULUS 3, REMAINDER 2);"#),
            "{sql}"
        );
        assert!(validate(Some(0)).is_err());
        assert!(validate(Some(MAX_PARTITIONS + 1)).is_err());
        assert!(validate(Some(MAX_PARTITIONS)).is_ok());
        assert!(validate(None).is_ok());
    }
}
