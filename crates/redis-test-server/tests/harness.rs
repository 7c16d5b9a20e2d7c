//! The test harness itself, against real redis-server processes: standalone,
//! ACL, TLS, AOF restart, pause/resume, command stats, the fault proxy, and
//! clusters with and without replicas.

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use redis_test_server::{RedisCluster, RedisServer, ServerBuilder, TlsFiles};

type TestResult = Result<(), Box<dyn Error>>;

/// Runs redis-cli with exactly these arguments (no harness-added auth or TLS).
fn raw_cli(args: &[&str]) -> io::Result<Output> {
    Command::new("redis-cli").args(args).output()
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(key)?.strip_prefix(':'))
}

/// Polls `check` every 100 ms until it returns true or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[test]
fn harness_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RedisServer>();
    send_sync::<ServerBuilder>();
    send_sync::<RedisCluster>();
    send_sync::<TlsFiles>();
}

#[test]
fn standalone_server_answers_and_is_gone_after_drop() -> TestResult {
    let server = RedisServer::start()?;
    let port = server.port();
    assert_eq!(server.cli(&["PING"])?, "PONG");
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert!(server.tls().is_none());
    assert!(server.dir().join("redis.conf").is_file());
    assert_eq!(server.cli(&["CONFIG", "GET", "bind"])?, "bind\n127.0.0.1");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendonly"])?,
        "appendonly\nno"
    );
    assert_eq!(server.cli(&["CONFIG", "GET", "save"])?, "save");
    let info = server.cli(&["INFO", "server"])?;
    let pid = server.pid().ok_or("no pid")?;
    assert_eq!(field(&info, "process_id"), Some(pid.to_string().as_str()));

    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(refuses_connections(port));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} not reaped"
    );
    Ok(())
}

#[test]
fn cli_fails_on_error_replies() -> TestResult {
    let server = RedisServer::start()?;
    server.cli(&["SET", "k", "not a number"])?;
    let err = server.cli(&["INCR", "k"]).err().ok_or("INCR succeeded")?;
    assert!(err.to_string().contains("not an integer"), "{err}");
    Ok(())
}

#[test]
fn command_stats_count_calls_since_the_last_reset() -> TestResult {
    let server = RedisServer::start()?;
    server.cli(&["SET", "k", "0"])?;
    server.reset_stats()?;
    server.cli(&["SET", "k", "1"])?;
    server.cli(&["SET", "k", "2"])?;
    server.cli(&["INCR", "k"])?;
    let stats = server.command_stats()?;
    assert_eq!(stats.get("set"), Some(&2), "{stats:?}");
    assert_eq!(stats.get("incr"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("get"), None, "{stats:?}");
    let detailed = server.command_stats_detailed()?;
    let set = detailed.get("set").ok_or("no set")?;
    assert_eq!(set.calls, 2);
    // Redis prints usec_per_call with two decimals.
    let mean = set.usec as f64 / set.calls as f64;
    assert!((mean - set.usec_per_call).abs() < 0.01, "{set:?}");
    Ok(())
}

#[test]
fn parallel_servers_get_distinct_ports() -> TestResult {
    let handles: Vec<_> = (0..4).map(|_| thread::spawn(RedisServer::start)).collect();
    let mut servers = Vec::new();
    for handle in handles {
        servers.push(handle.join().map_err(|_| "start panicked")??);
    }
    let mut ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    for server in &servers {
        server.cli(&["SET", "owner", &server.port().to_string()])?;
    }
    for server in &servers {
        assert_eq!(server.cli(&["GET", "owner"])?, server.port().to_string());
    }
    Ok(())
}

#[test]
fn a_panicking_test_still_removes_its_server() -> TestResult {
    let mut seen: Option<(u16, PathBuf)> = None;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| -> io::Result<()> {
        let server = RedisServer::start()?;
        seen = Some((server.port(), server.dir().to_path_buf()));
        panic::resume_unwind(Box::new("the test failed"));
    }));
    assert!(outcome.is_err(), "the closure did not unwind: {outcome:?}");
    let (port, dir) = seen.ok_or("the server did not start")?;
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(refuses_connections(port));
    Ok(())
}

