//! The writes: each one `SELECT fn(…)` of a server-side function (or, for
//! progress, one `INSERT`), whose reply is parsed here. A refusal in the
//! reply wrote nothing: the functions check before they change a row.

use serde::Deserialize;
use statestore_core::codec::Limits;
use statestore_core::{
    AddSummary, Append, Appended, ConversationState, Error, Expect, IdempotencyKey, Metadata,
    Pending, Result, Save, SessionId, Version,
};

use super::{encode_messages, expect_json, json_text, now_ms, outcome, to_i64};
use crate::PostgresStore;

/// A write function's reply (see `functions`).
#[derive(Debug, Deserialize)]
struct Reply {
    #[serde(default)]
    ok: Option<serde_json::Value>,
    #[serde(default)]
    replay: Option<[i64; 3]>,
    #[serde(default)]
    err: Option<String>,
    #[serde(default)]
    actual: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    total: Option<u64>,
}

type Opts = serde_json::Map<String, serde_json::Value>;

impl Reply {
    fn parse(id: &SessionId, text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::corrupt(id, "a write function's reply is not valid", e))
    }

    /// The refusal in the reply, if any, as the error it is.
    fn refusal(&self, id: &SessionId, expect: Expect, limits: &Limits) -> Option<Error> {
        let err = self.err.as_deref()?;
        Some(match err {
            "conflict" => Error::Conflict {
                id: id.clone(),
                expected: expect,
                actual: self.actual,
            },
            "not_found" => Error::NotFound { id: id.clone() },
            "exists" => Error::AlreadyExists { id: id.clone() },
            "range" => Error::InvalidArgument {
                id: id.clone(),
                reason: format!(
                    "the summary's range is empty or reaches past the history of {} messages",
                    self.count.unwrap_or(0)
                ),
            },
            "too_many" => limits
                .check_message_count(id, self.total.unwrap_or(0))
                .err()
                .unwrap_or_else(|| Error::Corrupt {
                    id: id.clone(),
                    detail: "the server refused a history within the limit".into(),
                    source: None,
                }),
            other => Error::Corrupt {
                id: id.clone(),
                detail: format!("a write function refused with {other:?}"),
                source: None,
            },
        })
    }

    /// The version in `ok`.
    fn version(self, id: &SessionId, expect: Expect) -> Result<Version> {
        if let Some(e) = self.refusal(id, expect, &Limits::none()) {
            return Err(e);
        }
        self.ok
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| Error::Corrupt {
                id: id.clone(),
                detail: "a write function's reply has no version".into(),
                source: None,
            })
    }
}

impl PostgresStore {
    pub(crate) async fn do_append(&self, id: &SessionId, append: Append) -> Result<Appended> {
        let bodies = encode_messages(id, &self.limits, append.messages.iter())?;
        let mut o = Opts::new();
        expect_json(append.expect, &mut o);
        if let Some(key) = &append.key {
            o.insert("key".into(), key.as_str().into());
        }
        o.insert(
            "counters".into(),
            serde_json::to_value(&append.counters).unwrap_or_default(),
        );
        o.insert("metadata".into(), append.metadata.into());
        if let Some(max) = self.limits.max_messages {
            o.insert("max".into(), max.into());
        }
        let opts = json_text(id, &o)?;
        let text: String = self
            .value(
                "append",
                id,
                &self.sql.append,
                &[&id.as_str(), &now_ms(), &self.ttl_ms(), &opts, &bodies],
            )
            .await?;
        let reply = Reply::parse(id, &text)?;
        if let Some(v) = reply.replay {
            return Ok(outcome(id, v)?.replay());
        }
        if let Some(e) = reply.refusal(id, append.expect, &self.limits) {
            return Err(e);
        }
        let done = reply
            .ok
            .and_then(|ok| serde_json::from_value::<[i64; 3]>(ok).ok())
            .ok_or_else(|| Error::Corrupt {
                id: id.clone(),
                detail: "an append's reply has no outcome".into(),
                source: None,
            })?;
        outcome(id, done)
    }

