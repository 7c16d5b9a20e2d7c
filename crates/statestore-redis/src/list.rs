//! `Store::list` from the list indexes (`keys.rs`): a page is one `ZRANGE`
//! of the index of its order and user, from the cursor, and one pipelined
//! read of each session's header (owner, clocks) and title — two round
//! trips, O(log n + page) in the number of sessions n.
//!
//! Every entry is checked against the header it names before it is
//! listed: the session exists, belongs to the user asked about and (newest
//! first) was last written at the entry's score. An entry that fails
//! because its session is gone or re-owned is *stale* (an expiry, an
//! eviction, a write on a cluster whose index update was lost) and is
//! removed; one whose session was written since the index was read has
//! moved ahead of the cursor and is skipped, as the cursor rules allow
//! (`statestore_core::list`). The time ranges and the metadata filter are
//! checked on the same read; filters that skip entries make a call read
//! batches until the page is full or [`LIST_BUDGET`] entries were examined,
//! and then it ends early with a cursor there.
//!
//! Newest first, a page from a cursor asks for the range from the cursor's
//! score, inclusive, and drops the entries at that score the cursor has
//! passed (the cursor's own among them): one more entry is asked for, so
//! one `ZRANGE` still fills a page. Sessions written in the same
//! millisecond as the cursor's all sit at its score; when more of them than
//! a batch were already listed, the next page takes a batch more per such
//! batch (a bulk import can make many; sessions written by use seldom do).

use redis::Value;
use statestore_core::{
    Error, ListCursor, ListOrder, ListPage, ListQuery, Metadata, SessionId, SessionInfo, TITLE_KEY,
    Timestamp,
};

use crate::call::ScriptCall;
use crate::conn::Connection;
use crate::decode;
use crate::error::ClientError;
use crate::keys::Keys;

/// Index entries one [`Store::list`](statestore_core::Store::list) call
/// examines at most, when filters or stale entries skip some.
pub const LIST_BUDGET: usize = 4_096;

#[derive(Debug)]
pub(crate) enum ListError {
    Client(ClientError),
    Store(Error),
}

impl From<ClientError> for ListError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl From<redis::RedisError> for ListError {
    fn from(e: redis::RedisError) -> Self {
        Self::Client(e.into())
    }
}

impl From<redis::ParsingError> for ListError {
    fn from(e: redis::ParsingError) -> Self {
        Self::Client(e.into())
    }
}

impl From<Error> for ListError {
    fn from(e: Error) -> Self {
        Self::Store(e)
    }
}

/// What a listing reads with: the connection, the key layout, and how stale
/// entries are removed.
pub(crate) struct Lister<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) keys: &'a Keys,
    /// The `UNLIST` script on a standalone server (header checked and
    /// entries removed atomically); `None` on a cluster, where plain `ZREM`s
    /// remove them (a session re-created meanwhile is put back by its next
    /// write).
    pub(crate) unlist: Option<&'a redis::Script>,
    /// Whether a count must walk the index (a TTL may have expired sessions
    /// whose entries are still there).
    pub(crate) expiring: bool,
}

/// One entry of an index: an id and (newest first) its score.
struct Entry {
    id: String,
    score: u64,
}

/// What one entry's session says about itself.
enum Found {
    /// Listed (or filtered out: `None`).
    Live(Option<SessionInfo>),
    /// Gone or re-owned: the entry is stale.
    Stale,
    /// Written since the index was read: skipped.
    Moved,
}

