//! [`RedisStore`]: its state, and how one operation runs — a script call
//! under the response timeout, a write followed by `WAIT` when durability
//! is asked for, replies decoded into outcomes — with the helpers that
//! encode script arguments. The [`Store`](statestore_core::Store)
//! operations themselves are in `operations.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use statestore_core::codec::{self, Limits};
use statestore_core::{
    Counters, Error as StoreError, Expect, IdempotencyKey, Message, Metadata, Result, SessionId,
    Timestamp, Version,
};

use crate::RedisStoreBuilder;
use crate::call::ScriptCall;
use crate::conn::{ClientResult, Connection};
use crate::decode::{self, Reply};
use crate::durable;
use crate::error::{Error, client_error, timed_out};
use crate::keys::Keys;
use crate::read::{Access, Found, Read};
use crate::scripts::Scripts;

/// A [`Store`](statestore_core::Store) on Redis or Redis Cluster. See the [crate docs](crate).
///
/// Cloning is cheap; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conn: Connection,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    /// Whether this client keeps the list indexes after each write (a
    /// cluster), rather than the scripts (`keys.rs`).
    pub(crate) client_index: bool,
    /// Set once this store saw the list indexes built (`reindex.rs`).
    pub(crate) index_built: crate::reindex::Built,
    pub(crate) ttl: Option<Duration>,
    pub(crate) sliding_ttl: bool,
    pub(crate) limits: Limits,
    pub(crate) timeout: Duration,
    pub(crate) wait_for_replicas: Option<(u32, Duration)>,
    /// Connections for durable writes; see [`durable`].
    pub(crate) durable: Option<durable::Durable>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.inner.conn)
            .field("prefix", &self.inner.keys.prefix())
            .field("ttl", &self.inner.ttl)
            .field("sliding_ttl", &self.inner.sliding_ttl)
            .field("limits", &self.inner.limits)
            .field("timeout", &self.inner.timeout)
            .field("wait_for_replicas", &self.inner.wait_for_replicas)
            .field("durable", &self.inner.durable)
            .finish()
    }
}

