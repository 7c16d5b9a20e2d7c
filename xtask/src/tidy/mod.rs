//! `cargo xtask tidy`: checks of the sources that need no compilation, each
//! failing with the file and line to look at. `cargo xtask ci` runs it right
//! after rustfmt.
//!
//! - `Script::new` only in [`SCRIPTS`]: every script is built in one place,
//!   from its Lua file under `src/scripts/`, next to the invariants they
//!   all keep.
//! - The Redis key suffixes (`:h`, `:m`, … — read from [`KEYS`], which
//!   builds them as `"{base}:h"`) in string literals of `crates/*/src` —
//!   of its `.rs` files and of its `.lua` files (the scripts, lexed as
//!   Lua) — only in [`KEYS`]: the key layout lives there
//!   (docs/design.md). The scripts take their keys as `KEYS[1..5]` and
//!   need no suffix; the list index names they extend (`}:recent`,
//!   `}:ids`) and the hash tag they decode an id from (`'{(.*)}'`) are no
//!   session key suffix. Integration tests under `tests/` may poke raw
//!   keys and are not checked.
//! - Every feature in a `crates/*/Cargo.toml` `[features]` table, except
//!   `default`, has a `## ` doc comment line directly above it.
//! - The conformance cases of [`CONFORMANCE`] (its `pub async fn`s taking a
//!   store), the one list of cases in its `__conformance_with_cases!`, and
//!   the table of [`DESIGN`] name the same cases.
//! - No `.rs` file under `crates/*/src` is over [`MAX_LINES`] lines unless
//!   [`LONG_FILES`] lists it with its reason; an entry that no longer
//!   applies is reported too, so the list does not outlive its reasons.

mod lexer;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use crate::{Result, root};
use lexer::{Lexed, Literal};

/// The one file that makes `redis::Script`s (their Lua is in the `.lua`
/// files under `crates/statestore-redis/src/scripts/`).
const SCRIPTS: &str = "crates/statestore-redis/src/scripts.rs";
/// The one file that builds Redis keys.
const KEYS: &str = "crates/statestore-redis/src/keys.rs";
const CONFORMANCE: &str = "crates/statestore-core/src/conformance.rs";
const DESIGN: &str = "docs/design.md";
/// The header of the table in [`DESIGN`] naming the conformance cases.
const DESIGN_TABLE: &str = "| rule | conformance case |";
const MAX_LINES: usize = 600;
/// `.rs` files under `crates/*/src` allowed over [`MAX_LINES`], and why.
const LONG_FILES: &[(&str, &str)] = &[(
    "crates/statestore-core/src/conformance.rs",
    "the whole shared conformance suite in one file by design: one list of cases, each \
         backend runs all of it with one line",
)];

/// One finding: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    /// Relative to the workspace root, with `/`.
    path: String,
    /// 1-based.
    line: usize,
    message: String,
}

