-- Drover's SQLite schema, version 4: job TTL.
--
-- `expires_at` (ms since the epoch, NULL = never): a job that has not
-- started by then is failed with error code `expired` instead of running.
-- The index holds only jobs that have a TTL and have not started, so jobs
-- without one (nearly all) cost it nothing, and the check that runs before
-- every claim reads an empty or tiny index.

ALTER TABLE jobs ADD COLUMN expires_at INTEGER;

CREATE INDEX jobs_expiring ON jobs (expires_at)
    WHERE expires_at IS NOT NULL AND started_at IS NULL AND state IN ('waiting', 'delayed');
