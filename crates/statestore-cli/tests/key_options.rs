//! The key ring's options and the encryption layer's errors as the CLI
//! reports them: private key files (`--allow-insecure-key-file`), a set
//! but empty `STATESTORE_KEYS`, `--context`, a wrong key under a known id,
//! a session that does not match its sealed manifest; and encrypted
//! exports of sessions past version 1 round-tripping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::Env;
use common::redis::RedisServer;

/// A key file `name` holding key `k1` (32 times `byte`) as current, with
/// `mode`.
fn key_file(env: &Env, name: &str, byte: u8, mode: u32) -> String {
    let path = env.path(name);
    let hex = format!("{byte:02x}").repeat(32);
    std::fs::write(&path, format!("k1 hex:{hex} current\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

/// Two turns of session `id` (version 2) through the key ring `keys`.
fn two_turns(env: &Env, url: &str, keys: &str, id: &str) {
    for text in ["I am Alice", "what is my name?"] {
        env.ok(&[
            "--store",
            url,
            "--keys",
            keys,
            "chat",
            "--session",
            id,
            text,
        ]);
    }
}

#[test]
fn a_key_file_others_can_read_is_refused_unless_allowed() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    let open = key_file(&env, "keys", 1, 0o644);
    let run = env.run(&["--store", &url, "--keys", &open, "list"]);
    run.assert_code(2);
    for part in [
        "is not private",
        "mode 0644",
        &format!("chmod 600 {open}"),
        "--allow-insecure-key-file",
        "nothing was read or written",
    ] {
        assert!(run.stderr.contains(part), "{part:?}: {}", run.stderr);
    }
    // The library's option name is not the CLI's business.
    assert!(!run.stderr.contains("KeyFileOptions"), "{}", run.stderr);
    assert!(!common::exists(&env.path("s.db")), "the store was opened");

    let run = env.run(&[
        "--store",
        &url,
        "--keys",
        &open,
        "--allow-insecure-key-file",
        "chat",
        "hi",
    ]);
    run.assert_code(0);
    // Fixed as told, it is read without the flag.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = env.run(&["--store", &url, "--keys", &open, "show", "default"]);
    run.assert_code(0);
    assert!(run.stdout.contains("hi"), "{}", run.stdout);
}

#[test]
fn a_set_but_empty_key_ring_variable_is_an_error() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    for value in ["", "  ; # nothing"] {
        let run = common::Run::from(
            env.cmd()
                .env("STATESTORE_KEYS", value)
                .args(["--store", &url, "chat", "hi"])
                .output()
                .unwrap(),
        );
        run.assert_code(2);
        assert!(run.stderr.contains("STATESTORE_KEYS"), "{}", run.stderr);
        assert!(run.stderr.contains("holds no keys"), "{}", run.stderr);
        assert!(run.stderr.contains("unset it"), "{}", run.stderr);
        assert!(
            run.stderr.contains("nothing was read or written"),
            "{}",
            run.stderr
        );
    }
    assert!(!common::exists(&env.path("s.db")), "something was written");
    // Unset: no key ring, as before.
    env.ok(&["--store", &url, "chat", "hi"]);
}

#[test]
fn a_context_binds_what_is_written_to_it() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    let keys = key_file(&env, "keys", 1, 0o600);
    let k = ["--store", url.as_str(), "--keys", keys.as_str()];
    fn with<'a>(k: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [k, extra].concat()
    }
    env.ok(&with(
        &k,
        &[
            "--context",
            "tenant-a",
            "chat",
            "--session",
            "t",
            "PLANT-41",
        ],
    ));

    // Another context, or none: an integrity error naming the session.
    for other in [&["--context", "tenant-b"][..], &[]] {
        let run = env.run(&with(&k, &[other, &["show", "t"][..]].concat()));
        run.assert_code(1);
        assert!(run.stderr.contains(r#"session "t""#), "{}", run.stderr);
        assert!(
            run.stderr.contains("failed authentication"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("--context"), "{}", run.stderr);
        assert!(!run.stdout.contains("PLANT-41"), "{}", run.stdout);
    }
    // The same context, from the flag or the environment, reads it.
    let shown = env.ok(&with(&k, &["--context", "tenant-a", "show", "t"]));
    assert!(shown.contains("PLANT-41"), "{shown}");
    let run = common::Run::from(
        env.cmd()
            .env("STATESTORE_CONTEXT", "tenant-a")
            .args(with(&k, &["show", "t"]))
            .output()
            .unwrap(),
    );
    run.assert_code(0);
    assert!(run.stdout.contains("PLANT-41"), "{}", run.stdout);
}

#[test]
fn another_key_under_the_same_id_is_named_as_such() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    let right = key_file(&env, "right", 1, 0o600);
    let wrong = key_file(&env, "wrong", 2, 0o600);
    two_turns(&env, &url, &right, "a");
    let run = env.run(&["--store", &url, "--keys", &wrong, "show", "a"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(r#"is encrypted with another key than the key ring's "k1""#),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            r#"the key under id "k1" in the key file is not the one that encrypted this"#
        ),
        "{}",
        run.stderr
    );
    let run = env.run(&["--store", &url, "--keys", &wrong, "--json", "rotate-keys"]);
    run.assert_code(1);
    assert_eq!(run.json()["failed"][0]["kind"], "wrong_key");
}

/// An encrypted export of sessions past version 1 (their manifests record
/// the version) imports into a store that reads them, with and without
/// the key ring, and again as "equal"; a session cut short in the file is
/// refused as not matching its sealed manifest.
fn encrypted_round_trip(env: &Env, url: &str, fresh: &str, other: &str) {
    let keys = key_file(env, "keys", 1, 0o600);
    two_turns(env, url, &keys, "a");
    two_turns(env, url, &keys, "b");
    env.ok(&[
        "--store",
        url,
        "--keys",
        &keys,
        "chat",
        "--session",
        "b",
        "third",
    ]);
    let plain = env.ok(&["--store", url, "--keys", &keys, "export"]);
    let sealed = env.ok(&["--store", url, "--keys", &keys, "export", "--encrypted"]);
    let file = env.path("sealed.jsonl");
    std::fs::write(&file, &sealed).unwrap();
    let file = file.to_str().unwrap();

    for (to, ring) in [(fresh, Some(keys.as_str())), (other, None)] {
        let mut args = vec!["--store", to];
        if let Some(k) = ring {
            args.extend(["--keys", k]);
        }
        let import = [&args[..], &["import", "--encrypted", file]].concat();
        env.ok(&import);
        let again = env.ok(&import);
        assert!(again.contains("2 already there and equal"), "{again}");
        let back = env.ok(&["--store", to, "--keys", &keys, "export"]);
        assert_eq!(back, plain);
    }

    // A message cut off the end of session b: refused by its manifest.
    let cut: String = sealed
        .lines()
        .map(|l| {
            if !l.starts_with(r#"{"id":"b""#) {
                return format!("{l}\n");
            }
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["messages"].as_array_mut().unwrap().pop();
            format!("{v}\n")
        })
        .collect();
    let cut_file = env.path("cut.jsonl");
    std::fs::write(&cut_file, cut).unwrap();
    let cut_db = env.sqlite("cut.db");
    env.ok(&[
        "--store",
        &cut_db,
        "import",
        "--encrypted",
        cut_file.to_str().unwrap(),
    ]);
    let run = env.run(&["--store", &cut_db, "--keys", &keys, "show", "b"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("does not match its sealed manifest"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--encrypt-plaintext"), "{}", run.stderr);
    assert!(
        run.stderr.contains("restore it from a backup"),
        "{}",
        run.stderr
    );
    let run = env.run(&["--store", &cut_db, "--keys", &keys, "--json", "rotate-keys"]);
    run.assert_code(1);
    assert_eq!(run.json()["failed"][0]["kind"], "inconsistent");
}

#[test]
fn encrypted_exports_round_trip_on_sqlite() {
    let env = Env::new();
    let (url, fresh, other) = (env.sqlite("s.db"), env.sqlite("f.db"), env.sqlite("o.db"));
    encrypted_round_trip(&env, &url, &fresh, &other);
}

#[test]
fn encrypted_exports_round_trip_on_redis() {
    let server = RedisServer::start().unwrap();
    let env = Env::new();
    let url = |p: &str| format!("{}?prefix={p}:", server.url());
    encrypted_round_trip(&env, &url("app"), &url("fresh"), &url("other"));
}

/// `migrate` without a key ring copies sealed sessions as stored, at the
/// version their manifests record, so the key ring reads the copy.
#[test]
fn migrate_without_keys_keeps_sealed_sessions_readable() {
    let env = Env::new();
    let (from, to) = (env.sqlite("from.db"), env.sqlite("to.db"));
    let keys = key_file(&env, "keys", 1, 0o600);
    two_turns(&env, &from, &keys, "a");
    env.ok(&["migrate", "--from", &from, "--to", &to]);
    assert_eq!(
        env.ok(&["--store", &to, "--keys", &keys, "export"]),
        env.ok(&["--store", &from, "--keys", &keys, "export"])
    );
}

/// Without the key ring, `show` hides the session's sealed manifest from
/// people; `--json` shows the session as stored.
#[test]
fn show_without_keys_hides_the_manifest_from_people() {
    let env = Env::new();
    let url = env.sqlite("s.db");
    let keys = key_file(&env, "keys", 1, 0o600);
    two_turns(&env, &url, &keys, "a");
    let run = env.run(&["--store", &url, "show", "a"]);
    run.assert_code(0);
    assert!(
        !run.stdout.contains("statestore.manifest"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("this session is encrypted"),
        "{}",
        run.stderr
    );
    let doc = env.run(&["--store", &url, "--json", "show", "a"]).json();
    let metadata = doc["metadata"].as_object().unwrap();
    assert!(
        metadata
            .keys()
            .any(|k| k.starts_with("statestore.manifest.")),
        "{doc}"
    );
    // Through the key ring there is none to hide: only the title `chat`
    // gives, opened.
    let doc = env
        .run(&["--store", &url, "--keys", &keys, "--json", "show", "a"])
        .json();
    assert_eq!(
        doc["metadata"],
        serde_json::json!({"statestore.title": "I am Alice"}),
        "{doc}"
    );
}
