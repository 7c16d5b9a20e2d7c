//! One throwaway `redis-server` process and its builder.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::process::{
    self, Captured, LOG_FILE, LOOPBACK, LogMark, STDERR_FILE, STDOUT_FILE, ScratchDir, Watchdog,
};
use super::tls::{self, TlsFiles};

/// How long a server may take to answer PING after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one `redis-cli` call may take (a paused server never answers).
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many fresh ports [`ServerBuilder::start`] tries when the chosen port
/// was taken by someone else before the server could bind it.
const START_ATTEMPTS: usize = 5;

/// Cluster node timeout: short, so that failover tests finish quickly, but
/// long enough not to fail over spuriously on a busy two-core machine.
const CLUSTER_NODE_TIMEOUT_MS: u32 = 3_000;

/// One ACL user of a [`ServerBuilder`].
#[derive(Clone)]
struct AclUser {
    name: String,
    password: String,
    rules: String,
}

/// Configures a [`RedisServer`] before starting it: see [`RedisServer::builder`].
///
/// Every server binds `127.0.0.1` only, on a port chosen free at start,
/// with its working directory, config and logs in a fresh temporary
/// directory; no RDB snapshots, no AOF unless asked for.
#[derive(Clone, Default)]
pub struct ServerBuilder {
    users: Vec<AclUser>,
    tls: bool,
    appendonly_always: bool,
    extra: Vec<(String, String)>,
    cluster: bool,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field(
                "acl_users",
                &self.users.iter().map(|u| &u.name).collect::<Vec<_>>(),
            )
            .field("tls", &self.tls)
            .field("appendonly_always", &self.appendonly_always)
            .field("config", &self.extra)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl ServerBuilder {
    /// Adds the ACL user `user` with password `password` and ACL `rules`
    /// (for example `"~myapp:* +@all"`), and turns the `default` user off, so
    /// that only the configured users can run commands.
    ///
    /// The first user added is the one [`RedisServer::url`] and
    /// [`RedisServer::cli`] authenticate as. The rules are written to the
    /// config file as given; user and password are quoted, and may contain
    /// any character but a line break.
    #[must_use]
    pub fn acl_user(mut self, user: &str, password: &str, rules: &str) -> Self {
        self.users.push(AclUser {
            name: user.to_owned(),
            password: password.to_owned(),
            rules: rules.to_owned(),
        });
        self
    }

    /// Serves TLS only: generates a fresh CA and a server certificate for
    /// `127.0.0.1` and `localhost` (see [`TlsFiles`]), listens with TLS on the
    /// chosen port and without TLS nowhere (`port 0`), and does not ask
    /// clients for certificates (`tls-auth-clients no`).
    #[must_use]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Turns the append-only file on, fsynced on every write
    /// (`appendonly yes`, `appendfsync always`): data written before a
    /// [`RedisServer::kill`] is there again after [`RedisServer::restart`].
    #[must_use]
    pub fn appendonly_always(mut self) -> Self {
        self.appendonly_always = true;
        self
    }

    /// Adds the line `key value` to the server's config file, after the
    /// harness's own lines (so it overrides them). `value` is written as
    /// given: quote it yourself if it needs quoting.
    #[must_use]
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Makes this server a Redis Cluster node (`cluster-enabled yes`), with a
    /// port below 55000 whose bus port (port + 10000) is free too.
    pub(super) fn cluster_node(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Starts the server and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// Fails when `redis-server` is not installed (the message says which
    /// package to install), when a setting contains a line break, or when the
    /// server exits or does not answer within 10 s (the message quotes the
    /// end of its log). A port taken between choosing and binding it is
    /// retried with a new port.
    pub fn start(self) -> io::Result<RedisServer> {
        self.validate()?;
        let dir = ScratchDir::new()?;
        let tls = if self.tls {
            Some(tls::generate(dir.path())?)
        } else {
            None
        };
        let mut server = RedisServer {
            port: 0,
            config_path: dir.path().join("redis.conf"),
            process: None,
            paused: AtomicBool::new(false),
            tls,
            user: self
                .users
                .first()
                .map(|u| (u.name.clone(), u.password.clone())),
            dir,
        };
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            server.port = process::free_port(self.cluster)?;
            fs::write(&server.config_path, self.config_text(&server))?;
            match server.launch(Instant::now() + READY_TIMEOUT) {
                Ok(()) => return Ok(server),
                Err(Launch::AddrInUse(e)) => last = Some(e),
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn validate(&self) -> io::Result<()> {
        let settings = self
            .users
            .iter()
            .flat_map(|u| [&u.name, &u.password, &u.rules])
            .chain(self.extra.iter().flat_map(|(k, v)| [k, v]));
        for setting in settings {
            if setting.contains(['\n', '\r', '\0']) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a redis.conf setting cannot contain a line break: {setting:?}"),
                ));
            }
        }
        if self.users.iter().any(|u| u.name.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an ACL user name cannot be empty",
            ));
        }
        Ok(())
    }

    fn config_text(&self, server: &RedisServer) -> String {
        let dir = server.dir();
        let mut lines = vec![format!("bind {LOOPBACK}")];
        match &server.tls {
            Some(tls) => lines.extend([
                "port 0".to_owned(),
                format!("tls-port {}", server.port),
                format!("tls-cert-file {}", quote_path(&tls.server_cert)),
                format!("tls-key-file {}", quote_path(&tls.server_key)),
                format!("tls-ca-cert-file {}", quote_path(&tls.ca_cert)),
                "tls-auth-clients no".to_owned(),
            ]),
            None => lines.push(format!("port {}", server.port)),
        }
        lines.extend([
            "daemonize no".to_owned(),
            format!("dir {}", quote_path(dir)),
            format!("logfile {}", quote_path(&dir.join(LOG_FILE))),
            "save \"\"".to_owned(),
        ]);
        if self.appendonly_always {
            lines.extend(["appendonly yes".to_owned(), "appendfsync always".to_owned()]);
        } else {
            lines.push("appendonly no".to_owned());
        }
        if self.cluster {
            lines.extend([
                "cluster-enabled yes".to_owned(),
                "cluster-config-file nodes.conf".to_owned(),
                format!("cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}"),
                // Replicas sync at once, not after the default 5 s wait for
                // more replicas to share a diskless transfer.
                "repl-diskless-sync-delay 0".to_owned(),
            ]);
        }
        lines.extend(self.extra.iter().map(|(k, v)| format!("{k} {v}")));
        if !self.users.is_empty() {
            lines.push("user default off".to_owned());
        }
        for user in &self.users {
            lines.push(format!(
                "user {} on {} {}",
                quote(&user.name),
                quote(&format!(">{}", user.password)),
                user.rules
            ));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// A redis.conf argument in double quotes (redis unescapes `\\` and `\"`).
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for the
/// user-info part of a URL.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Why a launch failed: a port someone else took (retry elsewhere), or
/// anything else (give up).
enum Launch {
    AddrInUse(io::Error),
    Failed(io::Error),
}

impl From<io::Error> for Launch {
    fn from(err: io::Error) -> Self {
        Self::Failed(err)
    }
}

/// A live redis-server child and the watchdog that would clean up after it.
#[derive(Debug)]
struct Running {
    child: Child,
    watchdog: Watchdog,
}

impl Running {
    /// SIGKILLs the server and reaps it (after disarming the watchdog, so the
    /// watchdog never signals a reaped, possibly reused, pid).
    fn stop(&mut self) -> io::Result<()> {
        self.watchdog.disarm();
        if let Err(e) = self.child.kill()
            && e.kind() != io::ErrorKind::InvalidInput
        {
            return Err(e);
        }
        self.child.wait().map(drop)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One throwaway `redis-server` process on a free loopback port, for tests
/// and benchmarks.
///
/// Dropping it SIGKILLs the process, reaps it, and deletes its directory —
/// also when the test panics. If the test process itself dies without
/// unwinding (killed, aborted, or the server was kept in a `static`), a small
/// watchdog process does the same.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use statestore_redis::testing::RedisServer;
///
/// let server = RedisServer::start()?;
/// assert_eq!(server.cli(&["PING"])?, "PONG");
/// let url = server.url(); // "redis://127.0.0.1:PORT"
/// # drop(url);
/// # Ok(())
/// # }
/// ```
pub struct RedisServer {
    port: u16,
    config_path: PathBuf,
    process: Option<Running>,
    paused: AtomicBool,
    tls: Option<TlsFiles>,
    user: Option<(String, String)>,
    // Last: removed after the process is gone.
    dir: ScratchDir,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir())
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("paused", &self.paused.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisServer {
    /// Starts a plain standalone server: no TLS, no ACL, no persistence.
    ///
    /// # Errors
    ///
    /// As [`ServerBuilder::start`].
    pub fn start() -> io::Result<RedisServer> {
        Self::builder().start()
    }

    /// A builder for a server with ACL users, TLS, an append-only file or
    /// extra config lines.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The loopback port the server listens on (with TLS, its TLS port).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL a client connects with: `redis://127.0.0.1:PORT`, `rediss://`
    /// with TLS, and `user:password@` (percent-encoded) with an ACL user.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let credentials = self.user.as_ref().map_or_else(String::new, |(user, pass)| {
            format!("{}:{}@", percent_encode(user), percent_encode(pass))
        });
        format!("{scheme}://{credentials}{LOOPBACK}:{}", self.port)
    }

    /// The generated certificates, if the server serves TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The server's working directory: its config (`redis.conf`), log
    /// (`redis.log`), append-only files, certificates and, for a cluster
    /// node, `nodes.conf`. Deleted when the server is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of the running server, or `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|r| r.child.id())
    }

    /// Whether the server process is running and not paused, as far as the
    /// harness knows (it was not [`kill`](Self::kill)ed or
    /// [`pause`](Self::pause)d).
    pub(super) fn is_serving(&self) -> bool {
        self.process.is_some() && !self.paused.load(Ordering::Relaxed)
    }

    /// SIGKILLs the server and waits for it to exit: no shutdown, no final
    /// fsync, like a crash. Its port and directory stay reserved for
    /// [`restart`](Self::restart). Killing a killed server does nothing.
    ///
    /// # Errors
    ///
    /// If the signal cannot be sent or the process cannot be reaped.
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut running) = self.process.take() {
            running.stop()?;
        }
        self.paused.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// SIGSTOPs the server: it keeps its connections and accepts new ones
    /// but answers nothing until [`resume`](Self::resume) — a hung server.
    ///
    /// # Errors
    ///
    /// If the server is not running or the signal cannot be sent.
    pub fn pause(&self) -> io::Result<()> {
        self.signal(Signal::STOP)?;
        self.paused.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// SIGCONTs a [`pause`](Self::pause)d server.
    ///
    /// # Errors
    ///
    /// If the server is not running or the signal cannot be sent.
    pub fn resume(&self) -> io::Result<()> {
        self.signal(Signal::CONT)?;
        self.paused.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn signal(&self, signal: Signal) -> io::Result<()> {
        let pid = self.pid().ok_or_else(not_running)?;
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other(format!("invalid pid {pid}")))?;
        kill_process(pid, signal).map_err(io::Error::from)
    }

    /// Starts the server again on the same port, with the same directory and
    /// config, and waits until it answers PING. A server still running is
    /// [`kill`](Self::kill)ed first. With [`ServerBuilder::appendonly_always`]
    /// its data survives; a cluster node keeps its identity (`nodes.conf`).
    ///
    /// # Errors
    ///
    /// If the server does not answer within 10 s, for example because
    /// another process took the port meanwhile (the message quotes its log).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch(deadline) {
                Ok(()) => return Ok(()),
                Err(Launch::AddrInUse(e)) if Instant::now() >= deadline => return Err(e),
                Err(Launch::AddrInUse(_)) => thread::sleep(Duration::from_millis(100)),
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
    }

    /// Spawns redis-server with the config file and waits until it is ready.
    fn launch(&mut self, deadline: Instant) -> Result<(), Launch> {
        let dir = self.dir.path();
        let mark = LogMark::now(dir);
        let append = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
        };
        let child = Command::new("redis-server")
            .arg(&self.config_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(append(STDOUT_FILE)?)
            .stderr(append(STDERR_FILE)?)
            .spawn()
            .map_err(|e| process::spawn_error("redis-server", e))?;
        let pid = child.id();
        let mut guard = ChildGuard(Some(child));
        let watchdog = Watchdog::spawn(pid, dir)?;
        if let Some(child) = guard.0.take() {
            self.process = Some(Running { child, watchdog });
        }
        self.paused.store(false, Ordering::Relaxed);
        self.wait_ready(deadline, mark)
    }

    /// Polls until PING answers PONG from *this* process (INFO's
    /// `process_id` is checked, in case another server holds the port).
    fn wait_ready(&mut self, deadline: Instant, mark: LogMark) -> Result<(), Launch> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut delay = Duration::from_millis(5);
        loop {
            let running = self.process.as_mut().ok_or_else(not_running)?;
            if let Some(status) = running.child.try_wait()? {
                self.process = None;
                let tail = mark.tail(self.dir.path());
                let err = io::Error::other(format!(
                    "redis-server on port {} exited during startup ({status}); its log:\n{tail}",
                    self.port
                ));
                return Err(if tail.contains("Address already in use") {
                    Launch::AddrInUse(err)
                } else {
                    Launch::Failed(err)
                });
            }
            let pid = running.child.id();
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok()
                && self.answers_as(pid)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.process = None;
                return Err(Launch::Failed(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}; its log:\n{}",
                        self.port,
                        mark.tail(self.dir.path())
                    ),
                )));
            }
            thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    fn answers_as(&self, pid: u32) -> bool {
        let pong = self
            .cli_with_timeout(&["PING"], PROBE_TIMEOUT)
            .is_ok_and(|out| out == "PONG");
        pong && self
            .cli_with_timeout(&["INFO", "server"], PROBE_TIMEOUT)
            .is_ok_and(|info| info_field(&info, "process_id") == Some(pid.to_string().as_str()))
    }

    /// `INFO commandstats` as `{"evalsha": calls, "set": calls, ...}`: command
    /// names as Redis reports them without the `cmdstat_` prefix, lowercased
    /// (subcommands look like `config|resetstat`). The harness's own commands
    /// (`ping`, `info`, `auth`, ...) are counted too.
    ///
    /// # Errors
    ///
    /// As [`cli`](Self::cli).
    pub fn command_stats(&self) -> io::Result<BTreeMap<String, u64>> {
        let info = self.cli(&["INFO", "commandstats"])?;
        let mut stats = BTreeMap::new();
        for line in info.lines() {
            let Some((name, fields)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            let calls = fields
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))
                .and_then(|calls| calls.parse::<u64>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected INFO commandstats line: {line}"),
                    )
                })?;
            stats.insert(name.to_ascii_lowercase(), calls);
        }
        Ok(stats)
    }

    /// Resets the server's statistics (`CONFIG RESETSTAT`), command stats
    /// included.
    ///
    /// # Errors
    ///
    /// As [`cli`](Self::cli).
    pub fn reset_stats(&self) -> io::Result<()> {
        self.cli(&["CONFIG", "RESETSTAT"]).map(drop)
    }

    /// Runs `redis-cli` against this server — with `--tls --cacert` and
    /// `--user --pass` as the server needs, and `-e` so that an error reply
    /// fails — and returns its output without trailing newlines. `args` may
    /// start with more redis-cli options (`-c`, `--raw`, ...) before the
    /// command.
    ///
    /// # Errors
    ///
    /// When redis-cli exits non-zero (the server is down, refused the
    /// credentials, or answered with an error: the message quotes redis-cli's
    /// output) or takes longer than 10 s (a paused server).
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        self.cli_with_timeout(args, CLI_TIMEOUT)
    }

    fn cli_with_timeout(&self, args: &[&str], timeout: Duration) -> io::Result<String> {
        let mut all: Vec<OsString> = vec![
            "-h".into(),
            LOOPBACK.into(),
            "-p".into(),
            self.port.to_string().into(),
            "-e".into(),
        ];
        if let Some(tls) = &self.tls {
            all.extend([
                "--tls".into(),
                "--cacert".into(),
                tls.ca_cert.clone().into(),
            ]);
        }
        if let Some((user, pass)) = &self.user {
            all.extend([
                "--user".into(),
                user.into(),
                "--pass".into(),
                pass.into(),
                "--no-auth-warning".into(),
            ]);
        }
        all.extend(args.iter().map(OsString::from));
        let captured: Captured = process::run("redis-cli", &all, timeout)?;
        captured.into_stdout(&format!(
            "redis-cli {} (port {})",
            args.join(" "),
            self.port
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Kill before the directory (the last field) is removed.
        let _ = self.kill();
    }
}

/// Kills a just-spawned child if setting it up further fails.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn not_running() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the redis-server is not running",
    )
}

