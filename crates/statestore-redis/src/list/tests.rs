//! Unit tests of the cursor and the window logic.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use super::*;

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn refused(text: &str, of: u64) -> String {
    match State::parse(text, of) {
        Err(ListError::Store(Error::InvalidCursor { reason })) => reason,
        Err(ListError::Store(e)) => panic!("{text}: {e}"),
        Err(ListError::Client(_)) => panic!("{text}: a client error"),
        Ok(state) => panic!("{text} accepted: {state:?}"),
    }
}

#[test]
fn a_cursor_round_trips() {
    let of = listing_fingerprint("app:", Some("alice"));
    let mut state = State::start();
    for id in ["b", "a", "c", "a"] {
        state.keep(sid(id), 10);
    }
    state.after = Some(sid("0"));
    let text = serde_json::to_string(&state.to_cursor(of)).unwrap();
    assert_eq!(State::parse(&text, of).unwrap(), state);
}

#[test]
fn foreign_stale_and_edited_cursors_are_invalid_cursors() {
    let of = listing_fingerprint("app:", None);
    let good = |edit: &dyn Fn(&mut Cursor)| {
        let mut cursor = State::start().to_cursor(of);
        edit(&mut cursor);
        serde_json::to_string(&cursor).unwrap()
    };
    // Another backend's cursor (the memory store's is the last id),
    // garbage, JSON of another shape.
    for text in [
        "conv-05",
        "",
        "[]",
        "42",
        r#"{"v":2}"#,
        r#"{"v":2,"of":1,"x":0}"#,
    ] {
        assert!(refused(text, of).starts_with("not a cursor"), "{text}");
    }
    // The first format, including its first-page cursor.
    for text in [
        r#"{"node":1,"addr":"127.0.0.1:7001","scan":96,"done":false,"pending":["a"]}"#,
        r#"{"done":true,"pending":[]}"#,
        "{}",
    ] {
        assert!(refused(text, of).contains("earlier version"), "{text}");
    }
    // Another listing: another prefix, or another user filter.
    let other_prefix = listing_fingerprint("other:", None);
    let alice = listing_fingerprint("app:", Some("alice"));
    let bob = listing_fingerprint("app:", Some("bob"));
    for of in [other_prefix, alice, bob] {
        assert!(refused(&good(&|_| {}), of).contains("another listing"));
    }
    assert_ne!(alice, bob);
    assert!(refused(&good(&|c| c.v = 1), of).contains("version 1"));
    // Edited: ids unsorted, repeated, not above the last id, not ids.
    for edit in [
        &|c: &mut Cursor| c.ids = vec!["b".into(), "a".into()] as Vec<String>,
        &|c: &mut Cursor| c.ids = vec!["a".into(), "a".into()],
        &|c: &mut Cursor| {
            c.after = Some("b".into());
            c.ids = vec!["b".into()];
        },
        &|c: &mut Cursor| {
            c.after = Some("b".into());
            c.ids = vec!["a".into(), "c".into()];
        },
    ] as [&dyn Fn(&mut Cursor); 4]
    {
        assert!(refused(&good(edit), of).contains("not sorted above its last id"));
    }
    assert!(refused(&good(&|c| c.ids = vec![String::new()]), of).contains("id"));
    assert!(refused(&good(&|c| c.after = Some("\n".into())), of).contains("id"));
}

#[test]
fn a_window_keeps_the_smallest_ids_above_the_last_one_once_each() {
    let mut state = State::start();
    state.after = Some(sid("c"));
    // As SCAN might return them: in hash order, some twice.
    for id in ["x", "a", "d", "c", "e", "d", "z", "b", "f", "e"] {
        state.keep(sid(id), 3);
    }
    let window: Vec<&str> = state.window.iter().map(SessionId::as_str).collect();
    assert_eq!(window, ["d", "e", "f"]);
    assert!(state.more, "x and z did not fit");

    // Pages of 2: d e, then f, then a new pass after f.
    state.pass = None;
    let mut page = Vec::new();
    assert!(state.take_page(2, &mut page));
    assert_eq!(page, [sid("d"), sid("e")]);
    let mut page = Vec::new();
    assert!(state.take_page(2, &mut page));
    assert_eq!(page, [sid("f")]);
    assert_eq!(state.pass, Some(Pass::START));
    assert_eq!(state.after, Some(sid("f")));
    assert!(!state.more);
    // The next pass sees everything again and keeps only what is new.
    for id in ["x", "a", "d", "c", "e", "d", "z", "b", "f", "e"] {
        state.keep(sid(id), 3);
    }
    state.pass = None;
    let mut page = Vec::new();
    assert!(!state.take_page(5, &mut page), "the listing ends");
    assert_eq!(page, [sid("x"), sid("z")]);
}

#[test]
fn a_smaller_window_than_the_cursor_carries_overflows() {
    let mut state = State::start();
    for id in ["a", "b", "c"] {
        state.keep(sid(id), 10);
    }
    assert!(!state.more);
    state.fit(2);
    assert!(state.more);
    assert_eq!(state.window.len(), 2);
    assert_eq!(state.window.last(), Some(&sid("b")));
}
