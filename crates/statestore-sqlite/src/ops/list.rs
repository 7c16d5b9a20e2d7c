//! [`Store::list`](statestore_core::Store::list): one page through an index
//! (see the index table in [`crate::schema`]), in one read transaction.
//!
//! The order, the user, the cursor and the time ranges are SQL conditions
//! the indexes serve (`id`, `(user_id, id)`, `(updated_at, id)`,
//! `(user_id, updated_at, id)`), so a page reads `limit + 1` rows after a
//! seek. A metadata filter is checked here, on each row's metadata: a page
//! then reads rows in batches until it is full or [`BUDGET`] rows were
//! examined, and ends early with a cursor at the last row examined.

use rusqlite::Connection;
use rusqlite::types::Value;
use statestore_core::{
    ListCursor, ListOrder, ListPage, ListQuery, Metadata, Result, SessionId, SessionInfo,
    TITLE_KEY, TimeRange,
};

use super::{to_i64, ts};
use crate::error::{OpCtx, sql};

/// Rows one call examines at most when a metadata filter skips some.
const BUDGET: usize = 4_096;

/// One row of a listing: where it is, what is listed (`None` for an id
/// that is not a valid id, planted by hand: skipped), and the metadata
/// when filtered on.
struct Row {
    position: ListCursor,
    info: Option<SessionInfo>,
    metadata: Option<String>,
}

/// The `SELECT` of one batch: rows after `cursor` that pass every filter
/// but the metadata one, in the query's order, at most `n`.
fn select(
    conn: &Connection,
    ctx: &OpCtx,
    now: i64,
    query: &ListQuery,
    cursor: Option<&ListCursor>,
    n: usize,
) -> Result<Vec<Row>> {
    let title = format!("'$.\"{TITLE_KEY}\"'");
    let mut q = format!(
        "SELECT id, user_id, created_at, updated_at, version,
             CASE WHEN json_valid(metadata) THEN
                 CASE WHEN json_type(metadata, {title}) = 'text'
                      THEN json_extract(metadata, {title}) END END{}
         FROM sessions WHERE (expires_at IS NULL OR expires_at > ?)",
        if query.metadata.is_empty() {
            ""
        } else {
            ", metadata"
        }
    );
    let mut args = vec![Value::Integer(now)];
    conditions(query, &mut q, &mut args);
    match (query.order, cursor) {
        (ListOrder::Recent, Some(c)) => {
            q.push_str(" AND (updated_at, id) < (?, ?)");
            args.push(Value::Integer(to_i64(c.updated_at.as_unix_millis())));
            args.push(Value::Text(c.id.clone()));
        }
        (_, Some(c)) => {
            q.push_str(" AND id > ?");
            args.push(Value::Text(c.id.clone()));
        }
        (_, None) => {}
    }
    q.push_str(match query.order {
        ListOrder::Recent => " ORDER BY updated_at DESC, id DESC LIMIT ?",
        _ => " ORDER BY id LIMIT ?",
    });
    args.push(Value::Integer(to_i64(n as u64)));
    let filtered = !query.metadata.is_empty();
    let order = query.order;
    sql(
        ctx,
        conn.prepare_cached(&q).and_then(|mut st| {
            st.query_map(rusqlite::params_from_iter(&args), |r| {
                // A value of the wrong type, planted by hand, must not fail
                // the listing: that session alone reads as corrupt (`load`).
                let int = |i: usize| r.get_ref(i).ok().and_then(|v| v.as_i64().ok()).unwrap_or(0);
                let text = |i: usize| {
                    r.get_ref(i)
                        .ok()
                        .and_then(|v| v.as_str().ok())
                        .map(str::to_owned)
                };
                Ok(row(
                    order,
                    r.get(0)?,
                    text(1),
                    (int(2), int(3), int(4)),
                    text(5),
                    if filtered { text(6) } else { None },
                ))
            })?
            .collect()
        }),
    )
}

