//! The PostgreSQL suite's own tables on the page (issue 22): our turn
//! beside the loopback round trip and the whole-`jsonb` baseline, and what
//! the 64 concurrent sessions show about WAL flushes. Its turn is also a
//! column of the shared per-turn table, its realistic-mix figures a part of
//! the realistic-mix table and its groups series of the charts (in
//! [`super::render`]). Absent when the suite did not run.

use std::fmt::Write as _;

use super::evaluate::Lookup;
use super::format::{thousands, time};
use super::record::Measured;
use super::targets::{
    POSTGRES_BLOB, POSTGRES_CONCURRENT, POSTGRES_SYNC_OFF, POSTGRES_SYNC_ON, POSTGRES_TURN,
    POSTGRES_TURN_RELAXED,
};

/// Our PostgreSQL turn at each length beside the disk's `fdatasync` and
/// the loopback round trip (`SELECT 1`) measured right after it, the same
/// turn with `synchronous_commit=off`, and the `jsonb` baseline turn.
pub(super) fn turn_table(r: &Lookup<'_>, lengths: &[u32]) -> Option<String> {
    let mut rows = String::new();
    for &len in lengths {
        let Some(ours) = r.get(&format!("{POSTGRES_TURN}/{len}")) else {
            continue;
        };
        let us = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| time(v * 1e3));
        let fsync = r.metric(&format!("{POSTGRES_TURN}/{len}/fdatasync right after"));
        let rtt = r.metric(&format!("{POSTGRES_TURN}/{len}/SELECT 1 round trip"));
        let relaxed = r.get(&format!("{POSTGRES_TURN_RELAXED}/{len}"));
        let blob = r.get(&format!("{POSTGRES_BLOB}/{len}"));
        let median = |m: Option<&Measured>| m.map_or_else(|| "—".into(), |m| time(m.median));
        let _ = writeln!(
            rows,
            "| {} | {} | {} | {} | {} | {} | {} |",
            thousands(f64::from(len)),
            time(ours.median),
            us(fsync),
            us(rtt),
            median(relaxed),
            median(blob),
            blob.map_or_else(
                || "—".into(),
                |b| format!("**{:.1}×**", b.median / ours.median)
            )
        );
    }
    (!rows.is_empty()).then(|| {
        format!(
            "PostgreSQL per turn (durable: `fsync` and `synchronous_commit` on, so every append \
             waits for its WAL flush) beside the disk's flush (the median of 50 4 KiB overwrites + \
             `fdatasync` of a pre-allocated file beside the data directory, as a WAL flush) and the loopback round trip (the median of \
             1,000 prepared `SELECT 1`s), both measured right after each benchmark; the same \
             turn with `synchronous_commit=off` (no wait for the flush); and the peer baseline \
             on the same server and messages: the whole history as one `jsonb` value per \
             session — `SELECT` it, parse, push the turn, serialize, `UPDATE` it — as a \
             blob-per-session checkpointer does. Each turn is two round trips and one durable \
             commit.\n\n\
             | messages | our turn | fdatasync right after | round trip | our turn, \
             synchronous_commit=off | jsonb turn | jsonb ÷ ours |\n\
             |---|---|---|---|---|---|---|\n{rows}"
        )
    })
}

/// 64 sessions taking turns with `synchronous_commit` on and off: turns/s,
/// appends per WAL flush and the mean flush, one line each.
pub(super) fn derived(r: &Lookup<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let rate = |label: &str| {
        r.get(&format!("{POSTGRES_CONCURRENT}/{label}"))
            .and_then(Measured::per_second)
    };
    for label in [POSTGRES_SYNC_ON, POSTGRES_SYNC_OFF] {
        let Some(turns) = rate(label) else {
            continue;
        };
        let id = format!("{POSTGRES_CONCURRENT}/{label}");
        let per_flush = r
            .metric(&format!("{id}/appends per WAL flush"))
            .map_or_else(String::new, |n| format!(", {n:.1} appends per WAL flush"));
        let flush = r
            .metric(&format!("{id}/mean WAL flush"))
            .map_or_else(String::new, |us| {
                format!(" (a flush takes {} on average)", time(us * 1e3))
            });
        out.push(format!(
            "PostgreSQL, 64 sessions taking turns, `{label}`: **{}/s** turns{per_flush}{flush}.",
            thousands(turns)
        ));
    }
    if let (Some(on), Some(off)) = (rate(POSTGRES_SYNC_ON), rate(POSTGRES_SYNC_OFF)) {
        out.push(format!(
            "PostgreSQL group commit: durable commits reach **{:.0} %** of the turns/s of \
             `synchronous_commit=off`; concurrent commits waiting at once share one WAL flush.",
            on / off * 100.0
        ));
    }
    out
}
