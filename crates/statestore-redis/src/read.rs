//! The read path: every load (`load`, `load_recent`, their maintenance
//! forms, a fork's snapshot) is one `MULTI … EXEC` of plain reads — no
//! script — checked by the client.
//!
//! # Why no script
//!
//! A script costs Redis ~12k instructions to start, ~1.2k per key or
//! argument it is given and ~2–4k per `redis.call`, before its own Lua
//! runs (`scripts.rs`; `cargo xtask bench --server-work --top N` shows the
//! functions). The `LOAD` script that used to open every load's
//! transaction — it checked the header and recorded the access — was half
//! of a `load_recent(20)`: about 47k of 93k instructions at 10 messages.
//! Everything it checked the client checks as well from what the
//! transaction reads, which is the same snapshot: the reads run back to
//! back inside `EXEC`, with no other command between them.
//!
//! # The transaction
//!
//! In this order (`Read::pipeline`):
//!
//! 1. `HGETALL` of the header (`keys.rs`): the version, the packed counts
//!    `n`, the clocks, the owner, the counters;
//! 2. `PTTL` of the header, when the read is an access on a store with a
//!    TTL (below);
//! 3. asked about a caller's key: `HMGET` of its remembered write and of
//!    the hash's note field `~`, which every script that creates the hash
//!    writes first — so a header that counts remembered writes while the
//!    note is gone is a hash evicted under it;
//! 4. for `load_recent`: `LLEN` of the messages, then `LRANGE -n -1` (no
//!    `LRANGE` for `n = 0`); for a whole load, `LRANGE 0 -1`;
//! 5. `LRANGE` of the summaries, `HGETALL` of the metadata;
//! 6. for a whole load, `HGETALL` of the remembered writes;
//! 7. asked about a caller's key: `HGET` of its recorded progress.
//!
//! # The checks (the scripts' own, `scripts/shared/header.lua`)
//!
//! - a header that is not a hash, has no integer version, or packed
//!   counts that are not integers: `Error::Corrupt`;
//! - a schema newer than this build's: `Error::UnsupportedSchema`;
//! - a message list, summary list or metadata hash whose length is not
//!   the count the header records: a torn session, `Error::Corrupt`;
//! - a key holding another type of value: `Error::Corrupt`.
//!
//! A header whose counts are not current (`n` missing, or recorded at
//! another version: written by an older version of this crate) has them
//! adopted from the keys' lengths, which only a script can do atomically:
//! such a read runs the `LOAD` script's transaction instead, a second
//! round trip until the session's next write brings its header up to
//! date.
//!
//! # Accesses, recorded coarsely
//!
//! A read that counts as an access (`RedisStoreBuilder::sliding_ttl`, on
//! by default; never a maintenance read) does not write on every call. It
//! records the access — `last_accessed_at`, and every key's TTL restarted
//! — with the `TOUCH` script, a second round trip, only when one is due:
//!
//! - with a TTL, when the session's remaining TTL has fallen below
//!   [`REFRESH_BELOW`] of the TTL (or it has none), so that a session
//!   read within the last tenth of its TTL is not written again: **a
//!   session lives at least 90 % of its TTL after its last read**, and
//!   the whole TTL after its last write or `touch`;
//! - without a TTL, when the recorded `last_accessed_at` is
//!   [`ACCESS_GRANULARITY`] or more away from the client's clock: it is
//!   then accurate to that.
//!
//! `docs/design.md` ("Retention") states the rule for every backend; the
//! expiry suite (`statestore_core::conformance::expiry`) holds it.

use std::time::Duration;

use redis::Value;
use statestore_core::codec::SCHEMA_VERSION;
use statestore_core::{Appended, Error, IdempotencyKey, Result, SessionId, Timestamp};

use crate::decode::{self, Header, Snapshot, corrupt, next_list};
use crate::keys::SessionKeys;

/// A read that is an access restarts the TTL only when less than this
/// fraction of it (numerator, denominator) remains: 9/10.
pub(crate) const REFRESH_BELOW: (u64, u64) = (9, 10);

/// Without a TTL, how far `last_accessed_at` may lag behind a read that
/// is an access before the read records it: one minute.
pub(crate) const ACCESS_GRANULARITY: Duration = Duration::from_secs(60);

/// Whether a read counts as an access, and so may have to record one.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Access {
    /// Not an access: a maintenance read, or reads do not slide.
    No,
    /// An access on a store with this TTL, in ms.
    Ttl(u64),
    /// An access on a store without a TTL.
    NoTtl,
}

/// What one load reads.
pub(crate) struct Read<'a> {
    /// The newest `n` messages; `None` for all (a whole load).
    pub(crate) newest: Option<usize>,
    /// A caller's key whose remembered write and progress to read.
    pub(crate) lookup: Option<&'a IdempotencyKey>,
    pub(crate) access: Access,
}

