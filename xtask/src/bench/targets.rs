//! The targets at the top of `docs/benchmarks.md`: one table, [`TARGETS`].
//! Each row says what is measured, how its figure comes from the results
//! ([`Figure`]) and what the figure must reach ([`Pass`]); [`evaluate`]
//! (the one loop, in [`super::evaluate`]) turns every row into a verdict
//! the same way. Adding a target is adding a row here; a new kind of
//! figure is a new [`Figure`] variant there.

#[cfg(doc)]
use super::evaluate::evaluate;
use super::evaluate::{Each, Figure, Groups, Pass, Quantity, Shown, Target};

/// The history lengths the turn benchmarks run at.
const LENGTHS: &[&str] = &["10", "100", "1000", "10000"];

// Benchmark groups the targets and the page's derived figures read.
pub(super) const MEMORY_TURN: &str = "memory/turn(append 2 + load_recent 20)";
pub(super) const REDIS_TURN: &str = "redis/turn(append 2 + load_recent 20)";
pub(super) const BLOB_TURN: &str = "redis/blob baseline turn(GET + parse + push 2 + SET)";
pub(super) const CONTINUOUS: &str = "redis/64 sessions, continuous calls";
pub(super) const REDIS_LOAD: &str = "redis/load";
/// A plain `LRANGE` of a session's messages, the floor under `load`.
pub(super) const REDIS_RAW: &str = "redis/LRANGE of the same messages, not decoded (load's floor)";
pub(super) const REDIS_FORK: &str = "redis/fork+delete";
pub(super) const SELECT: &str = "context-window/select over 10,000 cached messages";
pub(super) const COUNT_ENGLISH: &str = "count/english";
/// `count/worst-a`, `count/worst-space`: one character repeated.
pub(super) const COUNT_WORST: &str = "count/worst-";
/// The default exact counter (the `bpe-openai` feature) is what the
/// counting targets are checked on.
pub(super) const DEFAULT_COUNTER: &str = "bpe-openai/";
pub(super) const PIPELINE: &str = "pipeline/execute(offline provider, history 100)";
pub(super) const SQLITE_TURN: &str = "sqlite/turn(append 2 + load_recent 20)";
pub(super) const SQLITE_TURN_RELAXED: &str =
    "sqlite/turn(append 2 + load_recent 20), synchronous=NORMAL";
pub(super) const SQLITE_CONCURRENT: &str = "sqlite/64 sessions taking turns, durable";
pub(super) const SQLITE_GROUP: &str = "group commit";
pub(super) const SQLITE_SINGLE: &str = "one commit per turn (max_batch 1)";
/// The relaxed case of [`SQLITE_CONCURRENT`] (issue 25, target 8).
pub(super) const SQLITE_RELAXED: &str = "synchronous=NORMAL (not durable), group commit";
pub(super) const SQLITE_FLOOR: &str = "sqlite/fdatasync floor/append 4 KiB + fdatasync";
pub(super) const THREADS: &str = "memory/turns on threads(append 2 + load_recent 20, history 100)";
pub(super) const APPEND_MANAGER: &str = "append 1 message, ConnectionManager";
/// `bench-metric:` lines of the footprint suite: heap bytes per stored
/// message minus its text bytes, by the counting allocator.
pub(super) const MEMORY_OVERHEAD: &str = "memory/overhead per stored message/";
/// The same turn as [`REDIS_TURN`] and [`BLOB_TURN`] over a realistic
/// message mix (the Redis suite defines it and prints it as
/// [`REALISTIC_MIX`]).
pub(super) const REDIS_TURN_MIX: &str = "redis/turn, realistic mix(append 2 + load_recent 20)";
pub(super) const BLOB_TURN_MIX: &str =
    "redis/blob baseline turn, realistic mix(GET + parse + push 2 + SET)";
/// The `bench-metric:` line stating the realistic mix (under
/// [`REDIS_TURN_MIX`], so that a run measuring that group keeps it).
pub(super) const REALISTIC_MIX: &str =
    "redis/turn, realistic mix(append 2 + load_recent 20)/the mix";
