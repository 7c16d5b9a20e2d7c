//! `Store::list` through the layer. The store underneath orders, filters by
//! user and time and pages — those are not sealed — and returns each
//! session's title sealed; the layer opens it. A title is bound to its
//! session, owner and context but not to the session's epoch (see
//! `Codec::seal_value`), so it opens without the session's manifest; the
//! manifest still records it, so a load refuses a title from another epoch.
//!
//! Metadata values are sealed, so the store cannot compare them: a
//! metadata filter is checked here, on each session the walk meets, read
//! with a maintenance load (no access) — a page then costs one load per
//! session examined, at most [`BUDGET`] per call, after which the call
//! ends early with a cursor. A session that does not open is skipped (and
//! logged): a load of it reports why.

use serde_json::Value;
use statestore_core::{
    ListCursor, ListPage, ListQuery, Load, Metadata, Result as StoreResult, SessionInfo, TITLE_KEY,
};

use super::Layer;
use crate::envelope::Scope;

/// Sessions one filtered call loads at most.
const BUDGET: usize = 256;

impl Layer {
    pub(crate) async fn list(&self, query: &ListQuery) -> StoreResult<ListPage> {
        if query.metadata.is_empty() {
            let mut page = self.inner.list(query).await?;
            self.open_titles(&mut page.sessions);
            return Ok(page);
        }
        let total = match query.count {
            true => Some(self.count_filtered(query).await?),
            false => None,
        };
        let limit = query.limit.max(1);
        let mut inner = query.clone();
        inner.metadata = Metadata::new();
        inner.count = false;
        let mut page = Vec::new();
        let mut examined = 0usize;
        loop {
            inner.limit = limit + 1 - page.len();
            let got = self.inner.list(&inner).await?;
            for info in got.sessions {
                examined += 1;
                inner.cursor = Some(ListCursor::of(&info, query.order).encode());
                if let Some(info) = self.admitted(query, info).await {
                    page.push(info);
                    if page.len() > limit {
                        page.truncate(limit);
                        return Ok(ListPage::of(page, true, query.order).with_total(total));
                    }
                }
            }
            let Some(next) = got.next_cursor else {
                return Ok(ListPage::of(page, false, query.order).with_total(total));
            };
            inner.cursor = Some(next);
            if examined >= BUDGET {
                return Ok(ListPage::new(page, inner.cursor).with_total(total));
            }
        }
    }

    /// Opens the sealed titles the store returned; a title that does not
    /// open is left out (logged).
    fn open_titles(&self, sessions: &mut [SessionInfo]) {
        let keys = self.keys();
        let codec = self.codec(keys.as_ref());
        for info in sessions {
            let Some(stored) = info.title.take() else {
                continue;
            };
            let scope = Scope {
                id: &info.id,
                owner: info.user_id.as_deref(),
                context: &self.context,
                epoch: None,
            };
            info.title = match codec.open_value(scope, TITLE_KEY, &Value::String(stored)) {
                Ok(Value::String(title)) => Some(title),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(session = %info.id, error = %e, "a session's title did not open");
                    None
                }
            };
        }
    }

    /// `info` with its title when its metadata passes the query's filter,
    /// read with a maintenance load.
    async fn admitted(&self, query: &ListQuery, mut info: SessionInfo) -> Option<SessionInfo> {
        match self.load_with(&info.id, Load::new().keep_clocks()).await {
            Ok(Some(state)) => {
                info.title = SessionInfo::title_in(&state.metadata);
                query.admits(&info, &state.metadata).then_some(info)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(session = %info.id, error = %e, "skipped a session that does not open");
                None
            }
        }
    }

    /// Every session the filtered query admits: a walk of the whole listing.
    async fn count_filtered(&self, query: &ListQuery) -> StoreResult<u64> {
        let mut inner = query.clone();
        inner.metadata = Metadata::new();
        inner.count = false;
        inner.cursor = None;
        inner.limit = 100;
        let mut n = 0u64;
        loop {
            let got = self.inner.list(&inner).await?;
            for info in got.sessions {
                n += u64::from(self.admitted(query, info).await.is_some());
            }
            match got.next_cursor {
                Some(next) => inner.cursor = Some(next),
                None => return Ok(n),
            }
        }
    }
}
