//! [`Damage`]: `PRAGMA integrity_check`'s messages sorted into a few
//! kinds, with the tables and indexes they concern — what a person needs
//! to decide what to do, instead of up to a hundred raw lines.

use std::collections::BTreeSet;

/// The most problems [`Diagnosis::integrity`](crate::Diagnosis::integrity)
/// holds: `PRAGMA integrity_check` stops there, and a file with this many
/// may have more ([`Damage::capped`]).
pub const INTEGRITY_LIMIT: usize = 100;

/// What kind of problem one `integrity_check` message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DamageKind {
    /// Pages of a table or an index are damaged: a page number out of
    /// range, a page used twice, cells overlapping, out of order or
    /// running off their page, a wrong overflow chain, or a scan of a
    /// table that stopped at a malformed page. Rows stored there may be
    /// lost.
    Pages,
    /// Rows hold values their table does not allow: `NULL` in a `NOT
    /// NULL` column, a failed `CHECK`, a value of the wrong type.
    Values,
    /// Index entries missing, extra or duplicated, while the pages are
    /// sound: the index no longer matches its table. `REINDEX` rebuilds
    /// an index from its table, so no row is lost.
    IndexEntries,
    /// The bookkeeping of free space: pages neither in use nor free, a
    /// free-list count that is wrong. No row is concerned; `VACUUM`
    /// rebuilds the file without them.
    FreeSpace,
    /// The check itself failed before its end; the message says why.
    CheckFailed,
    /// A message of a form not listed above.
    Other,
}

impl DamageKind {
    /// A stable name for machine-readable output: `pages`, `values`,
    /// `index_entries`, `free_space`, `check_failed`, `other`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pages => "pages",
            Self::Values => "values",
            Self::IndexEntries => "index_entries",
            Self::FreeSpace => "free_space",
            Self::CheckFailed => "check_failed",
            Self::Other => "other",
        }
    }

    /// The kind in a few plain words, e.g. `damaged pages`.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::Pages => "damaged pages",
            Self::Values => "values the table does not allow",
            Self::IndexEntries => "index entries not matching their table",
            Self::FreeSpace => "free-space bookkeeping wrong",
            Self::CheckFailed => "the check itself failed",
            Self::Other => "other problems",
        }
    }
}

/// [`Diagnosis::integrity`](crate::Diagnosis::integrity) sorted: how many
/// problems of which kinds, in which tables and indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// Problems found (at most [`INTEGRITY_LIMIT`]).
    pub problems: usize,
    /// Whether the check stopped at [`INTEGRITY_LIMIT`] problems: there
    /// may be more.
    pub capped: bool,
    /// How many problems of each kind, the most frequent first.
    pub kinds: Vec<(DamageKind, usize)>,
    /// The tables the messages name or whose pages they place the damage
    /// in, sorted.
    pub tables: Vec<String>,
    /// The indexes likewise (SQLite's own names, such as
    /// `sqlite_autoindex_sessions_1` for a primary key), sorted.
    pub indexes: Vec<String>,
}

impl Damage {
    /// Whether every problem is an index out of step with its table
    /// ([`DamageKind::IndexEntries`]): `REINDEX` repairs the file.
    #[must_use]
    pub fn index_only(&self) -> bool {
        !self.kinds.is_empty()
            && self
                .kinds
                .iter()
                .all(|(kind, _)| *kind == DamageKind::IndexEntries)
    }
}

/// A table or an index of the file, from `sqlite_schema`.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    /// `table` or `index`.
    pub(crate) kind: String,
    pub(crate) name: String,
    /// The table an index is on (a table's own name for a table).
    pub(crate) table: String,
    pub(crate) root: i64,
}

/// The first line of each database's messages: not a problem itself.
fn is_banner(line: &str) -> bool {
    line.starts_with("*** in database ") && line.ends_with(" ***")
}

/// `integrity_check`'s rows, one problem per entry: a row may hold several
/// lines (SQLite joins the b-tree checks' messages with newlines, under a
/// `*** in database main ***` banner, which is dropped).
pub(crate) fn lines(rows: &[String]) -> Vec<String> {
    rows.iter()
        .flat_map(|row| row.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_banner(l))
        .map(str::to_owned)
        .collect()
}