impl Problem {
    fn new(path: &str, line: usize, message: impl Into<String>) -> Self {
        Problem {
            path: path.to_owned(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// A file of the workspace: its path from the root (with `/`) and text.
struct Source {
    path: String,
    text: String,
}

pub(crate) fn tidy() -> Result {
    let started = Instant::now();
    eprintln!("\n==> tidy");
    let root = root();
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).map_err(|e| format!("tidy: {path}: {e}"))
    };
    let mut rust = Vec::new();
    let mut lua = Vec::new();
    let mut manifests = Vec::new();
    let crates_dir = root.join("crates");
    let mut crates: Vec<_> = std::fs::read_dir(&crates_dir)
        .map_err(|e| format!("tidy: {}: {e}", crates_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    crates.sort();
    for krate in &crates {
        let name = krate
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let manifest = format!("crates/{name}/Cargo.toml");
        manifests.push(Source {
            text: read(&manifest)?,
            path: manifest,
        });
        for path in files_ending(&root, krate, "rs")? {
            rust.push(Source {
                text: read(&path)?,
                path,
            });
        }
        for path in files_ending(&root, krate, "lua")? {
            lua.push(Source {
                text: read(&path)?,
                path,
            });
        }
    }

    let mut problems = Vec::new();
    let suffixes = key_suffixes(&read(KEYS)?)
        .map_err(|e| format!("tidy: {KEYS}: {e} (update xtask/src/tidy/mod.rs)"))?;
    let mut lengths = Vec::new();
    for file in &rust {
        let lexed = lexer::split(&file.text);
        problems.extend(script_new(&file.path, &lexed));
        if is_crate_source(&file.path) {
            problems.extend(key_literals(&file.path, &lexed.literals, &suffixes));
            lengths.push((file.path.clone(), file.text.lines().count()));
        }
    }
    for file in &lua {
        if is_crate_source(&file.path) {
            let lexed = lexer::split_lua(&file.text);
            problems.extend(key_literals(&file.path, &lexed.literals, &suffixes));
        }
    }
    problems.extend(long_files(&lengths));
    for manifest in &manifests {
        problems.extend(feature_docs(&manifest.path, &manifest.text));
    }
    // The cases live in conformance.rs and its modules (conformance/*.rs).
    let mut case_files = vec![(CONFORMANCE.to_owned(), read(CONFORMANCE)?)];
    for file in &rust {
        if file.path.starts_with(CONFORMANCE.trim_end_matches(".rs")) {
            case_files.push((file.path.clone(), file.text.clone()));
        }
    }
    problems.extend(conformance_cases(&read(DESIGN)?, &case_files));

    eprintln!(
        "    (tidy: {} Rust files, {} Lua files, {} manifests, {:.1}s)",
        rust.len(),
        lua.len(),
        manifests.len(),
        started.elapsed().as_secs_f64()
    );
    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    Err(format!(
        "tidy: {} problem{} (each above as file:line: what)",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    ))
}

/// Every file whose name ends in `.{extension}` under `dir` (a crate's
/// directory), as paths from `root`, sorted; build output (`target/`) is
/// skipped.
fn files_ending(root: &Path, dir: &Path, extension: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("tidy: {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_none_or(|n| n != "target") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == extension)
                && let Ok(relative) = path.strip_prefix(root)
            {
                let parts: Vec<_> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                found.push(parts.join("/"));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `crates/<crate>/src/…`: library (and binary) source, not tests,
/// benches or examples.
fn is_crate_source(path: &str) -> bool {
    let mut parts = path.split('/');
    parts.next() == Some("crates") && parts.next().is_some() && parts.next() == Some("src")
}

/// `Script::new` outside [`SCRIPTS`].
fn script_new(path: &str, lexed: &Lexed) -> Vec<Problem> {
    if path == SCRIPTS {
        return Vec::new();
    }
    lexed
        .code_lines_with("Script::new")
        .into_iter()
        .map(|line| {
            Problem::new(
                path,
                line,
                format!("`Script::new` outside {SCRIPTS}: every script is built there (its Lua in src/scripts/), next to the invariants they keep"),
            )
        })
        .collect()
}

/// The suffixes [`KEYS`] builds keys with: `":h"` for `format!("{base}:h")`.
fn key_suffixes(keys_rs: &str) -> std::result::Result<Vec<String>, String> {
    let mut suffixes: Vec<String> = lexer::split(keys_rs)
        .literals
        .into_iter()
        .filter_map(|l| {
            let suffix = l.text.strip_prefix("{base}")?;
            let name = suffix.strip_prefix(':')?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase()))
                .then(|| suffix.to_owned())
        })
        .collect();
    suffixes.sort();
    suffixes.dedup();
    if suffixes.is_empty() {
        Err("no key built as \"{base}:<suffix>\" any more: the key suffix check cannot tell which suffixes to look for".into())
    } else {
        Ok(suffixes)
    }
}

/// String literals (of Rust or Lua) outside [`KEYS`] that are a key suffix
/// (`":m"`) or hold one right after a hash tag's `}` and not followed by
/// more of a name: `"p:{s}:m"` and `"{{{id}}}:h"` do, `"victim:meta"`,
/// `"p@ss:w/rd"` and `'}:recent'` do not.
fn key_literals(path: &str, literals: &[Literal], suffixes: &[String]) -> Vec<Problem> {
    if path == KEYS {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for literal in literals {
        let text = literal.text.as_str();
        let found = suffixes.iter().find(|suffix| {
            text == suffix.as_str()
                || text.match_indices(&format!("}}{suffix}")).any(|(at, s)| {
                    text.get(at + s.len()..)
                        .and_then(|rest| rest.chars().next())
                        .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                })
        });
        if let Some(suffix) = found {
            problems.push(Problem::new(
                path,
                literal.line,
                format!(
                    "string literal {:?} holds the Redis key suffix {suffix:?}: keys are built only in {KEYS} (`Keys::session`), and a script takes them as KEYS[…]",
                    literal.text
                ),
            ));
        }
    }
    problems
}

/// Features of a `[features]` table without a `## ` line directly above.
fn feature_docs(path: &str, manifest: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut in_features = false;
    // Open brackets of a feature list spanning lines.
    let mut depth: usize = 0;
    let mut previous = "";
    for (i, line) in manifest.lines().enumerate() {
        let trimmed = line.trim();
        if depth == 0 && trimmed.starts_with('[') {
            in_features = trimmed == "[features]";
            previous = line;
            continue;
        }
        if in_features && depth == 0 {
            let name = line
                .split_once('=')
                .map(|(name, _)| name.trim().trim_matches('"'))
                .filter(|name| {
                    !name.is_empty()
                        && !line.starts_with([' ', '\t', '#'])
                        && name
                            .chars()
                            .all(|c| c.is_alphanumeric() || "-_".contains(c))
                });
            if let Some(name) = name
                && name != "default"
                && !previous.starts_with("## ")
            {
                problems.push(Problem::new(
                    path,
                    i + 1,
                    format!(
                        "feature `{name}` has no `## ` doc comment line directly above it (what it enables, for the crate docs)"
                    ),
                ));
            }
        }
        if in_features {
            let code = line.split('#').next().unwrap_or_default();
            depth = (depth + code.matches('[').count()).saturating_sub(code.matches(']').count());
        }
        previous = line;
    }
    problems
}

/// The cases named in [`DESIGN`]'s table, the case functions of
/// [`CONFORMANCE`] and its modules (`files`: path and text, [`CONFORMANCE`]
/// first) and its list of cases, compared.
fn conformance_cases(design: &str, files: &[(String, String)]) -> Vec<Problem> {
    let conformance = files.first().map_or("", |(_, text)| text.as_str());
    let mut problems = Vec::new();
    // The table: backticked names in the last cell of each row.
    let mut named: Vec<(String, usize)> = Vec::new();
    let mut lines = design.lines().enumerate();
    if !lines.any(|(_, l)| l.trim() == DESIGN_TABLE) {
        return vec![Problem::new(
            DESIGN,
            1,
            format!("no table headed `{DESIGN_TABLE}`: where the conformance cases are named"),
        )];
    }
    for (i, line) in lines
        .skip(1)
        .take_while(|(_, l)| l.trim_start().starts_with('|'))
    {
        let cell = line
            .trim()
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap_or_default();
        for (k, part) in cell.split('`').enumerate() {
            if k % 2 == 1 && !part.is_empty() {
                named.push((part.to_owned(), i + 1));
            }
        }
    }

    let mut functions: Vec<(String, String, usize)> = Vec::new();
    for (path, text) in files {
        for (i, line) in lexer::split(text).code.lines().enumerate() {
            if let Some(rest) = line.trim_start().strip_prefix("pub async fn ")
                && let Some((name, params)) = rest.split_once('(')
                && params.starts_with("store: Arc<dyn Store>")
            {
                functions.push((name.trim().to_owned(), path.clone(), i + 1));
            }
        }
    }
    let lexed = lexer::split(conformance);
    let mut listed: Vec<(String, usize)> = Vec::new();
    let mut in_list = false;
    for (i, line) in lexed.code.lines().enumerate() {
        if line.contains("macro_rules! __conformance_with_cases") {
            in_list = true;
        } else if in_list && line.starts_with('}') {
            break;
        } else if in_list
            && let Some(name) = line.trim().strip_suffix(',')
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            listed.push((name.to_owned(), i + 1));
        }
    }

    let names = |v: &[(String, usize)]| v.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>();
    let in_code: BTreeSet<String> = functions.iter().map(|(n, _, _)| n.clone()).collect();
    let (in_design, in_list) = (names(&named), names(&listed));
    for (name, line) in &named {
        if !in_code.contains(name) {
            problems.push(Problem::new(
                DESIGN,
                *line,
                format!(
                    "`{name}` is named as a conformance case but {CONFORMANCE} has no such case"
                ),
            ));
        }
    }
    for (name, path, line) in &functions {
        if !in_design.contains(name) {
            problems.push(Problem::new(
                path,
                *line,
                format!("conformance case `{name}` is not named in {DESIGN}'s table (`{DESIGN_TABLE}`): add the rule it checks"),
            ));
        }
        if !in_list.contains(name) {
            problems.push(Problem::new(
                path,
                *line,
                format!("conformance case `{name}` is not in `__conformance_with_cases!`, so no backend runs it"),
            ));
        }
    }
    for (name, line) in &listed {
        if !in_code.contains(name) {
            problems.push(Problem::new(
                CONFORMANCE,
                *line,
                format!("`{name}` is listed in `__conformance_with_cases!` but is no `pub async fn {name}(store: Arc<dyn Store>)`"),
            ));
        }
    }
    problems
}

/// Files over [`MAX_LINES`] not in [`LONG_FILES`], and entries of
/// [`LONG_FILES`] that no longer apply. `files`: (path, lines).
fn long_files(files: &[(String, usize)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (path, lines) in files {
        if *lines > MAX_LINES && !LONG_FILES.iter().any(|(allowed, _)| allowed == path) {
            problems.push(Problem::new(
                path,
                MAX_LINES + 1,
                format!(
                    "{lines} lines, over {MAX_LINES}: split it by job, or list it in LONG_FILES (xtask/src/tidy/mod.rs) with the reason"
                ),
            ));
        }
    }
    for (allowed, reason) in LONG_FILES {
        match files.iter().find(|(path, _)| path == allowed) {
            None => problems.push(Problem::new(
                allowed,
                1,
                format!("listed in LONG_FILES ({reason}) but gone: remove the entry"),
            )),
            Some((_, lines)) if *lines <= MAX_LINES => problems.push(Problem::new(
                allowed,
                1,
                format!("listed in LONG_FILES ({reason}) but {lines} lines now: remove the entry"),
            )),
            Some(_) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests;
