//! `--keys` (encryption at rest through every command) and `rotate-keys`,
//! on SQLite and on Redis: what the backend holds, rotation end to end,
//! encrypting a plaintext store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::path::PathBuf;

use common::redis::RedisServer;
use common::{Env, RICH, export_file};

/// A key file in the scratch dir (mode 600, so no warning): `lines` of
/// `(id, byte, current)`, each key 32 times `byte`.
fn key_file(env: &Env, name: &str, lines: &[(&str, u8, bool)]) -> String {
    let mut text = String::from("# test keys\n");
    for (id, byte, current) in lines {
        let hex = format!("{byte:02x}").repeat(32);
        let tail = if *current { " current" } else { "" };
        text.push_str(&format!("{id} hex:{hex}{tail}\n"));
    }
    let path: PathBuf = env.path(name);
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path.display().to_string()
}

/// Makes `path` readable by its owner alone, as key files must be.
fn private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs the binary on `url` with `keys` (a key file) when given.
fn on(env: &Env, url: &str, keys: Option<&str>, args: &[&str]) -> common::Run {
    let mut all = vec!["--store", url];
    if let Some(keys) = keys {
        all.extend(["--keys", keys]);
    }
    all.extend_from_slice(args);
    env.run(&all)
}

fn ok(env: &Env, url: &str, keys: Option<&str>, args: &[&str]) -> String {
    let run = on(env, url, keys, args);
    run.assert_code(0);
    run.stdout
}

/// The secrets planted in every part of a session that is encrypted.
const SECRETS: [&str; 7] = [
    "PLANT-TEXT-7731",
    "PLANT-ARGS-5521",
    "PLANT-SYSTEM-9902",
    "PLANT-META-3381",
    "PLANT-SUMMARY-4410",
    "PLANT-TOOL-2207",
    "PLANT-CHAT-1234",
];

/// An export file of `ids` whose message texts, tool arguments and
/// results, system prompts, metadata values and summaries hold secrets.
fn planted_file(ids: &[String]) -> String {
    export_file(ids, RICH)
        .replace("lorem ipsum", SECRETS[0])
        .replace("Paris", SECRETS[1])
        .replace("You are terse.", SECRETS[2])
        .replace(r#""plan":"pro""#, &format!(r#""plan":"{}""#, SECRETS[3]))
        .replace("asked about the weather", SECRETS[4])
        .replace("celsius", SECRETS[5])
}

/// Seeds `url` with three planted sessions (import) and one chat whose
/// message and echoed reply hold a secret.
fn seed(env: &Env, url: &str, keys: Option<&str>) {
    let ids: Vec<String> = ["alice-1", "alice-2", "bob-1"].map(str::to_owned).to_vec();
    let file = env.path("planted.jsonl");
    std::fs::write(&file, planted_file(&ids)).unwrap();
    ok(env, url, keys, &["import", file.to_str().unwrap()]);
    let text = format!("remember {}", SECRETS[6]);
    ok(env, url, keys, &["chat", "--session", "chat-1", &text]);
}

/// Which of the secrets `bytes` contains.
fn found(bytes: &[u8]) -> Vec<&'static str> {
    SECRETS
        .iter()
        .copied()
        .filter(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
        .collect()
}

/// The SQLite file's bytes and its `-wal` and `-shm` files', as left after
/// the CLI exited.
fn sqlite_bytes(env: &Env, name: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(b) = std::fs::read(env.path(&format!("{name}{suffix}"))) {
            bytes.extend(b);
        }
    }
    assert!(!bytes.is_empty(), "no database file {name}");
    bytes
}

