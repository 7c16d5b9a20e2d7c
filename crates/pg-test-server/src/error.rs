//! [`Error`]: everything that can go wrong starting, stopping or talking to a
//! throwaway server.

use std::io;
use std::time::Duration;

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the harness could not start, stop or query a server.
///
/// Messages about a server that misbehaved quote the end of its log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PostgreSQL program (`initdb`, `postgres`, `psql`) was not found.
    #[error(
        "`{program}` was not found (looked in $PG_BIN, /usr/lib/postgresql/*/bin and PATH): \
         install Debian's postgresql package (`apt-get install postgresql`; \
         `cargo xtask ci` installs it) or set PG_BIN to the directory holding it"
    )]
    NotInstalled {
        /// The program looked for.
        program: String,
    },
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A program ran but exited with a failure status.
    #[error("{what} failed ({status}): {output}")]
    Command {
        /// The program and what it was asked to do.
        what: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr and stdout.
        output: String,
    },
    /// A program or the server did not finish in time (for example `psql`
    /// against a [paused](crate::PgServer::pause) server).
    #[error("{what} did not finish within {limit:?}")]
    Timeout {
        /// What did not finish.
        what: String,
        /// How long the harness waited.
        limit: Duration,
    },
    /// The server exited or did not accept connections while starting.
    #[error("postgres on port {port} {what}; its log:\n{log}")]
    Startup {
        /// The port it was to listen on.
        port: u16,
        /// What happened.
        what: String,
        /// The end of the server's log.
        log: String,
    },
    /// The server is not running (stopped, or never started).
    #[error("the postgres server is not running")]
    NotRunning,
    /// A builder setting the harness refuses (a line break in a setting, an
    /// empty password).
    #[error("invalid setting: {0}")]
    InvalidInput(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<test_process::Failed> for Error {
    fn from(failed: test_process::Failed) -> Self {
        Self::Command {
            what: failed.what,
            status: failed.status,
            output: failed.output,
        }
    }
}