    pub(crate) async fn do_save(
        &self,
        state: &ConversationState,
        options: Save,
    ) -> Result<Version> {
        let id = &state.id;
        self.limits
            .check_message_count(id, state.messages.len() as u64)?;
        let bodies = encode_messages(id, &self.limits, state.messages.iter().map(|m| &**m))?;
        let sums = state
            .summaries
            .iter()
            .map(|s| json_text(id, s))
            .collect::<Result<Vec<_>>>()?;
        let mut o = Opts::new();
        expect_json(options.expect, &mut o);
        o.insert("keep".into(), options.keep_clocks.into());
        o.insert("user_id".into(), state.user_id.clone().into());
        o.insert("system_prompt".into(), state.system_prompt.clone().into());
        o.insert("metadata".into(), state.metadata.clone().into());
        o.insert(
            "counters".into(),
            serde_json::to_value(&state.counters).unwrap_or_default(),
        );
        o.insert(
            "created_at".into(),
            state.created_at.as_unix_millis().into(),
        );
        let writes: Vec<serde_json::Value> = state
            .writes
            .iter()
            .map(|w| serde_json::json!([w.key.as_str(), w.outcome.messages]))
            .collect();
        o.insert("writes".into(), writes.into());
        let opts = json_text(id, &o)?;
        let text: String = self
            .value(
                "save",
                id,
                &self.sql.save,
                &[
                    &id.as_str(),
                    &now_ms(),
                    &self.ttl_ms(),
                    &opts,
                    &bodies,
                    &sums,
                ],
            )
            .await?;
        Reply::parse(id, &text)?.version(id, options.expect)
    }

    pub(crate) async fn do_fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        statestore_core::check_fork_ids(source, target)?;
        let text: String = self
            .value(
                "fork",
                target,
                &self.sql.fork,
                &[
                    &source.as_str(),
                    &target.as_str(),
                    &now_ms(),
                    &self.ttl_ms(),
                ],
            )
            .await?;
        let reply = Reply::parse(target, &text)?;
        if reply.err.as_deref() == Some("not_found") {
            return Err(Error::NotFound { id: source.clone() });
        }
        reply.version(target, Expect::Any)
    }

    pub(crate) async fn do_merge(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        let mut o = Opts::new();
        expect_json(expect, &mut o);
        o.insert("patch".into(), patch.into());
        let opts = json_text(id, &o)?;
        let text: String = self
            .value(
                "merge_metadata",
                id,
                &self.sql.merge,
                &[&id.as_str(), &now_ms(), &self.ttl_ms(), &opts],
            )
            .await?;
        Reply::parse(id, &text)?.version(id, expect)
    }

    pub(crate) async fn do_add_summary(&self, id: &SessionId, add: AddSummary) -> Result<Version> {
        let body = json_text(id, &add.summary)?;
        let mut o = Opts::new();
        expect_json(add.expect, &mut o);
        o.insert("start".into(), add.summary.covers.start.into());
        o.insert("end".into(), add.summary.covers.end.into());
        o.insert("metadata".into(), add.metadata.into());
        let opts = json_text(id, &o)?;
        let text: String = self
            .value(
                "add_summary",
                id,
                &self.sql.summary,
                &[&id.as_str(), &now_ms(), &self.ttl_ms(), &opts, &body],
            )
            .await?;
        Reply::parse(id, &text)?.version(id, add.expect)
    }

    pub(crate) async fn do_touch(&self, id: &SessionId) -> Result<bool> {
        let text: String = self
            .value(
                "touch",
                id,
                &self.sql.touch,
                &[&id.as_str(), &now_ms(), &self.ttl_ms()],
            )
            .await?;
        let reply = Reply::parse(id, &text)?;
        Ok(reply.ok.as_ref().and_then(serde_json::Value::as_bool) == Some(true))
    }

    pub(crate) async fn do_delete(&self, id: &SessionId, expect: Expect) -> Result<bool> {
        if expect == Expect::Any {
            return self
                .value("delete", id, &self.sql.delete, &[&id.as_str(), &now_ms()])
                .await;
        }
        let mut o = Opts::new();
        expect_json(expect, &mut o);
        let opts = json_text(id, &o)?;
        let text: String = self
            .value(
                "delete",
                id,
                &self.sql.delete_guarded,
                &[&id.as_str(), &now_ms(), &opts],
            )
            .await?;
        let reply = Reply::parse(id, &text)?;
        if let Some(e) = reply.refusal(id, expect, &Limits::none()) {
            return Err(e);
        }
        Ok(reply.ok.as_ref().and_then(serde_json::Value::as_bool) == Some(true))
    }

    pub(crate) async fn do_put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> Result<()> {
        encode_messages(id, &self.limits, pending.messages.iter())?;
        let body = json_text(id, pending)?;
        let expires = self.ttl_ms().map(|t| now_ms().saturating_add(t));
        self.rows(
            "put_pending",
            id,
            &self.sql.put_pending,
            &[&id.as_str(), &key.as_str(), &body, &expires],
        )
        .await?;
        Ok(())
    }

    /// Deletes up to `budget` expired sessions (and expired progress);
    /// returns how many sessions.
    pub(crate) async fn purge_batch(&self, budget: usize) -> Result<u64> {
        let id = crate::store_id()?;
        let n: i64 = self
            .value(
                "purge_expired",
                &id,
                &self.sql.purge,
                &[&now_ms(), &to_i64(budget as u64)],
            )
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