impl RedisStore {
    /// Configure a store: prefix, TTL, limits, timeouts; then
    /// [`build`](RedisStoreBuilder::build) it on your connection or
    /// [`connect`](RedisStoreBuilder::connect) to a URL.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// Loads every script on the server (every master of a cluster) now, so
    /// no later call needs a second round trip for `NOSCRIPT`.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub async fn preload_scripts(&self) -> Result<()> {
        let scripts = self.inner.scripts.all();
        let load = self.inner.conn.preload(&scripts);
        self.timed("preload_scripts", None, load).await
    }

    /// The server's `maxmemory-policy` (on a cluster, one node's), or
    /// `None` when it cannot be read — for example when the ACL user may not
    /// run `CONFIG GET` (logged at debug level).
    pub async fn eviction_policy(&self) -> Option<String> {
        let cmd = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .clone();
        let reply = self
            .timed("eviction_policy", None, self.inner.conn.query(&cmd))
            .await;
        let policy = match reply {
            Ok(redis::Value::Map(pairs)) => pairs.into_iter().next().map(|(_, v)| v),
            Ok(redis::Value::Array(items)) => items.into_iter().nth(1),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read maxmemory-policy");
                None
            }
        };
        policy
            .as_ref()
            .and_then(decode::bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub(crate) async fn preload(&self, address: &str) -> Result<(), Error> {
        self.preload_scripts().await.map_err(|e| Error::Connect {
            address: address.to_owned(),
            source: Box::new(e),
        })
    }

    /// Runs `fut` of `operation` (on session `id`, when there is one) under
    /// the response timeout, mapping client errors.
    pub(crate) async fn timed<T>(
        &self,
        operation: &'static str,
        id: Option<&SessionId>,
        fut: impl Future<Output = ClientResult<T>>,
    ) -> Result<T> {
        let after = self.inner.timeout;
        match tokio::time::timeout(after, fut).await {
            Err(_) => Err(timed_out(operation, id, after)),
            Ok(Err(e)) => Err(client_error(operation, id, after, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// A script call with `keys` (a session's five, in order) and the
    /// common arguments: now and the TTL (`0` unless `ttl`).
    pub(crate) fn call<'a>(&self, script: &'a Script, keys: &[&str], ttl: bool) -> ScriptCall<'a> {
        let mut call = ScriptCall::new(script, keys);
        let ttl_ms = if ttl { self.ttl_ms() } else { 0 };
        call.arg(now_ms()).arg(ttl_ms);
        call
    }

    /// The TTL in ms, `0` for none. Reaches PEXPIRE as a decimal string,
    /// never as a Lua number (which prints in exponent notation from 1e17
    /// on).
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.inner.ttl.map_or(0, millis)
    }

    /// [`Store::load_pending`](statestore_core::Store::load_pending): one
    /// transaction reading whether the key's write is remembered and the
    /// progress recorded under it.
    pub(crate) async fn pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
    ) -> Result<Option<statestore_core::Pending>> {
        let keys = self.inner.keys.session(id);
        let field = format!("k:{}", key.as_str());
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HEXISTS")
            .arg(&keys.writes)
            .arg(&field)
            .cmd("HGET")
            .arg(&keys.pending)
            .arg(&field);
        let replies = self
            .timed(
                "load_pending",
                Some(id),
                self.inner.conn.exec(&keys.writes, &pipe),
            )
            .await?;
        match replies.as_slice() {
            [done, _] if decode::int(done) == Some(1) => Ok(None),
            [_, redis::Value::Nil] => Ok(None),
            [_, body] => decode::pending(id, body).map(Some),
            _ => Err(StoreError::Corrupt {
                id: id.clone(),
                detail: "load_pending returned a malformed reply".into(),
                source: None,
            }),
        }
    }

    pub(crate) async fn run(
        &self,
        operation: &'static str,
        id: &SessionId,
        call: &ScriptCall<'_>,
    ) -> Result<Reply> {
        let invoke = self.inner.conn.invoke(operation, id, call);
        let value = self.timed(operation, Some(id), invoke).await?;
        decode::reply(id, value)
    }

    /// Runs a write script (then `WAIT`, when configured); `decode` turns
    /// its reply into the outcome or the error it stands for.
    pub(crate) async fn write<T>(
        &self,
        operation: &'static str,
        id: &SessionId,
        call: &ScriptCall<'_>,
        decode: impl FnOnce(Reply) -> Result<T>,
    ) -> Result<T> {
        let wait = self.inner.wait_for_replicas;
        let timeout = self.inner.timeout;
        // `acked`: None without waiting; Some(None) when the WAIT failed.
        let (value, acked) = match (&self.inner.durable, wait) {
            (Some(durable), Some(wait)) => {
                let header = self.inner.keys.session(id).header;
                let (value, acked) = durable
                    .write(
                        (operation, id),
                        &self.inner.conn,
                        call,
                        &header,
                        wait,
                        timeout,
                    )
                    .await?;
                (value, Some(acked))
            }
            _ => {
                // Without a pool only an exclusive checkout waits (`build`
                // refused the rest): WAIT may take its own timeout on top.
                let limit = timeout + wait.map_or(Duration::ZERO, |w| w.1);
                let wait = wait.map(|(n, t)| (n, u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
                let run = self.inner.conn.invoke_durable(operation, id, call, wait);
                match tokio::time::timeout(limit, run).await {
                    Err(_) => return Err(timed_out(operation, Some(id), limit)),
                    Ok(result) => {
                        result.map_err(|e| client_error(operation, Some(id), limit, e))?
                    }
                }
            }
        };
        let outcome = decode(decode::reply(id, value)?)?;
        // On a cluster the client keeps the list indexes (keys.rs).
        self.reindex(id).await;
        if let (Some((required, _)), Some(acked)) = (wait, acked) {
            // A WAIT that failed after the script ran acknowledged nothing.
            let acknowledged = acked.map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
            if acknowledged < required {
                tracing::warn!(
                    operation,
                    session = %id,
                    acknowledged,
                    required,
                    "fewer replicas acknowledged the write than required; it was applied on \
                     the primary but may be lost in a failover"
                );
                return Err(StoreError::NotReplicated {
                    operation,
                    id: id.clone(),
                    acknowledged,
                    required,
                });
            }
        }
        Ok(outcome)
    }

    /// Decodes a write's reply into the new version.
    pub(crate) fn version(
        &self,
        id: &SessionId,
        expect: Expect,
    ) -> impl FnOnce(Reply) -> Result<Version> {
        move |reply| decode::written(id, expect, &self.inner.limits, reply)
    }

    /// One consistent snapshot of session `id`: the header, the newest
    /// `newest` messages (all for `None`), the summaries, the metadata and,
    /// asked about `lookup`, what the write under it did — one `MULTI …
    /// EXEC` of plain reads (`read.rs`), and when the read is an access
    /// (reads count as one and `access` — `false` for a maintenance read,
    /// `Load::keep_clocks`) and one is due, the `TOUCH` script after it.
    pub(crate) async fn snapshot(
        &self,
        operation: &'static str,
        id: &SessionId,
        newest: Option<usize>,
        lookup: Option<&IdempotencyKey>,
        access: bool,
    ) -> Result<Option<decode::Snapshot>> {
        let keys = self.inner.keys.session(id);
        let read = Read {
            newest,
            lookup,
            access: match self.inner.ttl {
                _ if !(self.inner.sliding_ttl && access) => Access::No,
                Some(t) => Access::Ttl(millis(t)),
                None => Access::NoTtl,
            },
        };
        let pipe = read.pipeline(&keys);
        let run = self.inner.conn.exec(&keys.header, &pipe);
        let replies = self.timed(operation, Some(id), run).await?;
        let now = now_ms();
        match read.parse(id, replies, now)? {
            Found::Missing => Ok(None),
            Found::OldLayout => {
                self.scripted_snapshot(operation, id, newest, lookup, access)
                    .await
            }
            Found::Snapshot(mut snapshot, refresh) => {
                if refresh {
                    let call = self.call(&self.inner.scripts.touch, &keys.all(), true);
                    if let Reply::Ok(_) = self.run(operation, id, &call).await? {
                        snapshot.accessed_at(Timestamp::from_unix_millis(now));
                    }
                }
                Ok(Some(*snapshot))
            }
        }
    }

    /// [`Self::snapshot`] of a session whose header is of an older layout
    /// (`read.rs`): the `LOAD` script adopts its counts from the keys'
    /// lengths and records the access, when reads count as one and
    /// `access`, then plain reads follow in the same transaction (see
    /// `scripts/load.lua`).
    async fn scripted_snapshot(
        &self,
        operation: &'static str,
        id: &SessionId,
        newest: Option<usize>,
        lookup: Option<&IdempotencyKey>,
        access: bool,
    ) -> Result<Option<decode::Snapshot>> {
        let keys = self.inner.keys.session(id);
        let sliding = self.inner.sliding_ttl && access;
        let script = &self.inner.scripts.load;
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        pipe.cmd("EVALSHA").arg(script.get_hash()).arg(5);
        for key in keys.all() {
            pipe.arg(key);
        }
        pipe.arg(now_ms());
        // The TTL, or `-` when this read does not count as an access
        // (reads do not slide, or a maintenance read).
        match self.inner.ttl {
            _ if !sliding => pipe.arg("-"),
            Some(t) => pipe.arg(millis(t)),
            None => pipe.arg(0),
        };
        pipe.arg(lookup.map_or_else(String::new, |key| format!("k:{}", key.as_str())));
        pipe.cmd("HGETALL").arg(&keys.header);
        // The reads of every load (`read.rs`); the script made the lookup.
        let read = Read {
            newest,
            lookup,
            access: Access::No,
        };
        read.reads(&mut pipe, &keys);
        let run = (self.inner.conn).transaction(operation, id, script, &keys.header, &pipe);
        let replies = self.timed(operation, Some(id), run).await?;
        decode::snapshot(id, replies, newest, lookup.is_some())
    }

    pub(crate) fn encode_messages<'m>(
        &self,
        id: &SessionId,
        messages: impl ExactSizeIterator<Item = &'m Message>,
    ) -> Result<Vec<Vec<u8>>> {
        let encoded = messages
            .map(|m| codec::encode_message(id, m))
            .collect::<Result<Vec<_>>>()?;
        self.inner
            .limits
            .check_message_sizes(id, encoded.iter().map(Vec::len))?;
        Ok(encoded)
    }

    /// The `SAVE` script with already-encoded contents.
    pub(crate) async fn save_encoded(
        &self,
        operation: &'static str,
        id: &SessionId,
        contents: Contents<'_>,
        expect: Expect,
    ) -> Result<Version> {
        let keys = self.inner.keys.session(id);
        let mut call = self.call(&self.inner.scripts.save, &keys.all(), true);
        guard_args(&mut call, expect, self.inner.conn.resends());
        call.arg(contents.created_at);
        for field in [contents.user_id, contents.system_prompt] {
            match field {
                Some(v) => call.arg("1").arg(v),
                None => call.arg("0").arg(""),
            };
        }
        call.arg(contents.messages.len())
            .arg(contents.summaries.len())
            .arg(contents.metadata.len() / 2)
            .arg(contents.counters.len());
        for part in [contents.messages, contents.summaries, contents.metadata] {
            for item in part {
                call.arg(item);
            }
        }
        for (name, value) in contents.counters {
            call.arg(name.as_bytes()).arg(counter_value(*value));
        }
        call.arg(contents.carried.len());
        for (field, count) in contents.carried {
            call.arg(field).arg(count);
        }
        call.arg(if contents.keep_clocks { "k" } else { "-" });
        self.write(operation, id, &call, self.version(id, expect))
            .await
    }
}

/// What `SAVE` writes, encoded.
pub(crate) struct Contents<'a> {
    pub(crate) created_at: u64,
    pub(crate) user_id: Option<&'a str>,
    pub(crate) system_prompt: Option<&'a str>,
    pub(crate) messages: &'a [Vec<u8>],
    pub(crate) summaries: &'a [Vec<u8>],
    /// Field, value, field, value, …
    pub(crate) metadata: &'a [Vec<u8>],
    pub(crate) counters: &'a Counters,
    /// Remembered writes the state carries in: field (`k:<key>`) and
    /// message count.
    pub(crate) carried: &'a [(String, u64)],
    /// A maintenance save (`Save::keep_clocks`): the session keeps its
    /// `updated_at`, `last_accessed_at` and remaining TTL.
    pub(crate) keep_clocks: bool,
}

