-- Drover's SQLite schema, version 2: per-queue counts by state in a table
-- of their own instead of the `jobs (queue, state)` index.
--
-- The index cost two B-tree operations in the big jobs index on every state
-- change, only so that `queue_list` / `queue_get` could count. The writer
-- now adds up each batch's state changes in memory and applies them here,
-- one row per (queue, state) touched, in the same transaction as the
-- changes themselves, so the counts are exactly those of a
-- `GROUP BY queue, state` over `jobs` at every commit.

CREATE TABLE queue_counts (
    queue TEXT    NOT NULL,
    state TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;

INSERT INTO queue_counts (queue, state, n) SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;

DROP INDEX jobs_queue_state;
