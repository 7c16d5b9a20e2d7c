//! Turning script replies into values — and anything unexpected into
//! `Error::Corrupt` for that session, never a panic.

use std::sync::Arc;

use crate::read::{Counts, list_length};
use redis::Value;
use statestore_core::codec::{self, Limits, SCHEMA_VERSION};
use statestore_core::{
    Appended, ConversationState, Counters, Error, Expect, IdempotencyKey, Metadata, RecentState,
    RememberedWrite, Result, SessionId, Summary, Timestamp, Version,
};

/// A script's reply, by status (see `scripts.rs`): one string, the status
/// and then its numbers, separated by spaces.
pub(crate) enum Reply {
    /// The numbers after `ok`.
    Ok(Vec<u64>),
    /// An append already applied under the same key: what it did.
    Replayed(Vec<u64>),
    Missing,
    Conflict(Option<Version>),
    TooLarge(u64),
    Range(u64),
    /// `FORK`: the target's state, as the reply it stands for.
    Target(Vec<u8>),
    /// `FORK` on a server without `COPY`: nothing written.
    NoCopy,
}

pub(crate) fn corrupt(id: &SessionId, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        id: id.clone(),
        detail: detail.into(),
        source: None,
    }
}

pub(crate) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

fn array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// Splits a script's reply — one string: a status, then its arguments —
/// into a [`Reply`]. `corrupt` and `schema` statuses become errors here.
pub(crate) fn reply(id: &SessionId, value: Value) -> Result<Reply> {
    let text = match value {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        _ => {
            return Err(corrupt(
                id,
                "a script returned something that is not a string",
            ));
        }
    };
    let (status, rest) = match text.iter().position(|b| *b == b' ') {
        Some(at) => text.split_at(at),
        None => (text.as_slice(), &[][..]),
    };
    let rest = rest.get(1..).unwrap_or_default();
    let numbers = || -> Result<Vec<u64>> {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|t| {
                t.split(' ')
                    .map(|n| n.parse().ok())
                    .collect::<Option<Vec<u64>>>()
            })
            .ok_or_else(|| corrupt(id, "a script returned malformed numbers"))
    };
    let first = || -> Option<i64> { std::str::from_utf8(rest).ok()?.parse().ok() };
    Ok(match status {
        b"ok" if rest.is_empty() => Reply::Ok(Vec::new()),
        b"ok" => Reply::Ok(numbers()?),
        b"replayed" => Reply::Replayed(numbers()?),
        b"missing" => Reply::Missing,
        b"conflict" => Reply::Conflict(first().and_then(|v| u64::try_from(v).ok())),
        b"too_large" => Reply::TooLarge(first().and_then(|v| u64::try_from(v).ok()).unwrap_or(0)),
        b"range" => Reply::Range(first().and_then(|v| u64::try_from(v).ok()).unwrap_or(0)),
        b"target" => Reply::Target(rest.to_vec()),
        b"nocopy" => Reply::NoCopy,
        b"schema" => {
            return Err(Error::UnsupportedSchema {
                id: id.clone(),
                found: first()
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION,
            });
        }
        b"corrupt" => return Err(corrupt(id, String::from_utf8_lossy(rest))),
        other => {
            return Err(corrupt(
                id,
                format!(
                    "unexpected script status {:?}",
                    String::from_utf8_lossy(other)
                ),
            ));
        }
    })
}

/// The version of an `ok` reply to a write; conflicts become errors.
pub(crate) fn written(
    id: &SessionId,
    expect: Expect,
    limits: &Limits,
    reply: Reply,
) -> Result<Version> {
    match reply {
        Reply::Ok(rest) => rest
            .first()
            .copied()
            .ok_or_else(|| corrupt(id, "a write returned no version")),
        other => Err(refused(id, expect, limits, other)),
    }
}

/// A remembered write as the scripts return it: `<rewritten> <version>
/// <first> <count>`, then the token the append carried, if any.
pub(crate) fn remembered(numbers: &[u64]) -> Option<(Appended, Option<u64>)> {
    let (rewritten, version, first, count, token) = match *numbers {
        [r, v, f, c] => (r, v, f, c, None),
        [r, v, f, c, t] => (r, v, f, c, Some(t)),
        _ => return None,
    };
    let done = Appended::new(version, first, count).replay();
    match rewritten {
        0 => Some((done, token)),
        1 => Some((done.rewritten(), token)),
        _ => None,
    }
}

