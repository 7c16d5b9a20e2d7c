//! [`ServerBuilder`]: what a [`RedisServer`] is started with, and the
//! `redis.conf` written from it.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::process::{self, LOG_FILE, LOOPBACK};
use crate::server::{Launch, RedisServer, Timeouts};
use crate::tls;

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
    wrapper: Vec<OsString>,
    ready_timeout: Option<Duration>,
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
            .field("wrapper", &self.wrapper)
            .field("ready_timeout", &self.ready_timeout)
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

    /// Serves TLS only (feature `tls`): generates a fresh CA and a server certificate for
    /// `127.0.0.1` and `localhost` (see [`TlsFiles`](crate::TlsFiles)), listens with TLS on the
    /// chosen port and without TLS nowhere (`port 0`), and does not ask
    /// clients for certificates (`tls-auth-clients no`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
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

    /// Runs `redis-server` under a wrapper command: the server is spawned as
    /// `wrapper[0] wrapper[1..] redis-server <config>`, for example under
    /// valgrind's callgrind, to count the instructions the server executes:
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// use redis_test_server::RedisServer;
    ///
    /// let server = RedisServer::builder()
    ///     .wrapper(["valgrind", "--tool=callgrind"])
    ///     .start()?;
    /// // `callgrind_control --dump <pid>` writes `callgrind.out.<pid>.<n>`
    /// // into `server.dir()`: the wrapper runs there.
    /// let pid = server.pid();
    /// # drop(pid);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The wrapper runs in the server's directory ([`RedisServer::dir`]),
    /// so that relative paths it writes (callgrind's default
    /// `callgrind.out.<pid>`) land there and are removed with the server; its
    /// output goes to the server's `stdout.log` and `stderr.log`. It must
    /// `exec` the server or run it in its own process (valgrind does), so
    /// that [`RedisServer::pid`] is the server's: readiness is checked by
    /// the pid `INFO` reports, and [`RedisServer::kill`] and the watchdog
    /// signal that pid. A wrapped server is given 120 s to answer PING
    /// (callgrind slows it about 50×; [`ready_timeout`](Self::ready_timeout)
    /// changes it), and each of its `redis-cli` calls 60 s. An empty
    /// `wrapper` runs the server directly.
    #[must_use]
    pub fn wrapper<I, S>(mut self, wrapper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    /// How long [`start`](Self::start) and [`RedisServer::restart`] wait
    /// for the server to answer PING: 10 s by default, 120 s with a
    /// [`wrapper`](Self::wrapper).
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Makes this server a Redis Cluster node (`cluster-enabled yes`), with a
    /// port below 55000 whose bus port (port + 10000) is free too.
    pub(crate) fn cluster_node(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Starts the server and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// Fails when `redis-server` (or the [`wrapper`](Self::wrapper)) is not
    /// installed (the message says which package to install), when a
    /// setting contains a line break, or when the server exits or does not
    /// answer within 10 s ([`ready_timeout`](Self::ready_timeout); the
    /// message quotes the end of its log). A port taken between choosing
    /// and binding it is retried with a new port.
    pub fn start(self) -> io::Result<RedisServer> {
        self.validate()?;
        let dir = process::scratch_dir()?;
        let tls = if self.tls {
            Some(tls::generate(dir.path())?)
        } else {
            None
        };
        let mut timeouts = if self.wrapper.is_empty() {
            Timeouts::NATIVE
        } else {
            Timeouts::WRAPPED
        };
        if let Some(ready) = self.ready_timeout {
            timeouts.ready = ready;
        }
        let mut server = RedisServer {
            port: 0,
            config_path: dir.path().join("redis.conf"),
            wrapper: self.wrapper.clone(),
            timeouts,
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
            match server.launch(Instant::now() + timeouts.ready) {
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
        if self
            .wrapper
            .first()
            .is_some_and(|program| program.is_empty())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the wrapper's program name cannot be empty",
            ));
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

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
            wrapper: Vec::new(),
            timeouts: Timeouts::NATIVE,
            process: None,
            paused: AtomicBool::new(false),
            tls: None,
            user: None,
            dir: process::scratch_dir().expect("scratch dir"),
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
}
