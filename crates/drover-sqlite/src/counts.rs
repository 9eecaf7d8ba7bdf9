//! Per-queue job counts by state, kept in the `queue_counts` table
//! (migration 0002) instead of a `jobs (queue, state)` index.
//!
//! An index would cost two B-tree operations in the big jobs index on every
//! state change. Instead each command records the changes it makes here, in
//! memory, and the writer applies the batch's net changes to
//! `queue_counts` just before `COMMIT`: one small upsert per (queue, state)
//! touched, in the same transaction, so the table always equals a
//! `GROUP BY queue, state` over `jobs` at every commit.

use drover_core::JobState;
use rusqlite::{Connection, params};

/// Net changes of one batch (or one command, see `apply_isolated`) to the
/// per-queue counts, not yet written.
#[derive(Clone, Debug, Default)]
pub(crate) struct CountDeltas {
    /// One entry per queue touched, its deltas indexed like [`JobState::ALL`].
    /// A list, not a map: a batch touches a handful of queues at most, and
    /// a linear scan of short strings beats hashing them.
    queues: Vec<(String, [i64; 7])>,
}

/// The position of `state` in [`JobState::ALL`].
fn slot(state: JobState) -> usize {
    match state {
        JobState::Waiting => 0,
        JobState::Delayed => 1,
        JobState::WaitingChildren => 2,
        JobState::Active => 3,
        JobState::Completed => 4,
        JobState::Failed => 5,
        JobState::Cancelled => 6,
    }
}

impl CountDeltas {
    /// The deltas of `queue`, created at zero on first use.
    fn of(&mut self, queue: &str) -> &mut [i64; 7] {
        let i = match self.queues.iter().position(|(q, _)| q == queue) {
            Some(i) => i,
            None => {
                self.queues.push((queue.to_owned(), [0; 7]));
                self.queues.len() - 1
            }
        };
        &mut self.queues[i].1
    }

    /// `n` jobs of `queue` appeared in `state` (negative: left it).
    pub fn add(&mut self, queue: &str, state: JobState, n: i64) {
        self.of(queue)[slot(state)] += n;
    }

    /// One job of `queue` went from `from` to `to`.
    pub fn moved(&mut self, queue: &str, from: JobState, to: JobState) {
        if from != to {
            let deltas = self.of(queue);
            deltas[slot(from)] -= 1;
            deltas[slot(to)] += 1;
        }
    }

    /// The net change so far to `queue`'s count of `state`.
    pub fn get(&self, queue: &str, state: JobState) -> i64 {
        self.queues.iter().find(|(q, _)| q == queue).map_or(0, |(_, deltas)| deltas[slot(state)])
    }

    /// Forgets every change (the transaction they belonged to rolled back).
    pub fn clear(&mut self) {
        self.queues.clear();
    }

    /// Writes the net changes into `queue_counts` and forgets them. Runs
    /// inside the batch's transaction, just before `COMMIT`.
    pub fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.queues.is_empty() {
            return Ok(());
        }
        let mut upsert = conn.prepare_cached(
            "INSERT INTO queue_counts (queue, state, n) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
        )?;
        for (queue, deltas) in &self.queues {
            for (state, &n) in JobState::ALL.iter().zip(deltas) {
                if n != 0 {
                    upsert.execute(params![queue, state.as_str(), n])?;
                }
            }
        }
        self.queues.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_all() {
        for (i, state) in JobState::ALL.into_iter().enumerate() {
            assert_eq!(slot(state), i);
        }
    }

    #[test]
    fn moves_net_out() {
        let mut d = CountDeltas::default();
        d.add("q", JobState::Waiting, 2);
        d.moved("q", JobState::Waiting, JobState::Active);
        d.moved("q", JobState::Active, JobState::Completed);
        d.moved("r", JobState::Failed, JobState::Failed);
        assert_eq!(d.queues, vec![("q".to_owned(), [1, 0, 0, 0, 1, 0, 0])]);
    }
}
