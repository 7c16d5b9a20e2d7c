//! [`ScriptCall`]: one `EVALSHA` built straight into the command buffer the
//! client sends — keys, arguments and messages (serialized by `serde_json`
//! into it) each written once, with no intermediate buffer per argument
//! (redis-rs's `ScriptInvocation` keeps each argument in a `Vec` of its own
//! and copies them all into a command when it runs) — and run with the
//! script loaded again after `NOSCRIPT`.

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisResult, Script, ToRedisArgs, Value};
use statestore_core::SessionId;

/// One call of a script: the `EVALSHA` command, ready to send.
pub(crate) struct ScriptCall<'a> {
    script: &'a Script,
    cmd: Cmd,
}

impl<'a> ScriptCall<'a> {
    /// `EVALSHA` of `script` with `keys`; arguments follow with
    /// [`arg`](Self::arg) and [`json`](Self::json).
    pub(crate) fn new(script: &'a Script, keys: &[&str]) -> Self {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        Self { script, cmd }
    }

    /// Adds an argument.
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds `value` serialized as JSON as one argument, written directly
    /// into the command; returns its length in bytes.
    pub(crate) fn json(&mut self, value: &impl serde::Serialize) -> serde_json::Result<usize> {
        use redis::RedisWrite as _;
        let mut writer = Counting {
            inner: self.cmd.writer_for_next_arg(),
            bytes: 0,
        };
        serde_json::to_writer(&mut writer, value)?;
        Ok(writer.bytes)
    }

    /// Runs the call on `conn`: `EVALSHA`, and when the server does not
    /// have the script (`NOSCRIPT`: after a restart, a failover or `SCRIPT
    /// FLUSH`; nothing ran), `SCRIPT LOAD` and `EVALSHA` again.
    pub(crate) async fn run<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        operation: &'static str,
        id: &SessionId,
    ) -> RedisResult<Value> {
        match self.cmd.query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                tracing::debug!(
                    operation,
                    session = %id,
                    "NOSCRIPT: the server does not have the script (restart, failover or \
                     SCRIPT FLUSH); loading it and running it again"
                );
                self.script.prepare_invoke().load_async(conn).await?;
                self.cmd.query_async(conn).await
            }
            other => other,
        }
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: usize,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