/// A counter value as Redis keeps it: `HINCRBY` works on `i64`, so values
/// (and increments) saturate at `i64::MAX`.
pub(crate) fn counter_value(value: u64) -> String {
    value.min(i64::MAX.unsigned_abs()).to_string()
}

/// The expectation as the scripts take it (ARGV 3): `a` (any), `n` (must
/// not exist) or the exact version.
pub(crate) fn expect_args(call: &mut ScriptCall<'_>, expect: Expect) {
    match expect {
        Expect::Any => call.arg("a"),
        Expect::Version(v) => call.arg(v),
        Expect::Absent => call.arg("n"),
    };
}

/// The expectation of a write other than an append, followed — where the
/// client may re-send the call by itself — by a key made for this call
/// (`scripts.rs`, "Calls the client re-sends").
pub(crate) fn guard_args(call: &mut ScriptCall<'_>, expect: Expect, resends: bool) {
    if !resends {
        return expect_args(call, expect);
    }
    let want = match expect {
        Expect::Any => "a".to_owned(),
        Expect::Version(v) => v.to_string(),
        Expect::Absent => "n".to_owned(),
    };
    call.arg(format!("{want} {}", call_key()));
}

/// A key of one call, as its field in the remembered writes (`g:<key>`).
pub(crate) fn call_key() -> String {
    format!("g:{}", IdempotencyKey::random().as_str())
}

