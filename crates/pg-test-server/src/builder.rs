//! [`PgServerBuilder`]: what a [`PgServer`] is started with — `initdb`'s
//! options, `pg_hba.conf`, and the settings file included by
//! `postgresql.conf`.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bin::PgBin;
use crate::error::{Error, Result};
use crate::process::{self, LOOPBACK, RunAs, SERVER_USER};
use crate::server::{Launch, PgServer, READY_TIMEOUT};

/// How many fresh ports [`PgServerBuilder::start`] tries when the chosen
/// port was taken by someone else before the server could bind it.
const START_ATTEMPTS: usize = 5;

/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);

/// The harness's settings file in the data directory, included at the end
/// of `postgresql.conf`.
pub(crate) const SETTINGS_FILE: &str = "pg-test-server.conf";

/// Configures a [`PgServer`] before starting it: see [`PgServer::builder`].
///
/// Every server gets its own cluster (`initdb`) in a fresh temporary
/// directory, listens on `127.0.0.1` only, on a port chosen free at start,
/// and on a unix socket in a private directory inside the temporary
/// directory. The superuser is `postgres`; without a
/// [`password`](Self::password) every connection is trusted.
#[derive(Clone, Default)]
pub struct PgServerBuilder {
    password: Option<String>,
    no_fsync: bool,
    extra: Vec<(String, String)>,
    tls: bool,
}

impl fmt::Debug for PgServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServerBuilder")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("fsync", &!self.no_fsync)
            .field("config", &self.extra)
            .field("tls", &self.tls)
            .finish()
    }
}

impl PgServerBuilder {
    /// Gives the superuser `postgres` this password and makes TCP
    /// connections authenticate with it (`scram-sha-256`);
    /// [`PgServer::url`] then carries it. The unix socket (used by
    /// [`PgServer::psql`]) stays trusted.
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// `fsync` on (the default) or off. Off is faster and still loses no
    /// committed data when only the server crashes
    /// ([`PgServer::stop_immediate`]): the operating system keeps the
    /// writes; it is only unsafe across a machine crash.
    #[must_use]
    pub fn fsync(mut self, on: bool) -> Self {
        self.no_fsync = !on;
        self
    }