/// What a load's transaction found.
pub(crate) enum Found {
    Missing,
    /// A header of an older layout: its counts need adopting (the `LOAD`
    /// script's transaction).
    OldLayout,
    /// The snapshot, and whether the read must record the access.
    Snapshot(Box<Snapshot>, bool),
}

impl Read<'_> {
    /// The transaction (see the module docs for its commands and order).
    pub(crate) fn pipeline(&self, keys: &SessionKeys) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        pipe.cmd("HGETALL").arg(&keys.header);
        if let Access::Ttl(_) = self.access {
            pipe.cmd("PTTL").arg(&keys.header);
        }
        if let Some(key) = self.lookup {
            let field = format!("k:{}", key.as_str());
            pipe.cmd("HMGET").arg(&keys.writes).arg(field).arg("~");
        }
        self.reads(&mut pipe, keys);
        pipe
    }

    /// The reads after the header's, which the `LOAD` script's transaction
    /// (`Store::scripted_snapshot`) makes too: the message list's length and
    /// its newest messages (all of them, without the length, for a whole
    /// load), the summaries, the metadata, for a whole load the remembered
    /// writes, and asked about a key its recorded progress.
    pub(crate) fn reads(&self, pipe: &mut redis::Pipeline, keys: &SessionKeys) {
        match self.newest {
            None => {
                pipe.cmd("LRANGE").arg(&keys.messages).arg(0).arg(-1);
            }
            Some(n) => {
                pipe.cmd("LLEN").arg(&keys.messages);
                if n > 0 {
                    let start = i64::try_from(n).map_or(i64::MIN, |n| -n);
                    pipe.cmd("LRANGE").arg(&keys.messages).arg(start).arg(-1);
                }
            }
        }
        pipe.cmd("LRANGE").arg(&keys.summaries).arg(0).arg(-1);
        pipe.cmd("HGETALL").arg(&keys.metadata);
        if self.newest.is_none() {
            pipe.cmd("HGETALL").arg(&keys.writes);
        }
        if let Some(key) = self.lookup {
            pipe.cmd("HGET")
                .arg(&keys.pending)
                .arg(format!("k:{}", key.as_str()));
        }
    }

    /// Checks and parses the transaction's replies; `now` is the client's
    /// clock in ms.
    pub(crate) fn parse(&self, id: &SessionId, replies: Vec<Value>, now: u64) -> Result<Found> {
        let mut it = replies.into_iter();
        let flat = next_list(id, &mut it, "header")?;
        if flat.is_empty() {
            // No session; but a key left behind holding a type this crate
            // never writes there is foreign data, as a write would find.
            if let Some(Value::ServerError(e)) = it.find(|v| matches!(v, Value::ServerError(_))) {
                return Err(corrupt(
                    id,
                    format!("a key of this session's holds another type of value ({e:?})"),
                ));
            }
            return Ok(Found::Missing);
        }
        let header = decode::header(id, flat)?;
        let Some(version) = header.version else {
            return Err(corrupt(id, "its header has no integer schema and version"));
        };
        let Some(packed) = header.packed.as_deref() else {
            return Ok(Found::OldLayout);
        };
        let n = packed
            .split(' ')
            .map(|n| n.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>();
        let Some(&[schema, at, nm, ns, nd, wk, _wg]) = n.as_deref() else {
            return Err(corrupt(id, "its header has a count that is not an integer"));
        };
        if at != version {
            return Ok(Found::OldLayout);
        }
        if schema > u64::from(SCHEMA_VERSION) {
            return Err(Error::UnsupportedSchema {
                id: id.clone(),
                found: u32::try_from(schema).unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION,
            });
        }
        let refresh = match self.access {
            Access::No => false,
            Access::Ttl(ttl) => match it.next() {
                Some(Value::Int(left)) => {
                    left == -1
                        || u64::try_from(left)
                            .is_ok_and(|left| left * REFRESH_BELOW.1 < ttl * REFRESH_BELOW.0)
                }
                _ => return Err(corrupt(id, "load returned a malformed TTL")),
            },
            Access::NoTtl => {
                let at = header.last_accessed_at.as_unix_millis();
                now.abs_diff(at) >= u64::try_from(ACCESS_GRANULARITY.as_millis()).unwrap_or(0)
            }
        };
        let record = match self.lookup {
            Some(_) => remembered(
                id,
                next_list(id, &mut it, "remembered-writes hash")?,
                wk,
                &header,
            )?,
            None => None,
        };
        let listed = match self.newest {
            Some(_) => Some(list_length(id, &mut it)?),
            None => None,
        };
        let counts = Counts { nm, ns, nd, record };
        let lookup = self.lookup.is_some();
        let snapshot = Snapshot::checked(id, header, counts, listed, self.newest, lookup, it)?;
        Ok(Found::Snapshot(Box::new(snapshot), refresh))
    }
}

