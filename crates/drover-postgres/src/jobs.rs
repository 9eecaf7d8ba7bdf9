//! Inserting and reading jobs: `job_insert_many` and `job_get`, as
//! inherent methods of [`PgStore`] until the `Store` trait is implemented
//! whole (ADR 0009).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::rows::{self, JOB_COLS};
use drover_core::{Attempt, ChildFailure, EventKind, Job, JobId, JobSpec, JobState, Timestamp};
use drover_store::{Inserted, PendingEvent, StoreError, StoreResult};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;

/// Inserts jobs in one transaction: all or nothing. Becomes
/// `Store::job_insert_many` and follows its contract: validation by
/// [`JobSpec::validate`] (the first bad spec fails the call, nothing is
/// inserted); a spec whose id exists (in the store, or earlier in the
/// same call) returns the existing job, unchanged, with `duplicate:
/// true`; so does a spec with a `unique_key` when its queue holds a job
/// with that key that is unfinished, or (with `unique_for_ms`) was
/// created less than that long ago: the newest such job is returned,
/// checked before the id. A job is `delayed` when its first `run_at` is
/// after now, else `waiting`; `expires_at` is stored as given. Results
/// are in input order. `queue_counts` change in the same transaction.
///
/// Across servers: the ids are made unique by `ON CONFLICT (id) DO
/// NOTHING` (a second server inserting the same id waits for the first
/// to commit, then finds its job); unique keys are serialised by a
/// transaction-scoped advisory lock per `(queue, key)`, all of a call's
/// taken up front in sorted order, so two calls cannot deadlock.
///
/// Not yet (refused with [`StoreError::Invalid`], "not supported by
/// the PostgreSQL store yet", before anything is written): specs with a
/// `parent_id` or a `batch_id`, which need the flow and batch hooks
/// that come with the `Store` trait. Events (`job:waiting`,
/// `job:delayed`) come with the events table (ADR 0009); none are
/// published yet.
pub(crate) async fn job_insert_many(store: &PgStore, specs: Vec<JobSpec>) -> StoreResult<Vec<Inserted>> {
    let many = specs.len() > 1;
    for (i, spec) in specs.iter().enumerate() {
        spec.validate()?;
        let field = |name: &str| if many { format!("jobs[{i}].{name}") } else { name.to_owned() };
        if spec.parent_id.is_some() {
            return Err(StoreError::invalid(field("parent_id"), "not supported by the PostgreSQL store yet"));
        }
        if spec.batch_id.is_some() {
            return Err(StoreError::invalid(field("batch_id"), "not supported by the PostgreSQL store yet"));
        }
    }
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut w = store.begin().await?;
    let result = insert_in(&mut w.tx, &mut w.fx, specs).await;
    store.commit(w, result).await
}

/// One job with its attempt history, or `None`. Becomes
/// `Store::job_get`.
pub(crate) async fn job_get(store: &PgStore, id: &JobId) -> StoreResult<Option<Job>> {
    let mut conn = store.pool().acquire().await.db()?;
    get_in(&mut conn, id).await
}

/// The insert's transaction body, shared by every method that inserts jobs
/// (flows, batches, schedules, transactional enqueue).
pub(crate) async fn insert_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    specs: Vec<JobSpec>,
) -> StoreResult<Vec<Inserted>> {
    let now = fx.now;
    let mut scopes: Vec<String> =
        specs.iter().filter_map(|s| s.unique_key.as_ref().map(|key| unique_scope(&s.queue, key))).collect();
    scopes.sort_unstable();
    scopes.dedup();
    for scope in &scopes {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(scope)
            .execute(&mut *conn)
            .await
            .db()?;
    }

    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        // Row by row, so a key repeated within one call finds the row
        // this call inserted moments before.
        if let Some(existing) = unique_match(conn, &spec, now).await? {
            out.push(Inserted { job: existing, duplicate: true });
            continue;
        }
        let run_at = match (spec.run_at, spec.delay_ms) {
            (Some(at), _) => at,
            (None, Some(delay)) => now.plus_ms(i64::try_from(delay).unwrap_or(i64::MAX)),
            (None, None) => now,
        };
        let state = if run_at > now { JobState::Delayed } else { JobState::Waiting };
        let id = spec.id.clone().unwrap_or_else(JobId::generate);
        let job = Job::from_spec(spec, id, state, now, run_at);
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO jobs (id, queue, name, payload, state, priority, max_attempts, attempts_budget, \
                 backoff, timeout_ms, max_stalls, unique_key, rate_limit_key, tags, created_at, run_at, expires_at, \
                 on_failure) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                 ON CONFLICT (id) DO NOTHING RETURNING seq",
        )
        .bind(job.id.as_str())
        .bind(&job.queue)
        .bind(&job.name)
        .bind(Json(&job.payload))
        .bind(state.as_str())
        .bind(job.priority)
        .bind(int("max_attempts", job.max_attempts)?)
        .bind(Json(&job.backoff))
        .bind(job.timeout_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
        .bind(int("max_stalls", job.max_stalls)?)
        .bind(&job.unique_key)
        .bind(&job.rate_limit_key)
        .bind((!job.tags.is_empty()).then_some(Json(&job.tags)))
        .bind(now.0)
        .bind(run_at.0)
        .bind(job.expires_at.map(|t| t.0))
        .bind((job.on_failure != ChildFailure::FailParent).then(|| job.on_failure.as_str()))
        .fetch_optional(&mut *conn)
        .await
        .db()?;
        if seq.is_none() {
            let existing = get_in(conn, &job.id)
                .await?
                .ok_or_else(|| StoreError::Backend(format!("job {} conflicted but cannot be read", job.id)))?;
            out.push(Inserted { job: existing, duplicate: true });
            continue;
        }
        fx.counts.add(&job.queue, state, 1);
        let kind = if state == JobState::Delayed { EventKind::Delayed } else { EventKind::Waiting };
        fx.event(PendingEvent::job(kind, &job.id, &job.queue, job.batch_id.as_deref(), now, Value::Null));
        fx.ready = true;
        out.push(Inserted { job, duplicate: false });
    }
    Ok(out)
}

