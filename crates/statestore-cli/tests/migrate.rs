//! `migrate`: SQLite → Redis → SQLite without losing or changing a
//! session, and a migrate killed midway that a second run completes
//! exactly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use std::time::{Duration, Instant};

use common::redis::{RedisCluster, RedisServer};
use common::{Env, RICH, Shape, export_file, numbered};

/// Sessions in the store at `url`.
fn count(env: &Env, url: &str) -> usize {
    env.ok(&["--store", url, "list", "--ids-only", "--limit", "0"])
        .lines()
        .count()
}

#[test]
fn sqlite_to_redis_to_sqlite_keeps_every_session_exactly() {
    let env = Env::new();
    let seed = env.path("seed.jsonl");
    let expected = export_file(&numbered(1_000), RICH);
    std::fs::write(&seed, &expected).unwrap();
    let (a, b) = (env.sqlite("a.db"), env.sqlite("b.db"));
    let server = RedisServer::start().unwrap();
    let r = format!("{}?prefix=m:", server.url());
    env.ok(&["--store", &a, "import", seed.to_str().unwrap()]);

    let out = env.ok(&["migrate", "--from", &a, "--to", &r]);
    assert!(
        out.contains(": 1,000 written, 0 already there and equal, 0 conflicts\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "check: the destination holds all 1,000 sessions of the source (1,000 sessions in all)"
        ),
        "{out}"
    );
    let out = env.ok(&["migrate", "--from", &r, "--to", &b]);
    assert!(out.contains(": 1,000 written"), "{out}");

    // Every session loads the same on all three stores.
    for url in [&a, &r, &b] {
        assert!(env.ok(&["--store", url, "export"]) == expected, "{url}");
    }
    let show = |url: &str| {
        let mut doc: serde_json::Value =
            serde_json::from_str(&env.ok(&["--store", url, "--json", "show", "s00042"])).unwrap();
        let o = doc.as_object_mut().unwrap();
        for bookkeeping in ["version", "updated_at", "last_accessed_at"] {
            o.remove(bookkeeping);
        }
        doc
    };
    assert_eq!(show(&a), show(&b));
    assert_eq!(show(&a)["messages"][1]["tool_calls"][0]["name"], "weather");
    assert_eq!(show(&a)["summaries"][0]["covers"]["end"], 2);

    // Again: nothing to do, nothing written.
    let out = env.ok(&["--json", "migrate", "--from", &a, "--to", &r]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["written"], 0);
    assert_eq!(doc["unchanged"], 1_000);
    assert_eq!(doc["destination_sessions"], 1_000);
    assert_eq!(doc["missing"], serde_json::json!([]));
}

#[test]
fn a_killed_migrate_is_completed_exactly_by_the_next_run() {
    let env = Env::new();
    let seed = env.path("seed.jsonl");
    let shape = Shape {
        turns: 6,
        text: 400,
        ..RICH
    };
    let expected = export_file(&numbered(1_000), shape);
    std::fs::write(&seed, &expected).unwrap();
    let a = env.sqlite("a.db");
    env.ok(&["--store", &a, "import", seed.to_str().unwrap()]);
    let server = RedisServer::start().unwrap();
    let r = server.url();

    let mut child = env
        .cmd()
        .args(["migrate", "--from", &a, "--to", &r])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some sessions are in Redis (each is a few keys).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys: u64 = server.cli(&["DBSIZE"]).unwrap().trim().parse().unwrap();
        if keys >= 600 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "migrate ended before it was killed"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "migrate ended before it was killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let copied = count(&env, &r);
    assert!(
        copied > 0 && copied < 1_000,
        "killed midway: {copied} copied"
    );

    // The next run copies the rest, and only the rest.
    let run = env.run(&["--json", "migrate", "--from", &a, "--to", &r]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(
        usize::try_from(doc["written"].as_u64().unwrap()).unwrap(),
        1_000 - copied,
        "{doc}"
    );
    assert_eq!(
        usize::try_from(doc["unchanged"].as_u64().unwrap()).unwrap(),
        copied,
        "{doc}"
    );
    assert_eq!(doc["conflicts"], serde_json::json!([]));
    assert_eq!(doc["destination_sessions"], 1_000);
    // Exactly the source: every session whole, none twice.
    assert!(env.ok(&["--store", &r, "export"]) == expected);
}

#[test]
fn migrate_refuses_one_store_for_both_and_reports_unreachable_ones() {
    let env = Env::new();
    let a = env.sqlite("a.db");
    let run = env.run(&["migrate", "--from", &a, "--to", &a]);
    run.assert_code(2);
    assert!(run.stderr.contains("the same store"), "{}", run.stderr);

    // (The source exists: migrate never creates it.)
    let empty = env.path("empty.jsonl");
    std::fs::write(&empty, common::HEADER).unwrap();
    env.ok(&["--store", &a, "import", empty.to_str().unwrap()]);
    let run = env.run(&[
        "migrate",
        "--from",
        &a,
        "--to",
        "redis://app:hunter2@127.0.0.1:1?connect_timeout=200ms",
    ]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("redis://app:***@127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

#[test]
fn a_redis_cluster_takes_the_same_sessions_and_commands() {
    let env = Env::new();
    let mut ids = numbered(40);
    ids.extend(["a:b{c}*", "ü/../x", "with space"].map(str::to_owned));
    let expected = export_file(&ids, RICH);
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, &expected).unwrap();
    let a = env.sqlite("a.db");
    env.ok(&["--store", &a, "import", seed.to_str().unwrap()]);

    let cluster = RedisCluster::start(3, 0).unwrap();
    let hosts: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.trim_start_matches("redis://").to_owned())
        .collect();
    let c = format!("redis+cluster://{}", hosts.join(","));
    let out = env.ok(&["migrate", "--from", &a, "--to", &c]);
    assert!(out.contains(": 43 written"), "{out}");
    assert!(env.ok(&["--store", &c, "export"]) == expected);
    assert_eq!(count(&env, &c), 43);

    assert_eq!(
        env.ok(&["--store", &c, "chat", "--session", "k", "Hi, I'm Alice"]),
        "Nice to meet you, Alice!\n"
    );
    assert_eq!(
        env.ok(&["--store", &c, "chat", "--session", "k", "What's my name?"]),
        "Your name is Alice\n"
    );
    let doctor = env.ok(&["--store", &c, "doctor"]);
    assert!(doctor.contains("Redis Cluster"), "{doctor}");
    assert_eq!(
        doctor.matches("ok    eviction").count(),
        3,
        "every master:\n{doctor}"
    );
}
