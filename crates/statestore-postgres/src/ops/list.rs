//! [`Store::list`](statestore_core::Store::list): one `SELECT` of a page
//! through an index (`by_recent`, `by_user_recent`, the primary key or
//! `sessions_by_user`: see [`crate::schema`]), and with a count one
//! `SELECT count(*)` more.
//!
//! Every filter is a condition in SQL, so pages are always full: the user,
//! the cursor (a row comparison, `(updated_at, id) < ($a, $b)`, which the
//! index serves) and the time ranges narrow the index scan; the metadata
//! filter compares `jsonb` values (`metadata -> key = value`: equal JSON,
//! whatever its spacing or key order). The title is read in the same
//! statement (`metadata ->> 'statestore.title'` when it is a string).

use statestore_core::{
    ListCursor, ListOrder, ListPage, ListQuery, Result, SessionId, SessionInfo, TITLE_KEY,
    Timestamp,
};
use tokio_postgres::types::ToSql;

use super::{now_ms, to_i64};
use crate::PostgresStore;

/// A statement parameter of a listing.
#[derive(Debug)]
enum Param {
    Int(i64),
    Text(String),
}

impl Param {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Int(i) => i,
            Self::Text(t) => t,
        }
    }
}

/// The `WHERE` conditions of a query but its cursor, and their parameters
/// (`$1` is now).
fn conditions(query: &ListQuery, params: &mut Vec<Param>) -> String {
    let next = |p: Param, params: &mut Vec<Param>| {
        params.push(p);
        format!("${}", params.len())
    };
    let mut q = String::from("(s.expires_at IS NULL OR s.expires_at > $1)");
    if let Some(user) = &query.user_id {
        q.push_str(&format!(
            " AND s.user_id = {}",
            next(Param::Text(user.clone()), params)
        ));
    }
    for (column, range) in [
        ("created_at", &query.created),
        ("updated_at", &query.updated),
    ] {
        if let Some(from) = range.from {
            let p = next(Param::Int(to_i64(from.as_unix_millis())), params);
            q.push_str(&format!(" AND s.{column} >= {p}"));
        }
        if let Some(until) = range.until {
            let p = next(Param::Int(to_i64(until.as_unix_millis())), params);
            q.push_str(&format!(" AND s.{column} < {p}"));
        }
    }
    for (key, value) in &query.metadata {
        let k = next(Param::Text(key.clone()), params);
        let v = next(Param::Text(value.to_string()), params);
        q.push_str(&format!(" AND s.metadata -> {k}::text = {v}::text::jsonb"));
    }
    q
}

impl PostgresStore {
    pub(crate) async fn do_list(&self, query: &ListQuery) -> Result<ListPage> {
        let store = crate::store_id()?;
        let limit = query.limit.max(1);
        let position = query.position()?;
        let mut params = vec![Param::Int(now_ms())];
        let filter = conditions(query, &mut params);
        let total = if query.count {
            let sql = format!(
                "SELECT count(*) FROM {} s WHERE {filter}",
                self.sql.sessions
            );
            let refs: Vec<_> = params.iter().map(Param::sql).collect();
            let rows = self.rows("list", &store, &sql, &refs).await?;
            let n: i64 = rows.first().map_or(Ok(0), |r| r.try_get(0)).map_err(|e| {
                statestore_core::Error::corrupt(&store, "the count of a listing", e)
            })?;
            Some(u64::try_from(n).unwrap_or_default())
        } else {
            None
        };
        let mut sql = format!(
            "SELECT s.id::text, s.user_id::text, s.created_at, s.updated_at, s.version,
                 CASE WHEN jsonb_typeof(s.metadata -> '{TITLE_KEY}') = 'string'
                      THEN s.metadata ->> '{TITLE_KEY}' END
             FROM {} s WHERE {filter}",
            self.sql.sessions
        );
        match (query.order, &position) {
            (ListOrder::Recent, Some(c)) => {
                params.push(Param::Int(to_i64(c.updated_at.as_unix_millis())));
                params.push(Param::Text(c.id.clone()));
                let n = params.len();
                sql.push_str(&format!(
                    " AND (s.updated_at, s.id) < (${}, ${n}::text)",
                    n - 1
                ));
            }
            (_, Some(c)) => {
                params.push(Param::Text(c.id.clone()));
                sql.push_str(&format!(" AND s.id > ${}::text", params.len()));
            }
            (_, None) => {}
        }
        params.push(Param::Int(to_i64(limit as u64).saturating_add(1)));
        sql.push_str(&match query.order {
            ListOrder::Recent => format!(
                " ORDER BY s.updated_at DESC, s.id DESC LIMIT ${}",
                params.len()
            ),
            _ => format!(" ORDER BY s.id LIMIT ${}", params.len()),
        });
        let refs: Vec<_> = params.iter().map(Param::sql).collect();
        let rows = self.rows("list", &store, &sql, &refs).await?;
        let more = rows.len() > limit;
        let mut sessions = Vec::with_capacity(limit.min(rows.len()));
        for row in rows.iter().take(limit) {
            let read = |e| statestore_core::Error::corrupt(&store, "a row of a listing", e);
            let id: String = row.try_get(0).map_err(read)?;
            let Ok(id) = SessionId::new(&id) else {
                tracing::warn!("skipped a stored session id that is not a valid id");
                continue;
            };
            let clock = |col: usize| -> Result<Timestamp> {
                let ms: i64 = row.try_get(col).map_err(read)?;
                Ok(Timestamp::from_unix_millis(
                    u64::try_from(ms).unwrap_or_default(),
                ))
            };
            sessions.push(
                SessionInfo::new(id, clock(3)?)
                    .with_user(row.try_get(1).map_err(read)?)
                    .with_title(row.try_get(5).map_err(read)?)
                    .created_at(clock(2)?)
                    .with_version(
                        u64::try_from(row.try_get::<_, i64>(4).map_err(read)?).unwrap_or_default(),
                    ),
            );
        }
        // The cursor is the last row read, even one skipped above.
        let mut page = ListPage::of(sessions, more, query.order).with_total(total);
        if more && let Some(row) = rows.get(limit - 1) {
            let id: String = row.try_get(0).unwrap_or_default();
            let updated: i64 = row.try_get(3).unwrap_or_default();
            page.next_cursor = Some(
                ListCursor {
                    order: query.order,
                    updated_at: match query.order {
                        ListOrder::Recent => {
                            Timestamp::from_unix_millis(u64::try_from(updated).unwrap_or_default())
                        }
                        _ => Timestamp::default(),
                    },
                    id,
                }
                .encode(),
            );
        }
        Ok(page)
    }
}
