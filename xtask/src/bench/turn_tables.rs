//! The page's per-turn tables: one turn at each history length with every
//! store side by side, Redis beside its loopback round trip and the
//! whole-blob baseline, and the realistic message mix on Redis and
//! PostgreSQL (PostgreSQL's own turn table is in [`super::postgres`]).

use std::fmt::Write as _;

use super::evaluate::Lookup;
use super::format::{thousands, time};
use super::record::Measured;
use super::targets::{
    BLOB_TURN, BLOB_TURN_MIX, MEMORY_TURN, POSTGRES_BLOB_MIX, POSTGRES_REALISTIC_MIX,
    POSTGRES_TURN, POSTGRES_TURN_MIX, POSTGRES_TURN_RELAXED, REALISTIC_MIX, REDIS_TURN,
    REDIS_TURN_MIX, SQLITE_TURN, SQLITE_TURN_RELAXED,
};

/// The history lengths of the per-turn tables and chart.
pub(super) const HISTORY_LENGTHS: [u32; 5] = [10, 100, 1_000, 10_000, 100_000];

/// One turn at each history length, every store side by side.
pub(super) fn per_turn_table(r: &Lookup<'_>) -> Option<String> {
    let stores = [
        ("memory", MEMORY_TURN),
        ("Redis (loopback)", REDIS_TURN),
        ("SQLite, durable", SQLITE_TURN),
        ("SQLite, relaxed", SQLITE_TURN_RELAXED),
        ("PostgreSQL, durable", POSTGRES_TURN),
        ("PostgreSQL, relaxed", POSTGRES_TURN_RELAXED),
    ];
    let present: Vec<(&str, &str)> = stores
        .into_iter()
        .filter(|(_, group)| !r.group(group).is_empty())
        .collect();
    if present.is_empty() {
        return None;
    }
    let mut d = String::from(
        "One turn — `load_recent(20)`, then `append` of 2 guarded by the version it returned — \
         by store and history length (medians; each store's own group below has the intervals \
         and the run that measured it). SQLite durable is `synchronous=FULL` (an fsync per \
         commit), relaxed is `synchronous=NORMAL`; PostgreSQL durable is a local server with \
         `fsync` and `synchronous_commit` on (a WAL flush per commit), relaxed is \
         `synchronous_commit=off`.\n\n| messages |",
    );
    for (name, _) in &present {
        let _ = write!(d, " {name} |");
    }
    d.push_str("\n|---|");
    d.push_str(&"---|".repeat(present.len()));
    d.push('\n');
    for len in HISTORY_LENGTHS {
        if present
            .iter()
            .all(|(_, group)| r.get(&format!("{group}/{len}")).is_none())
        {
            continue;
        }
        let _ = write!(d, "| {} |", thousands(f64::from(len)));
        for (_, group) in &present {
            let mut cell = r
                .get(&format!("{group}/{len}"))
                .map_or_else(|| "—".into(), |m| time(m.median));
            // The durable turns' floor: the flush measured right after.
            if [SQLITE_TURN, POSTGRES_TURN].contains(group)
                && let Some(us) = r.metric(&format!("{group}/{len}/fdatasync right after"))
            {
                let _ = write!(cell, " (fdatasync right after: {})", time(us * 1e3));
            }
            let _ = write!(d, " {cell} |");
        }
        d.push('\n');
    }
    Some(d)
}

