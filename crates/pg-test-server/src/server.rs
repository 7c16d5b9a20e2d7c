//! [`PgServer`]: one throwaway PostgreSQL cluster and its postmaster —
//! starting, crashing, restarting, pausing it, and `psql` against it.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::PgServerBuilder;
use crate::bin::PgBin;
use crate::error::{Error, Result};
use crate::process::{self, LOOPBACK, RunAs, SERVER_USER, ScratchDir, Watchdog};
use test_process::{ChildGuard, percent_encode};

/// How long a server may take to accept connections after it was spawned
/// (crash recovery included).
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stop may take before the postmaster is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one `psql` call may take (a paused server never answers).
const PSQL_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's log (its stderr and stdout), in the server's directory.
const LOG_FILE: &str = "postgres.log";

/// Why a launch failed: a port someone else took (retry elsewhere), or
/// anything else (give up).
pub(crate) enum Launch {
    AddrInUse(Error),
    Failed(Error),
}

impl From<Error> for Launch {
    fn from(err: Error) -> Self {
        Self::Failed(err)
    }
}

/// A live postmaster and the watchdog that would clean up after it.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    watchdog: Watchdog,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the postmaster and reaps it, SIGKILLing it if it is
    /// still there after [`STOP_TIMEOUT`]. The watchdog is disarmed first, so
    /// it never signals a reaped, possibly reused, pid.
    fn stop(&mut self, signal: Signal) -> Result<()> {
        self.watchdog.disarm();
        let _ = send(self.pid(), signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = self.child.kill();
                    return self
                        .child
                        .wait()
                        .map(drop)
                        .map_err(|e| Error::io("reaping postgres", e));
                }
                Err(e) => return Err(Error::io("waiting for postgres", e)),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop(Signal::INT);
    }
}