#[test]
fn acl_server_refuses_the_default_user_and_accepts_the_configured_one() -> TestResult {
    let server = RedisServer::builder()
        .acl_user("app", "pa ss:/@\"x", "~app:* +@all")
        .start()?;
    let port = server.port();
    assert_eq!(
        server.url(),
        format!("redis://app:pa%20ss%3A%2F%40%22x@127.0.0.1:{port}")
    );
    assert_eq!(server.cli(&["ACL", "WHOAMI"])?, "app");
    server.cli(&["SET", "app:k", "v"])?;
    assert_eq!(server.cli(&["GET", "app:k"])?, "v");
    let err = server
        .cli(&["SET", "other:k", "v"])
        .err()
        .ok_or("rules ignored")?;
    assert!(err.to_string().contains("NOPERM"), "{err}");

    let p = port.to_string();
    let anonymous = raw_cli(&["-p", &p, "-e", "PING"])?;
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("NOAUTH"));
    let default = raw_cli(&[
        "-p",
        &p,
        "--user",
        "default",
        "--pass",
        "",
        "--no-auth-warning",
        "-e",
        "PING",
    ])?;
    assert!(!default.status.success());
    let wrong = raw_cli(&[
        "-p",
        &p,
        "--user",
        "app",
        "--pass",
        "wrong",
        "--no-auth-warning",
        "-e",
        "PING",
    ])?;
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("WRONGPASS"));

    // The URL, credentials and all, is what a redis-rs client uses.
    runtime()?.block_on(async {
        let client = redis::Client::open(server.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        assert_eq!(pong, "PONG");
        let anonymous = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let refused = match anonymous.get_multiplexed_async_connection().await {
            Ok(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_err(),
            Err(_) => true,
        };
        assert!(refused, "the default user was let in");
        Ok::<_, redis::RedisError>(())
    })?;
    Ok(())
}

#[cfg(feature = "tls")]
#[test]
fn tls_server_answers_over_tls_with_its_ca_only() -> TestResult {
    let server = RedisServer::builder().tls().start()?;
    let port = server.port();
    assert_eq!(server.url(), format!("rediss://127.0.0.1:{port}"));
    let tls = server.tls().ok_or("no TLS files")?;
    assert!(tls.ca_cert_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!(std::fs::read(&tls.ca_cert)?, tls.ca_cert_pem);
    assert_ne!(tls.ca_cert_pem, tls.other_ca_cert_pem);
    assert_eq!(server.cli(&["PING"])?, "PONG");

    let p = port.to_string();
    let ca = tls.ca_cert.to_string_lossy();
    let trusted = raw_cli(&["-p", &p, "--tls", "--cacert", &ca, "-e", "PING"])?;
    assert_eq!(String::from_utf8_lossy(&trusted.stdout).trim(), "PONG");
    let other = tls.other_ca_cert.to_string_lossy();
    let untrusted = raw_cli(&["-p", &p, "--tls", "--cacert", &other, "-e", "PING"])?;
    assert!(!untrusted.status.success(), "a foreign CA was accepted");
    let plain = raw_cli(&["-p", &p, "-e", "PING"])?;
    assert!(!plain.status.success(), "the TLS port answered plaintext");
    Ok(())
}

#[cfg(feature = "tls")]
#[test]
fn tls_server_accepts_redis_rs_trusting_its_ca_and_refuses_another() -> TestResult {
    use redis::TlsCertificates;

    let server = RedisServer::builder()
        .tls()
        .acl_user("app", "secret", "~* +@all")
        .start()?;
    assert_eq!(
        server.url(),
        format!("rediss://app:secret@127.0.0.1:{}", server.port())
    );
    let tls = server.tls().ok_or("no TLS files")?;
    runtime()?.block_on(async {
        let trusting = |pem: &[u8]| {
            redis::Client::build_with_tls(
                server.url(),
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            )
        };
        let mut conn = trusting(&tls.ca_cert_pem)?
            .get_multiplexed_async_connection()
            .await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        assert_eq!(pong, "PONG");
        let refused = trusting(&tls.other_ca_cert_pem)?
            .get_multiplexed_async_connection()
            .await;
        assert!(refused.is_err(), "a foreign CA was accepted");
        Ok::<_, redis::RedisError>(())
    })?;
    Ok(())
}

#[test]
fn kill_and_restart_keep_aof_data_on_the_same_port() -> TestResult {
    let mut server = RedisServer::builder().appendonly_always().start()?;
    let port = server.port();
    let first_pid = server.pid();
    server.cli(&["SET", "k", "v"])?;
    for _ in 0..3 {
        server.cli(&["INCR", "counter"])?;
    }
    server.kill()?;
    assert_eq!(server.pid(), None);
    assert!(refuses_connections(port));
    assert!(server.cli(&["PING"]).is_err());
    server.kill()?; // a second kill is a no-op

    server.restart()?;
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first_pid);
    assert_eq!(server.cli(&["GET", "k"])?, "v");
    assert_eq!(server.cli(&["GET", "counter"])?, "3");
    assert!(server.dir().join("appendonlydir").is_dir());

    // restart() of a running server kills it first.
    server.restart()?;
    assert_eq!(server.cli(&["GET", "counter"])?, "3");
    Ok(())
}

#[test]
fn without_aof_a_restart_loses_the_data() -> TestResult {
    let mut server = RedisServer::start()?;
    server.cli(&["SET", "k", "v"])?;
    server.kill()?;
    server.restart()?;
    assert_eq!(server.cli(&["EXISTS", "k"])?, "0");
    Ok(())
}

#[test]
fn paused_server_answers_nothing_until_resumed() -> TestResult {
    let server = RedisServer::start()?;
    let mut conn = TcpStream::connect(("127.0.0.1", server.port()))?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))?;
    server.pause()?;
    conn.write_all(b"PING\r\n")?;
    let mut buf = [0_u8; 64];
    let err = conn
        .read(&mut buf)
        .err()
        .ok_or("a paused server answered")?;
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    server.resume()?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let n = conn.read(&mut buf)?;
    assert_eq!(&buf[..n], b"+PONG\r\n");
    assert_eq!(server.cli(&["PING"])?, "PONG");

    // A server dropped while paused is still killed and removed.
    let port = server.port();
    let dir = server.dir().to_path_buf();
    server.pause()?;
    drop(server);
    assert!(!dir.exists());
    assert!(refuses_connections(port));
    Ok(())
}