    /// Adds the setting `key = value` after the harness's own (so it
    /// overrides them). `value` is written as given: quote strings yourself,
    /// for example `.config("shared_preload_libraries", "'pg_stat_statements'")`.
    #[must_use]
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Makes the server TLS-only: a throwaway CA and a server certificate
    /// for `127.0.0.1` and `localhost` are generated (see
    /// [`PgServer::tls_files`]), `ssl = on`, and TCP connections must use
    /// TLS (`hostssl` in `pg_hba.conf`; a plain one is refused). The unix
    /// socket (used by [`PgServer::psql`]) stays plain.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Creates the cluster, starts the server and waits until it accepts
    /// connections.
    ///
    /// # Errors
    ///
    /// [`Error::NotInstalled`] without PostgreSQL, [`Error::InvalidInput`]
    /// for a setting with a line break or an empty password,
    /// [`Error::Command`] when `initdb` fails, [`Error::Startup`] when the
    /// server exits or is not ready within 30 s (quoting its log). A port
    /// taken between choosing and binding it is retried with a new port.
    pub fn start(self) -> Result<PgServer> {
        self.validate()?;
        let bin = PgBin::locate()?;
        let run_as = RunAs::detect()?;
        let dir = process::scratch_dir()?;
        run_as.chown(dir.path())?;
        let socket_dir = dir.path().join("socket");
        fs::create_dir(&socket_dir)
            .and_then(|()| fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| Error::io("creating the socket directory", e))?;
        run_as.chown(&socket_dir)?;
        self.initdb(&bin, &run_as, dir.path())?;
        let tls = if self.tls {
            Some(Self::certificates(&run_as, dir.path())?)
        } else {
            None
        };
        let mut server = PgServer {
            tls,
            port: 0,
            bin,
            run_as,
            password: self.password.clone(),
            process: None,
            paused: Default::default(),
            dir,
        };
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            server.port = process::free_port()?;
            let settings = server.data_dir().join(SETTINGS_FILE);
            fs::write(&settings, self.settings_text(&server))
                .map_err(|e| Error::io("writing the settings file", e))?;
            server.run_as.chown(&settings)?;
            match server.launch(Instant::now() + READY_TIMEOUT) {
                Ok(()) => return Ok(server),
                Err(Launch::AddrInUse(e)) => last = Some(e),
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NotRunning))
    }

    /// Generates the certificates in `<dir>/tls`, owned by the server's
    /// user (PostgreSQL reads the key only if no one else can).
    fn certificates(run_as: &RunAs, dir: &Path) -> Result<crate::TlsFiles> {
        let tls_dir = dir.join("tls");
        fs::create_dir(&tls_dir)
            .and_then(|()| fs::set_permissions(&tls_dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| Error::io("creating the certificate directory", e))?;
        let files = crate::tls::generate(&tls_dir)
            .map_err(|e| Error::io("generating the TLS certificates", e))?;
        for path in [
            &tls_dir,
            &files.ca_cert,
            &files.server_cert,
            &files.server_key,
            &files.other_ca_cert,
        ] {
            run_as.chown(path)?;
        }
        Ok(files)
    }

    fn validate(&self) -> Result<()> {
        let settings = self
            .password
            .iter()
            .chain(self.extra.iter().flat_map(|(k, v)| [k, v]));
        for setting in settings {
            if setting.contains(['\n', '\r', '\0']) {
                return Err(Error::InvalidInput(
                    "a setting or password cannot contain a line break or NUL".to_owned(),
                ));
            }
        }
        if self.password.as_deref() == Some("") {
            return Err(Error::InvalidInput(
                "the password cannot be empty".to_owned(),
            ));
        }
        Ok(())
    }

    /// Runs `initdb` as the server's user, then writes `pg_hba.conf` and
    /// makes `postgresql.conf` include the harness's settings file.
    fn initdb(&self, bin: &PgBin, run_as: &RunAs, dir: &Path) -> Result<()> {
        let data = dir.join("data");
        let pwfile = dir.join("pwfile");
        let host_auth = if self.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let mut cmd = run_as.command(&bin.program("initdb"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", SERVER_USER, "--auth-local=trust"])
            .arg(format!("--auth-host={host_auth}"))
            .args(["--encoding=UTF8", "--locale=C", "--no-sync"]);
        if let Some(password) = &self.password {
            fs::write(&pwfile, format!("{password}\n"))
                .and_then(|()| fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)))
                .map_err(|e| Error::io("writing the password file", e))?;
            run_as.chown(&pwfile)?;
            cmd.arg(format!("--pwfile={}", pwfile.display()));
        }
        let initdb = process::run(cmd, "initdb", INITDB_TIMEOUT);
        let _ = fs::remove_file(&pwfile);
        initdb?.into_stdout("initdb")?;
        // A TLS server refuses plain TCP connections: `hostssl` only.
        let host = if self.tls { "hostssl" } else { "host" };
        let hba = format!(
            "# Written by pg-test-server: the private socket and loopback only.\n\
             local all all trust\n\
             {host} all all {LOOPBACK}/32 {host_auth}\n"
        );
        fs::write(data.join("pg_hba.conf"), hba)
            .map_err(|e| Error::io("writing pg_hba.conf", e))?;
        let conf = data.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).map_err(|e| Error::io("reading postgresql.conf", e))?;
        text.push_str(&format!("\ninclude '{SETTINGS_FILE}'\n"));
        fs::write(&conf, text).map_err(|e| Error::io("writing postgresql.conf", e))
    }

    pub(crate) fn settings_text(&self, server: &PgServer) -> String {
        let socket_dir = server.socket_dir().to_string_lossy().replace('\'', "''");
        let mut lines = vec![
            format!("listen_addresses = '{LOOPBACK}'"),
            format!("port = {}", server.port),
            format!("unix_socket_directories = '{socket_dir}'"),
            "shared_buffers = '16MB'".to_owned(),
            "max_connections = 100".to_owned(),
            format!("fsync = {}", if self.no_fsync { "off" } else { "on" }),
            "logging_collector = off".to_owned(),
            "log_min_messages = warning".to_owned(),
            "log_line_prefix = '%m [%p] '".to_owned(),
            "timezone = 'UTC'".to_owned(),
        ];
        if let Some(files) = &server.tls {
            let quoted = |p: &Path| p.to_string_lossy().replace('\'', "''");
            lines.push("ssl = on".to_owned());
            lines.push(format!("ssl_cert_file = '{}'", quoted(&files.server_cert)));
            lines.push(format!("ssl_key_file = '{}'", quoted(&files.server_key)));
        }
        lines.extend(self.extra.iter().map(|(k, v)| format!("{k} = {v}")));
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_empty_passwords_are_refused_before_anything_runs() {
        let err = PgServer::builder()
            .config("work_mem", "'4MB'\nlisten_addresses = '*'")
            .start();
        assert!(matches!(err, Err(Error::InvalidInput(_))), "{err:?}");
        let err = PgServer::builder().password("").start();
        assert!(matches!(err, Err(Error::InvalidInput(_))), "{err:?}");
    }

    #[test]
    fn debug_hides_the_password() {
        let text = format!("{:?}", PgServer::builder().password("hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
