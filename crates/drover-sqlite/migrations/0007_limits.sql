-- Drover's SQLite schema, version 7: concurrency caps and rate limits.
--
-- `rate_limit_rules` holds the limits set per rate-limit key, or per key
-- prefix (`key` ending in `*`): a JSON `KeyLimit`.
--
-- `throttles` holds the flow-control state of one queue (`scope` = 'q:' ||
-- name) or one key ('k:' || key): the starts of its current rate-limit
-- window (JSON `StartWindow`, NULL = none), a handler's hold
-- (`held_until`, "rate limited, retry after T"), and `next_change_at`, when
-- the window next changes (its oldest start leaves it), so that a fetcher
-- with nothing to claim knows when to look again (the earliest future
-- `held_until` or `next_change_at`) without reading the windows. Rows are written by claims of rate-limited scopes and by
-- holds only: queues and keys without limits never get one.
--
-- `jobs_active_key` counts the active jobs of a key for its concurrency
-- cap. Partial: jobs without a key, and jobs not active, cost it nothing.

CREATE TABLE rate_limit_rules (
    key    TEXT PRIMARY KEY,
    config TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE throttles (
    scope          TEXT PRIMARY KEY,
    starts         TEXT,
    held_until     INTEGER,
    next_change_at INTEGER
) WITHOUT ROWID;

CREATE INDEX jobs_active_key ON jobs (rate_limit_key) WHERE state = 'active' AND rate_limit_key IS NOT NULL;
