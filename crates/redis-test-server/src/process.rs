//! Process plumbing shared by the server and cluster harnesses: free loopback
//! ports, scratch directories, running a program with a deadline, the log tail
//! quoted in errors, and the watchdog that cleans up after a test process that
//! died without running its destructors.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder};
use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The only address the harness ever binds or connects to.
pub(crate) const LOOPBACK: &str = "127.0.0.1";

/// Redis Cluster's bus listens on the client port plus this.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// Cluster nodes get ports below this, so that port + 10000 is a valid port.
const CLUSTER_PORT_LIMIT: u16 = 55_000;

/// Ports (and cluster bus ports) this process already handed out. Never
/// reused for the life of the process, so that two servers started in
/// parallel tests never race for the same port.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that is free right now (and, for a cluster node, whose bus
/// port is free too). Another process may still take it before redis-server
/// binds it: callers retry with a new port when startup fails on
/// "Address already in use".
pub(crate) fn free_port(cluster: bool) -> io::Result<u16> {
    for _ in 0..1_000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let bus = if cluster {
            let Some(bus) = port
                .checked_add(CLUSTER_BUS_OFFSET)
                .filter(|_| port < CLUSTER_PORT_LIMIT)
            else {
                continue;
            };
            if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_err() {
                continue;
            }
            Some(bus)
        } else {
            None
        };
        drop(listener);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed.contains(&port) || bus.is_some_and(|b| handed.contains(&b)) {
            continue;
        }
        handed.insert(port);
        if let Some(bus) = bus {
            handed.insert(bus);
        }
        return Ok(port);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no free loopback port found after 1000 tries",
    ))
}

/// A fresh, private directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub(crate) fn new() -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let path = base.join(format!(
                "redis-test-server-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
            ));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not create a unique scratch directory",
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What a finished program printed.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Captured {
    /// `stdout` (without its trailing newlines) on a zero exit status, else an
    /// error quoting both streams.
    pub(crate) fn into_stdout(self, what: &str) -> io::Result<String> {
        if self.status.success() {
            Ok(self.stdout.trim_end_matches(['\n', '\r']).to_owned())
        } else {
            Err(io::Error::other(format!(
                "{what} failed ({}): {} {}",
                self.status,
                self.stderr.trim(),
                self.stdout.trim()
            )))
        }
    }
}

/// Runs `program` with `args`, capturing its output; kills it (and reports
/// [`io::ErrorKind::TimedOut`]) if it has not exited within `timeout`.
pub(crate) fn run<I, S>(program: &str, args: I, timeout: Duration) -> io::Result<Captured>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(program, e))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = (stdout.join(), stderr.join());
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{program} did not finish within {timeout:?}"),
            ));
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    };
    Ok(Captured {
        status,
        stdout: String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
    })
}

/// Something a child writes to: its stdout or stderr pipe.
trait Pipe: Read + Send + 'static {}
impl Pipe for ChildStdout {}
impl Pipe for ChildStderr {}

/// Drains a pipe on its own thread, so that a chatty child never blocks on a
/// full pipe while we wait for it.
fn reader(pipe: Option<impl Pipe>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        out
    })
}

/// Turns "program not found" into an error that says what to install.
pub(crate) fn spawn_error(program: &str, err: io::Error) -> io::Error {
    if err.kind() != io::ErrorKind::NotFound {
        return io::Error::new(err.kind(), format!("could not run {program}: {err}"));
    }
    let package = if program == "redis-server" {
        "redis-server"
    } else {
        "redis-tools (it comes with redis-server)"
    };
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "`{program}` was not found on PATH: install Debian's {package} package \
             (`apt-get install redis-server`; `cargo xtask ci` installs it)"
        ),
    )
}

/// Byte lengths of the server's log files, to quote only what a launch added.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogMark {
    log: u64,
    stdout: u64,
    stderr: u64,
}

pub(crate) const LOG_FILE: &str = "redis.log";
pub(crate) const STDOUT_FILE: &str = "stdout.log";
pub(crate) const STDERR_FILE: &str = "stderr.log";

impl LogMark {
    pub(crate) fn now(dir: &Path) -> Self {
        let len = |name: &str| fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        Self {
            log: len(LOG_FILE),
            stdout: len(STDOUT_FILE),
            stderr: len(STDERR_FILE),
        }
    }

    /// The last lines each log file got since this mark.
    pub(crate) fn tail(&self, dir: &Path) -> String {
        let mut out = String::new();
        for (name, from) in [
            (LOG_FILE, self.log),
            (STDERR_FILE, self.stderr),
            (STDOUT_FILE, self.stdout),
        ] {
            let Ok(bytes) = fs::read(dir.join(name)) else {
                continue;
            };
            let from = usize::try_from(from).unwrap_or(usize::MAX);
            let Some(new) = bytes.get(from..) else {
                continue;
            };
            let text = String::from_utf8_lossy(new);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("--- {name} ---\n"));
            for line in lines.iter().skip(lines.len().saturating_sub(15)) {
                out.push_str(line);
                out.push('\n');
            }
        }
        if out.is_empty() {
            out.push_str("(the server logged nothing)\n");
        }
        out
    }
}

/// A `/bin/sh` that waits for its stdin (a pipe only this process holds) to
/// close, then SIGKILLs the redis-server and removes its directory. Normally
/// it is killed first, by [`Watchdog::disarm`], and never fires; it fires only
/// when this process died without running destructors (killed, aborted, a
/// server kept in a `static`), so no redis-server outlives its test run.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Option<Child>,
}

const WATCHDOG_SCRIPT: &str = r#"trap '' INT TERM HUP
read _ignored
[ "$1" -gt 1 ] && kill -9 "$1" 2>/dev/null
sleep 0.2
[ -n "$2" ] && rm -rf -- "$2"
"#;

impl Watchdog {
    pub(crate) fn spawn(pid: u32, dir: &Path) -> io::Result<Self> {
        if pid <= 1 {
            return Err(io::Error::other(format!("refusing to watch pid {pid}")));
        }
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("redis-test-server-watchdog")
            .arg(pid.to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("could not start /bin/sh: {e}")))?;
        Ok(Self { child: Some(child) })
    }

    /// Kills the watchdog before it can fire (its stdin is closed only after).
    pub(crate) fn disarm(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_the_package_to_install() {
        let missing = || io::Error::from(io::ErrorKind::NotFound);
        let server = spawn_error("redis-server", missing()).to_string();
        assert!(
            server.contains("install Debian's redis-server package"),
            "{server}"
        );
        let cli = spawn_error("redis-cli", missing()).to_string();
        assert!(cli.contains("redis-tools"), "{cli}");
    }

    #[test]
    fn cluster_ports_leave_room_for_the_bus_port() {
        for _ in 0..20 {
            let port = free_port(true).expect("a free port");
            assert!(port < CLUSTER_PORT_LIMIT);
        }
    }

    #[test]
    fn scratch_dirs_are_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = ScratchDir::new().expect("scratch dir");
        let path = dir.path().to_path_buf();
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(dir);
        assert!(!path.exists());
    }
}
