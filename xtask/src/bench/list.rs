//! The sidebar query's section of the page (issue 23): a page of 50 of one
//! user's sessions, newest first, on every store side by side in stores of
//! 1,000 and 100,000 sessions, beside the peer figure the issue quotes.
//! Absent when no list group is in the record.

use std::fmt::Write as _;

use super::evaluate::Lookup;
use super::format::{thousands, time};
use super::targets::{
    LIST_LARGE, LIST_PAGES, LIST_SMALL, MEMORY_LIST, POSTGRES_LIST, REDIS_LIST, SQLITE_LIST,
};

/// The stores, as the table's columns name them.
const STORES: [(&str, &str); 4] = [
    ("memory", MEMORY_LIST),
    ("SQLite", SQLITE_LIST),
    ("Redis (loopback)", REDIS_LIST),
    ("PostgreSQL (loopback)", POSTGRES_LIST),
];

/// The peer figure issue 23 quotes, not measured here.
const PEER: &str = "ADK's `list_sessions` takes **74 s** for 10,000 sessions (adk-python \
                    #4621, as quoted by issue 23; not measured here)";

/// What each page is, for the table's first column.
fn page_label(page: &str) -> &'static str {
    if page == LIST_PAGES[0] {
        "first page (a user with 100 sessions)"
    } else {
        "deep page (after a cursor halfway into a user with a tenth of the store: 5,000 of \
         10,000 at 100,000; 50 of 100 at 1,000)"
    }
}

/// The section, or `None` when no store's list group ran.
pub(super) fn section(r: &Lookup<'_>) -> Option<String> {
    let present: Vec<(&str, &str)> = STORES
        .into_iter()
        .filter(|(_, group)| !r.group(group).is_empty())
        .collect();
    if present.is_empty() {
        return None;
    }
    let median =
        |group: &str, page: &str, n: u32| r.get(&format!("{group}/{page}/{n}")).map(|m| m.median);
    let mut d = String::from(
        "## Sidebar: one user's sessions, newest first\n\n\
         `Store::list(&ListQuery::for_user(u).recent().with_limit(50))`, medians per page (each \
         store's group under [Results](#results) has the intervals and the run). Each store \
         holds 1,000 or 100,000 sessions over 1,000 users, written through `save` (a user and \
         an assistant message and a title each); the measured ordinary user holds 100 sessions \
         at both sizes, the big user a tenth of the store, and every user's sessions are \
         spread over the whole write history. A deep page is the page after a cursor found once \
         by walking (untimed). Targets: ≤ 5 ms per page, and flat — 100,000 ÷ 1,000 ≤ 1.5×.\n\n\
         | page | sessions in the store |",
    );
    for (name, _) in &present {
        let _ = write!(d, " {name} |");
    }
    d.push_str("\n|---|---|");
    d.push_str(&"---|".repeat(present.len()));
    d.push('\n');
    for page in LIST_PAGES {
        for n in [LIST_SMALL, LIST_LARGE] {
            let label = if n == LIST_SMALL {
                format!(" {} ", page_label(page))
            } else {
                " ".into()
            };
            let _ = write!(d, "|{label}| {} |", thousands(f64::from(n)));
            for (_, group) in &present {
                let cell = median(group, page, n).map_or_else(|| "—".into(), time);
                let _ = write!(d, " {cell} |");
            }
            d.push('\n');
        }
        let _ = write!(
            d,
            "| | {} ÷ {} |",
            thousands(f64::from(LIST_LARGE)),
            thousands(f64::from(LIST_SMALL))
        );
        for (_, group) in &present {
            let cell = match (
                median(group, page, LIST_LARGE),
                median(group, page, LIST_SMALL),
            ) {
                (Some(large), Some(small)) => format!("**{:.2}×**", large / small),
                _ => "—".into(),
            };
            let _ = write!(d, " {cell} |");
        }
        d.push('\n');
    }
    let _ = writeln!(d, "\nFor comparison: {PEER}.");
    // The same number of sessions walked through our listing: 200 pages
    // of 50, each at most the slowest deep page at 100,000.
    let slowest = present
        .iter()
        .filter_map(|(name, group)| Some((*name, median(group, LIST_PAGES[1], LIST_LARGE)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((name, deep)) = slowest {
        let _ = writeln!(
            d,
            "\nWalking all 10,000 sessions of our big user, page by page, is 200 pages: at the \
             slowest store's deep page ({name}, {}), about **{}** in all (an estimate from the \
             page time, not a measured walk).",
            time(deep),
            time(deep * 200.0)
        );
    }
    Some(d)
}