#[test]
fn builder_config_lines_are_applied() -> TestResult {
    let server = RedisServer::builder()
        .config("maxmemory", "10mb")
        .config("maxmemory-policy", "allkeys-lru")
        .start()?;
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory-policy"])?,
        "maxmemory-policy\nallkeys-lru"
    );
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"])?,
        "maxmemory\n10485760"
    );
    let bad = RedisServer::builder()
        .config("no-such-setting", "1")
        .start();
    let err = bad.err().ok_or("a bad config line was accepted")?;
    assert!(err.to_string().contains("no-such-setting"), "{err}");
    Ok(())
}

#[test]
fn three_master_cluster_is_ok_and_reports_its_masters() -> TestResult {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0)?;
    eprintln!("3-master cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.nodes().len(), 3);
    let masters = cluster.masters()?;
    assert_eq!(masters.len(), 3);
    let mut ports: Vec<u16> = cluster.nodes().iter().map(RedisServer::port).collect();
    ports.sort_unstable();
    assert_eq!(masters, ports);
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    assert_eq!(cluster.urls(), urls);
    for node in cluster.nodes() {
        let info = node.cli(&["CLUSTER", "INFO"])?;
        assert_eq!(field(&info, "cluster_state"), Some("ok"));
        assert_eq!(field(&info, "cluster_slots_assigned"), Some("16384"));
    }
    // Keys spread over the slots of all masters; -c follows redirections.
    let first = cluster.nodes().first().ok_or("no nodes")?;
    let last = cluster.nodes().last().ok_or("no nodes")?;
    for i in 0..30 {
        first.cli(&["-c", "SET", &format!("key{i}"), &i.to_string()])?;
    }
    for i in 0..30 {
        assert_eq!(last.cli(&["-c", "GET", &format!("key{i}")])?, i.to_string());
    }
    let mut holders = 0;
    for node in cluster.nodes() {
        if node.cli(&["DBSIZE"])? != "0" {
            holders += 1;
        }
    }
    assert_eq!(holders, 3, "30 keys should land on every master");

    runtime()?.block_on(async {
        use redis::AsyncCommands;
        let client = redis::cluster::ClusterClient::new(cluster.urls())?;
        let mut conn = client.get_async_connection().await?;
        for i in 0..30 {
            let value: String = conn.get(format!("key{i}")).await?;
            assert_eq!(value, i.to_string());
        }
        Ok::<_, redis::RedisError>(())
    })?;
    Ok(())
}

