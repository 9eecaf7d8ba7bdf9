-- Drover's SQLite schema, version 6: the partial indexes of 0003 and 0004
-- again, with their state test written as `=` terms joined by OR instead of
-- `state IN (...)`.
--
-- SQLite evaluates a partial index's WHERE on every insert and on every
-- update of a column it names, and an `IN (list)` there builds a small
-- temporary table each time: the two indexes made enqueues about a third
-- slower and finishes nearly twice as costly (`drover bench`, issue 4).
-- The OR form is the same set of rows and costs a few comparisons.
-- Queries must repeat the OR term exactly for SQLite to use the index.

DROP INDEX jobs_finished;
CREATE INDEX jobs_finished ON jobs (queue, state, finished_at)
    WHERE state = 'completed' OR state = 'failed' OR state = 'cancelled';

DROP INDEX jobs_expiring;
CREATE INDEX jobs_expiring ON jobs (expires_at)
    WHERE expires_at IS NOT NULL AND started_at IS NULL AND (state = 'waiting' OR state = 'delayed');
