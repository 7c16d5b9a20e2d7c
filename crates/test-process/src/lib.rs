#![doc = include_str!("../README.md")]

use std::collections::BTreeSet;
use std::fmt;
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

pub mod tls;
pub use tls::TlsFiles;

/// The only address the harnesses ever bind or connect to.
pub const LOOPBACK: &str = "127.0.0.1";

/// Ports this process already handed out (companions included): never
/// reused for the life of the process, so that servers started by parallel
/// tests never race for one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that is free right now and was never handed out before by
/// this process. With `companion = Some(offset)`, `port + offset` is free too
/// (and reserved with it), as Redis Cluster's bus port needs.
///
/// Another process may still take the port before the server binds it:
/// callers retry with a new port when startup fails on "address in use".
///
/// # Errors
///
/// When no loopback port can be bound, or none was found in 1000 tries.
pub fn free_port(companion: Option<u16>) -> io::Result<u16> {
    for _ in 0..1_000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let other = match companion {
            None => None,
            Some(offset) => match port.checked_add(offset) {
                Some(other) if TcpListener::bind((Ipv4Addr::LOCALHOST, other)).is_ok() => {
                    Some(other)
                }
                _ => continue,
            },
        };
        drop(listener);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed.contains(&port) || other.is_some_and(|o| handed.contains(&o)) {
            continue;
        }
        handed.insert(port);
        handed.extend(other);
        return Ok(port);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no free loopback port found after 1000 tries",
    ))
}

/// A fresh, private (0700) directory under the system temp dir, removed on
/// drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<temp>/<prefix>-<pid>-<n>-<nanos>`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn new(prefix: &str) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let path = base.join(format!(
                "{prefix}-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
            ));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", path.display()),
                    ));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not create a unique scratch directory",
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
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
pub struct Captured {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout, lossily decoded.
    pub stdout: String,
    /// Its stderr, lossily decoded.
    pub stderr: String,
}

impl Captured {
    /// `stdout` (without its trailing newlines) on a zero exit status.
    ///
    /// # Errors
    ///
    /// [`Failed`] quoting both streams, on any other status; `what` names
    /// the program and what it was asked to do.
    pub fn into_stdout(self, what: &str) -> Result<String, Failed> {
        if self.status.success() {
            Ok(self.stdout.trim_end_matches(['\n', '\r']).to_owned())
        } else {
            Err(Failed {
                what: what.to_owned(),
                status: self.status.to_string(),
                output: format!("{} {}", self.stderr.trim(), self.stdout.trim())
                    .trim()
                    .to_owned(),
            })
        }
    }
}

/// A program that ran but exited with a failure status.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The program and what it was asked to do.
    pub what: String,
    /// Its exit status.
    pub status: String,
    /// What it printed on stderr and stdout.
    pub output: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed ({}): {}", self.what, self.status, self.output)
    }
}

impl std::error::Error for Failed {}

impl From<Failed> for io::Error {
    fn from(failed: Failed) -> Self {
        io::Error::other(failed.to_string())
    }
}

/// Why [`run`] has no [`Captured`] output.
#[derive(Debug)]
pub enum RunError {
    /// The program could not be started (`NotFound` when it is not
    /// installed).
    Spawn(io::Error),
    /// Waiting for it failed.
    Wait(io::Error),
    /// It had not exited within the limit, and was killed.
    TimedOut(Duration),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "could not start it: {e}"),
            Self::Wait(e) => write!(f, "could not wait for it: {e}"),
            Self::TimedOut(limit) => write!(f, "it did not finish within {limit:?}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(e) | Self::Wait(e) => Some(e),
            Self::TimedOut(_) => None,
        }
    }
}

/// Runs `cmd` with stdin closed, capturing its output; kills it if it has
/// not exited within `limit`.
///
/// # Errors
///
/// [`RunError`]: it could not start, could not be waited for, or was late.
pub fn run(mut cmd: Command, limit: Duration) -> Result<Captured, RunError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(RunError::Wait)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = (stdout.join(), stderr.join());
            return Err(RunError::TimedOut(limit));
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

