//! Each check on small inputs: a violation is reported (with its line), a
//! clean input is not.

use super::lexer::{split, split_lua};
use super::{
    CONFORMANCE, DESIGN, KEYS, MAX_LINES, SCRIPTS, conformance_cases, feature_docs, key_literals,
    key_suffixes, long_files, script_new,
};

fn lines(problems: &[super::Problem]) -> Vec<(&str, usize)> {
    problems.iter().map(|p| (p.path.as_str(), p.line)).collect()
}

#[test]
fn script_new_only_in_scripts_rs() {
    let source = "use redis::Script;\n// Script::new in a comment\nlet s = \"Script::new\";\n\
                  let s = redis::Script::new(\"return 1\");\n";
    let found = script_new("crates/x/src/lib.rs", &split(source));
    assert_eq!(lines(&found), [("crates/x/src/lib.rs", 4)]);
    assert!(
        found[0]
            .to_string()
            .starts_with("crates/x/src/lib.rs:4: `Script::new` outside")
    );
    assert!(script_new(SCRIPTS, &split(source)).is_empty());
    assert!(script_new("crates/x/src/lib.rs", &split("let s = Script::load();")).is_empty());
}

#[test]
fn key_suffixes_come_from_keys_rs() {
    let keys = "let base = format!(\"{}{{{}}}\", p, e);\nSessionKeys { header: format!(\"{base}:h\"), \
                messages: format!(\"{base}:m\"), writes: format!(\"{base}:w\") }\n\
                pattern.push_str(\"{*}:h\");";
    assert_eq!(key_suffixes(keys).unwrap(), [":h", ":m", ":w"]);
    assert!(key_suffixes("fn nothing() {}").is_err());
}

#[test]
fn key_suffix_literals_only_in_keys_rs() {
    let suffixes = [":h".to_owned(), ":m".to_owned(), ":w".to_owned()];
    let source = "let a = \"victim:meta\";\nlet b = \"a:msgs\";\n// \"p:{s}:m\" in a comment\n\
                  let c = format!(\"{prefix}{{{id}}}:m\");\nlet d = \":h\";\nlet e = \"10:30\";\n\
                  let f = \"p@ss:w/rd\"; let g = \"{x}:mm\";\n";
    let found = key_literals("crates/x/src/lib.rs", &split(source).literals, &suffixes);
    assert_eq!(
        lines(&found),
        [("crates/x/src/lib.rs", 4), ("crates/x/src/lib.rs", 5)]
    );
    assert!(found[0].message.contains("\":m\""), "{}", found[0]);
    assert!(key_literals(KEYS, &split(source).literals, &suffixes).is_empty());
}

#[test]
fn key_suffix_literals_not_in_lua_scripts() {
    let suffixes = [":h".to_owned(), ":m".to_owned(), ":w".to_owned()];
    // What the scripts hold: keys from KEYS, the list indexes' own names,
    // the hash tag an id is decoded from, ring fields.
    let clean = "-- A script: KEYS 1 is P{E}:h, '}:m' in a comment is not a literal.\n\
                 local H, M = KEYS[1], KEYS[2]\n\
                 local id = string.match(H, '{(.*)}')\n\
                 rcall('ZADD', IX .. '}:recent', NOW, id)\n\
                 rcall('HDEL', W, 'k:' .. old, 'g:' .. wevict)\n";
    let path = "crates/x/src/scripts/a.lua";
    assert!(key_literals(path, &split_lua(clean).literals, &suffixes).is_empty());
    let built = "local H = KEYS[1]\nlocal M = string.gsub(H, '}:h$', '')\n\
                 local W = IX .. \"}:w\"\nlocal X = [[p:{s}:m]]\n";
    let found = key_literals(path, &split_lua(built).literals, &suffixes);
    assert_eq!(
        lines(&found),
        [(path, 2), (path, 3), (path, 4)],
        "{found:#?}"
    );
}

