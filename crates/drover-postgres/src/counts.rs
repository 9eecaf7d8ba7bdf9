//! Per-queue counts by state, kept in the transaction of every state
//! change (ADR 0009).
//!
//! A transaction never updates `queue_counts` itself: every claim and
//! finish of a queue would update the same few rows, and each would wait
//! for the one before it to commit (measured: 4 ms a transaction, most of
//! the bench's time). Instead it appends its changes to
//! `queue_count_deltas` (with its notifications, in one statement: see
//! [`crate::notify::send`]), which takes no lock others need; reads add the
//! deltas to `queue_counts` ([`COUNTS_OF_QUEUE`], [`COUNTS_OF_ALL`]), and
//! every maintenance tick folds them in ([`fold_deltas`]), so the deltas
//! stay few.

use crate::error::SqlResultExt;
use drover_core::JobState;
use drover_store::StoreResult;
use sqlx::PgConnection;
use std::collections::BTreeMap;

/// The count changes of one transaction, by `(queue, state)`; written in
/// one statement at its end.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts(BTreeMap<(String, &'static str), i64>);

impl Counts {
    /// `delta` more jobs of `queue` in `state`.
    pub(crate) fn add(&mut self, queue: &str, state: JobState, delta: i64) {
        *self.0.entry((queue.to_owned(), state.as_str())).or_default() += delta;
    }

    /// One job of `queue` went from `from` to `to`.
    pub(crate) fn moved(&mut self, queue: &str, from: JobState, to: JobState) {
        if from != to {
            self.add(queue, from, -1);
            self.add(queue, to, 1);
        }
    }

    /// The non-zero changes as the three columns of `queue_count_deltas`
    /// rows (`queue`, `state`, `n`), sorted by `(queue, state)`; appended
    /// by [`crate::notify::send`] in the statement that also notifies.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_columns(self) -> (Vec<String>, Vec<&'static str>, Vec<i64>) {
        let rows: Vec<_> = self.0.into_iter().filter(|(_, n)| *n != 0).collect();
        let mut columns =
            (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for ((queue, state), n) in rows {
            columns.0.push(queue);
            columns.1.push(state);
            columns.2.push(n);
        }
        columns
    }
}

/// Folds `queue_count_deltas` into `queue_counts` (maintenance): the rows
/// committed so far are deleted and their sums added, in one statement, the
/// count rows upserted in `(queue, state)` order (two servers folding at
/// once cannot deadlock; the second skips the rows the first deleted).
/// Returns how many delta rows were folded.
pub(crate) async fn fold_deltas(conn: &mut PgConnection) -> StoreResult<u64> {
    let folded: Option<i64> = sqlx::query_scalar(
        "WITH moved AS (DELETE FROM queue_count_deltas RETURNING queue, state, n), \
         summed AS (SELECT queue, state, sum(n)::bigint AS n, count(*) AS rows FROM moved GROUP BY queue, state), \
         applied AS (INSERT INTO queue_counts (queue, state, n) SELECT queue, state, n FROM summed ORDER BY queue, state \
             ON CONFLICT (queue, state) DO UPDATE SET n = queue_counts.n + excluded.n) \
         SELECT sum(rows)::bigint FROM summed",
    )
    .fetch_one(conn)
    .await
    .db()?;
    Ok(folded.unwrap_or(0) as u64)
}

/// The SQL of a queue's counts by state, deltas included (`$1`: the
/// queue); rows `(state, n)`.
pub(crate) const COUNTS_OF_QUEUE: &str = "SELECT state, sum(n)::bigint FROM \
     (SELECT state, n FROM queue_counts WHERE queue = $1 \
      UNION ALL SELECT state, n FROM queue_count_deltas WHERE queue = $1) AS c GROUP BY state";

/// The SQL of every queue's counts by state, deltas included; rows
/// `(queue, state, n)`.
pub(crate) const COUNTS_OF_ALL: &str = "SELECT queue, state, sum(n)::bigint FROM \
     (SELECT queue, state, n FROM queue_counts UNION ALL SELECT queue, state, n FROM queue_count_deltas) AS c \
     GROUP BY queue, state";
