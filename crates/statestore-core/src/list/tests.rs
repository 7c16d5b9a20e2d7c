//! Unit tests of the cursor, the order and the filters.

use super::*;

fn info(id: &str, ms: u64) -> SessionInfo {
    SessionInfo::new(
        SessionId::new(id).expect("id"),
        Timestamp::from_unix_millis(ms),
    )
}

#[test]
fn cursors_round_trip_and_refuse_the_other_order() {
    let s = info("a:b:c", 42);
    for order in [ListOrder::Id, ListOrder::Recent] {
        let cursor = ListCursor::of(&s, order);
        assert_eq!(
            ListCursor::decode(&cursor.encode(), order).expect("decodes"),
            cursor
        );
    }
    let recent = ListCursor::of(&s, ListOrder::Recent).encode();
    assert_eq!(recent, "r:42:a:b:c");
    for bad in [recent.as_str(), "", "x", "q:1", "i:"] {
        assert!(matches!(
            ListCursor::decode(bad, ListOrder::Id),
            Err(Error::InvalidCursor { .. })
        ));
    }
    for bad in ["i:a", "r:x:a", "r:1", "r:1:"] {
        assert!(ListCursor::decode(bad, ListOrder::Recent).is_err(), "{bad}");
    }
}

#[test]
fn recent_order_is_newest_first_then_id_descending() {
    let mut all = [info("a", 5), info("b", 9), info("c", 5), info("d", 1)];
    all.sort_by(|a, b| ListOrder::Recent.compare(a, b));
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["b", "c", "a", "d"]);
    let cursor = ListCursor::of(&all[1], ListOrder::Recent);
    let after: Vec<&str> = all
        .iter()
        .filter(|s| cursor.precedes(s))
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(after, ["a", "d"]);
}

#[test]
fn filters_admit_by_user_time_and_metadata() {
    let s = info("a", 10)
        .with_user(Some("alice".into()))
        .created_at(Timestamp::from_unix_millis(3));
    let mut meta = Metadata::new();
    meta.insert("project".into(), "apollo".into());
    let t = Timestamp::from_unix_millis;
    assert!(ListQuery::for_user("alice").admits(&s, &meta));
    assert!(!ListQuery::for_user("bob").admits(&s, &meta));
    assert!(
        ListQuery::new()
            .updated(TimeRange::between(t(10), t(11)))
            .admits(&s, &meta)
    );
    assert!(
        !ListQuery::new()
            .updated(TimeRange::before(t(10)))
            .admits(&s, &meta)
    );
    assert!(
        !ListQuery::new()
            .created(TimeRange::since(t(4)))
            .admits(&s, &meta)
    );
    assert!(
        ListQuery::new()
            .where_metadata("project", "apollo")
            .admits(&s, &meta)
    );
    assert!(
        !ListQuery::new()
            .where_metadata("project", "gemini")
            .admits(&s, &meta)
    );
    assert!(
        !ListQuery::new()
            .where_metadata("team", "x")
            .admits(&s, &meta)
    );
}