/// N sessions taking one turn each at once, N from [`SESSION_COUNTS`]
/// (named by N), one group per store.
pub(super) const MEMORY_SESSIONS: &str = "memory/sessions, one turn each at once";
pub(super) const SQLITE_SESSIONS: &str = "sqlite/sessions, one turn each at once, durable";
pub(super) const REDIS_SESSIONS: &str = "redis/sessions, one turn each at once";
/// The session counts of the sessions groups and of the `redis-benchmark
/// -t rpush` ceilings beside them.
pub(super) const SESSION_COUNTS: [u32; 5] = [1, 4, 16, 64, 256];
/// The PostgreSQL suite's groups: the same turn as [`REDIS_TURN`] on a
/// durable local server (`fsync` and `synchronous_commit` on), and the
/// peer baseline beside it — the whole history as one `jsonb` value per
/// session, read, pushed to and written back — on short messages and on
/// the realistic mix.
pub(super) const POSTGRES_TURN: &str = "postgres/turn(append 2 + load_recent 20)";
/// The same turn with `synchronous_commit=off`: the store's cost without
/// the WAL flush.
pub(super) const POSTGRES_TURN_RELAXED: &str =
    "postgres/turn(append 2 + load_recent 20), synchronous_commit=off";
pub(super) const POSTGRES_BLOB: &str =
    "postgres/jsonb baseline turn(SELECT + parse + push 2 + UPDATE)";
pub(super) const POSTGRES_TURN_MIX: &str =
    "postgres/turn, realistic mix(append 2 + load_recent 20)";
pub(super) const POSTGRES_BLOB_MIX: &str =
    "postgres/jsonb baseline turn, realistic mix(SELECT + parse + push 2 + UPDATE)";
/// The realistic mix as the PostgreSQL suite states it (the same text as
/// [`REALISTIC_MIX`]).
pub(super) const POSTGRES_REALISTIC_MIX: &str =
    "postgres/turn, realistic mix(append 2 + load_recent 20)/the mix";
pub(super) const POSTGRES_SESSIONS: &str = "postgres/sessions, one turn each at once";
/// 64 tasks taking turns back to back, [`POSTGRES_SYNC_ON`] against
/// [`POSTGRES_SYNC_OFF`], with `bench-metric:` lines `…/appends per WAL
/// flush` and `…/mean WAL flush` under each.
pub(super) const POSTGRES_CONCURRENT: &str = "postgres/64 sessions taking turns";
pub(super) const POSTGRES_SYNC_ON: &str = "synchronous_commit=on";
pub(super) const POSTGRES_SYNC_OFF: &str = "synchronous_commit=off";
/// `bench-metric:` line of the crypto suite: a Redis turn through the
/// default layer (encrypted + zstd) ÷ the plain Redis turn, medians of
/// rounds interleaved in the same run.
pub(super) const CRYPTO_REDIS_RATIO: &str = "crypto/layer÷plain(redis)/";
/// The sidebar query (issue 23), one group per store: a page of 50 of one
/// user's sessions, newest first, named `first page/{n}` and `deep
/// page/{n}` for stores of n = [`LIST_SMALL`] and [`LIST_LARGE`] sessions
/// over 1,000 users (the suites' shared `benches/common/list.rs`).
pub(super) const MEMORY_LIST: &str = "memory/list(recent first, page of 50)";
pub(super) const SQLITE_LIST: &str = "sqlite/list(recent first, page of 50)";
pub(super) const REDIS_LIST: &str = "redis/list(recent first, page of 50)";
pub(super) const POSTGRES_LIST: &str = "postgres/list(recent first, page of 50)";
/// The two pages of the list groups.
pub(super) const LIST_PAGES: [&str; 2] = ["first page", "deep page"];
/// The store sizes of the list groups, in sessions.
pub(super) const LIST_SMALL: u32 = 1_000;
pub(super) const LIST_LARGE: u32 = 100_000;

/// One store's list target: every page of its list group ≤ 5 ms.
const fn list_page(group: &'static str, what: &'static str) -> Target {
    Target {
        what,
        figure: Figure::Worst {
            groups: Groups::One(group),
            names: "",
            each: Each::Median,
            shown: Shown::Time,
            label: "",
        },
        required: "≤ 5 ms",
        pass: Pass::AtMost(5e6),
    }
}