/// The remembered write of the key asked about, from `HMGET <writes>
/// k:<key> ~` (`reply`); `wk`: the caller keys the header counts.
fn remembered(
    id: &SessionId,
    reply: Vec<Value>,
    wk: u64,
    header: &Header,
) -> Result<Option<Appended>> {
    if wk == 0 {
        return Ok(None);
    }
    let [record, note] = reply.as_slice() else {
        return Err(corrupt(id, "load returned a malformed remembered write"));
    };
    if matches!(note, Value::Nil) {
        return Err(corrupt(
            id,
            "its header records remembered writes but they are gone: a key was evicted or \
             changed outside this library (see maxmemory-policy in the crate docs)",
        ));
    }
    let Some(record) = decode::bytes(record) else {
        return Ok(None);
    };
    let malformed = || corrupt(id, "a remembered write is malformed");
    let numbers = std::str::from_utf8(record)
        .ok()
        .and_then(|t| {
            t.split(' ')
                .map(|n| n.parse::<u64>().ok())
                .collect::<Option<Vec<_>>>()
        })
        .filter(|n| matches!(n.len(), 3 | 4))
        .ok_or_else(malformed)?;
    let version = numbers.first().copied().ok_or_else(malformed)?;
    let rewritten = u64::from(header.rewritten_at.is_some_and(|r| version < r));
    let flagged: Vec<u64> = std::iter::once(rewritten).chain(numbers).collect();
    decode::remembered(&flagged)
        .map(|(done, _)| Some(done))
        .ok_or_else(malformed)
}

/// The counts a snapshot's reads must match, from the header, and the
/// remembered write asked about.
pub(crate) struct Counts {
    pub(crate) nm: u64,
    pub(crate) ns: u64,
    pub(crate) nd: u64,
    pub(crate) record: Option<Appended>,
}

/// The next reply, `LLEN` of the message list.
pub(crate) fn list_length(
    id: &SessionId,
    replies: &mut impl Iterator<Item = Value>,
) -> Result<u64> {
    match next_list(id, replies, "message list length")?.as_slice() {
        [Value::Int(len)] => Ok(u64::try_from(*len).unwrap_or(u64::MAX)),
        _ => Err(corrupt(id, "load returned a malformed message count")),
    }
}

impl Snapshot {
    /// A read that recorded its access reports it.
    pub(crate) fn accessed_at(&mut self, at: Timestamp) {
        self.header.last_accessed_at = at;
    }

    /// The rest of a load's replies — the newest `newest` messages (none
    /// for `Some(0)`: `listed`, the list's length, stands for them), the
    /// summaries, the metadata, for a whole load the remembered writes,
    /// and asked about a key its recorded progress — checked against
    /// `counts`: anything else is a torn session, and a read refused for
    /// a key's type is one holding foreign data.
    pub(crate) fn checked(
        id: &SessionId,
        header: Header,
        counts: Counts,
        listed: Option<u64>,
        newest: Option<usize>,
        lookup: bool,
        mut it: impl Iterator<Item = Value>,
    ) -> Result<Self> {
        let Counts { nm, ns, nd, record } = counts;
        let mut read = |what: &str| next_list(id, &mut it, what);
        let messages = match newest {
            Some(0) => Vec::new(),
            _ => read("message list")?,
        };
        let summaries = read("summary list")?;
        let metadata = read("metadata hash")?;
        // A whole load also reads the remembered writes.
        let writes = match newest {
            None => read("remembered-writes hash")?,
            Some(_) => Vec::new(),
        };
        let pending = match it.next() {
            Some(Value::Nil) | None => None,
            Some(Value::ServerError(e)) if lookup => {
                return Err(corrupt(
                    id,
                    format!("its progress key holds another type of value ({e:?})"),
                ));
            }
            Some(v) => lookup.then_some(v),
        };
        let expected = newest.map_or(nm, |n| nm.min(u64::try_from(n).unwrap_or(u64::MAX)));
        if let Some(len) = listed
            && len != nm
        {
            return Err(torn(id, nm, "message list entries", len, "are stored"));
        }
        for (what, recorded, found) in [
            ("message list entries", expected, messages.len()),
            ("summary list entries", ns, summaries.len()),
            ("metadata hash entries", 2 * nd, metadata.len()),
        ] {
            let found = u64::try_from(found).unwrap_or(u64::MAX);
            if found != recorded {
                return Err(torn(id, recorded, what, found, "were read"));
            }
        }
        Ok(Self {
            header,
            messages,
            summaries,
            metadata,
            total: nm,
            record,
            writes,
            pending,
        })
    }
}

/// A torn session: the header records `recorded` of `what` but `found`
/// `were` (read, stored).
pub(crate) fn torn(id: &SessionId, recorded: u64, what: &str, found: u64, were: &str) -> Error {
    corrupt(
        id,
        format!(
            "its header records {recorded} {what} but {found} {were}: a key was evicted or \
             changed outside this library (see maxmemory-policy in the crate docs)"
        ),
    )
}
