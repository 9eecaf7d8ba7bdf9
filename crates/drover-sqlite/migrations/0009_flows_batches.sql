-- Drover's SQLite schema: flows and batches (ADR 0007).
--
-- A parent keeps the number of its unfinished children in its own row, so
-- that a child reaching a final state updates one row found by the parent's
-- id (`jobs.id` is unique) instead of counting siblings. `on_failure` is the
-- child's policy (NULL = fail_parent, 'ignore'); `failed_child` records a
-- child that failed under `fail_parent` while the parent's handler was
-- running, so that the parent fails when the handler returns; `fanned_out`
-- marks a parent that enqueued children while running, so that it runs again
-- after them even when they all finished before its handler returned.
--
-- Batches keep their finished counters in a table of their own: retention
-- may remove a batch's finished jobs, and its counts must not drop with
-- them. `completed_at` is set once, by the finish that made every job of
-- the batch finished, and guards the completion job: it is inserted in that
-- same transaction and never again.

ALTER TABLE jobs ADD COLUMN pending_children INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN on_failure TEXT;
ALTER TABLE jobs ADD COLUMN failed_child TEXT;
ALTER TABLE jobs ADD COLUMN fanned_out INTEGER NOT NULL DEFAULT 0;

CREATE TABLE batches (
    id             TEXT    PRIMARY KEY,
    total          INTEGER NOT NULL DEFAULT 0,
    completed      INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    cancelled      INTEGER NOT NULL DEFAULT 0,
    on_complete    TEXT,                        -- JSON JobSpec, NULL = none
    on_complete_id TEXT,                        -- the job it became
    created_at     INTEGER NOT NULL,
    completed_at   INTEGER
) WITHOUT ROWID;