/// Our Redis turn and the blob turn at each length, beside the loopback
/// round trip measured right after each and the server's own time.
pub(super) fn redis_turn_table(r: &Lookup<'_>) -> Option<String> {
    let mut rows = String::new();
    for len in HISTORY_LENGTHS {
        let (Some(ours), Some(blob)) = (
            r.get(&format!("{REDIS_TURN}/{len}")),
            r.get(&format!("{BLOB_TURN}/{len}")),
        ) else {
            continue;
        };
        let us = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| time(v * 1e3));
        let rtt = r.metric(&format!("{REDIS_TURN}/{len}/PING round trip"));
        let blob_rtt = r.metric(&format!("{BLOB_TURN}/{len}/PING round trip"));
        let server = r
            .metric(&format!("{REDIS_TURN}/{len}/server time per store call"))
            .or_else(|| {
                // Runs before the store's loads were transactions.
                r.metric(&format!("{REDIS_TURN}/{len}/server time per evalsha"))
            });
        let _ = writeln!(
            rows,
            "| {} | {} | {} | {} | {} | {} | {} | **{:.1}×** |",
            thousands(f64::from(len)),
            time(ours.median),
            us(rtt),
            rtt.map_or_else(|| "?".into(), |t| time(ours.median - 2.0 * t * 1e3)),
            us(server),
            time(blob.median),
            us(blob_rtt),
            blob.median / ours.median
        );
    }
    (!rows.is_empty()).then(|| {
        format!(
            "Redis per turn beside the loopback round trip (the median of 1,000 PINGs measured \
             right after each benchmark) and the server's own time per store call (`INFO \
             commandstats`: an append's `EVALSHA`, a load's `MULTI` and `EXEC`; 100 turns). A \
             turn is two calls (`load_recent`, then `append` guarded by the version it \
             returned), so two round trips; when the round trip moves between two rows, so does \
             the turn.\n\n\
             | messages | our turn | round trip | turn − 2 × round trip | server time per store \
             call | blob turn | round trip | blob ÷ ours |\n\
             |---|---|---|---|---|---|---|---|\n{rows}"
        )
    })
}

/// Our turn and the whole-blob baseline over the realistic message mix, on
/// Redis and on PostgreSQL.
pub(super) fn realistic_mix_table(r: &Lookup<'_>) -> Option<String> {
    let stores = [
        ("Redis", REDIS_TURN_MIX, BLOB_TURN_MIX),
        ("PostgreSQL", POSTGRES_TURN_MIX, POSTGRES_BLOB_MIX),
    ];
    let present: Vec<(&str, &str, &str)> = stores
        .into_iter()
        .filter(|(_, ours, blob)| !r.group(ours).is_empty() || !r.group(blob).is_empty())
        .collect();
    let mut rows = String::new();
    for len in HISTORY_LENGTHS {
        let pairs: Vec<Option<(&Measured, &Measured)>> = present
            .iter()
            .map(|(_, ours, blob)| {
                Some((
                    r.get(&format!("{ours}/{len}"))?,
                    r.get(&format!("{blob}/{len}"))?,
                ))
            })
            .collect();
        if pairs.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(rows, "| {} |", thousands(f64::from(len)));
        for pair in pairs {
            match pair {
                Some((ours, blob)) => {
                    let _ = write!(
                        rows,
                        " {} | {} | **{:.0}×** |",
                        time(ours.median),
                        time(blob.median),
                        blob.median / ours.median
                    );
                }
                None => rows.push_str(" — | — | — |"),
            }
        }
        rows.push('\n');
    }
    let mix = [REALISTIC_MIX, POSTGRES_REALISTIC_MIX]
        .iter()
        .find_map(|id| r.metrics.iter().find(|m| m.id == *id))
        .map_or("(the mix was not printed by this run)", |m| {
            m.value.as_str()
        });
    let mut header = String::from("| messages |");
    for (store, _, _) in &present {
        let _ = write!(
            header,
            " {store}: our turn | {store}: blob turn | blob ÷ ours |"
        );
    }
    (!rows.is_empty()).then(|| {
        format!(
            "Per turn over a realistic message mix — {mix} — our turn against the whole-blob \
             baseline on the same server and the same messages: on Redis the whole history as \
             one JSON value (GET, parse, push the turn, serialize, SET), on PostgreSQL as one \
             `jsonb` value per session (`SELECT`, parse, push, serialize, `UPDATE`). The tables \
             above use short messages (about 60 B).\n\n{header}\n|---|{}\n{rows}",
            "---|---|---|".repeat(present.len())
        )
    })
}