/// The advisory lock scope of a unique key (ADR 0009: `u:queue:key`).
fn unique_scope(queue: &str, key: &str) -> String {
    format!("u:{queue}:{key}")
}

/// A count for an `integer` column; [`JobSpec::validate`] keeps them small,
/// so this only guards against a future change of its bounds.
fn int(field: &str, value: u32) -> StoreResult<i32> {
    i32::try_from(value).map_err(|_| StoreError::invalid(field, format!("{value} is too large")))
}

/// The job that makes `spec` a duplicate by its `unique_key` (the newest
/// one, with its attempts), if any: on the same queue, with the same key,
/// unfinished, or created within `unique_for_ms` when the spec gives one.
/// Both queries repeat the `unique_key IS NOT NULL` term of `jobs_unique`.
async fn unique_match(conn: &mut PgConnection, spec: &JobSpec, now: Timestamp) -> StoreResult<Option<Job>> {
    let Some(key) = &spec.unique_key else { return Ok(None) };
    let found: Option<String> = match spec.unique_for_ms {
        None => sqlx::query_scalar(
            "SELECT id FROM jobs WHERE unique_key IS NOT NULL AND queue = $1 AND unique_key = $2 \
             AND state NOT IN ('completed', 'failed', 'cancelled') ORDER BY created_at DESC, seq DESC LIMIT 1",
        )
        .bind(&spec.queue)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .db()?,
        Some(window) => sqlx::query_scalar(
            "SELECT id FROM jobs WHERE unique_key IS NOT NULL AND queue = $1 AND unique_key = $2 \
             AND created_at > $3 ORDER BY created_at DESC, seq DESC LIMIT 1",
        )
        .bind(&spec.queue)
        .bind(key)
        .bind(now.0.saturating_sub(i64::try_from(window).unwrap_or(i64::MAX)))
        .fetch_optional(&mut *conn)
        .await
        .db()?,
    };
    match found {
        None => Ok(None),
        Some(id) => get_in(conn, &JobId::from_trusted(id)).await,
    }
}

/// `job_get` on a given connection (or transaction).
pub(crate) async fn get_in(conn: &mut PgConnection, id: &JobId) -> StoreResult<Option<Job>> {
    let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1");
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(&mut *conn).await.db()?
    else {
        return Ok(None);
    };
    let (seq, mut job) = rows::job(&row)?;
    job.attempts = attempts_of(conn, seq, &job).await?;
    Ok(Some(job))
}

/// The attempt history of `job` (row `seq`), oldest first, including the
/// attempt a completion by the first attempt leaves on the job row alone
/// (as in SQLite: a `completed` job with no history row was completed by
/// its first attempt, whose times and worker its row holds).
pub(crate) async fn attempts_of(conn: &mut PgConnection, seq: i64, job: &Job) -> StoreResult<Vec<Attempt>> {
    let found = sqlx::query(
        "SELECT attempt, started_at, finished_at, outcome, error, worker_id FROM job_attempts \
         WHERE job_seq = $1 ORDER BY attempt",
    )
    .bind(seq)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut attempts = found.iter().map(rows::attempt).collect::<StoreResult<Vec<_>>>()?;
    if attempts.is_empty() {
        attempts.extend(job.implied_first_attempt());
    }
    Ok(attempts)
}
