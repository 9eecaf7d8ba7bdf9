-- Drover's SQLite schema, version 3: an index for the retention sweep.
--
-- Partial, over finished jobs only: the ready set and active jobs, which
-- every claim and heartbeat touch, never enter it. A finish adds one entry
-- (the row moves into a finished state), a manual retry removes it. The
-- sweep finds, per (queue, state), the jobs finished before a cutoff and
-- those beyond the newest N, both in `finished_at` order, without a scan.
-- Queries must repeat the `state IN (...)` term for SQLite to use it.

CREATE INDEX jobs_finished ON jobs (queue, state, finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
