//! The [`Store`] operations of [`RedisStore`]: each one script call, one
//! round trip (loads: one `MULTI … EXEC` holding a script, see
//! `scripts.rs`; `fork`: one script copying on the server where both
//! sessions share a slot — always on a standalone server — else a snapshot
//! of the source, then a create-only write of the target; `list`: bounded
//! `SCAN` steps, see `list.rs`).

use statestore_core::{
    AddSummary, Append, Appended, ConversationState, Delete, Error as StoreError, Expect,
    IdempotencyKey, ListPage, ListQuery, Load, Metadata, Pending, Recent, RecentState, Result,
    Save, SessionId, Store, Version, async_trait,
};

use crate::call::{Packed, ScriptCall};
use crate::decode::{self, Reply};
use crate::error::{client_error, timed_out};
use crate::list;
use crate::store::{
    Contents, PatchArgs, RedisStore, call_key, counter_value, expect_args, guard_args, json,
    json_arg, metadata_pairs, now_ms,
};

#[async_trait]
impl Store for RedisStore {
    fn system_name(&self) -> &'static str {
        "redis"
    }

    async fn load_with(&self, id: &SessionId, options: Load) -> Result<Option<ConversationState>> {
        // A maintenance read is not an access: it neither sets
        // `last_accessed_at` nor touches any key's expiry (`read.rs`).
        self.snapshot("load", id, None, None, !options.keep_clocks)
            .await?
            .map(|s| s.into_state(id))
            .transpose()
    }

    async fn load_recent_as(&self, id: &SessionId, read: Recent) -> Result<Option<RecentState>> {
        // A maintenance read sends `-` for the TTL, as `load_with` does.
        let access = !read.keep_clocks;
        self.snapshot(
            "load_recent",
            id,
            Some(read.n),
            read.lookup.as_ref(),
            access,
        )
        .await?
        .map(|s| s.into_recent(id))
        .transpose()
    }

    async fn save_with(&self, state: &ConversationState, options: Save) -> Result<Version> {
        let id = &state.id;
        self.inner
            .limits
            .check_message_count(id, state.messages.len() as u64)?;
        let messages = self.encode_messages(id, state.messages.iter().map(|m| &**m))?;
        let summaries = state
            .summaries
            .iter()
            .map(|s| json(id, s))
            .collect::<Result<Vec<_>>>()?;
        let metadata = metadata_pairs(id, &state.metadata)?;
        let carried: Vec<(String, u64)> = state
            .writes
            .iter()
            .map(|w| (format!("k:{}", w.key.as_str()), w.outcome.messages))
            .collect();
        let contents = Contents {
            created_at: state.created_at.as_unix_millis(),
            user_id: state.user_id.as_deref(),
            system_prompt: state.system_prompt.as_deref(),
            messages: &messages,
            summaries: &summaries,
            metadata: &metadata,
            counters: &state.counters,
            carried: &carried,
            keep_clocks: options.keep_clocks,
        };
        self.save_encoded("save", id, contents, options.expect)
            .await
    }

    async fn append_with(&self, id: &SessionId, append: Append) -> Result<Appended> {
        let Append {
            messages,
            expect,
            key,
            counters,
            metadata,
            ..
        } = append;
        let keys = self.inner.keys.session(id);
        // A caller's key may have progress recorded, which the write ends.
        let [h, m, s, d, w] = keys.all();
        let script_keys: &[&str] = match key {
            Some(_) => &[h, m, s, d, w, &keys.pending],
            None => &[h, m, s, d, w],
        };
        // Every argument but the messages goes packed into ARGV 1
        // (`scripts/append.lua`, `call.rs`'s `Packed`).
        let mut args = Packed::default();
        args.push(now_ms().to_string())
            .push(self.ttl_ms().to_string());
        args.push(match expect {
            Expect::Any => "a".to_owned(),
            Expect::Version(v) => v.to_string(),
            Expect::Absent => "n".to_owned(),
        });
        let max = self.inner.limits.max_messages;
        args.push(
            max.map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX))
                .to_string(),
        );
        // An unkeyed append gets a key of its own where the client library
        // may re-send a request by itself (the cluster client), so that the
        // re-send is a replay, not a second append; elsewhere it needs none.
        //
        // There a caller's key also carries a token of this call, kept
        // with the write: a replay that carries it back is this call's own
        // write, re-sent by the client — not an earlier call's.
        let resends = self.inner.conn.resends();
        let token = resends.then(call_token);
        let field = match (key, token) {
            (Some(key), Some(token)) => format!("{token} k:{}", key.as_str()),
            (Some(key), None) => format!("k:{}", key.as_str()),
            (None, _) if resends => call_key(),
            (None, _) => String::new(),
        };
        args.push(&field);
        // A metadata patch adds its counts to the counters' (A 6); an
        // append without one sends what it always did.
        let patch = PatchArgs::new(&metadata);
        if metadata.is_empty() {
            args.push(counters.len().to_string());
        } else {
            args.push(format!(
                "{} {} {}",
                counters.len(),
                patch.set_len(),
                patch.delete_len()
            ));
        }
        args.push(messages.len().to_string());
        for name in counters.keys() {
            args.push(format!("c:{name}"));
        }
        for delta in counters.values() {
            args.push(counter_value(*delta));
        }
        patch.pack(id, &mut args)?;
        let mut call = ScriptCall::new(&self.inner.scripts.append, script_keys);
        call.arg(args.into_bytes());
        // The messages, serialized straight into the command; checked
        // against the size limit before anything is sent.
        let mut sizes = Vec::with_capacity(messages.len());
        for m in &messages {
            sizes.push(json_arg(id, &mut call, m)?);
        }
        self.inner
            .limits
            .check_message_sizes(id, sizes.into_iter())?;
        let limits = &self.inner.limits;
        let (appended, remembered_token) = self
            .write("append", id, &call, |r| {
                decode::appended(id, expect, limits, r)
            })
            .await?;
        // The caller made one call: a replay of the store's own key, or of
        // a key carrying this call's token, is the client's re-send of that
        // call, whose write is this call's.
        let own = field.starts_with('g') || (token.is_some() && remembered_token == token);
        Ok(if appended.replayed && own {
            appended.applied_now()
        } else {
            appended
        })
    }

    async fn fork(&self, source: &SessionId, target: &SessionId) -> Result<Version> {
        statestore_core::check_fork_ids(source, target)?;
        let (from, to) = (
            self.inner.keys.session(source),
            self.inner.keys.session(target),
        );
        if self.inner.conn.same_slot(&from.header, &to.header) {
            // One script copies the keys on the server (`COPY`).
            let [h, m, s, d, w] = from.all();
            let [th, tm, ts, td, tw] = to.all();
            let keys = [h, m, s, d, w, th, tm, ts, td, tw];
            let mut call = self.call(&self.inner.scripts.fork, &keys, true);
            call.arg(if self.inner.sliding_ttl { "1" } else { "0" });
            // A re-send of a fork that ran finds the target made by it.
            if self.inner.conn.resends() {
                call.arg(call_key());
            }
            let copied = self
                .write("fork", source, &call, |reply| match reply {
                    Reply::Ok(_) => Ok(Some(1)),
                    Reply::NoCopy => Ok(None),
                    Reply::Missing => Err(StoreError::NotFound { id: source.clone() }),
                    Reply::Target(state) => {
                        match decode::reply(target, redis::Value::BulkString(state))? {
                            Reply::Conflict(_) => {
                                Err(StoreError::AlreadyExists { id: target.clone() })
                            }
                            _ => Err(StoreError::Corrupt {
                                id: target.clone(),
                                detail: "fork returned an unexpected reply about its target".into(),
                                source: None,
                            }),
                        }
                    }
                    _ => Err(StoreError::Corrupt {
                        id: source.clone(),
                        detail: "fork returned an unexpected reply".into(),
                        source: None,
                    }),
                })
                .await;
            // Errors name the source, except those about the target's
            // state (the script reports them apart).
            match copied {
                Ok(Some(version)) => {
                    self.reindex(target).await;
                    return Ok(version);
                }
                Ok(None) => {} // no COPY (Redis < 6.2): copy through the client
                Err(e) => return Err(e),
            }
        }
        // Across slots: a snapshot of the source (one transaction on its
        // slot), then a create-only write of the whole target (one script on
        // its slot): the target appears complete or not at all, and never
        // overwrites.
        let snapshot = self
            .snapshot("fork", source, None, None, true)
            .await?
            .ok_or_else(|| StoreError::NotFound { id: source.clone() })?;
        let raw = snapshot.into_raw(source)?;
        let contents = Contents {
            created_at: now_ms(),
            user_id: raw.user_id.as_deref(),
            system_prompt: raw.system_prompt.as_deref(),
            messages: &raw.messages,
            summaries: &raw.summaries,
            metadata: &raw.metadata,
            counters: &raw.counters,
            carried: &[],
            keep_clocks: false,
        };
        match self
            .save_encoded("fork", target, contents, Expect::Absent)
            .await
        {
            Err(StoreError::Conflict { .. }) => {
                Err(StoreError::AlreadyExists { id: target.clone() })
            }
            other => other,
        }
    }

    async fn delete_with(&self, id: &SessionId, options: Delete) -> Result<bool> {
        let keys = self.inner.keys.session(id);
        // A re-send of a delete that ran reports the deletion it made.
        let token = self.inner.conn.resends().then(call_token);
        let [h, m, s, d, w] = keys.all();
        let mut call = match token {
            Some(_) => ScriptCall::new(
                &self.inner.scripts.delete,
                &[h, m, s, d, w, &keys.pending, &keys.deleted],
            ),
            None => ScriptCall::new(&self.inner.scripts.delete, &[h, m, s, d, w, &keys.pending]),
        };
        expect_args(&mut call, options.expect);
        if let Some(token) = token {
            call.arg(token);
        }
        match self.run("delete", id, &call).await? {
            Reply::Ok(rest) => {
                // Out of every session's indexes; its owner's entries go
                // when a listing meets them (keys.rs).
                self.reindex(id).await;
                Ok(rest.first() == Some(&1))
            }
            Reply::Conflict(actual) => Err(StoreError::Conflict {
                id: id.clone(),
                expected: options.expect,
                actual,
            }),
            _ => Err(StoreError::Corrupt {
                id: id.clone(),
                detail: "delete returned an unexpected reply".into(),
                source: None,
            }),
        }
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        let keys = self.inner.keys.session(id);
        let cmd = redis::cmd("EXISTS").arg(&keys.header).clone();
        let value = self
            .timed("exists", Some(id), self.inner.conn.query(&cmd))
            .await?;
        Ok(decode::int(&value) == Some(1))
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let lister = list::Lister {
            conn: &self.inner.conn,
            keys: &self.inner.keys,
            unlist: (!self.inner.client_index).then_some(&self.inner.scripts.unlist),
            expiring: self.inner.ttl.is_some(),
        };
        self.ensure_list_index().await?;
        let fut = lister.page(query);
        match tokio::time::timeout(self.inner.timeout * 4, fut).await {
            Err(_) => Err(timed_out("list", None, self.inner.timeout * 4)),
            Ok(result) => result.map_err(|e| match e {
                list::ListError::Client(e) => client_error("list", None, self.inner.timeout, e),
                list::ListError::Store(e) => e,
            }),
        }
    }

    async fn merge_metadata(
        &self,
        id: &SessionId,
        patch: Metadata,
        expect: Expect,
    ) -> Result<Version> {
        let keys = self.inner.keys.session(id);
        let mut call = self.call(&self.inner.scripts.merge_metadata, &keys.all(), true);
        guard_args(&mut call, expect, self.inner.conn.resends());
        let patch = PatchArgs::new(&patch);
        call.arg(patch.set_len());
        patch.push(id, &mut call)?;
        self.write("merge_metadata", id, &call, self.version(id, expect))
            .await
    }

    async fn add_summary_with(&self, id: &SessionId, add: AddSummary) -> Result<Version> {
        let AddSummary {
            summary,
            expect,
            metadata,
            ..
        } = add;
        let keys = self.inner.keys.session(id);
        let mut call = self.call(&self.inner.scripts.add_summary, &keys.all(), true);
        guard_args(&mut call, expect, self.inner.conn.resends());
        call.arg(summary.covers.start).arg(summary.covers.end);
        json_arg(id, &mut call, &summary)?;
        let patch = PatchArgs::new(&metadata);
        call.arg(patch.set_len());
        patch.push(id, &mut call)?;
        self.write("add_summary", id, &call, self.version(id, expect))
            .await
    }

    async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> Result<()> {
        // Each message within the size limit, as an append would check it;
        // stored as one document.
        self.encode_messages(id, pending.messages.iter())?;
        let keys = self.inner.keys.session(id);
        let mut call = ScriptCall::new(&self.inner.scripts.pending, &[&keys.writes, &keys.pending]);
        call.arg(format!("k:{}", key.as_str()));
        json_arg(id, &mut call, pending)?;
        call.arg(self.ttl_ms());
        match self.run("put_pending", id, &call).await? {
            Reply::Ok(_) => Ok(()),
            _ => Err(StoreError::Corrupt {
                id: id.clone(),
                detail: "put_pending returned an unexpected reply".into(),
                source: None,
            }),
        }
    }

    async fn load_pending(&self, id: &SessionId, key: &IdempotencyKey) -> Result<Option<Pending>> {
        self.pending(id, key).await
    }

    async fn touch(&self, id: &SessionId) -> Result<bool> {
        let keys = self.inner.keys.session(id);
        let call = self.call(&self.inner.scripts.touch, &keys.all(), true);
        match self.run("touch", id, &call).await? {
            Reply::Ok(_) => Ok(true),
            _ => Ok(false),
        }
    }
}

/// A token unique to one append call (see `append_with`): 63 random bits,
/// decimal, so that a script tells it from a field by its first byte.
fn call_token() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(IdempotencyKey::random()) >> 1
}