impl Lister<'_> {
    pub(crate) async fn page(&self, query: &ListQuery) -> Result<ListPage, ListError> {
        let limit = query.limit.max(1);
        let mut position = query.position()?;
        let total = self.count(query).await?;
        let mut page = Vec::with_capacity(limit.min(1_024) + 1);
        let mut examined = 0usize;
        loop {
            let want = if query.filters() {
                (limit + 1).clamp(256, 1_024)
            } else {
                limit + 1 - page.len()
            };
            let (entries, exhausted) = self.entries(query, position.as_ref(), want).await?;
            let found = self.read(query, &entries).await?;
            let mut stale = Vec::new();
            for (entry, found) in entries.into_iter().zip(found) {
                examined += 1;
                match found {
                    Found::Live(Some(info)) => page.push(info),
                    Found::Stale => stale.push(entry.id.clone()),
                    Found::Live(None) | Found::Moved => {}
                }
                position = Some(ListCursor {
                    order: query.order,
                    updated_at: Timestamp::from_unix_millis(entry.score),
                    id: entry.id,
                });
                if page.len() > limit {
                    break;
                }
            }
            self.remove_stale(query.user_id.as_deref(), &stale).await;
            if page.len() > limit {
                page.truncate(limit);
                return Ok(ListPage::of(page, true, query.order).with_total(total));
            }
            if exhausted {
                return Ok(ListPage::of(page, false, query.order).with_total(total));
            }
            if examined >= LIST_BUDGET {
                let next = position.as_ref().map(ListCursor::encode);
                return Ok(ListPage::new(page, next).with_total(total));
            }
        }
    }

    /// Up to `n` entries after `position`, in the query's order, and
    /// whether the index has no more after them.
    async fn entries(
        &self,
        query: &ListQuery,
        position: Option<&ListCursor>,
        n: usize,
    ) -> Result<(Vec<Entry>, bool), ListError> {
        let key = self.keys.index(query.user_id.as_deref(), query.order);
        if query.order != ListOrder::Recent {
            let from = position.map_or_else(|| b"-".to_vec(), |c| [b"(", c.id.as_bytes()].concat());
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(&key)
                .arg(from)
                .arg("+")
                .arg("BYLEX")
                .arg("LIMIT")
                .arg(0)
                .arg(n);
            let ids: Vec<Vec<u8>> = redis::from_redis_value(self.conn.query(&cmd).await?)?;
            let exhausted = ids.len() < n;
            let entries = ids
                .into_iter()
                .filter_map(|id| String::from_utf8(id).ok())
                .map(|id| Entry { id, score: 0 })
                .collect();
            return Ok((entries, exhausted));
        }
        let ms = |t: Timestamp| t.as_unix_millis();
        // Newest first from the cursor's score (inclusive: ties are ordered
        // by id, below) or the range's end (exclusive).
        let max = match (position, query.updated.until) {
            (Some(c), Some(u)) if ms(u) <= ms(c.updated_at) => format!("({}", ms(u)),
            (Some(c), _) => ms(c.updated_at).to_string(),
            (None, Some(u)) => format!("({}", ms(u)),
            (None, None) => "+inf".to_owned(),
        };
        let min = query
            .updated
            .from
            .map_or("-inf".to_owned(), |f| ms(f).to_string());
        // From a cursor the range starts at the cursor's own entry, which is
        // dropped below: one more, so that a batch still holds `n`.
        let n = n + usize::from(position.is_some());
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(&key).arg(&max).arg(&min).arg("BYSCORE").arg("REV");
            cmd.arg("LIMIT").arg(offset).arg(n).arg("WITHSCORES");
            let batch: Vec<(Vec<u8>, f64)> = redis::from_redis_value(self.conn.query(&cmd).await?)?;
            let full = batch.len() == n;
            for (id, score) in batch {
                let Ok(id) = String::from_utf8(id) else {
                    continue;
                };
                let score = score_ms(score);
                // At the cursor's own score, only ids below the cursor's.
                if position.is_some_and(|c| score == ms(c.updated_at) && id >= c.id) {
                    continue;
                }
                out.push(Entry { id, score });
            }
            if !out.is_empty() || !full {
                return Ok((out, !full));
            }
            offset += n; // a page of ties at the cursor, all before it
        }
    }

    /// Reads what each entry's session says (one pipelined round trip).
    async fn read(&self, query: &ListQuery, entries: &[Entry]) -> Result<Vec<Found>, ListError> {
        let filters: Vec<&String> = query.metadata.keys().collect();
        let per = if filters.is_empty() { 2 } else { 3 };
        let mut cmds = Vec::with_capacity(entries.len() * per);
        for entry in entries {
            let Ok(id) = SessionId::new(&entry.id) else {
                // Not an id this crate indexes: read nothing, skip it.
                cmds.extend(std::iter::repeat_n(redis::cmd("ECHO").arg("").clone(), per));
                continue;
            };
            let keys = self.keys.session(&id);
            cmds.push(
                redis::cmd("HMGET")
                    .arg(&keys.header)
                    .arg(&["user_id", "created_at", "updated_at", "version"][..])
                    .clone(),
            );
            cmds.push(
                redis::cmd("HGET")
                    .arg(&keys.metadata)
                    .arg(TITLE_KEY)
                    .clone(),
            );
            if !filters.is_empty() {
                cmds.push(
                    redis::cmd("HMGET")
                        .arg(&keys.metadata)
                        .arg(&filters)
                        .clone(),
                );
            }
        }
        let replies = self.conn.query_many(cmds).await?;
        Ok(entries
            .iter()
            .zip(replies.chunks(per))
            .map(|(entry, replies)| found(query, entry, &filters, replies))
            .collect())
    }

    /// Removes stale entries from the index of `user` (every session's for
    /// `None`), both orders. Failures are only logged: the next listing
    /// meets the entries again.
    async fn remove_stale(&self, user: Option<&str>, stale: &[String]) {
        if stale.is_empty() {
            return;
        }
        let (recent, ids) = (
            self.keys.index(user, ListOrder::Recent),
            self.keys.index(user, ListOrder::Id),
        );
        let result = match self.unlist {
            Some(script) => {
                let mut result = Ok(Vec::new());
                for id in stale {
                    let Ok(sid) = SessionId::new(id) else {
                        continue;
                    };
                    let header = self.keys.session(&sid).header;
                    let mut call = ScriptCall::new(script, &[&header, &recent, &ids]);
                    call.arg(id).arg(user.unwrap_or_default());
                    if let Err(e) = self.conn.invoke("list", &sid, &call).await {
                        result = Err(e);
                    }
                }
                result
            }
            None => {
                let cmds = stale
                    .iter()
                    .flat_map(|id| {
                        [
                            redis::cmd("ZREM").arg(&recent).arg(id).clone(),
                            redis::cmd("ZREM").arg(&ids).arg(id).clone(),
                        ]
                    })
                    .collect();
                self.conn.query_many(cmds).await
            }
        };
        match result {
            Ok(_) => tracing::debug!(entries = stale.len(), "removed stale list index entries"),
            Err(e) => tracing::warn!(error = %e, "could not remove stale list index entries"),
        }
    }

    /// [`ListPage::total`]: `ZCARD` when nothing but the user filters and no
    /// session can have expired, else a walk of the index checking each
    /// entry (O(n)).
    async fn count(&self, query: &ListQuery) -> Result<Option<u64>, ListError> {
        if !query.count {
            return Ok(None);
        }
        let key = self.keys.index(query.user_id.as_deref(), query.order);
        if !query.filters() && !self.expiring {
            let n: u64 =
                redis::from_redis_value(self.conn.query(redis::cmd("ZCARD").arg(&key)).await?)?;
            return Ok(Some(n));
        }
        let mut n = 0u64;
        let mut position = None;
        loop {
            let (entries, exhausted) = self.entries(query, position.as_ref(), 1_000).await?;
            let Some(last) = entries.last() else {
                return Ok(Some(n));
            };
            position = Some(ListCursor {
                order: query.order,
                updated_at: Timestamp::from_unix_millis(last.score),
                id: last.id.clone(),
            });
            let found = self.read(query, &entries).await?;
            n += found
                .iter()
                .filter(|f| matches!(f, Found::Live(Some(_))))
                .count() as u64;
            if exhausted {
                return Ok(Some(n));
            }
        }
    }
}

