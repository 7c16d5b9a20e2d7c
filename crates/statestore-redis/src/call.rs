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

/// Arguments packed into one: a MessagePack stream of strings, which a
/// script unpacks with `cmsgpack.unpack` (`scripts/append.lua`). Redis
/// starts a script for ~1k instructions per `ARGV` entry, and unpacks a
/// short string for ~0.3k (`cargo xtask bench --server-work`): the hot
/// path's arguments go this way, its messages as entries of their own.
#[derive(Debug, Default)]
pub(crate) struct Packed(Vec<u8>);

impl Packed {
    /// Adds `text` (MessagePack `str`: fixstr, str 8, 16 or 32 by length).
    pub(crate) fn push(&mut self, text: impl AsRef<[u8]>) -> &mut Self {
        let text = text.as_ref();
        let len = text.len();
        let out = &mut self.0;
        if let Ok(small) = u8::try_from(len)
            && small < 32
        {
            out.push(0xa0 | small);
        } else if let Ok(n) = u8::try_from(len) {
            out.extend([0xd9, n]);
        } else if let Ok(n) = u16::try_from(len) {
            out.push(0xda);
            out.extend(n.to_be_bytes());
        } else {
            // Arguments are far below 4 GiB (Redis takes at most 512 MB).
            out.push(0xdb);
            out.extend(u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        }
        out.extend_from_slice(text);
        self
    }

    /// The packed bytes, one argument.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
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

#[cfg(test)]
mod tests {
    use super::Packed;

    #[test]
    fn strings_pack_as_messagepack_of_every_length_class() {
        let mut p = Packed::default();
        p.push("")
            .push("ab")
            .push("x".repeat(31))
            .push("y".repeat(32));
        p.push("z".repeat(256)).push("w".repeat(65_536));
        let bytes = p.into_bytes();
        let mut want = vec![0xa0, 0xa2, b'a', b'b', 0xbf];
        want.extend([b'x'; 31]);
        want.extend([0xd9, 32]);
        want.extend([b'y'; 32]);
        want.extend([0xda, 0x01, 0x00]);
        want.extend([b'z'; 256]);
        want.extend([0xdb, 0, 1, 0, 0]);
        want.extend([b'w'; 65_536]);
        assert_eq!(bytes, want);
    }
}