/// The message's kind, and the table or index it names: `(name, true)`
/// for an index, `(name, false)` for a table, or the root page of the
/// b-tree it is about (`Tree 6 page 30 …`).
fn classify(line: &str) -> (DamageKind, Option<Named>) {
    let lower = line.to_ascii_lowercase();
    let after = |marker: &str| {
        lower.find(marker).and_then(|at| {
            line.get(at + marker.len()..)
                .and_then(|rest| rest.split_whitespace().next())
                .map(|w| w.trim_end_matches([',', ';', ':', '.']).to_owned())
        })
    };
    if line.starts_with(STOPPED) {
        return (DamageKind::CheckFailed, None);
    }
    for marker in [
        "missing from index ",
        "wrong # of entries in index ",
        "non-unique entry in index ",
        "of index ",
    ] {
        if let Some(index) = after(marker) {
            return (DamageKind::IndexEntries, Some(Named::Index(index)));
        }
    }
    if lower.starts_with("check constraint failed in ") {
        let table = after("failed in ");
        return (DamageKind::Values, table.map(Named::Table));
    }
    if lower.contains(" value in ") && !lower.contains("page") {
        // `NULL value in sessions.user_id`, `non-INTEGER value in t.c`.
        let table = after(" value in ")
            .and_then(|tc| tc.split('.').next().map(str::to_owned))
            .map(Named::Table);
        return (DamageKind::Values, table);
    }
    if lower.contains("freelist")
        || lower.contains("never used")
        || lower.contains("pointer map")
        || lower.contains("ptrmap")
        || lower.contains("max rootpage")
    {
        return (DamageKind::FreeSpace, None);
    }
    let root = lower
        .strip_prefix("tree ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(':').parse::<i64>().ok())
        .map(Named::Root);
    const PAGE_WORDS: [&str; 14] = [
        "page",
        "cell",
        "malformed",
        "out of order",
        "2nd reference",
        "multiple uses",
        "fragmentation",
        "overflow",
        "depth",
        "extends off",
        "free space corruption",
        "btreeinitpage",
        "out of range",
        "invalid page",
    ];
    if root.is_some() || PAGE_WORDS.iter().any(|w| lower.contains(w)) {
        return (DamageKind::Pages, root);
    }
    (DamageKind::Other, None)
}

/// What a message names.
enum Named {
    Table(String),
    Index(String),
    Root(i64),
}

/// How [`read`](crate::diagnose) words a check that failed before its end.
pub(crate) const STOPPED: &str = "the integrity check stopped: ";

/// Sorts `lines` (as [`lines`] made them; not `["ok"]`), naming the trees
/// of `schema` the messages place damage in.
pub(crate) fn sort(lines: &[String], schema: &[Tree]) -> Damage {
    let mut counts: Vec<(DamageKind, usize)> = Vec::new();
    let mut tables = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    for line in lines {
        let (kind, named) = classify(line);
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
        match named {
            Some(Named::Table(name)) => {
                tables.insert(name);
            }
            Some(Named::Index(name)) => {
                if let Some(t) = schema.iter().find(|t| t.name == name) {
                    tables.insert(t.table.clone());
                }
                indexes.insert(name);
            }
            Some(Named::Root(root)) => match schema.iter().find(|t| t.root == root) {
                Some(t) if t.kind == "index" => {
                    indexes.insert(t.name.clone());
                }
                Some(t) => {
                    tables.insert(t.name.clone());
                }
                None => {
                    tables.insert(format!("b-tree at page {root}"));
                }
            },
            None => {}
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Damage {
        problems: lines.len(),
        capped: lines.len() >= INTEGRITY_LIMIT,
        kinds: counts,
        tables: tables.into_iter().collect(),
        indexes: indexes.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(kind: &str, name: &str, table: &str, root: i64) -> Tree {
        Tree {
            kind: kind.into(),
            name: name.into(),
            table: table.into(),
            root,
        }
    }

    fn schema() -> Vec<Tree> {
        vec![
            tree("table", "sessions", "sessions", 2),
            tree("index", "sessions_by_user", "sessions", 4),
            tree("table", "messages", "messages", 6),
        ]
    }

    #[test]
    fn rows_become_one_problem_per_line_without_the_banner() {
        let rows = vec![
            "*** in database main ***\nTree 6 page 30 cell 5: invalid page number 9\n\
             Multiple uses for byte 730 of page 30"
                .to_owned(),
            "database disk image is malformed".to_owned(),
        ];
        assert_eq!(
            lines(&rows),
            [
                "Tree 6 page 30 cell 5: invalid page number 9",
                "Multiple uses for byte 730 of page 30",
                "database disk image is malformed"
            ]
        );
    }

    #[test]
    fn page_damage_is_placed_in_its_tree() {
        let d = sort(
            &lines(&[
                "Tree 6 page 30 cell 5: invalid page number 9\nMultiple uses for byte 730 of \
                 page 30\nPage 41 is never used\nTree 4 page 4: btreeInitPage() returns error \
                 code 11\nTree 77 page 80 cell 1: Rowid 5 out of order"
                    .to_owned(),
            ]),
            &schema(),
        );
        assert_eq!(d.problems, 5);
        assert!(!d.capped);
        assert_eq!(
            d.kinds,
            [(DamageKind::Pages, 4), (DamageKind::FreeSpace, 1)]
        );
        assert_eq!(d.tables, ["b-tree at page 77", "messages"]);
        assert_eq!(d.indexes, ["sessions_by_user"]);
        assert!(!d.index_only());
    }

    #[test]
    fn index_entries_name_the_index_and_its_table() {
        let mut raw: Vec<String> = (0..120)
            .map(|i| format!("row {i} missing from index sessions_by_user"))
            .collect();
        raw.push("wrong # of entries in index sqlite_autoindex_sessions_1".into());
        let d = sort(&lines(&raw), &schema());
        assert!(d.capped);
        assert_eq!(d.kinds, [(DamageKind::IndexEntries, 121)]);
        assert_eq!(d.tables, ["sessions"]);
        assert_eq!(
            d.indexes,
            ["sessions_by_user", "sqlite_autoindex_sessions_1"]
        );
        assert!(d.index_only());
    }

    #[test]
    fn values_free_space_failures_and_unknown_forms() {
        let d = sort(
            &lines(&[
                "NULL value in sessions.user_id".into(),
                "non-INTEGER value in sessions.version".into(),
                "CHECK constraint failed in writes".into(),
                "Freelist: size is 3 but should be 4".into(),
                format!("{STOPPED}database disk image is malformed"),
                "something new".into(),
            ]),
            &schema(),
        );
        assert_eq!(
            d.kinds,
            [
                (DamageKind::Values, 3),
                (DamageKind::FreeSpace, 1),
                (DamageKind::CheckFailed, 1),
                (DamageKind::Other, 1)
            ]
        );
        assert_eq!(d.tables, ["sessions", "writes"]);
        assert!(d.indexes.is_empty());
    }
}