/// One throwaway PostgreSQL server — its own cluster, made by `initdb` in a
/// fresh temporary directory — on a free loopback port, for tests and
/// benchmarks.
///
/// Dropping it stops the server (a fast shutdown, SIGKILL if that hangs),
/// reaps it and deletes its directory — also when the test panics. If the
/// test process itself dies without unwinding, a small watchdog process
/// shuts the server down.
///
/// ```no_run
/// # fn main() -> pg_test_server::Result<()> {
/// use pg_test_server::PgServer;
///
/// let server = PgServer::start()?;
/// assert_eq!(server.psql("SELECT 1")?, "1");
/// let url = server.url(); // "postgres://postgres@127.0.0.1:PORT/postgres"
/// # drop(url);
/// # Ok(())
/// # }
/// ```
pub struct PgServer {
    pub(crate) port: u16,
    pub(crate) bin: PgBin,
    pub(crate) run_as: RunAs,
    pub(crate) password: Option<String>,
    pub(crate) process: Option<Running>,
    /// The pids SIGSTOPped by [`PgServer::pause`], postmaster first.
    pub(crate) paused: Mutex<Vec<u32>>,
    /// The certificates of a TLS server.
    pub(crate) tls: Option<crate::TlsFiles>,
    // Last: removed after the process is gone.
    pub(crate) dir: ScratchDir,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl PgServer {
    /// Starts a server with the default settings: trust authentication,
    /// `fsync` on.
    ///
    /// # Errors
    ///
    /// As [`PgServerBuilder::start`].
    pub fn start() -> Result<PgServer> {
        Self::builder().start()
    }

    /// A builder for a server with a password, `fsync` off or extra settings.
    pub fn builder() -> PgServerBuilder {
        PgServerBuilder::default()
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database as the superuser `postgres`:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`, with
    /// `postgres:PASSWORD@` (percent-encoded) when the server has a password.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of the database `database` (percent-encoded), as [`url`](Self::url).
    pub fn url_for(&self, database: &str) -> String {
        let credentials = match &self.password {
            Some(password) => format!("{SERVER_USER}:{}", percent_encode(password)),
            None => SERVER_USER.to_owned(),
        };
        format!(
            "postgres://{credentials}@{LOOPBACK}:{}/{}",
            self.port,
            percent_encode(database)
        )
    }

    /// Creates the database `name` (any name: it is quoted) and returns its
    /// URL.
    ///
    /// # Errors
    ///
    /// As [`psql`](Self::psql), for example when it exists already.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.psql(&format!(
            "CREATE DATABASE \"{}\"",
            name.replace('"', "\"\"")
        ))?;
        Ok(self.url_for(name))
    }

    /// The server's temporary directory: `data/` (the cluster), `socket/`
    /// (its unix socket) and `postgres.log`. Deleted when the server is
    /// dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The certificates of a server built with
    /// [`tls`](crate::PgServerBuilder::tls) (feature `tls`), else `None`.
    pub fn tls_files(&self) -> Option<&crate::TlsFiles> {
        self.tls.as_ref()
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The private directory of the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir().join("socket")
    }

    /// The server's log file: everything it wrote to stderr and stdout,
    /// across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join(LOG_FILE)
    }

    /// The server's whole log so far, for a test to print when it fails.
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The postmaster's process id, or `None` while the server is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Running::pid)
    }

    /// Whether the server is [`pause`](Self::pause)d.
    pub fn is_paused(&self) -> bool {
        !self.paused_pids().is_empty()
    }

    fn paused_pids(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        self.paused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Crashes the server: an immediate shutdown (SIGQUIT to the postmaster,
    /// what `pg_ctl stop -m immediate` sends), which ends every backend at
    /// once, with no checkpoint; the next start runs crash recovery. Waits
    /// until the postmaster exited. Its port and directory stay reserved for
    /// [`restart`](Self::restart). Stopping a stopped server does nothing.
    ///
    /// # Errors
    ///
    /// If the postmaster cannot be reaped.
    pub fn stop_immediate(&mut self) -> Result<()> {
        self.stop_with(Signal::QUIT)
    }

    /// Stops the server cleanly: a fast shutdown (SIGINT, what
    /// `pg_ctl stop -m fast` sends: open transactions are rolled back, a
    /// checkpoint is written). Stopping a stopped server does nothing.
    ///
    /// # Errors
    ///
    /// If the postmaster cannot be reaped.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_with(Signal::INT)
    }

    fn stop_with(&mut self, signal: Signal) -> Result<()> {
        if self.is_paused() {
            let _ = self.resume();
        }
        match self.process.take() {
            Some(mut running) => running.stop(signal),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same port and data directory, and
    /// waits until it accepts connections (after crash recovery, if it was
    /// [`stop_immediate`](Self::stop_immediate)d). A server still running is
    /// stopped immediately first. Committed data survives.
    ///
    /// # Errors
    ///
    /// [`Error::Startup`] if it is not ready within 30 s, for example
    /// because another process took the port meanwhile.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_immediate()?;
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

    /// SIGSTOPs the postmaster and every backend: connections stay open and
    /// new ones are queued, but nothing answers until
    /// [`resume`](Self::resume) — a hung server.
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`], or if a signal cannot be sent.
    pub fn pause(&self) -> Result<()> {
        let postmaster = self.pid().ok_or(Error::NotRunning)?;
        let mut paused = self.paused_pids();
        // The postmaster first: once it is stopped it forks no new backend.
        send(postmaster, Signal::STOP)?;
        if !paused.contains(&postmaster) {
            paused.push(postmaster);
        }
        for child in process::children_of(postmaster) {
            if send(child, Signal::STOP).is_ok() && !paused.contains(&child) {
                paused.push(child);
            }
        }
        Ok(())
    }

    /// SIGCONTs everything [`pause`](Self::pause) stopped.
    ///
    /// # Errors
    ///
    /// If the postmaster cannot be signalled.
    pub fn resume(&self) -> Result<()> {
        let mut paused = self.paused_pids();
        let mut result = Ok(());
        // Backends first, the postmaster last (it is first in the list).
        for &pid in paused.iter().rev() {
            let sent = send(pid, Signal::CONT);
            if Some(pid) == self.pid() {
                result = sent;
            }
        }
        paused.clear();
        result
    }

    /// Runs `sql` with `psql` as the superuser, in the `postgres` database,
    /// over the server's unix socket, stopping at the first error; returns
    /// what it printed (unaligned, tuples only: one row a line, columns
    /// separated by `|`), without trailing newlines.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] when a statement fails (the message quotes
    /// psql), [`Error::Timeout`] after 30 s (a paused server).
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_in("postgres", sql)
    }

