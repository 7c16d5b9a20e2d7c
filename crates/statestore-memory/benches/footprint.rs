//! Bytes the memory store holds per stored message, measured by a counting
//! global allocator (`stats_alloc`: the workspace forbids `unsafe`, so the
//! `GlobalAlloc` impl comes from that crate) and, as a cross-check, by the
//! process's resident set (`/proc/self/statm`, Linux only).
//!
//! Not a criterion benchmark: it prints one `bench-metric:` line per figure,
//! which `cargo xtask bench` copies into `docs/benchmarks.md`; the
//! `memory/overhead per stored message/…` lines (bytes per message − text
//! bytes) are the figure of the memory store's overhead target.
//!
//! ```text
//! cargo bench -p statestore-memory --bench footprint
//! ```
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "benchmark code"
)]

use std::alloc::System;

use statestore_core::{Expect, Message, SessionId, Store};
use statestore_memory::MemoryStore;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MESSAGES: usize = 100_000;

fn text(i: usize) -> String {
    format!("message {i}: some ordinary chat text of moderate length")
}

/// Resident bytes, from `/proc/self/statm` (pages × 4096); `None` where
/// that file does not exist.
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let text_bytes = (0..MESSAGES).map(|i| text(i).len()).sum::<usize>() as f64 / MESSAGES as f64;
    for (first, label, sessions) in [(true, "1 session", 1), (false, "1,000 sessions", 1_000)] {
        let per_session = MESSAGES / sessions;
        let store = MemoryStore::new();
        let ids: Vec<SessionId> = (0..sessions)
            .map(|s| SessionId::new(format!("session-{s}")).unwrap())
            .collect();
        let rss_before = resident();
        let region = Region::new(GLOBAL);
        rt.block_on(async {
            for (s, id) in ids.iter().enumerate() {
                // A realistic write pattern: one turn (two messages) per append.
                for pair in (0..per_session).step_by(2) {
                    let i = s * per_session + pair;
                    let turn = vec![Message::user(text(i)), Message::assistant(text(i + 1))];
                    store.append(id, turn, Expect::Any).await.unwrap();
                }
            }
        });
        let change = region.change();
        let rss_after = resident();
        let held = change.bytes_allocated as f64 - change.bytes_deallocated as f64;
        let live_allocations = change.allocations as f64 - change.deallocations as f64;
        let id = format!("memory/bytes per stored message/{MESSAGES} messages in {label}");
        let per_message = held / MESSAGES as f64;
        println!(
            "bench-metric: {id} (heap) = {per_message:.0} bytes (text {text_bytes:.0} bytes; {:.1} live allocations per message)",
            live_allocations / MESSAGES as f64,
        );
        // What the store adds to the text it keeps: the figure of the
        // "memory store: overhead per message" target.
        println!(
            "bench-metric: memory/overhead per stored message/{MESSAGES} messages in {label} (heap) = {:.0} bytes ({per_message:.0} bytes per message − {text_bytes:.0} bytes of text)",
            per_message - text_bytes,
        );
        // Only the first store is measured into a fresh heap: later ones
        // reuse what the allocator kept from the ones dropped before them.
        if first && let (Some(before), Some(after)) = (rss_before, rss_after) {
            println!(
                "bench-metric: {id} (RSS delta) = {:.0} bytes",
                after.saturating_sub(before) as f64 / MESSAGES as f64,
            );
        }
        drop(store);
    }
}
