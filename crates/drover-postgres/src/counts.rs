//! Per-queue counts by state (`queue_counts`), kept in the transaction of
//! every state change.

use crate::error::SqlResultExt;
use drover_core::JobState;
use drover_store::StoreResult;
use sqlx::PgConnection;
use std::collections::BTreeMap;

/// The count changes of one transaction, by `(queue, state)`; written in
/// one statement at its end.
#[derive(Debug, Default)]
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

    /// Adds the deltas to their rows in one upsert, rows in `(queue,
    /// state)` order (the fixed order every transaction locks them in, so
    /// two cannot deadlock on them; ADR 0009). Rows of no change are left
    /// alone.
    pub(crate) async fn flush(self, conn: &mut PgConnection) -> StoreResult<()> {
        // The map keeps them sorted by the text the rows hold.
        let rows: Vec<(String, &'static str, i64)> =
            self.0.into_iter().filter(|(_, n)| *n != 0).map(|((q, s), n)| (q, s, n)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let queues: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        let states: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let deltas: Vec<i64> = rows.iter().map(|r| r.2).collect();
        sqlx::query(
            "INSERT INTO queue_counts (queue, state, n) \
             SELECT q, s, n FROM unnest($1::text[], $2::text[], $3::bigint[]) AS d(q, s, n) ORDER BY q, s \
             ON CONFLICT (queue, state) DO UPDATE SET n = queue_counts.n + excluded.n",
        )
        .bind(queues)
        .bind(states)
        .bind(deltas)
        .execute(conn)
        .await
        .db()?;
        Ok(())
    }
}