/// A score as whole milliseconds (scores are written as integers).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "scores are integer milliseconds, exact in an f64 below 2^53"
)]
fn score_ms(score: f64) -> u64 {
    if score.is_finite() && score > 0.0 {
        score as u64
    } else {
        0
    }
}

/// Judges one entry from its replies: the header's `user_id`, `created_at`,
/// `updated_at`, `version`; the title; the filtered metadata fields.
fn found(query: &ListQuery, entry: &Entry, filters: &[&String], replies: &[Value]) -> Found {
    let Ok(id) = SessionId::new(&entry.id) else {
        return Found::Live(None);
    };
    let header = match replies.first() {
        Some(Value::Array(fields)) => fields.as_slice(),
        _ => return Found::Live(None),
    };
    let text = |i: usize| {
        header
            .get(i)
            .and_then(decode::bytes)
            .map(String::from_utf8_lossy)
    };
    let number = |i: usize| text(i).and_then(|t| t.parse::<u64>().ok());
    if text(3).is_none() {
        return Found::Stale; // no header: expired, evicted or deleted
    }
    let user_id = text(0).map(|u| u.into_owned());
    if query.user_id.is_some() && user_id != query.user_id {
        return Found::Stale; // re-owned since it was indexed there
    }
    let updated_at = Timestamp::from_unix_millis(number(2).unwrap_or_default());
    if query.order == ListOrder::Recent && updated_at.as_unix_millis() != entry.score {
        return Found::Moved;
    }
    let title = replies
        .get(1)
        .and_then(decode::bytes)
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(json).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    let info = SessionInfo::new(id, updated_at)
        .with_user(user_id)
        .with_title(title)
        .created_at(Timestamp::from_unix_millis(number(1).unwrap_or_default()))
        .with_version(number(3).unwrap_or_default());
    let mut metadata = Metadata::new();
    if let Some(Value::Array(values)) = replies.get(2) {
        for (key, value) in filters.iter().zip(values) {
            if let Some(value) = decode::bytes(value).and_then(|v| serde_json::from_slice(v).ok()) {
                metadata.insert((*key).clone(), value);
            }
        }
    }
    Found::Live(query.admits(&info, &metadata).then_some(info))
}
