//! The harness against real PostgreSQL servers: start, connect, two at once,
//! crash and restart, pause and resume, passwords, and cleanup on drop.

use std::error::Error;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use pg_test_server::{PgServer, PgServerBuilder};

type TestResult = Result<(), Box<dyn Error>>;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Connects with tokio-postgres and runs `SELECT $1::int + 1`.
async fn add_one(url: &str, n: i32) -> Result<i32, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    let row = client.query_one("SELECT $1::int + 1", &[&n]).await?;
    drop(client);
    let _ = task.await;
    Ok(row.get(0))
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn harness_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PgServer>();
    send_sync::<PgServerBuilder>();
}

#[test]
fn a_server_accepts_connections_on_loopback_and_is_gone_after_drop() -> TestResult {
    let server = PgServer::start()?;
    let port = server.port();
    assert_eq!(
        server.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    assert_eq!(runtime()?.block_on(add_one(&server.url(), 41))?, 42);
    assert_eq!(server.psql("SHOW listen_addresses")?, "127.0.0.1");
    assert_eq!(server.psql("SHOW port")?, port.to_string());
    let sockets = server.psql("SHOW unix_socket_directories")?;
    assert_eq!(Path::new(&sockets), server.socket_dir());
    assert!(server.socket_dir().starts_with(server.dir()));
    assert!(server.data_dir().join("PG_VERSION").is_file());

    let pid = server.pid().ok_or("no pid")?;
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));
    drop(server);
    assert!(!process_exists(pid), "postmaster {pid} outlived the drop");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists());
    Ok(())
}

#[test]
fn two_servers_run_at_once_on_different_ports_with_their_own_data() -> TestResult {
    let a = PgServer::start()?;
    let b = PgServer::start()?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    a.psql("CREATE TABLE only_a (v int)")?;
    assert_eq!(
        a.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_a'")?,
        "1"
    );
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_a'")?,
        "0"
    );
    let rt = runtime()?;
    assert_eq!(rt.block_on(add_one(&a.url(), 1))?, 2);
    assert_eq!(rt.block_on(add_one(&b.url(), 2))?, 3);
    Ok(())
}

#[test]
fn a_restart_after_an_immediate_stop_keeps_committed_data() -> TestResult {
    let mut server = PgServer::builder().fsync(false).start()?;
    let port = server.port();
    server.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2), (3)")?;
    let first = server.pid().ok_or("no pid")?;
    server.stop_immediate()?;
    assert_eq!(server.pid(), None);
    assert!(!process_exists(first));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(server.psql("SELECT 1").is_err());
    // Stopping a stopped server does nothing.
    server.stop_immediate()?;

    server.restart()?;
    assert_eq!(server.port(), port);
    assert_eq!(server.psql("SELECT sum(v) FROM t")?, "6");
    assert_eq!(runtime()?.block_on(add_one(&server.url(), 9))?, 10);
    // The immediate stop was a crash: the restart recovered from the WAL.
    assert!(
        server.log().contains("not properly shut down"),
        "{}",
        server.log()
    );
    Ok(())
}

#[test]
fn a_paused_server_answers_nothing_until_resumed() -> TestResult {
    let server = PgServer::start()?;
    let rt = runtime()?;
    let url = server.url();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await?;
        server.pause()?;
        assert!(server.is_paused());
        // An open connection's backend hangs...
        let hung =
            tokio::time::timeout(Duration::from_millis(500), client.simple_query("SELECT 1"));
        assert!(hung.await.is_err(), "a paused backend answered");
        // ...and so does a new connection.
        let new = tokio::time::timeout(
            Duration::from_millis(500),
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        );
        assert!(new.await.is_err(), "a paused postmaster accepted a session");
        server.resume()?;
        assert!(!server.is_paused());
        client.simple_query("SELECT 1").await?;
        Ok::<_, Box<dyn Error>>(())
    })?;
    assert_eq!(rt.block_on(add_one(&url, 0))?, 1);
    Ok(())
}

#[test]
fn a_password_server_refuses_tcp_clients_without_it() -> TestResult {
    let server = PgServer::builder().password("p@ss w'rd").start()?;
    assert_eq!(
        server.url(),
        format!(
            "postgres://postgres:p%40ss%20w%27rd@127.0.0.1:{}/postgres",
            server.port()
        )
    );
    let rt = runtime()?;
    assert_eq!(rt.block_on(add_one(&server.url(), 1))?, 2);
    let without = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port());
    assert!(rt.block_on(add_one(&without, 1)).is_err());
    let wrong = format!(
        "postgres://postgres:nope@127.0.0.1:{}/postgres",
        server.port()
    );
    assert!(rt.block_on(add_one(&wrong, 1)).is_err());
    assert!(!format!("{server:?}").contains("w'rd"));
    // The password file given to initdb is gone.
    assert!(!server.dir().join("pwfile").exists());
    Ok(())
}

#[test]
fn databases_are_created_with_any_name_and_reached_by_url() -> TestResult {
    let server = PgServer::builder().fsync(false).start()?;
    let url = server.create_database("odd \"name\"")?;
    assert!(url.ends_with("/odd%20%22name%22"), "{url}");
    assert_eq!(runtime()?.block_on(add_one(&url, 2))?, 3);
    assert_eq!(
        server.psql_in("odd \"name\"", "SELECT current_database()")?,
        "odd \"name\""
    );
    Ok(())
}

#[test]
fn failing_sql_is_an_error_quoting_psql() -> TestResult {
    let server = PgServer::builder().fsync(false).start()?;
    let err = server
        .psql("SELECT * FROM no_such_table")
        .err()
        .ok_or("no error")?;
    assert!(err.to_string().contains("no_such_table"), "{err}");
    Ok(())
}