/// One store's list target: each page at [`LIST_LARGE`] sessions ≤ 1.5 ×
/// the same page at [`LIST_SMALL`] (the worse of the two pages).
const fn list_flat(group: &'static str, what: &'static str) -> Target {
    Target {
        what,
        figure: Figure::Growth {
            groups: Groups::One(group),
            names: "",
            long: LIST_LARGE,
            short: LIST_SMALL,
            per_unit: false,
            shown: Shown::Times(2),
        },
        required: "flat: ≤ 1.5×",
        pass: Pass::AtMost(1.5),
    }
}

/// Every target, in the order the page lists them.
pub(super) const TARGETS: &[Target] = &[
    Target {
        what: "memory: per-turn cost at 10,000 messages ÷ at 10",
        figure: Figure::Ratio {
            over: Quantity::Median(MEMORY_TURN, "10000"),
            under: Quantity::Median(MEMORY_TURN, "10"),
            shown: Shown::Times(2),
        },
        required: "≤ 1.5×",
        pass: Pass::AtMost(1.5),
    },
    Target {
        what: "Redis: per-turn cost at 10,000 messages ÷ at 10",
        figure: Figure::Ratio {
            over: Quantity::Median(REDIS_TURN, "10000"),
            under: Quantity::Median(REDIS_TURN, "10"),
            shown: Shown::Times(2),
        },
        required: "≤ 1.5×",
        pass: Pass::AtMost(1.5),
    },
    Target {
        what: "SQLite, durable (synchronous=FULL): per-turn cost at 10,000 messages ÷ at 10",
        figure: Figure::Ratio {
            over: Quantity::Median(SQLITE_TURN, "10000"),
            under: Quantity::Median(SQLITE_TURN, "10"),
            shown: Shown::Times(2),
        },
        required: "≤ 1.5×",
        pass: Pass::AtMost(1.5),
    },
    Target {
        what: "SQLite, relaxed (synchronous=NORMAL): per-turn cost at 10,000 messages ÷ at 10",
        figure: Figure::Ratio {
            over: Quantity::Median(SQLITE_TURN_RELAXED, "10000"),
            under: Quantity::Median(SQLITE_TURN_RELAXED, "10"),
            shown: Shown::Times(2),
        },
        required: "≤ 1.5×",
        pass: Pass::AtMost(1.5),
    },
    Target {
        what: "PostgreSQL, durable (fsync, synchronous_commit=on): per-turn cost at 100,000 \
               messages ÷ at 10",
        figure: Figure::Ratio {
            over: Quantity::Median(POSTGRES_TURN, "100000"),
            under: Quantity::Median(POSTGRES_TURN, "10"),
            shown: Shown::Times(2),
        },
        required: "≤ 1.5×",
        pass: Pass::AtMost(1.5),
    },
    Target {
        what: "SQLite, 64 sessions taking turns, durable: turns/s with group commit ÷ one commit \
               per turn (max_batch 1, the same 64 tasks)",
        figure: Figure::Ratio {
            over: Quantity::Rate(SQLITE_CONCURRENT, SQLITE_GROUP),
            under: Quantity::Rate(SQLITE_CONCURRENT, SQLITE_SINGLE),
            shown: Shown::Times(1),
        },
        required: "≥ 10×",
        pass: Pass::AtLeast(10.0),
    },
    Target {
        what: "SQLite, 64 sessions taking turns: turns/s durable (synchronous=FULL, group \
               commit) ÷ relaxed (synchronous=NORMAL, group commit), the same 64 tasks in one run",
        figure: Figure::Ratio {
            over: Quantity::Rate(SQLITE_CONCURRENT, SQLITE_GROUP),
            under: Quantity::Rate(SQLITE_CONCURRENT, SQLITE_RELAXED),
            shown: Shown::Percent,
        },
        required: "≥ 70 %",
        pass: Pass::AtLeast(0.7),
    },
    Target {
        what: "Redis, realistic message mix, 1,000 messages: whole-blob baseline turn ÷ our turn",
        figure: Figure::Ratio {
            over: Quantity::Median(BLOB_TURN_MIX, "1000"),
            under: Quantity::Median(REDIS_TURN_MIX, "1000"),
            shown: Shown::Times(0),
        },
        required: "≥ 100× faster",
        pass: Pass::AtLeast(100.0),
    },
    Target {
        what: "Redis, realistic message mix, 10,000 messages: whole-blob baseline turn ÷ our turn",
        figure: Figure::Ratio {
            over: Quantity::Median(BLOB_TURN_MIX, "10000"),
            under: Quantity::Median(REDIS_TURN_MIX, "10000"),
            shown: Shown::Times(0),
        },
        required: "≥ 100× faster",
        pass: Pass::AtLeast(100.0),
    },
    Target {
        what: "PostgreSQL, realistic message mix, 10,000 messages: whole-jsonb baseline turn \
               (one jsonb value per session: SELECT, parse, push 2, UPDATE) ÷ our turn",
        figure: Figure::Ratio {
            over: Quantity::Median(POSTGRES_BLOB_MIX, "10000"),
            under: Quantity::Median(POSTGRES_TURN_MIX, "10000"),
            shown: Shown::Times(0),
        },
        required: "≥ 50× faster",
        pass: Pass::AtLeast(50.0),
    },
    Target {
        what: "PostgreSQL, 64 sessions taking turns: turns/s with synchronous_commit=on ÷ with \
               synchronous_commit=off (the same server, sessions and tasks)",
        figure: Figure::Ratio {
            over: Quantity::Rate(POSTGRES_CONCURRENT, POSTGRES_SYNC_ON),
            under: Quantity::Rate(POSTGRES_CONCURRENT, POSTGRES_SYNC_OFF),
            shown: Shown::Percent,
        },
        required: "≥ 50 %",
        pass: Pass::AtLeast(0.5),
    },
    Target {
        what: "Redis turn − 2 × the loopback round trip measured right after it, slowest of the \
               four lengths",
        figure: Figure::Excess {
            group: REDIS_TURN,
            names: LENGTHS,
            times: 2.0,
            metric: "PING round trip",
        },
        required: "≤ 20 µs",
        pass: Pass::AtMost(20_000.0),
    },
    Target {
        what: "Redis: the server's time per store call in a turn (`INFO commandstats`), slowest \
               of the four lengths",
        figure: Figure::WorstMetric {
            group: REDIS_TURN,
            names: LENGTHS,
            metric: "server time per store call",
        },
        required: "≤ 6 µs",
        pass: Pass::AtMost(6_000.0),
    },
    Target {
        what: "Redis: pipeline `execute` − store turn at 100 messages",
        figure: Figure::Difference {
            over: Quantity::Median(PIPELINE, "redis"),
            under: Quantity::Median(REDIS_TURN, "100"),
        },
        required: "≤ 15 µs",
        pass: Pass::AtMost(15_000.0),
    },
    Target {
        what: "64 sessions: Redis appends/s (ConnectionManager) ÷ redis-benchmark RPUSH -c 64",
        figure: Figure::Ratio {
            over: Quantity::Rate(CONTINUOUS, APPEND_MANAGER),
            under: Quantity::RedisBenchmark("RPUSH"),
            shown: Shown::Percent,
        },
        required: "≥ 80 %",
        pass: Pass::AtLeast(0.8),
    },
    Target {
        what: "Redis `load` of 10,000 messages ÷ a plain `LRANGE` of the same messages, not \
               decoded",
        figure: Figure::Ratio {
            over: Quantity::Median(REDIS_LOAD, "10000"),
            under: Quantity::Median(REDIS_RAW, "10000"),
            shown: Shown::Times(2),
        },
        required: "≤ 2×",
        pass: Pass::AtMost(2.0),
    },
    Target {
        what: "Redis `fork` of 10,000 messages (and the delete after it) ÷ `load` of them",
        figure: Figure::Ratio {
            over: Quantity::Median(REDIS_FORK, "10000"),
            under: Quantity::Median(REDIS_LOAD, "10000"),
            shown: Shown::Times(2),
        },
        required: "≤ 2×",
        pass: Pass::AtMost(2.0),
    },
    Target {
        what: "memory store: append 2 + load_recent(20), slowest of the four lengths",
        figure: Figure::Worst {
            groups: Groups::One(MEMORY_TURN),
            names: "",
            each: Each::Median,
            shown: Shown::Time,
            label: "at ",
        },
        required: "< 5 µs",
        pass: Pass::Below(5_000.0),
    },
    Target {
        what: "token counting on English, default exact counter (bpe-openai), slowest encoding",
        figure: Figure::Worst {
            groups: Groups::One(COUNT_ENGLISH),
            names: DEFAULT_COUNTER,
            each: Each::Rate,
            shown: Shown::MegabytesPerSecond,
            label: "",
        },
        required: "≥ 25 MB/s",
        pass: Pass::AtLeast(25e6),
    },
    Target {
        what: "token counting, worst case (one character repeated): time per byte at 1 MB ÷ at \
               10 kB",
        figure: Figure::Growth {
            groups: Groups::Prefix(COUNT_WORST),
            names: DEFAULT_COUNTER,
            long: 1_000_000,
            short: 10_000,
            per_unit: true,
            shown: Shown::Times(2),
        },
        required: "linear: ≤ 2×",
        pass: Pass::AtMost(2.0),
    },
    Target {
        what: "window selection over 10,000 cached messages (`select_borrowed`; the owned `select` is \
               listed beside it), slowest policy",
        figure: Figure::Worst {
            groups: Groups::One(SELECT),
            names: "",
            each: Each::Median,
            shown: Shown::Time,
            label: "",
        },
        required: "≤ 100 µs",
        pass: Pass::AtMost(100_000.0),
    },
    Target {
        what: "memory store: overhead per stored message beyond its text (heap bytes per \
               message − text bytes, counting allocator), worse of 1 and 1,000 sessions",
        figure: Figure::Metric {
            prefix: MEMORY_OVERHEAD,
            shown: Shown::Bytes,
        },
        required: "≤ 120 B",
        pass: Pass::AtMost(120.0),
    },
    Target {
        what: "Redis turn (load_recent_with 20 + append of two 1 KB messages) through the \
               encryption layer (encrypted + zstd) ÷ the plain Redis turn, medians of 30 \
               interleaved rounds of 100 turns in one run",
        figure: Figure::Metric {
            prefix: CRYPTO_REDIS_RATIO,
            shown: Shown::Times(2),
        },
        required: "≤ 1.10×",
        pass: Pass::AtMost(1.10),
    },
    list_page(
        MEMORY_LIST,
        "memory `list`: a page of 50 of one user's sessions, newest first, slowest of the first \
         page and a deep page at 1,000 and 100,000 sessions",
    ),
    list_flat(
        MEMORY_LIST,
        "memory `list`: a page at 100,000 sessions ÷ the same page at 1,000, worse of the first \
         and the deep page",
    ),
    list_page(
        SQLITE_LIST,
        "SQLite `list`: a page of 50 of one user's sessions, newest first, slowest of the first \
         page and a deep page at 1,000 and 100,000 sessions",
    ),
    list_flat(
        SQLITE_LIST,
        "SQLite `list`: a page at 100,000 sessions ÷ the same page at 1,000, worse of the first \
         and the deep page",
    ),
    list_page(
        REDIS_LIST,
        "Redis `list`: a page of 50 of one user's sessions, newest first, slowest of the first \
         page and a deep page at 1,000 and 100,000 sessions",
    ),
    list_flat(
        REDIS_LIST,
        "Redis `list`: a page at 100,000 sessions ÷ the same page at 1,000, worse of the first \
         and the deep page",
    ),
    list_page(
        POSTGRES_LIST,
        "PostgreSQL `list`: a page of 50 of one user's sessions, newest first, slowest of the first \
         page and a deep page at 1,000 and 100,000 sessions",
    ),
    list_flat(
        POSTGRES_LIST,
        "PostgreSQL `list`: a page at 100,000 sessions ÷ the same page at 1,000, worse of the first \
         and the deep page",
    ),
];