/// What an `ok` or `replayed` reply to an append says it did, and for a
/// replay the token the remembered write carried.
pub(crate) fn appended(
    id: &SessionId,
    expect: Expect,
    limits: &Limits,
    reply: Reply,
) -> Result<(Appended, Option<u64>)> {
    let outcome = match reply {
        Reply::Ok(rest) => match *rest.as_slice() {
            [version, first, count] => Some((Appended::new(version, first, count), None)),
            _ => None,
        },
        Reply::Replayed(rest) => remembered(&rest),
        other => return Err(refused(id, expect, limits, other)),
    };
    outcome.ok_or_else(|| corrupt(id, "an append returned a malformed outcome"))
}

/// The error for a write's reply that is not `ok`.
fn refused(id: &SessionId, expect: Expect, limits: &Limits, reply: Reply) -> Error {
    match reply {
        Reply::Conflict(actual) => Error::Conflict {
            id: id.clone(),
            expected: expect,
            actual,
        },
        Reply::Missing => Error::NotFound { id: id.clone() },
        Reply::TooLarge(total) => limits
            .check_message_count(id, total)
            .err()
            .unwrap_or_else(|| corrupt(id, "the store refused a size its limits allow")),
        Reply::Range(len) => Error::InvalidArgument {
            id: id.clone(),
            reason: format!("summary range is empty or reaches past the {len} stored messages"),
        },
        Reply::Ok(_) | Reply::Replayed(_) | Reply::Target(_) | Reply::NoCopy => {
            corrupt(id, "a write returned an unexpected status")
        }
    }
}

/// What a load read (`read.rs`): header, messages, summaries, metadata,
/// total, and the remembered write it was asked about.
pub(crate) struct Snapshot {
    pub(crate) header: Header,
    pub(crate) messages: Vec<Value>,
    pub(crate) summaries: Vec<Value>,
    pub(crate) metadata: Vec<Value>,
    pub(crate) total: u64,
    pub(crate) record: Option<Appended>,
    /// The remembered-writes hash, flat (whole loads only).
    pub(crate) writes: Vec<Value>,
    /// The progress recorded under the key asked about, if any.
    pub(crate) pending: Option<Value>,
}

#[derive(Default)]
pub(crate) struct Header {
    pub(crate) version: Option<Version>,
    created_at: Timestamp,
    updated_at: Timestamp,
    pub(crate) last_accessed_at: Timestamp,
    user_id: Option<String>,
    system_prompt: Option<String>,
    counters: Counters,
    /// `r`: remembered writes of a lower version lost their positions.
    pub(crate) rewritten_at: Option<u64>,
    /// `schema`.
    pub(crate) schema: Option<u64>,
    /// `n`, the packed counts (`keys.rs`).
    pub(crate) packed: Option<String>,
}

pub(crate) fn header(id: &SessionId, flat: Vec<Value>) -> Result<Header> {
    let mut h = Header::default();
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let key = bytes(&k).unwrap_or_default();
        let text = || {
            bytes(&v)
                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                .ok_or_else(|| corrupt(id, "a header field is not UTF-8 text"))
        };
        let number = || {
            int(&v)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| corrupt(id, "a header field is not a number"))
        };
        match key {
            b"version" => h.version = Some(number()?),
            b"schema" => h.schema = Some(number()?),
            b"n" => h.packed = Some(text()?),
            b"created_at" => h.created_at = Timestamp::from_unix_millis(number()?),
            b"updated_at" => h.updated_at = Timestamp::from_unix_millis(number()?),
            b"last_accessed_at" => h.last_accessed_at = Timestamp::from_unix_millis(number()?),
            b"user_id" => h.user_id = Some(text()?),
            b"system_prompt" => h.system_prompt = Some(text()?),
            b"r" => h.rewritten_at = Some(number()?),
            counter if counter.starts_with(b"c:") => {
                let name = std::str::from_utf8(counter.get(2..).unwrap_or_default())
                    .map_err(|_| corrupt(id, "a counter name is not UTF-8 text"))?;
                h.counters.insert(name.to_owned(), number()?);
            }
            _ => {} // counts of an older layout (adopted by the script), fields of later versions
        }
    }
    Ok(h)
}