/// `value` as JSON, written straight into `call` as its next argument;
/// returns its length.
pub(crate) fn json_arg(
    id: &SessionId,
    call: &mut ScriptCall<'_>,
    value: &impl serde::Serialize,
) -> Result<usize> {
    call.json(value).map_err(|e| StoreError::InvalidArgument {
        id: id.clone(),
        reason: format!("cannot be serialized: {e}"),
    })
}

pub(crate) fn json(id: &SessionId, value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::InvalidArgument {
        id: id.clone(),
        reason: format!("cannot be serialized: {e}"),
    })
}

pub(crate) fn metadata_pairs(id: &SessionId, metadata: &Metadata) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(metadata.len() * 2);
    for (k, v) in metadata {
        out.push(k.as_bytes().to_vec());
        out.push(json(id, v)?);
    }
    Ok(out)
}

/// A metadata patch as `MERGE_METADATA`, `APPEND` and `ADD_SUMMARY` take
/// it (`scripts/shared/merge_patch.lua`): the keys to set, each with its
/// value as JSON text, then the keys to delete (the patch's `null`s).
pub(crate) struct PatchArgs<'a> {
    set: Vec<(&'a String, &'a serde_json::Value)>,
    delete: Vec<&'a String>,
}

impl<'a> PatchArgs<'a> {
    pub(crate) fn new(patch: &'a Metadata) -> Self {
        let (set, delete): (Vec<_>, Vec<_>) = patch.iter().partition(|(_, v)| !v.is_null());
        Self {
            set,
            delete: delete.into_iter().map(|(k, _)| k).collect(),
        }
    }

    /// How many keys are set.
    pub(crate) fn set_len(&self) -> usize {
        self.set.len()
    }

    /// How many keys are deleted.
    pub(crate) fn delete_len(&self) -> usize {
        self.delete.len()
    }

    /// Adds the key, value pairs to set, then the keys to delete, to
    /// `args`, packed (`scripts/append.lua`).
    pub(crate) fn pack(&self, id: &SessionId, args: &mut crate::call::Packed) -> Result<()> {
        for (k, v) in &self.set {
            let value = serde_json::to_vec(v).map_err(|e| StoreError::InvalidArgument {
                id: id.clone(),
                reason: format!("metadata {k:?} cannot be written as JSON: {e}"),
            })?;
            args.push(k.as_bytes()).push(value);
        }
        for k in &self.delete {
            args.push(k.as_bytes());
        }
        Ok(())
    }

    /// Adds the key, value pairs to set, then the keys to delete, to `call`.
    pub(crate) fn push(&self, id: &SessionId, call: &mut ScriptCall<'_>) -> Result<()> {
        for (k, v) in &self.set {
            call.arg(k.as_bytes());
            json_arg(id, call, v)?;
        }
        for k in &self.delete {
            call.arg(k.as_bytes());
        }
        Ok(())
    }
}

pub(crate) fn now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
