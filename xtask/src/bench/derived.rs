//! The page's "Derived" lines: figures computed from two benchmarks or
//! more (PostgreSQL's own are in [`super::postgres`]).

use super::evaluate::Lookup;
use super::format::{thousands, time};
use super::record::Measured;
use super::targets::{
    APPEND_MANAGER, CONTINUOUS, MEMORY_TURN, PIPELINE, POSTGRES_TURN, REDIS_TURN,
    SQLITE_CONCURRENT, SQLITE_FLOOR, SQLITE_GROUP, SQLITE_SINGLE, SQLITE_TURN, THREADS,
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
        if let (Some(exec), Some(turn)) = (
            r.get(&format!("{PIPELINE}/{store}")),
            r.get(&format!("{turn}/100")),
        ) {
            out.push(format!(
                "Pipeline overhead on {store}: `execute` {} − store turn at 100 messages {} = \
                 **{}** per execute ({:.0} % of the execute).",
                time(exec.median),
                time(turn.median),
                time(exec.median - turn.median),
                (exec.median - turn.median) / exec.median * 100.0
            ));
        }
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