/// The next reply of a load's transaction as a list of values: an array,
/// a map flattened to field, value, …, or an integer as a list of one;
/// a command refused for the key's type is foreign data (`Corrupt`).
pub(crate) fn next_list(
    id: &SessionId,
    replies: &mut impl Iterator<Item = Value>,
    what: &str,
) -> Result<Vec<Value>> {
    match replies.next() {
        Some(Value::ServerError(e)) => Err(corrupt(
            id,
            format!("its {what} key holds another type of value ({e:?})"),
        )),
        Some(Value::Map(pairs)) => Ok(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Some(Value::Int(n)) => Ok(vec![Value::Int(n)]),
        Some(v) => array(v).ok_or_else(|| corrupt(id, format!("its {what} is not a list"))),
        None => Err(corrupt(id, "load returned a malformed reply")),
    }
}

/// Parses the replies of a load's transaction of the `LOAD` script
/// (`Store::scripted_snapshot`, for a header of an older layout): the
/// script's, then the header and the reads of every load (`Read::reads`);
/// `None` for `missing`. What was
/// read must match the counts the script found in the header: anything
/// else is a torn session, and a read refused for a key's type is one
/// holding foreign data.
pub(crate) fn snapshot(
    id: &SessionId,
    replies: Vec<Value>,
    newest: Option<usize>,
    lookup: bool,
) -> Result<Option<Snapshot>> {
    let mut it = replies.into_iter();
    let checked = reply(id, it.next().unwrap_or(Value::Nil))?;
    let counts = match checked {
        Reply::Ok(counts) => counts,
        Reply::Missing => return Ok(None),
        _ => return Err(corrupt(id, "load returned an unexpected status")),
    };
    let counts = match *counts.as_slice() {
        [nm, ns, nd] => Counts {
            nm,
            ns,
            nd,
            record: None,
        },
        [nm, ns, nd, ref record @ ..] => match remembered(record) {
            Some((done, _)) => Counts {
                nm,
                ns,
                nd,
                record: Some(done),
            },
            None => return Err(corrupt(id, "load returned a malformed remembered write")),
        },
        _ => return Err(corrupt(id, "load returned malformed counts")),
    };
    let header_flat = next_list(id, &mut it, "header")?;
    // The newest messages come after the list's length (`Read::reads`).
    let listed = match newest {
        Some(_) => Some(list_length(id, &mut it)?),
        None => None,
    };
    Snapshot::checked(
        id,
        header(id, header_flat)?,
        counts,
        listed,
        newest,
        lookup,
        it,
    )
    .map(Some)
}

/// The caller-keyed writes of a remembered-writes hash (`keys.rs`), flat
/// as `HGETALL` returns it, ordered by version; `rewritten_at` is the
/// header's `r`.
fn remembered_writes(
    id: &SessionId,
    flat: &[Value],
    rewritten_at: Option<u64>,
) -> Result<Vec<RememberedWrite>> {
    let bad = || corrupt(id, "a remembered write is malformed");
    let mut writes = Vec::new();
    for pair in flat.chunks_exact(2) {
        let [field, record] = pair else { continue };
        let field = bytes(field).ok_or_else(bad)?;
        let Some(key) = field.strip_prefix(b"k:") else {
            continue;
        };
        let key = std::str::from_utf8(key)
            .ok()
            .and_then(|k| IdempotencyKey::new(k).ok())
            .ok_or_else(bad)?;
        let numbers: Vec<u64> = std::str::from_utf8(bytes(record).ok_or_else(bad)?)
            .ok()
            .and_then(|t| t.split(' ').map(|n| n.parse().ok()).collect())
            .ok_or_else(bad)?;
        let (version, first, count) = match *numbers.as_slice() {
            [v, f, c] | [v, f, c, _] => (v, f, c),
            _ => return Err(bad()),
        };
        let done = Appended::new(version, first, count).replay();
        let done = if rewritten_at.is_some_and(|r| version < r) {
            done.rewritten()
        } else {
            done
        };
        writes.push(RememberedWrite::new(key, done));
    }
    writes.sort_by_key(|w| w.outcome.version);
    Ok(writes)
}

impl Snapshot {
    fn parts(self, id: &SessionId) -> Result<Parts> {
        let writes = remembered_writes(id, &self.writes, self.header.rewritten_at)?;
        let messages = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let raw =
                    bytes(v).ok_or_else(|| corrupt(id, format!("message {i} is not a string")))?;
                codec::decode_message(id, raw).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        let summaries = self
            .summaries
            .iter()
            .map(|v| {
                let raw = bytes(v).ok_or_else(|| corrupt(id, "a summary is not a string"))?;
                serde_json::from_slice::<Summary>(raw)
                    .map_err(|e| Error::corrupt(id, "a stored summary is not valid", e))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut metadata = Metadata::new();
        let mut it = self.metadata.iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let key = bytes(k)
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| corrupt(id, "a metadata key is not UTF-8 text"))?;
            let raw = bytes(v).ok_or_else(|| corrupt(id, "a metadata value is not a string"))?;
            let value = serde_json::from_slice(raw)
                .map_err(|e| Error::corrupt(id, format!("metadata {key:?} is not JSON"), e))?;
            metadata.insert(key.to_owned(), value);
        }
        Ok(Parts {
            header: self.header,
            messages,
            summaries,
            metadata,
            pending: match (&self.record, &self.pending) {
                (None, Some(v)) => Some(pending(id, v)?),
                _ => None,
            },
            total: self.total,
            record: self.record,
            writes,
        })
    }

    pub(crate) fn into_state(self, id: &SessionId) -> Result<ConversationState> {
        let p = self.parts(id)?;
        Ok(ConversationState {
            id: id.clone(),
            user_id: p.header.user_id,
            messages: p.messages,
            system_prompt: p.header.system_prompt,
            summaries: p.summaries,
            metadata: p.metadata,
            counters: p.header.counters,
            writes: p.writes,
            version: p.header.version.unwrap_or_default(),
            created_at: p.header.created_at,
            updated_at: p.header.updated_at,
            last_accessed_at: p.header.last_accessed_at,
        })
    }

    pub(crate) fn into_recent(self, id: &SessionId) -> Result<RecentState> {
        let p = self.parts(id)?;
        Ok(RecentState {
            id: id.clone(),
            user_id: p.header.user_id,
            messages: p.messages,
            total_messages: p.total,
            system_prompt: p.header.system_prompt,
            summaries: p.summaries,
            metadata: p.metadata,
            counters: p.header.counters,
            replay: p.record,
            pending: p.pending,
            version: p.header.version.unwrap_or_default(),
        })
    }
}

struct Parts {
    header: Header,
    messages: Vec<Arc<statestore_core::Message>>,
    summaries: Vec<Summary>,
    metadata: Metadata,
    total: u64,
    record: Option<Appended>,
    writes: Vec<RememberedWrite>,
    pending: Option<statestore_core::Pending>,
}

/// A snapshot's contents as stored bytes, for copying (fork) without
/// decoding and re-encoding every message.
pub(crate) struct Raw {
    pub(crate) user_id: Option<String>,
    pub(crate) system_prompt: Option<String>,
    pub(crate) messages: Vec<Vec<u8>>,
    pub(crate) summaries: Vec<Vec<u8>>,
    /// Field, value, field, value, …
    pub(crate) metadata: Vec<Vec<u8>>,
    pub(crate) counters: Counters,
}

fn into_bytes(id: &SessionId, values: Vec<Value>, what: &str) -> Result<Vec<Vec<u8>>> {
    values
        .into_iter()
        .map(|v| match v {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            _ => Err(corrupt(id, format!("a stored {what} is not a string"))),
        })
        .collect()
}

impl Snapshot {
    pub(crate) fn into_raw(self, id: &SessionId) -> Result<Raw> {
        if !self.metadata.len().is_multiple_of(2) {
            return Err(corrupt(id, "metadata reply has an odd length"));
        }
        Ok(Raw {
            user_id: self.header.user_id,
            system_prompt: self.header.system_prompt,
            messages: into_bytes(id, self.messages, "message")?,
            summaries: into_bytes(id, self.summaries, "summary")?,
            metadata: into_bytes(id, self.metadata, "metadata entry")?,
            counters: self.header.counters,
        })
    }
}

/// Progress recorded under a key (`keys.rs`: the progress hash), from the
/// bytes stored.
pub(crate) fn pending(id: &SessionId, value: &Value) -> Result<statestore_core::Pending> {
    let raw = bytes(value).ok_or_else(|| corrupt(id, "recorded progress is not a string"))?;
    serde_json::from_slice(raw).map_err(|e| Error::corrupt(id, "recorded progress is not valid", e))
}