#[test]
fn every_feature_has_a_doc_line_above() {
    let manifest = "[package]\nname = \"x\"\n\n[features]\ndefault = [\"a\"]\n\
                    ## What a enables.\na = []\n# not a doc line\nb = [\"dep:y\"]\n\
                    ## Spans lines.\nc = [\n  \"a\",\n  \"b\",\n]\nd = []\n\n[dependencies]\n\
                    y = { version = \"1\", optional = true }\n";
    let found = feature_docs("crates/x/Cargo.toml", manifest);
    assert_eq!(
        lines(&found),
        [("crates/x/Cargo.toml", 9), ("crates/x/Cargo.toml", 15)]
    );
    assert!(found[0].message.contains("feature `b`"), "{}", found[0]);
    assert!(found[1].message.contains("feature `d`"), "{}", found[1]);
    let clean = "[features]\ndefault = []\n## One.\n## Two lines of it.\nb = []\n";
    assert!(feature_docs("crates/x/Cargo.toml", clean).is_empty());
}

#[test]
fn conformance_cases_match_the_design_table() {
    let design = "# Design\n\n| rule | conformance case |\n|---|---|\n\
                  | `append` appends | `appends`, `gone` |\n| reads | `reads` |\n\n\
                  Not a case: `other_test`.\n";
    let conformance = "macro_rules! __conformance_with_cases {\n    (x) => {\n        \
                       appends,\n        reads,\n        unlisted_elsewhere,\n    };\n}\n\
                       pub async fn appends(store: Arc<dyn Store>) {}\n\
                       pub async fn reads(store: Arc<dyn Store>) {}\n\
                       pub async fn undocumented(store: Arc<dyn Store>) {}\n\
                       pub async fn run_all<S>(make: S) {}\n";
    let module = "pub async fn in_a_module(store: Arc<dyn Store>) {}\n";
    let files = [
        (CONFORMANCE.to_owned(), conformance.to_owned()),
        (
            "crates/statestore-core/src/conformance/m.rs".to_owned(),
            module.to_owned(),
        ),
    ];
    let found = conformance_cases(design, &files);
    let got: Vec<(&str, usize, bool)> = found
        .iter()
        .map(|p| (p.path.as_str(), p.line, p.message.contains("not named in")))
        .collect();
    assert_eq!(
        got,
        [
            (DESIGN, 5, false),       // `gone`: no such case
            (CONFORMANCE, 10, true),  // `undocumented` not in the table
            (CONFORMANCE, 10, false), // … nor in the list
            // A case in a module of the suite is held to the same rules.
            ("crates/statestore-core/src/conformance/m.rs", 1, true),
            ("crates/statestore-core/src/conformance/m.rs", 1, false),
            (CONFORMANCE, 5, false), // listed without a function
        ],
        "{found:#?}"
    );
    let clean_design = "| rule | conformance case |\n|---|---|\n| r | `appends` |\n";
    let clean = "macro_rules! __conformance_with_cases {\n        appends,\n}\n\
                 pub async fn appends(store: Arc<dyn Store>) {}\n";
    let clean = [(CONFORMANCE.to_owned(), clean.to_owned())];
    assert!(conformance_cases(clean_design, &clean).is_empty());
    assert_eq!(
        lines(&conformance_cases("# no table\n", &clean)),
        [(DESIGN, 1)]
    );
}

#[test]
fn long_files_need_a_reason() {
    let mut files: Vec<(String, usize)> = super::LONG_FILES
        .iter()
        .map(|(path, _)| ((*path).to_owned(), MAX_LINES + 100))
        .collect();
    files.push(("crates/x/src/short.rs".into(), MAX_LINES));
    assert!(long_files(&files).is_empty());

    files.push(("crates/x/src/long.rs".into(), MAX_LINES + 1));
    let found = long_files(&files);
    assert_eq!(lines(&found), [("crates/x/src/long.rs", MAX_LINES + 1)]);
    assert!(
        found[0].message.starts_with("601 lines, over 600"),
        "{}",
        found[0]
    );

    // An entry whose file shrank, or went away, is reported.
    files.pop();
    if let Some(first) = files.first_mut() {
        first.1 = 10;
    }
    let found = long_files(&files);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .message
            .contains("but 10 lines now: remove the entry")
    );
    files.remove(0);
    let found = long_files(&files);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].message.contains("but gone: remove the entry"));
}
