//! What the backend holds: none of a set of planted secrets, written
//! through every write path, appears in plaintext — in the memory store's
//! raw state, in every Redis key (dumped and read by type), or in the
//! SQLite file and its WAL. A control run without the layer finds every
//! secret the same way, so the searches are known to work.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code"
)]

mod support;

use std::sync::Arc;

use statestore_core::{
    Append, ContentPart, ConversationState, Expect, IdempotencyKey, Message, Metadata, Store,
    Summary, ToolCall,
};
use support::sid;

const SECRETS: &[&str] = &[
    "SECRET-USER-TEXT",
    "SECRET-PART-TEXT",
    "SECRET-TOOL-ARG",
    "SECRET-TOOL-RESULT",
    "SECRET-PARTICIPANT",
    "SECRET-MSG-META",
    "SECRET-SUMMARY",
    "SECRET-PROMPT",
    "SECRET-SESSION-META",
    "SECRET-IN-LONG-REPLY",
    "SECRET-APPENDED",
    "SECRET-MERGED",
    "SECRET-ADDED-SUMMARY",
];

/// Writes every secret through `store`, by every write path.
async fn plant(store: &dyn Store) {
    let id = sid("alice-health");
    let mut meta = Metadata::new();
    meta.insert("diagnosis".into(), "SECRET-SESSION-META".into());
    let long = format!(
        "{} SECRET-IN-LONG-REPLY {}",
        "Here is a long, compressible answer. ".repeat(40),
        "And more of it. ".repeat(40)
    );
    let mut state = ConversationState::new(id.clone())
        .with_user_id("alice")
        .with_system_prompt("You are a doctor. SECRET-PROMPT")
        .with_messages([
            Message::user("my name is SECRET-USER-TEXT").with_name("SECRET-PARTICIPANT"),
            Message::user(vec![
                ContentPart::text("look: SECRET-PART-TEXT"),
                ContentPart::image_url("https://example.invalid/x.png"),
            ]),
            Message::assistant("").with_tool_calls(vec![ToolCall::new(
                "call_1",
                "lookup",
                r#"{"card":"SECRET-TOOL-ARG"}"#,
            )]),
            Message::tool("call_1", r#"{"result":"SECRET-TOOL-RESULT"}"#),
            Message::assistant(long).with_metadata("note", "SECRET-MSG-META"),
        ]);
    state.metadata = meta;
    state
        .summaries
        .push(Summary::new(0..2, "user said SECRET-SUMMARY"));
    store.save(&state, Expect::Any).await.unwrap();
    store
        .append_with(
            &id,
            Append::new([Message::user("SECRET-APPENDED")])
                .key(IdempotencyKey::new("turn-1").unwrap())
                .count("tokens", 5),
        )
        .await
        .unwrap();
    let mut patch = Metadata::new();
    patch.insert("merged".into(), "SECRET-MERGED".into());
    store.merge_metadata(&id, patch, Expect::Any).await.unwrap();
    store
        .add_summary(&id, Summary::new(0..4, "SECRET-ADDED-SUMMARY"), Expect::Any)
        .await
        .unwrap();
    store.fork(&id, &sid("alice-health-copy")).await.unwrap();
    // And everything reads back.
    let copy = store
        .load(&sid("alice-health-copy"))
        .await
        .unwrap()
        .unwrap();
    let shown = format!("{copy:?}");
    for secret in SECRETS {
        assert!(shown.contains(secret), "{secret} does not read back");
    }
}

fn found_in(haystack: &[u8]) -> Vec<&'static str> {
    SECRETS
        .iter()
        .copied()
        .filter(|s| haystack.windows(s.len()).any(|w| w == s.as_bytes()))
        .collect()
}

#[tokio::test]
async fn the_memory_store_holds_no_secret() {
    let plain = support::memory();
    plant(&support::encrypted(Arc::clone(&plain))).await;
    let mut raw = Vec::new();
    for id in ["alice-health", "alice-health-copy"] {
        let state = plain.load(&sid(id)).await.unwrap().unwrap();
        raw.extend(serde_json::to_vec(&state).unwrap());
        raw.extend(format!("{state:?}").into_bytes());
    }
    assert_eq!(found_in(&raw), Vec::<&str>::new());

    let control = support::memory();
    plant(&*control).await;
    let state = control.load(&sid("alice-health")).await.unwrap().unwrap();
    assert_eq!(
        found_in(&serde_json::to_vec(&state).unwrap()).len(),
        SECRETS.len()
    );
}

