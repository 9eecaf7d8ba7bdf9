-- Drover's PostgreSQL schema, version 1 (ADR 0009).
--
-- The same tables and columns as the SQLite schema after its migrations
-- 0001-0009, so both stores decide alike; the types and indexes are
-- PostgreSQL's own. Choices that hold for every table:
-- - Times are `bigint` milliseconds since the epoch, like SQLite: the store
--   computes every instant from its injected clock (the conformance suite
--   moves a `ManualClock`), so SQL compares the numbers it is given and
--   never calls `now()`; rows read back into `Timestamp` without conversion.
-- - Drover's own JSON (backoff, errors, queue config, limits, windows, job
--   templates) and the user's (payload, result, progress, tags, log
--   metadata) are `jsonb`: parsed once at insert, so claims can read a
--   queue's cap or a window inside SQL.
-- - Booleans are `boolean`, counters `integer` or `bigint`.
-- - States are text with a CHECK, so a typo in a query fails loudly instead
--   of writing a state no index or count knows.
-- Every table lives in the schema first on the connection's `search_path`
-- (`PgOptions::schema`), and so does sqlx's `_sqlx_migrations`.

-- Jobs keep a `bigserial` `seq`: the enqueue order that breaks ties in
-- claims, the cursor of job lists, and the key attempts and logs hang off
-- (cheaper than the text id). Deleting a job deletes its attempts and logs
-- through their foreign keys (retention relies on it).
CREATE TABLE jobs (
    seq              bigserial PRIMARY KEY,
    -- Checked here because `JobId::from_trusted` skips the checks; bytes,
    -- like `MAX_JOB_ID_LEN`, not characters.
    id               text     NOT NULL UNIQUE CHECK (octet_length(id) BETWEEN 1 AND 255),
    queue            text     NOT NULL,
    name             text     NOT NULL,
    payload          jsonb    NOT NULL,
    state            text     NOT NULL CHECK (state IN
                         ('waiting', 'delayed', 'active', 'waiting-children', 'completed', 'failed', 'cancelled')),
    priority         integer  NOT NULL,
    attempts_made    integer  NOT NULL DEFAULT 0,
    max_attempts     integer  NOT NULL,
    attempts_budget  integer  NOT NULL,          -- the spec's attempts, for manual retries
    attempt_seq      integer  NOT NULL DEFAULT 0, -- number of the last attempt started, never handed back
    backoff          jsonb    NOT NULL,
    timeout_ms       bigint,
    stalls           integer  NOT NULL DEFAULT 0,
    max_stalls       integer  NOT NULL,
    progress         jsonb,                      -- NULL = 0%
    result           jsonb,
    error            jsonb,                      -- JobError
    unique_key       text,
    rate_limit_key   text,
    parent_id        text,
    batch_id         text,
    tags             jsonb,                      -- object, NULL = {}
    created_at       bigint   NOT NULL,
    run_at           bigint   NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    worker_id        text,
    lease_token      bigint,
    lease_expires_at bigint,
    cancel_requested boolean  NOT NULL DEFAULT false,
    -- Job TTL: a job not started by then fails as `expired` (SQLite 0004).
    expires_at       bigint,
    -- Flows (ADR 0007, SQLite 0009): a parent counts its unfinished
    -- children in its own row, so a child ending updates one row found by
    -- the parent's id instead of counting siblings; `on_failure` is the
    -- child's policy (NULL = fail_parent, 'ignore'); `failed_child` records
    -- a child failed under fail_parent while the parent ran; `fanned_out`
    -- marks a parent that enqueued children while running.
    pending_children integer  NOT NULL DEFAULT 0,
    on_failure       text,
    failed_child     text,
    fanned_out       boolean  NOT NULL DEFAULT false
);

-- Jobs change state many times; leave room on each page so an update can
-- stay on its page (a HOT update) when it touches no indexed column.
ALTER TABLE jobs SET (fillfactor = 80);

-- The ready set, in claim order (priority, run_at, seq). Partial, so jobs
-- in any other state cost it nothing; a claim reads its head with
-- `FOR UPDATE SKIP LOCKED`, so parallel claimers take different rows.
CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, seq) WHERE state = 'waiting';

-- Delayed jobs by due time: promotion and `job_next_due` read its head.
CREATE INDEX jobs_delayed ON jobs (run_at) WHERE state = 'delayed';

-- Active jobs by lease expiry: the stall rescue reads the expired ones.
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'active';