/// A [`Row`] from its columns: id, owner, (created, updated, version),
/// title, metadata.
fn row(
    order: ListOrder,
    id: String,
    user_id: Option<String>,
    (created, updated, version): (i64, i64, i64),
    title: Option<String>,
    metadata: Option<String>,
) -> Row {
    let clock = |ms: i64| ts(u64::try_from(ms).unwrap_or_default());
    let position = ListCursor {
        order,
        updated_at: match order {
            ListOrder::Recent => clock(updated),
            _ => clock(0),
        },
        id,
    };
    let info = match SessionId::new(&position.id) {
        Ok(id) => Some(
            SessionInfo::new(id, clock(updated))
                .with_user(user_id)
                .with_title(title)
                .created_at(clock(created))
                .with_version(u64::try_from(version).unwrap_or_default()),
        ),
        Err(_) => {
            tracing::warn!("skipped a stored session id that is not a valid id");
            None
        }
    };
    Row {
        position,
        info,
        metadata,
    }
}

/// The user and time-range conditions, appended to `q` with their values.
fn conditions(query: &ListQuery, q: &mut String, args: &mut Vec<Value>) {
    if let Some(user) = &query.user_id {
        q.push_str(" AND user_id = ?");
        args.push(Value::Text(user.clone()));
    }
    for (column, range) in [
        ("created_at", &query.created),
        ("updated_at", &query.updated),
    ] {
        range_conditions(column, range, q, args);
    }
}

fn range_conditions(column: &str, range: &TimeRange, q: &mut String, args: &mut Vec<Value>) {
    if let Some(from) = range.from {
        q.push_str(&format!(" AND {column} >= ?"));
        args.push(Value::Integer(to_i64(from.as_unix_millis())));
    }
    if let Some(until) = range.until {
        q.push_str(&format!(" AND {column} < ?"));
        args.push(Value::Integer(to_i64(until.as_unix_millis())));
    }
}

/// Whether a row passes the metadata filter. Metadata that does not parse
/// passes no filter (that session alone is affected: `load` reports it).
fn admitted(query: &ListQuery, row: &Row) -> Option<SessionInfo> {
    let info = row.info.as_ref()?;
    if query.metadata.is_empty() {
        return Some(info.clone());
    }
    let metadata: Metadata = row
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    query.admits(info, &metadata).then(|| info.clone())
}

/// One page of sessions (see the module docs).
pub(crate) fn list(
    conn: &Connection,
    ctx: &OpCtx,
    now: i64,
    query: &ListQuery,
) -> Result<ListPage> {
    let limit = query.limit.max(1);
    let total = count(conn, ctx, now, query)?;
    let mut position = query.position()?;
    let mut page = Vec::with_capacity(limit.min(1_024) + 1);
    let mut examined = 0usize;
    loop {
        let want = if query.metadata.is_empty() {
            limit + 1 - page.len()
        } else {
            (limit + 1).clamp(256, 1_024)
        };
        let rows = select(conn, ctx, now, query, position.as_ref(), want)?;
        let exhausted = rows.len() < want;
        for row in rows {
            examined += 1;
            if let Some(info) = admitted(query, &row) {
                page.push(info);
                if page.len() > limit {
                    page.truncate(limit);
                    return Ok(ListPage::of(page, true, query.order).with_total(total));
                }
            }
            position = Some(row.position);
        }
        if exhausted {
            return Ok(ListPage::of(page, false, query.order).with_total(total));
        }
        if examined >= BUDGET {
            let next = position.as_ref().map(ListCursor::encode);
            return Ok(ListPage::new(page, next).with_total(total));
        }
    }
}

/// [`ListPage::total`]: a `count(*)` through the index, or with a metadata
/// filter, a walk of the matching rows' metadata.
fn count(conn: &Connection, ctx: &OpCtx, now: i64, query: &ListQuery) -> Result<Option<u64>> {
    if !query.count {
        return Ok(None);
    }
    if query.metadata.is_empty() {
        let mut q =
            "SELECT count(*) FROM sessions WHERE (expires_at IS NULL OR expires_at > ?)".to_owned();
        let mut args = vec![Value::Integer(now)];
        conditions(query, &mut q, &mut args);
        let n: i64 = sql(
            ctx,
            conn.prepare_cached(&q)
                .and_then(|mut st| st.query_row(rusqlite::params_from_iter(&args), |r| r.get(0))),
        )?;
        return Ok(Some(u64::try_from(n).unwrap_or_default()));
    }
    let mut n = 0u64;
    let mut position = None;
    loop {
        let rows = select(conn, ctx, now, query, position.as_ref(), 1_024)?;
        let Some(last) = rows.last() else {
            return Ok(Some(n));
        };
        position = Some(last.position.clone());
        n += rows
            .iter()
            .filter(|row| admitted(query, row).is_some())
            .count() as u64;
    }
}
