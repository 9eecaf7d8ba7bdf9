-- Drover's SQLite schema, version 1.
--
-- Jobs keep an integer `seq` as their row id: it is the enqueue order used to
-- break ties in claims, the cursor of job lists, and the key that attempts
-- and logs hang off (cheaper than the text id). Deleting a job must delete
-- its `job_attempts` and `job_logs` rows too (retention does both).

CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY,
    -- Checked again here because `JobId::from_trusted` skips the checks.
    id               TEXT    NOT NULL UNIQUE CHECK (length(id) BETWEEN 1 AND 255),
    queue            TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,          -- JSON
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    attempts_made    INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    attempts_budget  INTEGER NOT NULL,          -- the spec's attempts, for manual retries
    attempt_seq      INTEGER NOT NULL DEFAULT 0, -- number of the last attempt started, never handed back
    backoff          TEXT    NOT NULL,          -- JSON
    timeout_ms       INTEGER,
    stalls           INTEGER NOT NULL DEFAULT 0,
    max_stalls       INTEGER NOT NULL,
    progress         TEXT,                      -- JSON, NULL = 0%
    result           TEXT,                      -- JSON
    error            TEXT,                      -- JSON JobError
    unique_key       TEXT,
    rate_limit_key   TEXT,
    parent_id        TEXT,
    batch_id         TEXT,
    tags             TEXT,                      -- JSON object, NULL = {}
    created_at       INTEGER NOT NULL,          -- ms since the epoch, like every time below
    run_at           INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    worker_id        TEXT,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

-- The ready set, in claim order; partial so finished jobs cost it nothing.
CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, seq) WHERE state = 'waiting';
CREATE INDEX jobs_delayed ON jobs (run_at) WHERE state = 'delayed';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'active';
CREATE INDEX jobs_queue_state ON jobs (queue, state);
CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE job_attempts (
    job_seq     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT,                           -- JSON JobError
    worker_id   TEXT,
    PRIMARY KEY (job_seq, attempt)
) WITHOUT ROWID;

CREATE TABLE job_logs (
    job_seq  INTEGER NOT NULL,
    n        INTEGER NOT NULL,                  -- 1-based line number within the job
    at       INTEGER NOT NULL,
    level    TEXT    NOT NULL,
    message  TEXT    NOT NULL,
    metadata TEXT,                              -- JSON
    PRIMARY KEY (job_seq, n)
) WITHOUT ROWID;

CREATE TABLE queues (
    name   TEXT    PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    config TEXT                                 -- JSON QueueConfig, NULL = default
) WITHOUT ROWID;
