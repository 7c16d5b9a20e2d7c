//! How the Lua files under `src/scripts/` become the text of a script.
//!
//! A file is a doc comment — the `--` lines at its top — then its text,
//! which starts with the line that ends the doc comment (a blank line, or
//! an include line). The doc comment is for readers and is not sent.
//!
//! An include line — `--#include <path>`, indented or not, then
//! `name='value'` pairs for a parameterised fragment — stands for the
//! included file's text (its `path` is relative to `src/scripts/`): the
//! whole line, indentation and newline included, is replaced by it. A
//! fragment's text starts with its blank line, so a fragment included
//! after a line of code is preceded by an empty line in the script sent.
//! In a fragment, `@name@` (lower case) is a parameter, filled in with the
//! value its include line gives, before that fragment's own includes are
//! expanded; every parameter must be given and every value used.
//! `@NAME@` (upper case) is left for [`Scripts::new`](super::Scripts::new)
//! to fill in.
//!
//! Composing never fails: a problem (an unknown file, a malformed include
//! line, a missing or unused parameter, includes nested too deep) is
//! reported in the list of problems and leaves the text as far as it got.
//! The files are part of the build, so the tests compose every script and
//! require no problems.

/// The prefix of an include line (after any indentation).
const INCLUDE: &str = "--#include ";
/// How deep includes may nest (the scripts use two levels).
const MAX_DEPTH: usize = 8;

/// The text of the file at `path` among `files` (path under `src/scripts/`,
/// text), its includes expanded; the problems found are added to
/// `problems`.
pub(super) fn compose(files: &[(&str, &str)], path: &str, problems: &mut Vec<String>) -> String {
    let mut out = String::new();
    expand(files, path, &[], 0, &mut out, problems);
    out
}

/// Appends the text of `path`, its parameters filled in with `args`, to
/// `out`.
fn expand(
    files: &[(&str, &str)],
    path: &str,
    args: &[(&str, &str)],
    depth: usize,
    out: &mut String,
    problems: &mut Vec<String>,
) {
    let Some((_, source)) = files.iter().find(|(p, _)| *p == path) else {
        problems.push(format!("no Lua file {path} (src/scripts/{path})"));
        return;
    };
    if depth > MAX_DEPTH {
        problems.push(format!(
            "{path}: included more than {MAX_DEPTH} deep (includes itself?)"
        ));
        return;
    }
    let mut text = text_of(source).to_owned();
    for (name, value) in args {
        let placeholder = format!("@{name}@");
        if !text.contains(&placeholder) {
            problems.push(format!("{path}: given {name}, but has no {placeholder}"));
        }
        text = text.replace(&placeholder, value);
    }
    if let Some(missing) = parameter(&text) {
        problems.push(format!("{path}: @{missing}@ is not given"));
    }
    for line in text.split_inclusive('\n') {
        match line.trim_start().strip_prefix(INCLUDE) {
            Some(include) => match parse_include(include) {
                Ok((included, args)) => expand(files, included, &args, depth + 1, out, problems),
                Err(e) => {
                    problems.push(format!("{path}: {e}: {}", line.trim_end()));
                    out.push_str(line);
                }
            },
            None => out.push_str(line),
        }
    }
}

/// `source` without its doc comment: from the first line that does not
/// start with `--`, or is an include line.
fn text_of(source: &str) -> &str {
    let mut at = 0;
    for line in source.split_inclusive('\n') {
        if !line.starts_with("--") || line.starts_with(INCLUDE) {
            break;
        }
        at += line.len();
    }
    source.get(at..).unwrap_or_default()
}

/// The name of the first parameter (`@name@`, lower case) in `text`.
fn parameter(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        rest = rest.get(at + 1..).unwrap_or_default();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(rest.len());
        if name_len > 0 && rest.get(name_len..).is_some_and(|r| r.starts_with('@')) {
            return rest.get(..name_len);
        }
    }
    None
}

/// The `name='value'` pairs of an include line: a fragment's parameters.
type Args<'a> = Vec<(&'a str, &'a str)>;

/// The path and parameters of an include line (after [`INCLUDE`]).
fn parse_include(line: &str) -> Result<(&str, Args<'_>), String> {
    let line = line.trim();
    let (path, mut rest) = line.split_once(' ').unwrap_or((line, ""));
    if !path.ends_with(".lua") {
        return Err(format!("{path:?} is not a .lua file"));
    }
    let mut args = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok((path, args));
        }
        let Some((name, after)) = rest.split_once("='") else {
            return Err(format!("expected name='value' at {rest:?}"));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(format!("{name:?} is not a parameter name (a-z and _)"));
        }
        let Some((value, after)) = after.split_once('\'') else {
            return Err(format!("the value of {name} has no closing '"));
        };
        args.push((name, value));
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::compose;

    fn composed(files: &[(&str, &str)], path: &str) -> (String, Vec<String>) {
        let mut problems = Vec::new();
        let text = compose(files, path, &mut problems);
        (text, problems)
    }

    #[test]
    fn an_include_line_stands_for_the_text_after_the_doc_comment() {
        let files = [
            (
                "main.lua",
                "-- The script.\n-- KEYS: none.\n--#include shared/a.lua\n\nlocal x = 1\n  --#include shared/b.lua n='x + 1' what='two'\nreturn x\n",
            ),
            ("shared/a.lua", "-- A fragment.\n\nlocal y = 0\n"),
            (
                "shared/b.lua",
                "-- Sets y to @n@ (@what@).\n\ny = @n@ -- @what@, '@SCHEMA@'\n",
            ),
        ];
        let (text, problems) = composed(&files, "main.lua");
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            text,
            "\nlocal y = 0\n\nlocal x = 1\n\ny = x + 1 -- two, '@SCHEMA@'\nreturn x\n"
        );
    }

    #[test]
    fn problems_are_reported_not_hidden() {
        let files = [
            (
                "main.lua",
                "--#include shared/p.lua a='1' b='2'\n--#include shared/none.lua\n--#include shared/p.lua\n--#include shared/p.lua a='1\n--#include nope\n",
            ),
            ("shared/p.lua", "\nx = @a@\n"),
            ("self.lua", "--#include self.lua\n"),
        ];
        let (_, problems) = composed(&files, "main.lua");
        let expected = [
            "shared/p.lua: given b, but has no @b@",
            "no Lua file shared/none.lua",
            "shared/p.lua: @a@ is not given",
            "main.lua: the value of a has no closing '",
            "main.lua: \"nope\" is not a .lua file",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (found, expected) in problems.iter().zip(expected) {
            assert!(found.starts_with(expected), "{found:?}, not {expected:?}");
        }
        let (_, problems) = composed(&files, "self.lua");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("deep"), "{problems:?}");
    }
}
