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
    let run = on(&env, &url, Some(&k1), &["--json", "rotate-keys"]);
    run.assert_code(1);
    assert_eq!(run.json()["failed"][0]["kind"], "not_encrypted");

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
    // takes a cursor.
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
            "bob-1",
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
        let line = format!("session {id:?}: message 0 is stored unencrypted");
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
    let run = env.run(&["--keys", bad.to_str().unwrap(), "list"]);
    run.assert_code(2);
    assert!(run.stderr.contains("line 1"), "{}", run.stderr);
    assert!(!run.stderr.contains(secret), "{}", run.stderr);
    let run = env.run(&["--keys", env.path("missing").to_str().unwrap(), "list"]);
    run.assert_code(2);
}