/// The value of `key:value` in an INFO reply.
pub(super) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .split_once(':')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_encoded_for_urls() {
        assert_eq!(percent_encode("app-user_1.x~"), "app-user_1.x~");
        assert_eq!(
            percent_encode("p@ss:w/rd %é"),
            "p%40ss%3Aw%2Frd%20%25%C3%A9"
        );
    }

    #[test]
    fn config_values_are_quoted() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
    }

    #[test]
    fn config_text_has_the_harness_lines_then_extras_then_users() {
        let builder =
            RedisServer::builder()
                .config("maxmemory", "1mb")
                .acl_user("app", "pw", "~app:* +@all");
        let text = builder.config_text(&RedisServer {
            port: 41234,
            config_path: PathBuf::new(),
            process: None,
            paused: AtomicBool::new(false),
            tls: None,
            user: None,
            dir: ScratchDir::new().expect("scratch dir"),
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "bind 127.0.0.1");
        assert!(lines.contains(&"port 41234"));
        assert!(lines.contains(&"save \"\""));
        assert!(lines.contains(&"appendonly no"));
        assert!(!text.contains("cluster-enabled"));
        assert_eq!(
            &lines[lines.len() - 3..],
            &[
                "maxmemory 1mb",
                "user default off",
                r#"user "app" on ">pw" ~app:* +@all"#
            ]
        );
    }

    #[test]
    fn line_breaks_in_settings_are_refused() {
        let err = RedisServer::builder()
            .acl_user("app", "pw\nuser default on", "+@all")
            .start()
            .err()
            .map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::InvalidInput));
    }

    #[test]
    fn info_fields_are_found_by_exact_key() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:42\r\nprocess_supervised:no\r\n";
        assert_eq!(info_field(info, "process_id"), Some("42"));
        assert_eq!(info_field(info, "process"), None);
    }
}