-- Retention: per (queue, state) the jobs finished before a cutoff, and
-- those beyond the newest N, both in `finished_at` order. Partial: the
-- ready set and active jobs never enter it.
CREATE INDEX jobs_finished ON jobs (queue, state, finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');

-- Job TTL: only jobs that have a TTL and have not started, so the check
-- run before every claim reads an empty or tiny index.
CREATE INDEX jobs_expiring ON jobs (expires_at)
    WHERE expires_at IS NOT NULL AND started_at IS NULL AND state IN ('waiting', 'delayed');

-- Uniqueness keys: the newest job of a queue with a key, and a window's
-- bound, in index order. Partial: jobs without a key (most) cost nothing.
CREATE INDEX jobs_unique ON jobs (queue, unique_key, created_at) WHERE unique_key IS NOT NULL;

-- A key's concurrency cap counts its active jobs.
CREATE INDEX jobs_active_key ON jobs (rate_limit_key) WHERE state = 'active' AND rate_limit_key IS NOT NULL;

-- A queue's concurrency cap counts its active jobs (SQLite reads its
-- `queue_counts` row; here parallel claimers lock the queue's row and
-- count, see ADR 0009).
CREATE INDEX jobs_active_queue ON jobs (queue) WHERE state = 'active';

-- Children of a parent, in enqueue order (`job_children`, flow hooks).
CREATE INDEX jobs_parent ON jobs (parent_id, seq) WHERE parent_id IS NOT NULL;

-- Jobs of a batch (`batch_get` counts its unfinished ones).
CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;

-- One row per ended attempt (and stall), the job's history.
CREATE TABLE job_attempts (
    job_seq     bigint  NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    started_at  bigint  NOT NULL,
    finished_at bigint  NOT NULL,
    outcome     text    NOT NULL,
    error       jsonb,                           -- JobError
    worker_id   text,
    PRIMARY KEY (job_seq, attempt)
);

-- A job's log lines; `n` is the 1-based line number within the job.
CREATE TABLE job_logs (
    job_seq  bigint  NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    n        bigint  NOT NULL,
    at       bigint  NOT NULL,
    level    text    NOT NULL,
    message  text    NOT NULL,
    metadata jsonb,
    PRIMARY KEY (job_seq, n)
);

-- Queue settings. A row also serves as the lock that serialises the
-- claims of a capped or rate-limited queue across servers (ADR 0009).
CREATE TABLE queues (
    name   text    PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    config jsonb                                  -- QueueConfig, NULL = default
);

-- Per-queue counts by state, kept in the transaction of every state change
-- (as SQLite 0002), so `queue_list` does not count the jobs table. Updates
-- add deltas (`n = n + $d`); a hot queue's rows are short row locks held
-- to commit, which the store takes in a fixed order (queue, state) so two
-- transactions cannot deadlock on them.
CREATE TABLE queue_counts (
    queue text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, state)
);

-- Limits set per rate-limit key, or per key prefix (`key` ending in `*`):
-- a `KeyLimit`.
CREATE TABLE rate_limit_rules (
    key    text  PRIMARY KEY,
    config jsonb NOT NULL
);

-- Flow-control state of one queue (`scope` = 'q:' || name) or one key
-- ('k:' || key): the starts of its current rate-limit window
-- (`StartWindow`, NULL = none), a handler's hold (`held_until`), and when
-- the window next changes (`next_change_at`), so a fetcher with nothing to
-- claim knows when to look again without reading windows. Written only by
-- claims of rate-limited scopes and by holds; claims lock the row
-- (`FOR UPDATE`) so a window is never over-spent by two servers.
CREATE TABLE throttles (
    scope          text   PRIMARY KEY,
    starts         jsonb,
    held_until     bigint,
    next_change_at bigint
);

-- Schedules (ADR 0006): cadence (`cron` + `timezone`, or `every_ms`), the
-- job template (`JobSpec`) and the next tick. Firing locks the due rows
-- with `FOR UPDATE SKIP LOCKED`; the tick's job id makes a second firing of
-- the same tick a duplicate.
CREATE TABLE schedules (
    id           text    PRIMARY KEY CHECK (octet_length(id) BETWEEN 1 AND 128),
    cron         text,
    every_ms     bigint  CHECK (every_ms IS NULL OR every_ms > 0),
    timezone     text,
    job          jsonb   NOT NULL,
    next_run_at  bigint  NOT NULL,
    last_run_at  bigint,
    last_job_id  text,
    paused       boolean NOT NULL DEFAULT false,
    created_at   bigint  NOT NULL,
    updated_at   bigint  NOT NULL,
    CHECK ((cron IS NULL) <> (every_ms IS NULL))
);

-- The scheduler sleeps until the earliest tick and fires the due ones,
-- both in index order; a paused schedule is neither due nor worth waking for.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;

-- Batches keep their finished counters apart from the jobs, so retention
-- does not lower them. `completed_at` is set once, by the finish that made
-- every job finished, and guards the completion job (inserted in that
-- transaction, never again). Finishes lock the batch's row to count.
CREATE TABLE batches (
    id             text    PRIMARY KEY,
    total          integer NOT NULL DEFAULT 0,
    completed      integer NOT NULL DEFAULT 0,
    failed         integer NOT NULL DEFAULT 0,
    cancelled      integer NOT NULL DEFAULT 0,
    on_complete    jsonb,                        -- JobSpec, NULL = none
    on_complete_id text,                         -- the job it became
    created_at     bigint  NOT NULL,
    completed_at   bigint
);
