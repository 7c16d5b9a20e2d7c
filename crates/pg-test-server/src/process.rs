//! Process plumbing: free loopback ports, scratch directories owned by the
//! user that runs the server, running a program with a deadline, the log
//! tail quoted in errors, a backend's child processes, and the watchdog that
//! cleans up after a test process that died without running its destructors.

use std::collections::BTreeSet;
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

use crate::error::{Error, Result};

/// The only address the harness ever binds or connects to.
pub(crate) const LOOPBACK: &str = "127.0.0.1";

/// The unprivileged user that runs `initdb` and the server when the tests
/// run as root (`initdb` refuses root).
pub(crate) const SERVER_USER: &str = "postgres";

/// Ports this process already handed out: never reused for the life of the
/// process, so that servers started by parallel tests never race for one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that is free right now. Another process may still take it
/// before postgres binds it: callers retry with a new port when startup
/// fails on "could not bind".
pub(crate) fn free_port() -> Result<u16> {
    for _ in 0..1_000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding a loopback port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading a bound port", e))?
            .port();
        drop(listener);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::io(
        "choosing a port",
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no free loopback port found after 1000 tries",
        ),
    ))
}

/// Who runs `initdb` and `postgres`: this process's user, or (when that is
/// root) the unprivileged `postgres` user through `setpriv`.
#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    Current,
    User { name: String, uid: u32, gid: u32 },
}

impl RunAs {
    pub(crate) fn detect() -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Self::Current);
        }
        let id = |flag: &str| -> Result<u32> {
            let mut cmd = Command::new("id");
            cmd.args([flag, SERVER_USER]);
            let out = run(cmd, "id", Duration::from_secs(10))?.into_stdout(&format!(
                "id {flag} {SERVER_USER} (needed to run postgres as non-root)"
            ))?;
            out.trim().parse().map_err(|_| Error::Command {
                what: format!("id {flag} {SERVER_USER}"),
                status: "0".to_owned(),
                output: out.clone(),
            })
        };
        Ok(Self::User {
            name: SERVER_USER.to_owned(),
            uid: id("-u")?,
            gid: id("-g")?,
        })
    }

    /// A command running `program` as this user.
    pub(crate) fn command(&self, program: &Path) -> Command {
        match self {
            Self::Current => Command::new(program),
            Self::User { name, .. } => {
                let mut cmd = Command::new("setpriv");
                cmd.args(["--reuid", name, "--regid", name, "--init-groups"])
                    .arg(program);
                cmd
            }
        }
    }

    /// Hands `path` to this user (does nothing for the current user).
    pub(crate) fn chown(&self, path: &Path) -> Result<()> {
        if let Self::User { uid, gid, .. } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(|e| Error::io(format!("chown {} to {SERVER_USER}", path.display()), e))?;
        }
        Ok(())
    }
}

/// A fresh, private (0700) directory under the system temp dir, removed on
/// drop.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub(crate) fn new() -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let path = base.join(format!(
                "pg-test-server-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
            ));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
            }
        }
        Err(Error::io(
            "creating a scratch directory",
            io::Error::from(io::ErrorKind::AlreadyExists),
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
    /// `stdout` (without trailing newlines) on a zero exit status, else
    /// [`Error::Command`] quoting both streams.
    pub(crate) fn into_stdout(self, what: &str) -> Result<String> {
        if self.status.success() {
            Ok(self.stdout.trim_end_matches(['\n', '\r']).to_owned())
        } else {
            Err(Error::Command {
                what: what.to_owned(),
                status: self.status.to_string(),
                output: format!("{} {}", self.stderr.trim(), self.stdout.trim())
                    .trim()
                    .to_owned(),
            })
        }
    }
}

/// Runs `cmd`, capturing its output; kills it (and reports
/// [`Error::Timeout`]) if it has not exited within `limit`. `name` is the
/// program, for errors.
pub(crate) fn run(mut cmd: Command, name: &str, limit: Duration) -> Result<Captured> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(name, e))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::io(format!("waiting for {name}"), e))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = (stdout.join(), stderr.join());
            return Err(Error::Timeout {
                what: name.to_owned(),
                limit,
            });
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

/// Turns "program not found" into [`Error::NotInstalled`].
pub(crate) fn spawn_error(program: &str, err: io::Error) -> Error {
    if err.kind() == io::ErrorKind::NotFound {
        Error::NotInstalled {
            program: program.to_owned(),
        }
    } else {
        Error::io(format!("could not run {program}"), err)
    }
}

/// The last `lines` non-empty lines of the file at `path` from byte `from`.
pub(crate) fn tail(path: &Path, from: u64, lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return "(no log)".to_owned();
    };
    let from = usize::try_from(from).unwrap_or(usize::MAX);
    let text = String::from_utf8_lossy(bytes.get(from..).unwrap_or_default());
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if all.is_empty() {
        return "(the server logged nothing)".to_owned();
    }
    all.iter()
        .skip(all.len().saturating_sub(lines))
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pids whose parent is `parent` (read from `/proc/<pid>/stat`).
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
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
/// close, then shuts the postmaster down immediately (SIGQUIT), SIGKILLs it
/// if it is still there, and removes its directory. Normally it is killed
/// first, by [`Watchdog::disarm`], and never fires; it fires only when this
/// process died without running destructors, so no postgres outlives its
/// test run.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Option<Child>,
}

const WATCHDOG_SCRIPT: &str = r#"trap '' INT TERM HUP
read _ignored
[ "$1" -gt 1 ] && kill -QUIT "$1" 2>/dev/null && sleep 1 && kill -9 "$1" 2>/dev/null
sleep 0.2
[ -n "$2" ] && rm -rf -- "$2"
"#;

impl Watchdog {
    pub(crate) fn spawn(pid: u32, dir: &Path) -> Result<Self> {
        if pid <= 1 {
            return Err(Error::InvalidInput(format!("refusing to watch pid {pid}")));
        }
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pg-test-server-watchdog")
            .arg(pid.to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("could not start /bin/sh", e))?;
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
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port().expect("port")).collect();
        assert_eq!(ports.len(), 50);
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

    #[test]
    fn log_tails_start_at_the_mark() {
        let dir = ScratchDir::new().expect("scratch dir");
        let log = dir.path().join("log");
        fs::write(&log, "old\n\nnew 1\nnew 2\nnew 3\n").expect("write");
        assert_eq!(tail(&log, 4, 2), "new 2\nnew 3");
        assert_eq!(tail(&log, 1_000, 2), "(the server logged nothing)");
    }
}
