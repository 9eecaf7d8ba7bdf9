-- Drover's SQLite schema: schedules (ADR 0006).
--
-- One row per schedule: its cadence (`cron` + `timezone`, or `every_ms`),
-- the job template as JSON (a `JobSpec`), and the next tick. The scheduler
-- reads the earliest `next_run_at` to know how long to sleep, and fires the
-- rows at or before now, so both read the index in order. A paused
-- schedule leaves the index: it is neither due nor worth waking for.

CREATE TABLE schedules (
    id           TEXT    PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    cron         TEXT,
    every_ms     INTEGER CHECK (every_ms IS NULL OR every_ms > 0),
    timezone     TEXT,
    job          TEXT    NOT NULL,          -- JSON JobSpec
    next_run_at  INTEGER NOT NULL,
    last_run_at  INTEGER,
    last_job_id  TEXT,
    paused       INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    CHECK ((cron IS NULL) <> (every_ms IS NULL))
);

CREATE INDEX schedules_due ON schedules (next_run_at) WHERE paused = 0;