    /// [`psql`](Self::psql) in the database `database`.
    ///
    /// # Errors
    ///
    /// As [`psql`](Self::psql).
    pub fn psql_in(&self, database: &str, sql: &str) -> Result<String> {
        let mut cmd = std::process::Command::new(self.bin.program("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SERVER_USER,
                "-d",
                database,
            ])
            .args(["-c", sql]);
        Ok(process::run(cmd, "psql", PSQL_TIMEOUT)?
            .into_stdout(&format!("psql on port {}", self.port))?)
    }

    /// Spawns the postmaster and waits until it is ready.
    pub(crate) fn launch(&mut self, deadline: Instant) -> Result<(), Launch> {
        let log = self.log_path();
        let mark = fs::metadata(&log).map_or(0, |m| m.len());
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| Error::io("opening the server log", e))
        };
        let mut cmd = self.run_as.command(&self.bin.program("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?);
        let child = cmd
            .spawn()
            .map_err(|e| process::spawn_error("postgres", e))?;
        let pid = child.id();
        let guard = ChildGuard::new(child);
        let watchdog = process::watchdog(pid, self.dir())?;
        if let Some(child) = guard.keep() {
            self.process = Some(Running { child, watchdog });
        }
        self.wait_ready(deadline, mark)
    }

    /// Polls until `postmaster.pid` says *this* postmaster is `ready` (the
    /// status PostgreSQL writes once it accepts connections).
    fn wait_ready(&mut self, deadline: Instant, mark: u64) -> Result<(), Launch> {
        let pid_file = self.data_dir().join("postmaster.pid");
        let mut delay = Duration::from_millis(5);
        loop {
            let running = self.process.as_mut().ok_or(Error::NotRunning)?;
            let exited = running
                .child
                .try_wait()
                .map_err(|e| Error::io("waiting for postgres", e))?;
            if let Some(status) = exited {
                self.process = None;
                let log = process::tail(&self.log_path(), mark, 20);
                let addr_in_use = log.contains("could not bind") || log.contains("in use");
                let err = Error::Startup {
                    port: self.port,
                    what: format!("exited during startup ({status})"),
                    log,
                };
                return Err(if addr_in_use {
                    Launch::AddrInUse(err)
                } else {
                    Launch::Failed(err)
                });
            }
            let pid = running.pid();
            if fs::read_to_string(&pid_file).is_ok_and(|text| is_ready(&text, pid)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(mut running) = self.process.take() {
                    let _ = running.stop(Signal::QUIT);
                }
                return Err(Launch::Failed(Error::Startup {
                    port: self.port,
                    what: format!("was not ready within {READY_TIMEOUT:?}"),
                    log: process::tail(&self.log_path(), mark, 20),
                }));
            }
            thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Stop before the directory (the last field) is removed.
        let _ = self.stop();
    }
}

/// Whether a `postmaster.pid` file is `pid`'s and says `ready`: line 1 is
/// the pid, line 8 the status.
fn is_ready(pid_file: &str, pid: u32) -> bool {
    let lines: Vec<&str> = pid_file.lines().map(str::trim).collect();
    lines.first() == Some(&pid.to_string().as_str()) && lines.get(7) == Some(&"ready")
}

/// Sends `signal` to `pid`.
fn send(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| Error::InvalidInput(format!("invalid pid {pid}")))?;
    kill_process(raw, signal).map_err(|e| Error::io(format!("signalling pid {pid}"), e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_postmasters_ready_pid_file_counts() {
        let file = "4242\n/tmp/x/data\n1700000000\n5432\n/tmp/x/socket\n127.0.0.1\n  1234  5678\nready   \n";
        assert!(is_ready(file, 4242));
        assert!(!is_ready(file, 4243));
        assert!(!is_ready(&file.replace("ready", "starting"), 4242));
        assert!(!is_ready("4242\n", 4242));
    }
}
