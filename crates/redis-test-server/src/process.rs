//! What the Redis harnesses add to the shared process plumbing
//! (`test-process`): Cluster's bus-port rule, `io::Error`s that say what to
//! install, the three log files quoted in errors, and the watchdog's name.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub(crate) use test_process::{Captured, LOOPBACK, ScratchDir, Watchdog};

/// Redis Cluster's bus listens on the client port plus this.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// A loopback port that is free right now (and, for a cluster node, whose bus
/// port is free too). Another process may still take it before redis-server
/// binds it: callers retry with a new port when startup fails on
/// "Address already in use".
pub(crate) fn free_port(cluster: bool) -> io::Result<u16> {
    test_process::free_port(cluster.then_some(CLUSTER_BUS_OFFSET))
}

/// A new [`ScratchDir`] named for this harness.
pub(crate) fn scratch_dir() -> io::Result<ScratchDir> {
    ScratchDir::new("redis-test-server")
}

/// Runs `program` with `args`, capturing its output; kills it (and reports
/// [`io::ErrorKind::TimedOut`]) if it has not exited within `timeout`.
pub(crate) fn run<I, S>(program: &str, args: I, timeout: Duration) -> io::Result<Captured>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    test_process::run(cmd, timeout).map_err(|e| match e {
        test_process::RunError::Spawn(e) => spawn_error(program, e),
        test_process::RunError::Wait(e) => e,
        test_process::RunError::TimedOut(limit) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{program} did not finish within {limit:?}"),
        ),
    })
}

/// Turns "program not found" into an error that says what to install.
pub(crate) fn spawn_error(program: &str, err: io::Error) -> io::Error {
    if err.kind() != io::ErrorKind::NotFound {
        return io::Error::new(err.kind(), format!("could not run {program}: {err}"));
    }
    let package = match program {
        "redis-server" => "redis-server",
        "redis-cli" | "redis-benchmark" => "redis-tools (it comes with redis-server)",
        // A `ServerBuilder::wrapper`, such as valgrind.
        _ => {
            return io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "`{program}` (the server's wrapper command) was not found on PATH: install \
                     it (valgrind: `apt-get install valgrind`)"
                ),
            );
        }
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
        Self {
            log: test_process::mark(&dir.join(LOG_FILE)),
            stdout: test_process::mark(&dir.join(STDOUT_FILE)),
            stderr: test_process::mark(&dir.join(STDERR_FILE)),
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
            if let Some(lines) = test_process::tail(&dir.join(name), from, 15) {
                out.push_str(&format!("--- {name} ---\n{lines}\n"));
            }
        }
        if out.is_empty() {
            out.push_str("(the server logged nothing)\n");
        }
        out
    }
}

/// Starts the watchdog of the redis-server `pid` in `dir`: it SIGKILLs the
/// server and removes the directory if this process dies without running
/// destructors.
pub(crate) fn watchdog(pid: u32, dir: &Path) -> io::Result<Watchdog> {
    Watchdog::spawn("redis-test-server-watchdog", pid, dir, None)
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
        let wrapper = spawn_error("valgrind", missing()).to_string();
        assert!(wrapper.contains("wrapper"), "{wrapper}");
        let run = run("redis-cli-that-is-missing", ["x"], Duration::from_secs(1))
            .expect_err("not installed");
        assert!(run.to_string().contains("was not found on PATH"), "{run}");
    }

    #[test]
    fn cluster_ports_leave_room_for_the_bus_port() {
        for _ in 0..20 {
            let port = free_port(true).expect("a free port");
            assert!(port.checked_add(CLUSTER_BUS_OFFSET).is_some());
        }
    }
}
