//! The page's "Derived" lines: figures computed from two benchmarks or
//! more (PostgreSQL's own are in [`super::postgres`]).

use super::evaluate::Lookup;
use super::format::{thousands, time};
use super::record::Measured;
use super::targets::{
    APPEND_MANAGER, CONTINUOUS, MEMORY_TURN, PIPELINE, PIPELINE_STORE_CALLS, POSTGRES_TURN,
    REDIS_TURN, SQLITE_CONCURRENT, SQLITE_FLOOR, SQLITE_GROUP, SQLITE_SINGLE, SQLITE_TURN, THREADS,
};

/// Figures computed from two benchmarks.
pub(super) fn lines(r: &Lookup<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (store, turn) in [
        ("memory", MEMORY_TURN),
        ("redis", REDIS_TURN),
        ("sqlite", SQLITE_TURN),
        ("postgres", POSTGRES_TURN),
    ] {
        out.extend(pipeline_overhead(r, store, turn));
    }
    if let (Some(manager), Some(pool)) = (
        r.get(&format!("{CONTINUOUS}/{APPEND_MANAGER}"))
            .and_then(Measured::per_second),
        r.get(&format!("{CONTINUOUS}/append 1 message, deadpool Pool"))
            .and_then(Measured::per_second),
    ) {
        out.push(format!(
            "64 sessions appending: ConnectionManager (one multiplexed connection) {}/s, \
             deadpool-redis pool (default size) {}/s: **{:.1}×**.",
            thousands(manager),
            thousands(pool),
            manager / pool
        ));
    }
    for (label, what) in [
        (SQLITE_GROUP, "with group commit"),
        (SQLITE_SINGLE, "with one commit per turn"),
    ] {
        let id = format!("{SQLITE_CONCURRENT}/{label}");
        let Some(turns) = r.get(&id).and_then(Measured::per_second) else {
            continue;
        };
        // The fdatasync measured right after this benchmark, else the
        // floor benchmark of the group.
        let (fsync_ns, source) = match r.metric(&format!("{id}/fdatasync right after")) {
            Some(us) => (us * 1e3, "measured right after it"),
            None => match r.get(SQLITE_FLOOR) {
                Some(floor) => (floor.median, "the floor benchmark"),
                None => continue,
            },
        };
        let per_commit = r
            .metric(&format!("{id}/writes per commit"))
            .map_or_else(String::new, |w| {
                format!("; the writer committed {w:.1} writes per transaction")
            });
        out.push(format!(
            "SQLite, 64 sessions durable, {what}: {}/s turns × one fdatasync of {} ({source}) = \
             **{:.1} turns per fsync time**{per_commit}. About 1 means fsync-bound; more means \
             turns share fsyncs.",
            thousands(turns),
            time(fsync_ns),
            turns * fsync_ns * 1e-9
        ));
    }
    out.extend(super::postgres::derived(r));
    if let Some(one) = r.get(&format!("{THREADS}/1 thread")) {
        for two in [
            "2 threads, different sessions",
            "2 threads, one hot session",
        ] {
            if let Some(m) = r.get(&format!("{THREADS}/{two}")) {
                out.push(format!(
                    "Memory store, {two}: {} per turn against {} on one thread: **{:.2}×** the \
                     one-thread throughput.",
                    time(m.median),
                    time(one.median),
                    one.median / m.median
                ));
            }
        }
    }
    out
}

/// What `execute` adds on `store`: the execute less its two store calls
/// made alone (the pipeline suite measures them beside it, on stores where
/// it does), else less the store's own turn at 100 messages. An execute
/// measured faster than what it is compared with is said so, not printed
/// as a negative overhead: the difference is below the noise of the two
/// figures (a durable store's turn moves with the disk's flush).
fn pipeline_overhead(r: &Lookup<'_>, store: &str, turn: &str) -> Option<String> {
    let exec = r.get(&format!("{PIPELINE}/{store}"))?;
    let (base, what) = match r.get(&format!("{PIPELINE_STORE_CALLS}/{store}")) {
        Some(alone) => (alone, "its two store calls made alone"),
        None => (r.get(&format!("{turn}/100"))?, "store turn at 100 messages"),
    };
    let runs = if exec.run == base.run {
        String::new()
    } else {
        format!(" (measured in different runs: {}, {})", exec.run, base.run)
    };
    let overhead = exec.median - base.median;
    Some(if overhead >= 0.0 {
        format!(
            "Pipeline overhead on {store}: `execute` {} − {what} {} = **{}** per execute ({:.0} % \
             of the execute){runs}.",
            time(exec.median),
            time(base.median),
            time(overhead),
            overhead / exec.median * 100.0
        )
    } else {
        format!(
            "Pipeline overhead on {store}: not measurable — `execute` {} was measured **{} \
             faster** than {what} ({}){runs}, so the pipeline's own cost is below the noise of \
             these two figures.",
            time(exec.median),
            time(-overhead),
            time(base.median)
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::lines;
    use crate::bench::evaluate::Lookup;
    use crate::bench::record::Measured;
    use crate::bench::targets::{PIPELINE, PIPELINE_STORE_CALLS, POSTGRES_TURN, REDIS_TURN};

    fn measured(group: &str, name: &str, median: f64, run: &str) -> Measured {
        Measured {
            group: group.into(),
            name: name.into(),
            full_id: format!("{group}/{name}"),
            median,
            lower: median,
            upper: median,
            mad: 0.0,
            throughput: None,
            written: SystemTime::UNIX_EPOCH,
            run: run.into(),
        }
    }

    /// The pipeline's overhead: less its store calls made alone where the
    /// suite measured them, else less the store's turn; a negative
    /// difference is said in words, in µs; two runs are named.
    #[test]
    fn pipeline_overhead_is_never_a_negative_time() {
        let results = [
            measured(PIPELINE, "redis", 434_000.0, "a"),
            measured(REDIS_TURN, "100", 275_000.0, "b"),
            measured(PIPELINE, "postgres", 831_177.0, "a"),
            measured(PIPELINE_STORE_CALLS, "postgres", 973_290.0, "a"),
            // Not read: the store calls alone come first.
            measured(POSTGRES_TURN, "100", 100.0, "a"),
        ];
        let redis = BTreeMap::new();
        let r = Lookup {
            results: &results,
            redis: &redis,
            metrics: &[],
            server_work: &[],
        };
        let out = lines(&r);
        assert_eq!(
            out,
            [
                "Pipeline overhead on redis: `execute` 434 µs − store turn at 100 messages 275 µs \
                 = **159 µs** per execute (37 % of the execute) (measured in different runs: a, b).",
                "Pipeline overhead on postgres: not measurable — `execute` 831 µs was measured \
                 **142 µs faster** than its two store calls made alone (973 µs), so the \
                 pipeline's own cost is below the noise of these two figures.",
            ]
        );
    }
}
