//! [`RedisServer`]: one throwaway `redis-server` process — starting it
//! (from a [`ServerBuilder`](crate::ServerBuilder)), crashing, pausing and
//! restarting it, and `redis-cli` against it.

use std::ffi::OsString;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::ServerBuilder;
use crate::process::{
    self, Captured, LOOPBACK, LogMark, STDERR_FILE, STDOUT_FILE, ScratchDir, Watchdog,
};
use crate::tls::TlsFiles;
use test_process::{ChildGuard, percent_encode};

/// How long a server may take: to answer PING after it was spawned, to
/// answer one readiness probe, and to finish one `redis-cli` call (a paused
/// server never answers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) ready: Duration,
    pub(crate) probe: Duration,
    pub(crate) cli: Duration,
}

impl Timeouts {
    /// A server run directly.
    pub(crate) const NATIVE: Timeouts = Timeouts {
        ready: Duration::from_secs(10),
        probe: Duration::from_secs(2),
        cli: Duration::from_secs(10),
    };
    /// A server run under a [`ServerBuilder::wrapper`]: valgrind's tools
    /// slow it 10–100×, and translate each code path on its first run.
    pub(crate) const WRAPPED: Timeouts = Timeouts {
        ready: Duration::from_secs(120),
        probe: Duration::from_secs(30),
        cli: Duration::from_secs(60),
    };
}

/// Why a launch failed: a port someone else took (retry elsewhere), or
/// anything else (give up).
pub(crate) enum Launch {
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
pub(crate) struct Running {
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
/// use redis_test_server::RedisServer;
///
/// let server = RedisServer::start()?;
/// assert_eq!(server.cli(&["PING"])?, "PONG");
/// let url = server.url(); // "redis://127.0.0.1:PORT"
/// # drop(url);
/// # Ok(())
/// # }
/// ```
pub struct RedisServer {
    pub(crate) port: u16,
    pub(crate) config_path: PathBuf,
    /// The [`ServerBuilder::wrapper`] command, empty for none.
    pub(crate) wrapper: Vec<OsString>,
    pub(crate) timeouts: Timeouts,
    pub(crate) process: Option<Running>,
    pub(crate) paused: AtomicBool,
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) user: Option<(String, String)>,
    // Last: removed after the process is gone.
    pub(crate) dir: ScratchDir,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir())
            .field("tls", &self.tls.is_some())
            .field("wrapper", &self.wrapper)
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
    pub(crate) fn is_serving(&self) -> bool {
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
    /// If the server does not answer within 10 s (or the builder's
    /// [`ready_timeout`](ServerBuilder::ready_timeout)), for example because
    /// another process took the port meanwhile (the message quotes its log).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        let deadline = Instant::now() + self.timeouts.ready;
        loop {
            match self.launch(deadline) {
                Ok(()) => return Ok(()),
                Err(Launch::AddrInUse(e)) if Instant::now() >= deadline => return Err(e),
                Err(Launch::AddrInUse(_)) => thread::sleep(Duration::from_millis(100)),
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
    }

    /// Spawns redis-server (under its wrapper, if any) with the config file
    /// and waits until it is ready.
    pub(crate) fn launch(&mut self, deadline: Instant) -> Result<(), Launch> {
        let dir = self.dir.path();
        let mark = LogMark::now(dir);
        let append = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
        };
        let (mut command, program) = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg("redis-server");
                (command, program.to_string_lossy().into_owned())
            }
            None => (Command::new("redis-server"), "redis-server".to_owned()),
        };
        let child = command
            .arg(&self.config_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(append(STDOUT_FILE)?)
            .stderr(append(STDERR_FILE)?)
            .spawn()
            .map_err(|e| process::spawn_error(&program, e))?;
        let pid = child.id();
        let guard = ChildGuard::new(child);
        let watchdog = process::watchdog(pid, dir)?;
        if let Some(child) = guard.keep() {
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
                        "redis-server on port {} did not answer PING within {:?}; its log:\n{}",
                        self.port,
                        self.timeouts.ready,
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
            .cli_with_timeout(&["PING"], self.timeouts.probe)
            .is_ok_and(|out| out == "PONG");
        pong && self
            .cli_with_timeout(&["INFO", "server"], self.timeouts.probe)
            .is_ok_and(|info| info_field(&info, "process_id") == Some(pid.to_string().as_str()))
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
    /// output) or takes longer than 10 s (a paused server; 60 s for a server
    /// run under a [`ServerBuilder::wrapper`]).
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        self.cli_with_timeout(args, self.timeouts.cli)
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
        Ok(captured.into_stdout(&format!(
            "redis-cli {} (port {})",
            args.join(" "),
            self.port
        ))?)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Kill before the directory (the last field) is removed.
        let _ = self.kill();
    }
}

fn not_running() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the redis-server is not running",
    )
}

/// The value of `key:value` in an INFO reply.
pub(crate) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
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
    fn info_fields_are_found_by_exact_key() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:42\r\nprocess_supervised:no\r\n";
        assert_eq!(info_field(info, "process_id"), Some("42"));
        assert_eq!(info_field(info, "process"), None);
    }
}