/// The byte length of the file at `path` (0 when missing): a mark to pass to
/// [`tail`] later.
pub fn mark(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The last `lines` non-empty lines the file at `path` got after byte
/// `from`, or `None` when it is unreadable or got none.
pub fn tail(path: &Path, from: u64, lines: usize) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    let from = usize::try_from(from).unwrap_or(usize::MAX);
    let text = String::from_utf8_lossy(bytes.get(from..)?);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if all.is_empty() {
        return None;
    }
    Some(
        all.iter()
            .skip(all.len().saturating_sub(lines))
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for the
/// user-info and path parts of a URL.
#[must_use]
pub fn percent_encode(value: &str) -> String {
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

/// Kills a just-spawned child when dropped, unless [`ChildGuard::keep`]
/// took it back: for the steps that set a server up after its spawn.
#[derive(Debug)]
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Guards `child`.
    #[must_use]
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// The child, no longer guarded.
    pub fn keep(mut self) -> Option<Child> {
        self.0.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pids whose parent is `parent` (read from `/proc/<pid>/stat`).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            (parent_pid(&stat)? == parent).then_some(pid)
        })
        .collect()
}

/// The parent pid in a `/proc/<pid>/stat` line: `pid (comm) state ppid ...`,
/// where `comm` may hold spaces and parentheses.
fn parent_pid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A `/bin/sh` that waits for its stdin (a pipe only this process holds) to
/// close, then stops the server (with a first signal, a second's grace, then
/// SIGKILL) and removes its directory. Normally it is killed first, by
/// [`Watchdog::disarm`] or on drop, and never fires; it fires only when this
/// process died without running destructors (killed, aborted, a server kept
/// in a `static`), so no server outlives its test run.
#[derive(Debug)]
pub struct Watchdog {
    child: Option<Child>,
}

/// `$1` the pid, `$2` the directory, `$3` a first signal (or empty).
const WATCHDOG_SCRIPT: &str = r#"trap '' INT TERM HUP
read _ignored
if [ "$1" -gt 1 ]; then
  [ -n "$3" ] && kill -"$3" "$1" 2>/dev/null && sleep 1
  kill -9 "$1" 2>/dev/null
fi
sleep 0.2
[ -n "$2" ] && rm -rf -- "$2"
"#;

impl Watchdog {
    /// Watches the server `pid` and its directory `dir`. `first_signal`
    /// (such as `"QUIT"`) is sent a second before SIGKILL, for servers that
    /// clean up after themselves on it; `name` names the shell in `ps`.
    ///
    /// # Errors
    ///
    /// When `pid` is 0 or 1, or `/bin/sh` cannot start.
    pub fn spawn(name: &str, pid: u32, dir: &Path, first_signal: Option<&str>) -> io::Result<Self> {
        if pid <= 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to watch pid {pid}"),
            ));
        }
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg(name)
            .arg(pid.to_string())
            .arg(dir)
            .arg(first_signal.unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("could not start /bin/sh: {e}")))?;
        Ok(Self { child: Some(child) })
    }

    /// Kills the watchdog before it can fire (its stdin is closed only after).
    pub fn disarm(&mut self) {
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
    fn parent_pids_are_read_past_odd_command_names() {
        assert_eq!(parent_pid("42 (postgres) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("42 (a) b (c)) S 9 42 42 0"), Some(9));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn this_process_is_a_child_of_its_parent() {
        let me = std::process::id();
        let stat = fs::read_to_string(format!("/proc/{me}/stat")).expect("stat");
        let parent = parent_pid(&stat).expect("ppid");
        assert!(children_of(parent).contains(&me));
    }

    #[test]
    fn ports_are_never_handed_out_twice() {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port(None).expect("port")).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn companion_ports_fit_and_are_reserved_too() {
        for _ in 0..20 {
            let port = free_port(Some(10_000)).expect("a free port");
            let bus = port.checked_add(10_000).expect("room for the bus port");
            let handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
            assert!(handed.contains(&bus));
        }
    }

    #[test]
    fn scratch_dirs_are_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = ScratchDir::new("test-process").expect("scratch dir");
        let path = dir.path().to_path_buf();
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn log_tails_start_at_the_mark() {
        let dir = ScratchDir::new("test-process").expect("scratch dir");
        let log = dir.path().join("log");
        fs::write(&log, "old\n\nnew 1\nnew 2\nnew 3\n").expect("write");
        assert_eq!(tail(&log, 4, 2).as_deref(), Some("new 2\nnew 3"));
        assert_eq!(tail(&log, 1_000, 2), None);
        assert_eq!(tail(&dir.path().join("missing"), 0, 2), None);
        assert_eq!(mark(&log), 23);
    }

    #[test]
    fn credentials_are_percent_encoded_for_urls() {
        assert_eq!(percent_encode("app-user_1.x~"), "app-user_1.x~");
        assert_eq!(
            percent_encode("p@ss:w/rd %é"),
            "p%40ss%3Aw%2Frd%20%25%C3%A9"
        );
    }

    #[test]
    fn late_programs_are_killed_and_failures_quote_their_output() {
        let mut sleep = Command::new("sleep");
        sleep.arg("10");
        assert!(matches!(
            run(sleep, Duration::from_millis(50)),
            Err(RunError::TimedOut(_))
        ));
        let mut sh = Command::new("sh");
        sh.args(["-c", "echo out; echo err >&2; exit 3"]);
        let failed = run(sh, Duration::from_secs(10))
            .expect("ran")
            .into_stdout("sh")
            .expect_err("exit 3");
        assert_eq!(failed.output, "err out");
        let missing = run(Command::new("no-such-program-xyz"), Duration::from_secs(1));
        assert!(
            matches!(missing, Err(RunError::Spawn(ref e)) if e.kind() == io::ErrorKind::NotFound)
        );
    }
}
