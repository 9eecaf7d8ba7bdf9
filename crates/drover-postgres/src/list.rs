//! Listing jobs with filters, newest first, by cursor (as the SQLite
//! store's `job_query::list`).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::rows::{self, JOB_COLS};
use drover_store::{JobListParams, JobPage, MAX_PAGE, StoreError, StoreResult};
use std::fmt::Write as _;

/// Page size when the caller asks for 0.
const DEFAULT_PAGE: u32 = 50;

/// `Store::job_list`: the jobs matching every filter given, newest (highest
/// `seq`) first, without attempt history. The cursor is the `seq` of the
/// last job of the previous page, in decimal; anything else is refused. A
/// limit of 0 means 50; limits above [`MAX_PAGE`] are clamped to it.
///
/// `seq` values are handed out at insert, not at commit, so a job whose
/// transaction commits late may land behind a cursor already passed
/// (ADR 0009): a page holds what was committed when it was read.
pub(crate) async fn job_list(store: &PgStore, params: JobListParams) -> StoreResult<JobPage> {
    let limit = match params.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let before = params.cursor.as_deref().map(parse_cursor).transpose()?;

    // Each filter given adds a term and a parameter, numbered in order.
    let texts: Vec<(&str, &str)> = [
        ("queue", params.queue.as_deref()),
        ("name", params.name.as_deref()),
        ("batch_id", params.batch_id.as_deref()),
        ("parent_id", params.parent_id.as_ref().map(|id| id.as_str())),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.map(|value| (column, value)))
    .collect();
    let mut sql = format!("SELECT {JOB_COLS} FROM jobs WHERE true");
    for (i, (column, _)) in texts.iter().enumerate() {
        let _ = write!(sql, " AND {column} = ${}", i + 1);
    }
    // The state is spliced in as a literal (one of a fixed set), so the
    // partial index of that state can serve the query.
    if let Some(state) = params.state {
        let _ = write!(sql, " AND state = '{}'", state.as_str());
    }
    let n = texts.len();
    if before.is_some() {
        let _ = write!(sql, " AND seq < ${}", n + 1);
    }
    let _ = write!(sql, " ORDER BY seq DESC LIMIT ${}", n + 1 + usize::from(before.is_some()));

    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (_, value) in texts {
        query = query.bind(value);
    }
    if let Some(seq) = before {
        query = query.bind(seq);
    }
    // One row more than the page tells whether another page follows.
    query = query.bind(i64::from(limit) + 1);

    let mut conn = store.pool().acquire().await.db()?;
    let found = query.fetch_all(&mut *conn).await.db()?;
    let mut items = found.iter().map(rows::job).collect::<StoreResult<Vec<_>>>()?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    Ok(JobPage { items: items.into_iter().map(|(_, job)| job).collect(), next_cursor })
}

/// The `seq` a cursor this store issued holds: a positive decimal.
fn parse_cursor(raw: &str) -> StoreResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|seq| *seq > 0)
        .ok_or_else(|| StoreError::invalid("cursor", "not a cursor this store issued"))
}
