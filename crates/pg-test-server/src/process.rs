//! What the PostgreSQL harness adds to the shared process plumbing
//! (`test-process`): errors in this crate's [`Error`], the unprivileged user
//! that runs the server when the tests run as root, and the watchdog's
//! first signal.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub(crate) use test_process::{Captured, LOOPBACK, ScratchDir, Watchdog, children_of};

use crate::error::{Error, Result};

/// The unprivileged user that runs `initdb` and the server when the tests
/// run as root (`initdb` refuses root).
pub(crate) const SERVER_USER: &str = "postgres";

/// A loopback port that is free right now. Another process may still take it
/// before postgres binds it: callers retry with a new port when startup
/// fails on "could not bind".
pub(crate) fn free_port() -> Result<u16> {
    test_process::free_port(None).map_err(|e| Error::io("choosing a loopback port", e))
}

/// A new [`ScratchDir`] named for this harness.
pub(crate) fn scratch_dir() -> Result<ScratchDir> {
    ScratchDir::new("pg-test-server").map_err(|e| Error::io("creating a scratch directory", e))
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

/// Runs `cmd`, capturing its output; kills it (and reports
/// [`Error::Timeout`]) if it has not exited within `limit`. `name` is the
/// program, for errors.
pub(crate) fn run(cmd: Command, name: &str, limit: Duration) -> Result<Captured> {
    test_process::run(cmd, limit).map_err(|e| match e {
        test_process::RunError::Spawn(e) => spawn_error(name, e),
        test_process::RunError::Wait(e) => Error::io(format!("waiting for {name}"), e),
        test_process::RunError::TimedOut(limit) => Error::Timeout {
            what: name.to_owned(),
            limit,
        },
    })
}

/// Turns "program not found" into [`Error::NotInstalled`].
pub(crate) fn spawn_error(program: &str, err: std::io::Error) -> Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        Error::NotInstalled {
            program: program.to_owned(),
        }
    } else {
        Error::io(format!("could not run {program}"), err)
    }
}

/// The last `lines` non-empty lines of the file at `path` from byte `from`.
pub(crate) fn tail(path: &Path, from: u64, lines: usize) -> String {
    test_process::tail(path, from, lines)
        .unwrap_or_else(|| "(the server logged nothing)".to_owned())
}

/// Starts the watchdog of the postmaster `pid` in `dir`: if this process
/// dies without running destructors, it shuts the server down immediately
/// (SIGQUIT), SIGKILLs it if it is still there, and removes the directory.
pub(crate) fn watchdog(pid: u32, dir: &Path) -> Result<Watchdog> {
    Watchdog::spawn("pg-test-server-watchdog", pid, dir, Some("QUIT"))
        .map_err(|e| Error::io("starting the watchdog", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_not_installed() {
        let err = run(
            Command::new("initdb-that-is-missing"),
            "initdb",
            Duration::from_secs(1),
        )
        .expect_err("missing");
        assert!(matches!(err, Error::NotInstalled { ref program } if program == "initdb"));
    }

    #[test]
    fn failures_are_command_errors_quoting_the_output() {
        let mut sh = Command::new("sh");
        sh.args(["-c", "echo oops >&2; exit 2"]);
        let err = run(sh, "sh", Duration::from_secs(10))
            .expect("ran")
            .into_stdout("sh -c")
            .map_err(Error::from)
            .expect_err("exit 2");
        assert!(matches!(err, Error::Command { ref output, .. } if output == "oops"));
    }
}