#[test]
fn cluster_with_replicas_fails_over_and_the_old_master_rejoins() -> TestResult {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1)?;
    eprintln!("3+3 cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.nodes().len(), 6);
    let masters = cluster.masters()?;
    let first_three: Vec<u16> = cluster.nodes()[..3].iter().map(RedisServer::port).collect();
    assert_eq!(masters, first_three);
    for replica in &cluster.nodes()[3..] {
        let info = replica.cli(&["INFO", "replication"])?;
        assert_eq!(field(&info, "role"), Some("slave"));
        assert_eq!(field(&info, "master_link_status"), Some("up"));
    }

    let victim = cluster.nodes()[0].port();
    let mut heir = None;
    for replica in &cluster.nodes()[3..] {
        let info = replica.cli(&["INFO", "replication"])?;
        if field(&info, "master_port") == Some(victim.to_string().as_str()) {
            heir = Some(replica.port());
        }
    }
    let heir = heir.ok_or("no replica of the first master")?;

    let killed = Instant::now();
    cluster.nodes_mut()[0].kill()?;
    let failed_over = eventually(Duration::from_secs(30), || {
        cluster
            .masters()
            .is_ok_and(|m| m.len() == 3 && !m.contains(&victim) && m.contains(&heir))
    });
    assert!(failed_over, "no failover: masters {:?}", cluster.masters());
    eprintln!("failover took {:?}", killed.elapsed());

    cluster.nodes_mut()[0].restart()?;
    let rejoined = eventually(Duration::from_secs(30), || {
        cluster.nodes()[0]
            .cli(&["INFO", "replication"])
            .is_ok_and(|info| field(&info, "role") == Some("slave"))
    });
    assert!(rejoined, "the old master did not rejoin as a replica");
    Ok(())
}

#[test]
fn a_cluster_needs_three_masters() {
    let err = RedisCluster::start(2, 0).err();
    assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
}

/// Env var that makes [`child_process_scenario`] act; unset, it does nothing.
const SCENARIO: &str = "REDIS_TEST_SERVER_SCENARIO";

/// Runs [`child_process_scenario`] in a child copy of this test binary.
fn run_scenario(name: &str, path: Option<&str>) -> io::Result<Output> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "--exact",
        "child_process_scenario",
        "--ignored",
        "--nocapture",
    ])
    .env(SCENARIO, name);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output()
}

/// Not a test on its own: the child side of the tests below.
#[test]
#[ignore = "run in a child process by the tests that need it"]
fn child_process_scenario() -> TestResult {
    match std::env::var(SCENARIO).as_deref() {
        // Die without unwinding while holding a server.
        Ok("abort") => {
            let server = RedisServer::start()?;
            println!("SERVER {} {}", server.port(), server.dir().display());
            io::stdout().flush()?;
            std::process::abort();
        }
        // redis-server is not on PATH.
        Ok("no-redis") => {
            let err = RedisServer::start().err().ok_or("started without PATH")?;
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
            assert!(
                err.to_string().contains("apt-get install redis-server"),
                "{err}"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

#[test]
fn the_watchdog_cleans_up_after_a_test_process_that_aborted() -> TestResult {
    let out = run_scenario("abort", None)?;
    assert!(!out.status.success(), "the child did not abort");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SERVER "))
        .ok_or_else(|| format!("no server line in {stdout:?}"))?;
    let (port, dir) = line.split_once(' ').ok_or("bad server line")?;
    let (port, dir): (u16, &Path) = (port.parse()?, Path::new(dir));
    let cleaned = eventually(Duration::from_secs(5), || {
        refuses_connections(port) && !dir.exists()
    });
    assert!(
        cleaned,
        "server {port} or {} outlived its test",
        dir.display()
    );
    Ok(())
}

#[test]
fn a_missing_redis_server_says_what_to_install() -> TestResult {
    let out = run_scenario("no-redis", Some("/nonexistent"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    Ok(())
}

#[cfg(feature = "proxy")]
#[test]
fn the_proxy_forwards_and_loses_exactly_the_reply_it_was_told_to() -> TestResult {
    use redis_test_server::FaultProxy;

    let server = RedisServer::start()?;
    runtime()?.block_on(async {
        let proxy = FaultProxy::start(server.port()).await?;
        assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}", proxy.port()));
        let client = redis::Client::open(proxy.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let () = redis::cmd("SET")
            .arg("k")
            .arg("1")
            .query_async(&mut conn)
            .await?;

        proxy.drop_next_reply();
        assert!(proxy.is_armed());
        let lost = redis::cmd("SET")
            .arg("k")
            .arg("2")
            .query_async::<()>(&mut conn)
            .await;
        assert!(lost.is_err(), "the reply arrived");
        assert!(!proxy.is_armed());
        assert_eq!(proxy.dropped_replies(), 1);
        // The request ran although its reply was lost.
        assert_eq!(server.cli(&["GET", "k"])?, "2");

        // Later connections are forwarded normally.
        let mut again = client.get_multiplexed_async_connection().await?;
        let value: String = redis::cmd("GET").arg("k").query_async(&mut again).await?;
        assert_eq!(value, "2");
        assert!(proxy.connections() >= 2);
        assert_eq!(proxy.dropped_replies(), 1);
        Ok::<_, Box<dyn Error>>(())
    })
}
