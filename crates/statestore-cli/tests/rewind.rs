//! `statestore rewind`, `branch` and `chat --regenerate/--edit`, run as a
//! binary on SQLite with the offline model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use common::Env;

fn messages(env: &Env, url: &str, id: &str) -> usize {
    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["--store", url, "--json", "show", id])).unwrap();
    doc["messages"].as_array().map_or(0, Vec::len)
}

#[test]
fn rewind_branch_regenerate_and_edit() {
    let env = Env::new();
    let url = env.sqlite("r.db");
    for text in ["one", "two", "three"] {
        env.ok(&["--store", &url, "chat", "--session", "s", text]);
    }
    assert_eq!(messages(&env, &url, "s"), 6);

    // A branch at turn 1; the original keeps its three turns.
    let out = env.ok(&["--store", &url, "branch", "s", "s-b", "--at-turn", "1"]);
    assert_eq!(out, "branched \"s\" at turn 1 into \"s-b\" (2 messages)\n");
    assert_eq!(
        (messages(&env, &url, "s"), messages(&env, &url, "s-b")),
        (6, 2)
    );
    let taken = env.run(&["--store", &url, "branch", "s", "s-b", "--at-turn", "1"]);
    taken.assert_code(1);

    // Back to the end of turn 2.
    let out = env.ok(&["--store", &url, "rewind", "s", "--to-turn", "2"]);
    assert!(
        out.starts_with("rewound \"s\" to the end of turn 2 (4 messages kept"),
        "{out}"
    );
    assert_eq!(messages(&env, &url, "s"), 4);
    let too_far = env.run(&["--store", &url, "rewind", "s", "--to-turn", "5"]);
    too_far.assert_code(1);
    assert!(
        too_far.stderr.contains("has 2 stored turns, not 5"),
        "{}",
        too_far.stderr
    );

    // The last turn asked again, then edited: still two turns.
    env.ok(&["--store", &url, "chat", "--session", "s", "--regenerate"]);
    assert_eq!(messages(&env, &url, "s"), 4);
    env.ok(&[
        "--store",
        &url,
        "chat",
        "--session",
        "s",
        "--edit",
        "TWO, edited",
    ]);
    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["--store", &url, "--json", "show", "s"])).unwrap();
    let texts: Vec<&str> = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(texts.len(), 4, "{doc}");
    assert_eq!(texts[2], "TWO, edited");
    let bad = env.run(&[
        "--store",
        &url,
        "chat",
        "--session",
        "s",
        "--regenerate",
        "extra",
    ]);
    bad.assert_code(2);
}

/// `list --recent`: newest activity first, with the titles `chat` gives.
#[test]
fn list_recent_shows_titles_newest_first() {
    let env = Env::new();
    let url = env.sqlite("l.db");
    for (session, text) in [("a", "Plan a trip to Oslo"), ("b", "Tax questions")] {
        env.ok(&["--store", &url, "chat", "--session", session, text]);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let ids = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str(), "list", "--ids-only"];
        all.extend_from_slice(args);
        env.ok(&all)
    };
    assert_eq!(ids(&["--recent"]), "b\na\n", "newest first");
    assert_eq!(ids(&[]), "a\nb\n", "by id");
    let table = env.ok(&["--store", &url, "list", "--recent"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with("TITLE"), "{table}");
    assert!(
        lines[1].starts_with("b ") && lines[1].ends_with("Tax questions"),
        "{table}"
    );
    assert!(lines[2].ends_with("Plan a trip to Oslo"), "{table}");
    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["--store", &url, "--json", "list", "--recent"])).unwrap();
    assert_eq!(doc["sessions"][0]["title"], "Tax questions");
}
