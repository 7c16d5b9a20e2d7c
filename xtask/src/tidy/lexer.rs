//! Just enough of Rust's lexical grammar to tell code from comments and
//! string literals: [`split`] gives the code with comments and literals
//! blanked out (lines kept, so positions still count), and every string
//! literal with its line. [`split_lua`] does the same for Lua (the Redis
//! scripts under `src/scripts/`).

/// A string literal's contents as written (escapes not decoded), with the
/// line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal {
    pub(crate) line: usize,
    pub(crate) text: String,
}

/// A Rust source file taken apart.
#[derive(Debug, Default)]
pub(crate) struct Lexed {
    /// The source with every comment and string or char literal replaced
    /// by spaces (newlines kept).
    pub(crate) code: String,
    pub(crate) literals: Vec<Literal>,
}

impl Lexed {
    /// The 1-based lines of `code` on which `needle` occurs.
    pub(crate) fn code_lines_with(&self, needle: &str) -> Vec<usize> {
        self.code
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .map(|(i, _)| i + 1)
            .collect()
    }
}

/// Splits `source` into code and string literals. Handles line, doc and
/// (nested) block comments, `"…"` with escapes, raw strings `r#"…"#`,
/// byte and C strings, char literals (`'"'`) and lifetimes (`'a`).
pub(crate) fn split(source: &str) -> Lexed {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Lexed::default();
    let mut line = 1;
    let mut i = 0;
    // Appends chars[from..to] to `code` blanked (newlines kept).
    let blank = |code: &mut String, from: usize, to: usize| {
        for c in chars.get(from..to).unwrap_or_default() {
            code.push(if *c == '\n' { '\n' } else { ' ' });
        }
    };
    let at = |k: usize| chars.get(k).copied();
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    while let Some(c) = at(i) {
        let start = i;
        match (c, at(i + 1)) {
            ('/', Some('/')) => {
                while at(i).is_some_and(|c| c != '\n') {
                    i += 1;
                }
                blank(&mut out.code, start, i);
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while let Some(c) = at(i) {
                    match (c, at(i + 1)) {
                        ('/', Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        ('*', Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
                blank(&mut out.code, start, i);
            }
            ('"', _) => {
                i += 1;
                while let Some(c) = at(i) {
                    match c {
                        '\\' => i += 2,
                        '"' => break,
                        _ => i += 1,
                    }
                }
                let end = i.min(chars.len());
                let text: String = chars
                    .get(start + 1..end)
                    .unwrap_or_default()
                    .iter()
                    .collect();
                out.code.push('"');
                blank(&mut out.code, start + 1, end);
                if end < chars.len() {
                    out.code.push('"');
                }
                i = end + 1;
                out.literals.push(Literal { line, text });
            }
            ('r', Some('"' | '#'))
                if !ident(start.checked_sub(1).and_then(at)) || raw_prefix(&chars, start) =>
            {
                // r"…", r#"…"#: no escapes; ends at a quote and as many #.
                let mut hashes = 0;
                let mut k = i + 1;
                while at(k) == Some('#') {
                    hashes += 1;
                    k += 1;
                }
                if at(k) != Some('"') {
                    // `r#ident` (a raw identifier), not a string.
                    out.code.push(c);
                    i += 1;
                    continue;
                }
                let body = k + 1;
                let mut end = body;
                let closed = loop {
                    match at(end) {
                        None => break false,
                        Some('"') if (1..=hashes).all(|h| at(end + h) == Some('#')) => break true,
                        Some(_) => end += 1,
                    }
                };
                let text: String = chars.get(body..end).unwrap_or_default().iter().collect();
                i = if closed { end + 1 + hashes } else { end };
                out.code.push('r');
                blank(&mut out.code, start + 1, i);
                out.literals.push(Literal { line, text });
            }
            ('\'', next) => {
                // A char literal ('x', '\n', '\u{1F980}') or a lifetime/label.
                let end = if next == Some('\\') {
                    (i + 3..chars.len()).find(|&k| at(k) == Some('\''))
                } else if at(i + 2) == Some('\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match end {
                    Some(end) => {
                        i = end + 1;
                        blank(&mut out.code, start, i);
                    }
                    None => {
                        out.code.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                out.code.push(c);
                i += 1;
            }
        }
        line += chars
            .get(start..i.min(chars.len()))
            .unwrap_or_default()
            .iter()
            .filter(|c| **c == '\n')
            .count();
    }
    out
}

/// Splits Lua `source` as [`split`] does Rust: `--` line comments and
/// `--[[…]]` (`--[==[…]==]`) block comments, `'…'` and `"…"` with escapes
/// (ending at the line's end when unclosed), long strings `[[…]]` and
/// `[=[…]=]`.
pub(crate) fn split_lua(source: &str) -> Lexed {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Lexed::default();
    let mut line = 1;
    let mut i = 0;
    let at = |k: usize| chars.get(k).copied();
    let blank = |code: &mut String, from: usize, to: usize| {
        for c in chars.get(from..to).unwrap_or_default() {
            code.push(if *c == '\n' { '\n' } else { ' ' });
        }
    };
    // The level (number of `=`) of a long bracket opening at `k`: `[[`, `[=[`, …
    let long_open = |k: usize| {
        if at(k) != Some('[') {
            return None;
        }
        let level = (k + 1..).take_while(|&e| at(e) == Some('=')).count();
        (at(k + 1 + level) == Some('[')).then_some(level)
    };
    // Where the body of a long bracket of `level` that starts at `body`
    // ends, and where its closing bracket ends.
    let long_close = |body: usize, level: usize| {
        let mut k = body;
        loop {
            match at(k) {
                None => return (k, k),
                Some(']')
                    if (1..=level).all(|e| at(k + e) == Some('='))
                        && at(k + level + 1) == Some(']') =>
                {
                    return (k, k + level + 2);
                }
                Some(_) => k += 1,
            }
        }
    };
    while let Some(c) = at(i) {
        let start = i;
        if c == '-' && at(i + 1) == Some('-') {
            i = match long_open(i + 2) {
                Some(level) => long_close(i + 4 + level, level).1,
                None => (i..)
                    .find(|&k| at(k).is_none_or(|c| c == '\n'))
                    .unwrap_or(i),
            };
            blank(&mut out.code, start, i);
        } else if c == '\'' || c == '"' {
            let mut end = i + 1;
            while let Some(d) = at(end) {
                match d {
                    '\\' => end += 2,
                    '\n' => break,
                    d if d == c => break,
                    _ => end += 1,
                }
            }
            let end = end.min(chars.len());
            let closed = at(end) == Some(c);
            let text: String = chars
                .get(start + 1..end)
                .unwrap_or_default()
                .iter()
                .collect();
            out.code.push(c);
            blank(&mut out.code, start + 1, end);
            if closed {
                out.code.push(c);
            }
            i = if closed { end + 1 } else { end };
            out.literals.push(Literal { line, text });
        } else if let Some(level) = long_open(i) {
            let body = i + 2 + level;
            let (body_end, end) = long_close(body, level);
            let text: String = chars
                .get(body..body_end)
                .unwrap_or_default()
                .iter()
                .collect();
            blank(&mut out.code, start, end);
            i = end;
            out.literals.push(Literal { line, text });
        } else {
            out.code.push(c);
            i += 1;
        }
        line += chars
            .get(start..i.min(chars.len()))
            .unwrap_or_default()
            .iter()
            .filter(|c| **c == '\n')
            .count();
    }
    out
}

/// Whether the `r` at `at` follows a `b` or `c` that starts a token
/// (`br"…"`, `cr"…"`).
fn raw_prefix(chars: &[char], at: usize) -> bool {
    let before = at.checked_sub(1).and_then(|k| chars.get(k)).copied();
    let token_start = at
        .checked_sub(2)
        .and_then(|k| chars.get(k))
        .is_none_or(|c| !(c.is_alphanumeric() || *c == '_'));
    matches!(before, Some('b' | 'c')) && token_start
}

#[cfg(test)]
mod tests {
    use super::{Literal, split, split_lua};

    fn literals(source: &str) -> Vec<(usize, String)> {
        split(source)
            .literals
            .into_iter()
            .map(|Literal { line, text }| (line, text))
            .collect()
    }

    #[test]
    fn finds_literals_with_their_lines() {
        let source = "let a = \"one\";\n// \"not\" in a comment\nlet b = r#\"two \"q\" \n\"#;\n\
                      /* \"nor\" /* nested */ here */ let c = b\"three\\\"\";\n\
                      let d = '\"'; let e: &'static str = \"four\"; let f = '\\'';\n\
                      let g = br\"five\"; let r#type = 1; let h = \"{base}:m\";";
        assert_eq!(
            literals(source),
            [
                (1, "one"),
                (3, "two \"q\" \n"),
                (5, "three\\\""),
                (6, "four"),
                (7, "five"),
                (7, "{base}:m"),
            ]
            .map(|(line, text)| (line, text.to_owned()))
        );
    }

    #[test]
    fn code_keeps_lines_and_drops_comments_and_strings() {
        let source = "a(); // Script::new\n\"Script::new\";\n/* Script::new */ Script::new(X);";
        let lexed = split(source);
        assert_eq!(lexed.code.lines().count(), 3);
        assert_eq!(lexed.code_lines_with("Script::new"), [3]);
        assert!(lexed.code.starts_with("a(); "));
    }

    #[test]
    fn lifetimes_are_not_chars() {
        let lexed = split("fn f<'a>(x: &'a str) -> &'a str { \"s\" }");
        assert_eq!(lexed.literals.len(), 1);
        assert!(lexed.code.contains("<'a>"));
    }

    #[test]
    fn finds_lua_literals_with_their_lines() {
        let source = "-- 'not' a literal\nlocal a = 'one' .. \"two \\\" q\"\n\
                      --[[ 'nor'\n this ]] local b = [[three\n]] .. ARGV[1]\n\
                      --[==[ ]] 'still not' ]==] local c = [=[four]]=]\n\
                      local d = 'un\nlocal e = \"five\" -- 'six'\n";
        let lexed = split_lua(source);
        let found: Vec<(usize, String)> = lexed
            .literals
            .into_iter()
            .map(|Literal { line, text }| (line, text))
            .collect();
        assert_eq!(
            found,
            [
                (2, "one"),
                (2, "two \\\" q"),
                (4, "three\n"),
                (6, "four]"),
                (7, "un"),
                (8, "five"),
            ]
            .map(|(line, text)| (line, text.to_owned()))
        );
        assert_eq!(lexed.code.lines().count(), 8);
        assert!(lexed.code.contains("ARGV[1]"));
        assert!(!lexed.code.contains("not"));
    }
}
