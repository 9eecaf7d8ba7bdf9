-- Drover's SQLite schema, version 5: an index for uniqueness keys.
--
-- An enqueue with a `unique_key` looks for a job of the same queue with
-- the same key (unfinished, or created within a window). Partial: jobs
-- without a key (most) cost it nothing on insert. `created_at` last so the
-- newest match, and the window's bound, are read in index order.

CREATE INDEX jobs_unique ON jobs (queue, unique_key, created_at) WHERE unique_key IS NOT NULL;
