//! `--store postgres://…`: import, list, show, export and delete on a real
//! PostgreSQL server, and `migrate` SQLite → PostgreSQL → SQLite without
//! losing or changing a session.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod common;

use common::{Env, RICH, export_file, numbered};
use pg_test_server::PgServer;

/// The password of the test server: no output may show it.
const SECRET: &str = "cli-pg-secret";

#[test]
fn sessions_commands_and_migrate_work_on_postgres() {
    let env = Env::new();
    let server = PgServer::builder()
        .password(SECRET)
        .fsync(false)
        .start()
        .unwrap();
    let pg = format!("{}?schema=cli&prefix=t_&ttl=1d", server.url());
    let seed = env.path("seed.jsonl");
    let expected = export_file(&numbered(50), RICH);
    std::fs::write(&seed, &expected).unwrap();

    // Import, list, show, export on PostgreSQL directly.
    env.ok(&["--store", &pg, "import", seed.to_str().unwrap()]);
    let ids = env.ok(&["--store", &pg, "list", "--ids-only", "--limit", "0"]);
    assert_eq!(ids.lines().count(), 50, "{ids}");
    assert!(ids.lines().any(|id| id == "s00042"), "{ids}");
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["--store", &pg, "--json", "show", "s00042"])).unwrap();
    assert_eq!(shown["messages"][1]["tool_calls"][0]["name"], "weather");
    assert!(env.ok(&["--store", &pg, "export"]) == expected);
    let count = server.psql("SELECT count(*) FROM cli.t_sessions").unwrap();
    assert_eq!(count, "50");

    // doctor: the server's version and the schema.
    let out = env.ok(&["--store", &pg, "doctor"]);
    assert!(
        out.contains("PostgreSQL, schema \"cli\", table prefix \"t_\", TTL 1d"),
        "{out}"
    );
    let version = server.psql("SHOW server_version").unwrap();
    assert!(out.contains(&format!("PostgreSQL {version}")), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| {
                l.get(6..)
                    .is_some_and(|rest| rest.starts_with(&format!("{name} ")))
            })
            .unwrap_or_else(|| panic!("no {name} line: {out}"))
            .to_owned()
    };
    assert!(line("schema").contains(" 4, this build's"), "{out}");
    // synchronous_commit, and each table's size and dead rows.
    assert!(line("synchronous_commit").starts_with("ok"), "{out}");
    assert!(
        line("synchronous_commit").contains("on: every acknowledged turn"),
        "{out}"
    );
    assert!(line("partitions").contains("none"), "{out}");
    // Sizes are exact; the row counts are estimates that may trail the import.
    let size = line("table messages");
    assert!(size.contains(" KiB, ") || size.contains(" MiB, "), "{out}");
    assert!(line("table messages").contains(" live and "), "{out}");
    assert!(line("table sessions").contains("% dead)"), "{out}");
    assert!(!out.contains(SECRET), "{out}");

    // SQLite → PostgreSQL (a second schema) → SQLite.
    let (a, b) = (env.sqlite("a.db"), env.sqlite("b.db"));
    let pg2 = format!(
        "{}?schema=m",
        server.url().replacen("postgres://", "postgresql://", 1)
    );
    env.ok(&["--store", &a, "import", seed.to_str().unwrap()]);
    let out = env.ok(&["migrate", "--from", &a, "--to", &pg2]);
    assert!(
        out.contains(": 50 written, 0 already there and equal, 0 conflicts\n"),
        "{out}"
    );
    let out = env.ok(&["migrate", "--from", &pg2, "--to", &b]);
    assert!(out.contains(": 50 written"), "{out}");
    for url in [&a, &pg2, &b] {
        assert!(env.ok(&["--store", url, "export"]) == expected, "{url}");
    }

    // Delete reaches the server; nothing printed shows the password.
    let run = env.run(&["--store", &pg, "delete", "s00001"]);
    run.assert_code(0);
    assert!(!format!("{}{}", run.stdout, run.stderr).contains(SECRET));
    let ids = env.ok(&["--store", &pg, "list", "--ids-only", "--limit", "0"]);
    assert_eq!(ids.lines().count(), 49);

    // A bad option is a usage error naming it, without the password.
    let run = env.run(&["--store", &format!("{}?colour=red", server.url()), "list"]);
    run.assert_code(2);
    assert!(run.stderr.contains("`colour`"), "{}", run.stderr);
    assert!(!run.stderr.contains(SECRET), "{}", run.stderr);
}

/// `doctor --json` on a partitioned store with `synchronous_commit = off`:
/// a warning, the partitions, and each table's figures.
#[test]
fn doctor_reports_synchronous_commit_sizes_and_bloat() {
    let env = Env::new();
    let server = PgServer::builder()
        .fsync(false)
        .config("synchronous_commit", "off")
        .start()
        .unwrap();
    let pg = format!("{}?schema=doc&partitions=2", server.url());
    let seed = env.path("seed.jsonl");
    std::fs::write(&seed, export_file(&numbered(20), RICH)).unwrap();
    env.ok(&["--store", &pg, "import", seed.to_str().unwrap()]);

    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["--store", &pg, "--json", "doctor"])).unwrap();
    let checks = doc["checks"].as_array().unwrap();
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name}: {doc}"))
            .clone()
    };
    let sync = check("synchronous_commit");
    assert_eq!(sync["status"], "warn", "{sync}");
    assert_eq!(sync["data"]["value"], "off", "{sync}");
    assert_eq!(check("partitions")["data"]["partitions"], 2);
    let messages = check("table messages");
    assert_eq!(messages["data"]["table"], "doc.statestore_messages");
    let size: u64 = server
        .psql("SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('doc.statestore_messages')")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(messages["data"]["total_bytes"], size);
    for key in ["live_rows", "dead_rows", "dead_ratio"] {
        assert!(messages["data"][key].is_number(), "{key}: {messages}");
    }
    // A warning is not a failure.
    assert_eq!(doc["ok"], true);
}

/// `--store postgres://…?sslmode=verify-full&sslrootcert=…` on a TLS-only
/// server; a CA that did not sign its certificate is refused.
#[test]
fn verify_full_over_tls() {
    let env = Env::new();
    let server = PgServer::builder().fsync(false).tls().start().unwrap();
    let files = server.tls_files().unwrap();
    let pg = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url(),
        files.ca_cert.display()
    );
    let out = env.ok(&["--store", &pg, "doctor"]);
    assert!(out.contains("synchronous_commit"), "{out}");
    let untrusted = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url(),
        files.other_ca_cert.display()
    );
    let run = env.run(&["--store", &untrusted, "list"]);
    run.assert_code(1);
    assert!(run.stderr.contains("TLS handshake"), "{}", run.stderr);
}