/// Every key on the server: `DUMP` (the serialized value) and its content
/// read by type.
async fn redis_bytes(url: &str) -> Vec<u8> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let mut out = Vec::new();
    for key in keys {
        out.extend(key.as_bytes());
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        out.extend(dump);
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "list" => {
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut con)
                    .await
            }
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut con).await,
            // The list indexes: session and user ids, as the key names.
            "zset" => {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut con)
                    .await
            }
            "string" => redis::cmd("GET")
                .arg(&key)
                .query_async(&mut con)
                .await
                .map(|v: Vec<u8>| vec![v]),
            other => panic!("unexpected key type {other}"),
        }
        .unwrap();
        values.into_iter().for_each(|v| out.extend(v));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_hold_no_secret() {
    let server = support::redis_server();
    let url = server.url();
    plant(&support::encrypted(support::redis_store(&url).await)).await;
    assert_eq!(found_in(&redis_bytes(&url).await), Vec::<&str>::new());

    let control = support::redis_server();
    plant(&*support::redis_store(&control.url()).await).await;
    assert_eq!(
        found_in(&redis_bytes(&control.url()).await).len(),
        SECRETS.len()
    );
}

/// Every file in the store's directory (the database, `-wal`, `-shm`).
fn dir_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        out.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_and_its_wal_hold_no_secret() {
    for encrypt in [true, false] {
        let sqlite = support::Sqlite::open().await;
        let dir = sqlite.dir.path().to_owned();
        let store = Arc::new(sqlite);
        if encrypt {
            plant(&support::encrypted(store.clone())).await;
        } else {
            plant(&*store).await;
        }
        // While open: the WAL holds the recent writes.
        let open = found_in(&dir_bytes(&dir));
        // Closed: the last connection checkpoints the WAL into the file.
        let Ok(sqlite) = Arc::try_unwrap(store) else {
            panic!("the store is still shared")
        };
        let support::Sqlite { store, dir: tmp } = sqlite;
        drop(store);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let closed = found_in(&dir_bytes(tmp.path()));
        drop(tmp);
        if encrypt {
            assert_eq!(open, Vec::<&str>::new(), "while open");
            assert_eq!(closed, Vec::<&str>::new(), "after closing");
        } else {
            assert_eq!(closed.len(), SECRETS.len(), "control: {closed:?}");
        }
    }
}

/// Encrypting a plaintext SQLite store in place (what `rotate-keys
/// --encrypt-plaintext` does) leaves none of the old plaintext in the
/// file's free pages or freed cells, nor in the WAL after a checkpoint:
/// the store runs with `secure_delete`. Checked on the bytes of every
/// file while the store is open (after `wal_checkpoint(TRUNCATE)`) and
/// after it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypting_a_sqlite_store_in_place_leaves_no_plaintext_behind() {
    let sqlite = support::Sqlite::open().await;
    let path = sqlite.path();
    let dir = sqlite.dir.path().to_owned();
    let store = Arc::new(sqlite);
    plant(&*store).await;
    // Control: the plaintext is there before.
    checkpoint(&path);
    assert_eq!(found_in(&dir_bytes(&dir)).len(), SECRETS.len(), "control");

    let layer = statestore_crypto::Encrypted::builder(store.clone(), support::ring("k1", 1))
        .accept_plaintext(true)
        .build();
    let report = layer
        .rotate_all(statestore_crypto::RotateOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.sessions, 2);
    // Every value reads back through a layer that refuses plaintext.
    let strict = support::encrypted(store.clone());
    let copy = strict
        .load(&sid("alice-health-copy"))
        .await
        .unwrap()
        .unwrap();
    assert!(format!("{copy:?}").contains("SECRET-APPENDED"));
    drop((layer, strict));

    checkpoint(&path);
    assert_eq!(
        found_in(&dir_bytes(&dir)),
        Vec::<&str>::new(),
        "while open, after a checkpoint"
    );
    let Ok(sqlite) = Arc::try_unwrap(store) else {
        panic!("the store is still shared")
    };
    let support::Sqlite { store, dir: tmp } = sqlite;
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        found_in(&dir_bytes(tmp.path())),
        Vec::<&str>::new(),
        "after closing"
    );
}

/// Copies the WAL into the database file and truncates it, from a
/// connection of its own (as an operator's `sqlite3` would).
fn checkpoint(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(busy, 0, "the checkpoint was blocked");
}
