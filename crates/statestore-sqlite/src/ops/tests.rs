//! The statements of a turn, as the `Statements` section of
//! [`crate::schema`] describes them: each prepared once per connection and
//! never again, each a lookup through a key or an index.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, StatementStatus};
use statestore_core::codec::Limits;
use statestore_core::{Counters, Expect, IdempotencyKey, Message, Metadata, SessionId};

use super::{AppendArgs, Config, encode_messages, now_ms};
use crate::error::OpCtx;

const TURNS: u64 = 5;

/// Every statement of a turn, on the connection (`writer` or not) it runs on.
const STATEMENTS: &[(bool, &str)] = &[
    // `load_recent` with a key to look up.
    (
        false,
        "SELECT user_id, version, message_count, summary_count, system_prompt, metadata,
             counters, created_at, updated_at, last_accessed_at
         FROM sessions WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
    ),
    (
        false,
        "SELECT position, body FROM messages WHERE session = ?1 AND position >= ?2
             ORDER BY position",
    ),
    (
        false,
        "SELECT body FROM summaries WHERE session = ?1 ORDER BY idx",
    ),
    (
        false,
        "SELECT version, first_position, count FROM writes WHERE session = ?1 AND key = ?2",
    ),
    (
        false,
        "SELECT body FROM pending WHERE session = ?1 AND key = ?2
             AND (expires_at IS NULL OR expires_at > ?3)",
    ),
    // A keyed `append`, and the batch's sweep.
    (
        true,
        "SELECT version, message_count, summary_count, write_seq, expires_at
             FROM sessions WHERE id = ?1",
    ),
    (
        true,
        "SELECT version, first_position, count FROM writes WHERE session = ?1 AND key = ?2",
    ),
    (
        true,
        "UPDATE sessions SET version = version + 1, updated_at = ?2,
                 last_accessed_at = max(last_accessed_at, ?2),
                 expires_at = CASE WHEN ?3 IS NULL THEN expires_at ELSE ?3 END,
                 message_count = coalesce(?4, message_count)
             WHERE id = ?1",
    ),
    (
        true,
        "INSERT INTO messages (session, position, body) VALUES (?1, ?2, ?3)",
    ),
    (true, "DELETE FROM pending WHERE session = ?1 AND key = ?2"),
    (true, "DELETE FROM writes WHERE session = ?1 AND seq <= ?2"),
    (
        true,
        "SELECT id FROM sessions WHERE expires_at IS NOT NULL AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
    ),
    (
        true,
        "SELECT session, key FROM pending WHERE expires_at IS NOT NULL AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
    ),
];

fn open(path: &std::path::Path, ctx: &OpCtx) -> Connection {
    let mut conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    crate::schema::prepare(&mut conn, ctx).unwrap();
    crate::schema::tune(&conn, ctx).unwrap();
    conn
}

#[test]
fn a_turns_statements_are_prepared_once_and_use_keys_or_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.sqlite3");
    let ctx = OpCtx {
        op: "test",
        id: SessionId::new("s").unwrap(),
        busy: Duration::from_secs(5),
        path: Arc::from(path.as_path()),
    };
    let cfg = Config {
        // With a TTL, so that the reads' expiry conditions are live.
        ttl: Some(Duration::from_secs(3_600)),
        limits: Limits::none(),
    };
    let writer = open(&path, &ctx);
    let mut reader = open(&path, &ctx);
    for turn in 0..=TURNS {
        let key = IdempotencyKey::new(format!("k{turn}")).unwrap();
        if turn > 0 {
            let tx = reader.transaction().unwrap();
            let recent = super::load_recent(&tx, &ctx, now_ms(), 20, Some(&key)).unwrap();
            assert!(recent.is_some());
            tx.finish().unwrap();
        }
        let messages = [Message::user("hello"), Message::assistant("hi")];
        let args = AppendArgs {
            bodies: encode_messages(&ctx.id, &cfg.limits, messages.iter()).unwrap(),
            expect: Expect::Any,
            key: Some(key),
            counters: Counters::new(),
            metadata: Metadata::new(),
        };
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        super::append(&writer, &ctx, &cfg, args).unwrap();
        super::sweep(&writer, &ctx, 16).unwrap();
        writer.execute_batch("COMMIT").unwrap();
    }
    for (on_writer, text) in STATEMENTS {
        let conn = if *on_writer { &writer } else { &reader };
        let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {text}")).unwrap();
        let steps: Vec<String> = plan
            .query_map(
                rusqlite::params_from_iter((0..plan.parameter_count()).map(|_| 0)),
                |r| r.get(3),
            )
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for step in &steps {
            assert!(
                !step.starts_with("SCAN") && !step.contains("TEMP B-TREE"),
                "{text}: {steps:?}"
            );
        }
        let st = conn.prepare_cached(text).unwrap();
        // The cached statement the operations ran, not a new one.
        assert!(
            st.get_status(StatementStatus::Run) >= i32::try_from(TURNS).unwrap(),
            "not run by the turns (the operation's SQL changed?): {text}"
        );
        assert_eq!(
            st.get_status(StatementStatus::RePrepare),
            0,
            "prepared again: {text}"
        );
    }
}