/// Every value of every key on the server, read by type with redis-cli.
fn redis_bytes(server: &RedisServer) -> Vec<u8> {
    let keys = server.cli(&["--raw", "--scan"]).unwrap();
    assert!(!keys.trim().is_empty(), "no keys on the server");
    let mut out = String::new();
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let kind = server.cli(&["--raw", "TYPE", key]).unwrap();
        let value = match kind.trim() {
            "string" => server.cli(&["--raw", "GET", key]),
            "list" => server.cli(&["--raw", "LRANGE", key, "0", "-1"]),
            "hash" => server.cli(&["--raw", "HGETALL", key]),
            "zset" => server.cli(&["--raw", "ZRANGE", key, "0", "-1", "WITHSCORES"]),
            "set" => server.cli(&["--raw", "SMEMBERS", key]),
            other => panic!("key {key} of type {other}"),
        }
        .unwrap();
        out.push_str(key);
        out.push('\n');
        out.push_str(&value);
        out.push('\n');
    }
    out.into_bytes()
}

/// Plants secrets with and without `--keys`: the backend (read by `raw`)
/// and `export --encrypted` hold none with, all without; the plaintext
/// export and `show` still have them; `import --encrypted` restores the
/// ciphertext export.
fn planted(env: &Env, url: &str, fresh: &str, raw: &dyn Fn() -> Vec<u8>, control: &str) {
    let keys = key_file(env, "keys", &[("k1", 1, true)]);
    let keys = Some(keys.as_str());
    seed(env, url, keys);
    let leaked = found(&raw());
    assert!(
        leaked.is_empty(),
        "the backend holds {leaked:?} in plaintext"
    );

    // A plaintext export is a readable backup: every secret is in it.
    let plain = ok(env, url, keys, &["export"]);
    assert_eq!(found(plain.as_bytes()), SECRETS.to_vec());
    assert!(ok(env, url, keys, &["show", "alice-1"]).contains(SECRETS[4]));

    // The ciphertext export has none, and restores to an equal store.
    let sealed = ok(env, url, keys, &["export", "--encrypted"]);
    assert!(found(sealed.as_bytes()).is_empty(), "{sealed}");
    assert!(sealed.contains("alice-1"), "{sealed}");
    let run = on(env, url, None, &["export", "--encrypted"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--keys"), "{}", run.stderr);
    let file = env.path("sealed.jsonl");
    std::fs::write(&file, &sealed).unwrap();
    ok(
        env,
        fresh,
        keys,
        &["import", "--encrypted", file.to_str().unwrap()],
    );
    assert_eq!(ok(env, fresh, keys, &["export"]), plain);

    // The control: the same without --keys leaves every secret readable,
    // so the checks above can fail.
    seed(env, control, None);
    assert_eq!(found(&raw()), SECRETS.to_vec());
}

#[test]
fn planted_secrets_never_reach_the_sqlite_file() {
    let env = Env::new();
    let (url, fresh) = (env.sqlite("enc.db"), env.sqlite("fresh.db"));
    // The control writes to another file; `raw` reads whichever `planted`
    // is checking: the encrypted one first, the control after.
    let control = env.sqlite("plain.db");
    let checked = std::cell::Cell::new("enc.db");
    let raw = || {
        let bytes = sqlite_bytes(&env, checked.get());
        checked.set("plain.db");
        bytes
    };
    planted(&env, &url, &fresh, &raw, &control);
}

#[test]
fn planted_secrets_never_reach_redis() {
    let server = RedisServer::start().unwrap();
    let plain_server = RedisServer::start().unwrap();
    let env = Env::new();
    let url = format!("{}?prefix=app:", server.url());
    let fresh = format!("{}?prefix=fresh:", server.url());
    let control = format!("{}?prefix=plain:", plain_server.url());
    let checked = std::cell::Cell::new(&server);
    let raw = || {
        let bytes = redis_bytes(checked.get());
        checked.set(&plain_server);
        bytes
    };
    planted(&env, &url, &fresh, &raw, &control);
}

/// Sessions written under k1; k2 made current; `rotate-keys`; then k2
/// alone reads everything as before and k1 alone fails, naming k2.
fn rotation(env: &Env, url: &str) {
    let k1 = key_file(env, "k1", &[("k1", 1, true)]);
    let both = key_file(env, "k1k2", &[("k1", 1, false), ("k2", 2, true)]);
    let k2 = key_file(env, "k2", &[("k2", 2, true)]);
    seed(env, url, Some(&k1));
    let before = ok(env, url, Some(&k1), &["export"]);
    let shown = ok(env, url, Some(&k1), &["show", "alice-2"]);

    // Nothing is under k2 yet: k2 alone cannot read, and says which key.
    let run = on(env, url, Some(&k2), &["show", "alice-2"]);
    run.assert_code(1);
    assert!(run.stderr.contains(r#"key "k1""#), "{}", run.stderr);

    let doc = on(env, url, Some(&both), &["--json", "rotate-keys"]).json();
    assert_eq!(doc["current_key"], "k2");
    assert_eq!(doc["sessions"], 4);
    assert_eq!(doc["reencrypted"], 4);
    assert_eq!(doc["already_current"], 0);
    assert_eq!(doc["failed"], serde_json::json!([]));
    assert!(doc["values"].as_u64().unwrap() > 20, "{doc}");

    // Resumable: a rerun finds everything current and writes nothing.
    let out = ok(env, url, Some(&both), &["rotate-keys"]);
    assert!(
        out.starts_with(
            "rotated to key \"k2\": 4 sessions visited, 0 re-encrypted (0 values), 4 already \
             current, 0 failed\n"
        ),
        "{out}"
    );
    assert!(out.contains("key k1 can now be removed"), "{out}");

    // k2 alone reads every session as it was.
    assert_eq!(ok(env, url, Some(&k2), &["export"]), before);
    let after = ok(env, url, Some(&k2), &["show", "alice-2"]);
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("version") && !l.starts_with("updated"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&after), strip(&shown));

    // k1 alone: a typed error naming k2, exit 1, for reads and exports.
    for args in [
        &["show", "alice-2"][..],
        &["export"],
        &["chat", "--session", "bob-1", "hi"],
    ] {
        let run = on(env, url, Some(&k1), args);
        run.assert_code(1);
        assert!(
            run.stderr
                .contains(r#"is encrypted with key "k2", which the key ring does not hold"#),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("hint:"), "{}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    // rotate-keys with k1 alone: every session failed, by kind and key id.
    let run = on(env, url, Some(&k1), &["--json", "rotate-keys"]);
    run.assert_code(1);
    let doc = run.json();
    let failed = doc["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 4, "{doc}");
    for f in failed {
        assert_eq!(f["kind"], "unknown_key", "{doc}");
        assert_eq!(f["key_id"], "k2", "{doc}");
    }
    assert_eq!(failed[0]["id"], "alice-1");
    // Said as what happened: nothing rotated.
    let run = on(env, url, Some(&k1), &["rotate-keys"]);
    run.assert_code(1);
    assert!(
        run.stdout.starts_with("not rotated to key \"k1\""),
        "{}",
        run.stdout
    );
    // Failed sessions were left alone: k2 still reads them.
    assert_eq!(ok(env, url, Some(&k2), &["export"]), before);
}

#[test]
fn rotate_keys_end_to_end_on_sqlite() {
    let env = Env::new();
    rotation(&env, &env.sqlite("s.db"));
}

#[test]
fn rotate_keys_end_to_end_on_redis() {
    let server = RedisServer::start().unwrap();
    let env = Env::new();
    rotation(&env, &format!("{}?prefix=app:", server.url()));
}

#[test]
fn encrypt_plaintext_then_everything_is_current() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    seed(&env, &url, None);
    let before = ok(&env, &url, None, &["export"]);
    let k1 = key_file(&env, "k1", &[("k1", 1, true)]);

    // A strict key ring refuses plaintext, and says how to encrypt it.
    let run = on(&env, &url, Some(&k1), &["show", "alice-1"]);
    run.assert_code(1);
    assert!(run.stderr.contains("--encrypt-plaintext"), "{}", run.stderr);
    // Rotation without --encrypt-plaintext: a session written without
    // the key ring has no sealed manifest, which the layer reports first.
    let run = on(&env, &url, Some(&k1), &["--json", "rotate-keys"]);
    run.assert_code(1);
    assert_eq!(run.json()["failed"][0]["kind"], "inconsistent");
    assert!(run.stderr.contains("--encrypt-plaintext"), "{}", run.stderr);

    let run = on(
        &env,
        &url,
        Some(&k1),
        &["--json", "rotate-keys", "--encrypt-plaintext"],
    );
    let doc = run.json();
    assert_eq!(
        (doc["sessions"].as_u64(), doc["reencrypted"].as_u64()),
        (Some(4), Some(4))
    );
    // The command closed the store: the WAL is checkpointed and truncated,
    // so neither it nor the file keeps the plaintext it replaced.
    let wal = std::fs::metadata(env.path("s.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the -wal file was left with frames");
    let leaked = found(&sqlite_bytes(&env, "s.db"));
    assert!(leaked.is_empty(), "the SQLite files hold {leaked:?}");
    // Every stored value is encrypted. The store zeroes what it frees
    // (statestore-crypto's at_rest test checks the file and the
    // checkpointed WAL); a file written by an earlier version may still
    // hold some until VACUUM, which the command says.
    let sealed = ok(&env, &url, Some(&k1), &["export", "--encrypted"]);
    assert!(found(sealed.as_bytes()).is_empty(), "{sealed}");
    assert!(run.stderr.contains("VACUUM"), "{}", run.stderr);
    assert_eq!(ok(&env, &url, Some(&k1), &["export"]), before);

    let doc = on(&env, &url, Some(&k1), &["--json", "rotate-keys"]).json();
    assert_eq!(doc["already_current"], 4, "{doc}");
    assert_eq!(doc["reencrypted"], 0, "{doc}");

    // The key ring can also come from the environment, and --resume-from
    // takes a cursor (a listing's position: `i:` and the last id visited).
    let ring = format!("k1 hex:{} current", "01".repeat(32));
    let run = env
        .cmd()
        .env("STATESTORE_KEYS", &ring)
        .args([
            "--store",
            &url,
            "--json",
            "rotate-keys",
            "--resume-from",
            "i:bob-1",
        ])
        .output()
        .unwrap();
    let run = common::Run::from(run);
    run.assert_code(0);
    assert_eq!(run.json()["failed"], serde_json::json!([]));
}

/// A session that cannot be re-encrypted is reported once: in the
/// command's table, not again as a library warning on stderr.
#[test]
fn a_failed_session_is_reported_once() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    seed(&env, &url, None);
    let k1 = key_file(&env, "k1", &[("k1", 1, true)]);
    let run = on(&env, &url, Some(&k1), &["rotate-keys"]);
    run.assert_code(1);
    let both = format!("{}{}", run.stdout, run.stderr);
    for id in ["alice-1", "alice-2", "bob-1", "chat-1"] {
        let line = format!("session {id:?}: it has no manifest");
        assert_eq!(both.matches(&line).count(), 1, "{id}:\n{both}");
    }
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
}

#[test]
fn rotate_keys_help_and_bad_key_files() {
    let env = Env::new();
    let help = env.ok(&["rotate-keys", "--help"]);
    for part in [
        "statestore --store",
        "rotate-keys --keys keys",
        "current",
        "--encrypt-plaintext",
    ] {
        assert!(help.contains(part), "{part:?} missing:\n{help}");
    }
    let run = env.run(&["rotate-keys"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--keys FILE"), "{}", run.stderr);

    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA==";
    let bad = env.path("bad");
    std::fs::write(&bad, format!("k1 base64:{secret} current\n")).unwrap();
    private(&bad);
    let run = env.run(&["--keys", bad.to_str().unwrap(), "list"]);
    run.assert_code(2);
    assert!(run.stderr.contains("line 1"), "{}", run.stderr);
    assert!(!run.stderr.contains(secret), "{}", run.stderr);
    let run = env.run(&["--keys", env.path("missing").to_str().unwrap(), "list"]);
    run.assert_code(2);
}

/// `keys usage` counts values per key id from the envelope headers, with
/// no key ring: here one user's sessions encrypted, the others plaintext.
/// Each planted session holds 11 values (8 messages, a summary, a system
/// prompt, a metadata value), and once encrypted a 12th, its sealed
/// manifest; the chat session 2 messages.
#[test]
fn keys_usage_counts_values_by_key_without_the_ring() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    seed(&env, &url, None);
    let k1 = key_file(&env, "k1", &[("k1", 1, true)]);
    ok(
        &env,
        &url,
        Some(&k1),
        &["rotate-keys", "--encrypt-plaintext", "--user", "user-0"],
    );

    let doc = on(&env, &url, None, &["--json", "keys", "usage"]).json();
    assert_eq!(doc["sessions"], 4, "{doc}");
    // (The session `chat` made carries its title: one value more.)
    assert_eq!(doc["values"], 37, "{doc}");
    assert_eq!(doc["keys"]["k1"]["values"], 12, "{doc}");
    assert_eq!(doc["manifests"], 1, "{doc}");
    assert_eq!(doc["keys"]["k1"]["sessions"], 1, "{doc}");
    assert_eq!(doc["plaintext"]["values"], 25, "{doc}");
    assert_eq!(doc["plaintext"]["sessions"], 3, "{doc}");
    assert_eq!(doc["malformed"], 0, "{doc}");
    // No ring: nothing said about one.
    assert!(doc["keys"]["k1"].get("in_key_ring").is_none(), "{doc}");

    // With a ring, its keys are marked, and a key nothing uses shows 0.
    let ring = key_file(&env, "k1k2", &[("k1", 1, false), ("k2", 2, true)]);
    let doc = on(&env, &url, Some(&ring), &["--json", "keys", "usage"]).json();
    assert_eq!(doc["keys"]["k2"]["values"], 0, "{doc}");
    assert_eq!(doc["keys"]["k2"]["current"], true, "{doc}");
    assert_eq!(doc["keys"]["k1"]["in_key_ring"], true, "{doc}");

    let text = ok(&env, &url, None, &["keys", "usage", "--user", "user-0"]);
    assert!(
        text.starts_with(
            "1 session: 12 values encrypted (1 session manifest among them), 0 values plaintext\n"
        ),
        "{text}"
    );
    assert!(text.contains("k1"), "{text}");
}

/// A process still holding the old key file writes under the old key
/// behind the rotation (a new session, among ids the rotation listed
/// already; a session it re-encrypted is refused to that writer, whose
/// ring lacks the key of the session's manifest): rotate-keys must not say
/// the old key can be removed. Once that writer is gone, a second run
/// re-encrypts its values and says so, with the reminder about exports and
/// backups.
#[test]
fn rotate_keys_keeps_a_key_a_stale_writer_still_uses() {
    use statestore::crypto::{Encrypted, Key, KeyRing, key_usage};
    use statestore::{Expect, Message, SessionId, Store};
    use std::process::Stdio;
    use std::sync::Arc;

    let env = Env::new();
    let url = env.sqlite("s.db");
    let k1 = key_file(&env, "k1", &[("k1", 1, true)]);
    let both = key_file(&env, "k1k2", &[("k1", 1, false), ("k2", 2, true)]);
    // Enough sessions that the rotation is still busy with the others
    // after the first one is done.
    let shape = common::Shape {
        turns: 1,
        text: 8,
        tools: false,
        summary: false,
        extras: false,
    };
    let file = env.path("many.jsonl");
    std::fs::write(&file, export_file(&common::numbered(400), shape)).unwrap();
    ok(&env, &url, Some(&k1), &["import", file.to_str().unwrap()]);

    // The stale writer: this process, with k1 alone.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend: Arc<dyn Store> = Arc::new(
        rt.block_on(statestore::sqlite::SqliteStore::open(env.path("s.db")))
            .unwrap(),
    );
    let stale = Encrypted::new(
        Arc::clone(&backend),
        KeyRing::new(Key::from_bytes("k1", &[1; 32]).unwrap()),
    );
    let first = SessionId::new("s00000").unwrap();
    // Sorts between s00000 and s00001: on the page the rotation is on.
    let late = SessionId::new("s00000-late").unwrap();

    let mut child = env
        .cmd()
        .args(["--store", &url, "--keys", &both, "rotate-keys"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the rotation moved the first session to k2, write under k1.
    loop {
        let raw = rt.block_on(backend.load(&first)).unwrap().unwrap();
        if key_usage(&raw).under("k1") == 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "rotate-keys ended before the test saw the first session rotated"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // The rotated session is out of the stale writer's reach now.
    let refused = rt.block_on(stale.append(&first, vec![Message::user("x")], Expect::Any));
    assert!(
        matches!(&refused, Err(statestore::Error::Decryption { key_id: Some(k), .. }) if k == "k2"),
        "{refused:?}"
    );
    rt.block_on(stale.append(
        &late,
        vec![Message::user("written with the old key file")],
        Expect::Any,
    ))
    .unwrap();
    let run = common::Run::from(child.wait_with_output().unwrap());
    run.assert_code(0);
    assert!(!run.stdout.contains("can now be removed"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "key k1 must be kept: a scan after the rotation found 2 values under it in 1 session"
        ),
        "{}",
        run.stdout
    );
    // The claim it did not make would have been false: the late
    // session's message and its manifest are under k1.
    let doc = on(&env, &url, None, &["--json", "keys", "usage"]).json();
    assert_eq!(doc["keys"]["k1"]["values"], 2, "{doc}");

    // The stale writer is gone: a second run moves its values and only
    // then says k1 can go, reminding of exports and backups.
    drop((stale, backend));
    let doc = on(&env, &url, Some(&both), &["--json", "rotate-keys"]).json();
    assert_eq!(doc["reencrypted"], 1, "{doc}");
    assert_eq!(doc["removable_keys"], serde_json::json!(["k1"]), "{doc}");
    // 401 sessions: 2 messages and a manifest each, but the late one's
    // single message.
    assert_eq!(doc["scan_after"]["keys"]["k2"], 1202, "{doc}");
    assert_eq!(doc["scan_after"]["manifests"], 401, "{doc}");
    let out = ok(&env, &url, Some(&both), &["rotate-keys"]);
    assert!(out.contains("key k1 can now be removed"), "{out}");
    assert!(out.contains("encrypted exports"), "{out}");
    assert!(out.contains("backups"), "{out}");
}

/// Without a key ring, no command writes to an encrypted store: each
/// exits 1 saying to pass --keys and that nothing was written, and the
/// store is byte for byte as it was.
#[test]
fn without_keys_no_command_writes_to_an_encrypted_store() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    let k1 = key_file(&env, "k1", &[("k1", 1, true)]);
    seed(&env, &url, Some(&k1));
    let before = ok(&env, &url, Some(&k1), &["export", "--encrypted"]);

    let plain_ids: Vec<String> = vec!["new-a".into(), "new-b".into()];
    let plain_file = env.path("plain.jsonl");
    std::fs::write(&plain_file, export_file(&plain_ids, RICH)).unwrap();
    let plain_store = env.sqlite("plain.db");
    ok(
        &env,
        &plain_store,
        None,
        &["import", plain_file.to_str().unwrap()],
    );

    let commands: Vec<Vec<&str>> = vec![
        vec!["chat", "--session", "alice-1", "hi"],
        vec!["chat", "--session", "brand-new", "hi"],
        vec!["trim", "alice-1", "--keep", "1"],
        vec!["compact", "alice-1", "--keep", "1"],
        vec!["fork", "alice-1", "alice-copy"],
        vec!["import", plain_file.to_str().unwrap()],
        vec!["migrate", "--from", &plain_store, "--to", &url],
    ];
    for args in &commands {
        let run = on(&env, &url, None, args);
        run.assert_code(1);
        assert!(run.stderr.contains("--keys"), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("Nothing was written"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("encrypted"), "{args:?}: {}", run.stderr);
    }
    assert_eq!(
        ok(&env, &url, Some(&k1), &["export", "--encrypted"]),
        before
    );
    // With the key ring they work (one of them, as a control).
    ok(&env, &url, Some(&k1), &["trim", "alice-1", "--keep", "1"]);
}

/// Mode bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An export file is created private (0600) through a new temporary file,
/// replacing an existing one; no temporary file stays; an error names the
/// file asked for.
#[test]
fn export_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;

    let env = Env::new();
    let url = env.sqlite("s.db");
    let k1 = key_file(&env, "k1", &[("k1", 1, true)]);
    seed(&env, &url, Some(&k1));
    let dir = env.path("out");
    std::fs::create_dir(&dir).unwrap();
    let out = dir.join("backup.jsonl");
    std::fs::write(&out, "an older backup").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();

    ok(
        &env,
        &url,
        Some(&k1),
        &["export", "-o", out.to_str().unwrap()],
    );
    assert_eq!(mode(&out), 0o600);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(found(text.as_bytes()), SECRETS.to_vec());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["backup.jsonl".to_owned()]);

    let missing = env.path("nowhere/backup.jsonl");
    let run = on(
        &env,
        &url,
        Some(&k1),
        &["export", "-o", missing.to_str().unwrap()],
    );
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("cannot create {}", missing.display())),
        "{}",
        run.stderr
    );
    // Not the temporary file's name (`.backup.jsonl.…`).
    assert!(!run.stderr.contains(".backup.jsonl"), "{}", run.stderr);
}

/// The header line says whether the values are encrypted, and under which
/// keys; `export --encrypted` refuses a store that still holds plaintext.
#[test]
fn export_headers_say_what_the_values_are() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    let k1 = key_file(&env, "k1", &[("k1", 1, true)]);
    let both = key_file(&env, "k1k2", &[("k1", 1, false), ("k2", 2, true)]);
    seed(&env, &url, Some(&k1));
    ok(
        &env,
        &url,
        Some(&both),
        &["chat", "--session", "k2-chat", "hi"],
    );
    let first_line = |text: &str| text.lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first_line(&ok(&env, &url, Some(&both), &["export"])),
        r#"{"format":"statestore-export","version":2,"encrypted":false}"#
    );
    assert_eq!(
        first_line(&ok(&env, &url, Some(&both), &["export", "--encrypted"])),
        r#"{"format":"statestore-export","version":3,"encrypted":true,"key_ids":["k1","k2"]}"#
    );

    // A store partly plaintext: export --encrypted writes nothing.
    let mixed = env.sqlite("mixed.db");
    seed(&env, &mixed, None);
    ok(
        &env,
        &mixed,
        Some(&k1),
        &["rotate-keys", "--encrypt-plaintext", "--user", "user-0"],
    );
    let out = env.path("sealed.jsonl");
    let run = on(
        &env,
        &mixed,
        Some(&k1),
        &["export", "--encrypted", "-o", out.to_str().unwrap()],
    );
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("still holds 25 plaintext values in 3 sessions"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Nothing was written"), "{}", run.stderr);
    assert!(run.stderr.contains("--encrypt-plaintext"), "{}", run.stderr);
    assert!(!common::exists(&out));
    // Nor does a plain export without the ring (it would carry ciphertext
    // under a plaintext header).
    let run = on(&env, &mixed, None, &["export", "-o", out.to_str().unwrap()]);
    run.assert_code(1);
    assert!(run.stderr.contains("--keys"), "{}", run.stderr);
    assert!(!common::exists(&out));
}

/// `s` with the text of the first JSON string value after `key` (e.g.
/// `"system_prompt":"`) changed by `change`.
fn edit_value(s: &str, key: &str, change: impl Fn(&str) -> String) -> String {
    let start = s.find(key).unwrap() + key.len();
    let end = start + s[start..].find('"').unwrap();
    format!("{}{}{}", &s[..start], change(&s[start..end]), &s[end..])
}

/// import takes an encrypted export only with --encrypted and a plaintext
/// one only without, by the header or (for a file without a say) by the
/// values; --encrypted checks every envelope, and with a key ring
/// decrypts each session before writing it.
#[test]
fn import_checks_what_the_values_are() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    let k1 = key_file(&env, "k1", &[("k1", 1, true)]);
    seed(&env, &url, Some(&k1));
    let sealed = ok(&env, &url, Some(&k1), &["export", "--encrypted"]);
    let plain = ok(&env, &url, Some(&k1), &["export"]);
    let write = |name: &str, text: &str| {
        let path = env.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (sealed_file, plain_file) = (write("sealed.jsonl", &sealed), write("plain.jsonl", &plain));
    // Files of before the header said anything: the values tell.
    let old_header = |text: &str| {
        text.replacen(
            text.lines().next().unwrap(),
            common::UNSAID_HEADER.trim_end(),
            1,
        )
    };
    let old_sealed = write("old-sealed.jsonl", &old_header(&sealed));
    let old_plain = write("old-plain.jsonl", &old_header(&plain));
    let fresh = env.sqlite("fresh.db");
    let empty = |env: &Env| ok(env, &fresh, None, &["list", "--ids-only"]).is_empty();

    for keys in [None, Some(k1.as_str())] {
        let run = on(&env, &fresh, keys, &["import", &sealed_file]);
        run.assert_code(1);
        assert!(
            run.stderr.contains("is an encrypted export"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("Nothing was imported"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("--encrypted"), "{}", run.stderr);
    }
    let run = on(&env, &fresh, Some(&k1), &["import", &old_sealed]);
    run.assert_code(1);
    assert!(run.stderr.contains("line 2 of"), "{}", run.stderr);
    assert!(
        run.stderr.contains("holds encrypted values"),
        "{}",
        run.stderr
    );
    let run = on(
        &env,
        &fresh,
        Some(&k1),
        &["import", "--encrypted", &plain_file],
    );
    run.assert_code(1);
    assert!(
        run.stderr.contains("is a plaintext export"),
        "{}",
        run.stderr
    );
    let run = on(
        &env,
        &fresh,
        Some(&k1),
        &["import", "--encrypted", &old_plain],
    );
    run.assert_code(1);
    assert!(run.stderr.contains("plaintext value"), "{}", run.stderr);
    assert!(empty(&env), "something was imported");

    // A changed ciphertext: its header still parses, so without the ring
    // it goes in as it is; with the ring it is decrypted first and refused.
    let tampered = edit_value(&sealed, r#""system_prompt":"sealed:"#, |b64| {
        let mut chars: Vec<char> = b64.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect()
    });
    let tampered = write("tampered.jsonl", &tampered);
    let run = on(
        &env,
        &fresh,
        Some(&k1),
        &["import", "--encrypted", &tampered],
    );
    run.assert_code(1);
    assert!(
        run.stderr.contains("does not decrypt with the key ring"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 2 of"), "{}", run.stderr);
    assert!(empty(&env), "a session that does not decrypt was imported");
    // A header that does not parse is refused even without the ring.
    let malformed = edit_value(&sealed, r#""system_prompt":""#, |_| "sealed:AQE".into());
    let malformed = write("malformed.jsonl", &malformed);
    let run = on(&env, &fresh, None, &["import", "--encrypted", &malformed]);
    run.assert_code(1);
    assert!(run.stderr.contains("does not parse"), "{}", run.stderr);
    assert!(empty(&env));

    // The genuine file: imported as it is, read back with the ring.
    ok(
        &env,
        &fresh,
        Some(&k1),
        &["import", "--encrypted", &sealed_file],
    );
    assert_eq!(ok(&env, &fresh, Some(&k1), &["export"]), plain);
}
