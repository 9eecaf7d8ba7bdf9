//! Inserting and reading jobs: `job_insert_many`, `job_get`, and the
//! insert body every method that creates jobs shares ([`insert_in`]).

use crate::PgStore;
use crate::error::SqlResultExt;
use crate::fx::Effects;
use crate::rows::{self, JOB_COLS};
use drover_core::{Attempt, ChildFailure, EventKind, Job, JobId, JobSpec, JobState, Timestamp};
use drover_store::{Inserted, PendingEvent, StoreError, StoreResult};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;
use std::collections::{BTreeMap, HashSet};

/// `Store::job_insert_many`: inserts jobs in one transaction, all or
/// nothing. Validation by [`JobSpec::validate`] and [`check_storable`]
/// (the first bad spec fails the call, nothing is inserted); a spec whose
/// id exists (in the store, or earlier in the same call) returns the
/// existing job, unchanged, with `duplicate: true`; so does a spec with a
/// `unique_key` when its queue holds a job with that key that is
/// unfinished, or (with `unique_for_ms`) was created less than that long
/// ago: the newest such job is returned, checked before the id. A job is
/// `delayed` when its first `run_at` is after now, else `waiting`;
/// `expires_at` is stored as given. A `parent_id` must name an unfinished
/// job, which then counts the child in (ADR 0007); a `batch_id` naming a
/// batch adds the job to it. Results are in input order.
///
/// Across servers: the ids are made unique by `ON CONFLICT (id) DO
/// NOTHING` (a second server inserting the same id waits for the first
/// to commit, then finds its job); unique keys are serialised by a
/// transaction-scoped advisory lock per `(queue, key)`, all of a call's
/// taken up front in sorted order, so two calls cannot deadlock.
pub(crate) async fn job_insert_many(store: &PgStore, specs: Vec<JobSpec>) -> StoreResult<Vec<Inserted>> {
    // Refused before a connection is taken.
    validate(&specs)?;
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut w = store.begin().await?;
    let result = insert_rows(&mut w.tx, &mut w.fx, specs.into_iter().map(|spec| (spec, 0)).collect()).await;
    store.commit(w, result).await
}

/// The checks every insert makes before it writes: [`JobSpec::validate`]
/// and [`check_storable`], the first fault failing the call.
pub(crate) fn validate(specs: &[JobSpec]) -> StoreResult<()> {
    for spec in specs {
        spec.validate()?;
        check_storable(spec, "")?;
    }
    Ok(())
}

/// Refuses (Invalid, naming the field after `prefix`) a spec holding a
/// NUL character (`\u0000`) where PostgreSQL would reject it: `jsonb`
/// and `text` cannot store it, while SQLite can. Refusing it here names
/// the field instead of failing the statement with an encoding error.
pub(crate) fn check_storable(spec: &JobSpec, prefix: &str) -> StoreResult<()> {
    let refuse = |field: &str| {
        Err(StoreError::invalid(format!("{prefix}{field}"), "must not contain the NUL character (\\u0000)"))
    };
    if json_has_nul(&spec.payload) {
        return refuse("payload");
    }
    if spec.tags.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)) {
        return refuse("tags");
    }
    for (field, text) in [
        ("id", spec.id.as_ref().map(JobId::as_str)),
        ("parent_id", spec.parent_id.as_ref().map(JobId::as_str)),
        ("unique_key", spec.unique_key.as_deref()),
        ("rate_limit_key", spec.rate_limit_key.as_deref()),
        ("batch_id", spec.batch_id.as_deref()),
    ] {
        if text.is_some_and(|t| t.contains('\0')) {
            return refuse(field);
        }
    }
    Ok(())
}

/// Whether any string of `value`, key or value, holds a NUL character.
pub(crate) fn json_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// `Store::job_get`: one job with its attempt history, or `None`.
pub(crate) async fn job_get(store: &PgStore, id: &JobId) -> StoreResult<Option<Job>> {
    let mut conn = store.pool().acquire().await.db()?;
    get_in(&mut conn, id).await
}

/// The insert's transaction body, shared by every method that inserts jobs
/// (bulk inserts, schedules, transactional enqueue): validates the specs
/// ([`validate`]), then inserts them as jobs without children.
pub(crate) async fn insert_in(
    conn: &mut PgConnection,
    fx: &mut Effects,
    specs: Vec<JobSpec>,
) -> StoreResult<Vec<Inserted>> {
    validate(&specs)?;
    insert_rows(conn, fx, specs.into_iter().map(|spec| (spec, 0)).collect()).await
}

/// Inserts validated specs, each with the number of children inserted
/// after it in the same call (a flow's, see [`drover_core::FlowSpec::flatten`]):
/// a job with children starts `waiting-children` and is counted in by
/// each of them.
pub(crate) async fn insert_rows(
    conn: &mut PgConnection,
    fx: &mut Effects,
    rows: Vec<(JobSpec, usize)>,
) -> StoreResult<Vec<Inserted>> {
    let now = fx.now;
    let mut scopes: Vec<String> =
        rows.iter().filter_map(|(s, _)| s.unique_key.as_ref().map(|key| unique_scope(&s.queue, key))).collect();
    scopes.sort_unstable();
    scopes.dedup();
    for scope in &scopes {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(scope)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    // Errors about a row's parent or batch name the row (`jobs[3].parent_id`)
    // as SQLite does; a flow's only outside parent is its root's, named plainly.
    let name_rows = rows.len() > 1 && rows.iter().all(|(_, children)| *children == 0);

    let mut out = Vec::with_capacity(rows.len());
    // Parents of this call, by index in `out`, to release if no child came.
    let mut parents = Vec::new();
    // Batches named by new jobs: (index of the first, how many).
    let mut batch_rows: BTreeMap<String, (usize, i32)> = BTreeMap::new();
    // Plain jobs (no key to look up, no parent to count in, no children)
    // go in with one statement for the whole call.
    let plain = rows.iter().all(|(s, children)| *children == 0 && s.unique_key.is_none() && s.parent_id.is_none());
    let mut jobs = Vec::with_capacity(rows.len());
    for (spec, children) in rows {
        // Row by row, so a key repeated within one call finds the row
        // this call inserted moments before.
        if let Some(existing) = unique_match(conn, &spec, now).await? {
            jobs.push(Err(existing));
            continue;
        }
        let run_at = spec.first_run_at(now);
        let state = if children > 0 {
            JobState::WaitingChildren
        } else if run_at > now {
            JobState::Delayed
        } else {
            JobState::Waiting
        };
        let id = spec.id.clone().unwrap_or_else(JobId::generate);
        let job = Job::from_spec(spec, id, state, now, run_at);
        if !plain {
            let inserted = insert_one(conn, &job).await?;
            jobs.push(if inserted { Ok(job) } else { Err(existing_job(conn, &job.id).await?) });
            continue;
        }
        jobs.push(Ok(job));
    }
    if plain {
        let new = insert_plain(conn, &jobs).await?;
        let mut seen = HashSet::with_capacity(jobs.len());
        for slot in &mut jobs {
            if let Ok(job) = slot
                && (!new.contains(job.id.as_str()) || !seen.insert(job.id.clone()))
            {
                // Stored before, or earlier in this very call.
                *slot = Err(existing_job(conn, &job.id).await?);
            }
        }
    }
    for (i, slot) in jobs.into_iter().enumerate() {
        let job = match slot {
            Ok(job) => job,
            Err(existing) => {
                out.push(Inserted { job: existing, duplicate: true });
                continue;
            }
        };
        let state = job.state;
        // Flows and batches: the parent learns of its child, the batch of
        // its job.
        let name_row = |e: StoreError| match e {
            StoreError::Invalid { field, message } if name_rows => {
                StoreError::Invalid { field: format!("jobs[{i}].{field}"), message }
            }
            other => other,
        };
        if let Some(parent) = &job.parent_id {
            crate::flow::attach_child(conn, fx, parent.as_str()).await.map_err(name_row)?;
        }
        if let Some(batch) = &job.batch_id {
            // Counted in per batch after the loop: one update per batch, not
            // per job (a batch insert brings up to 10,000 jobs).
            batch_rows.entry(batch.clone()).or_insert((i, 0)).1 += 1;
        }
        // A job created `waiting-children` announces itself when released.
        if state != JobState::WaitingChildren {
            let kind = if state == JobState::Delayed { EventKind::Delayed } else { EventKind::Waiting };
            fx.event(PendingEvent::job(kind, &job.id, &job.queue, job.batch_id.as_deref(), now, Value::Null));
        } else {
            parents.push(out.len());
        }
        fx.counts.add(&job.queue, state, 1);
        // Delayed jobs count too: a fetcher sleeping until the next due time
        // must learn of an earlier one.
        fx.ready = true;
        out.push(Inserted { job, duplicate: false });
    }
    // The batch named first is checked first, as if counted row by row.
    let mut batch_rows: Vec<(String, (usize, i32))> = batch_rows.into_iter().collect();
    batch_rows.sort_by_key(|(_, (first, _))| *first);
    for (batch, (first, n)) in batch_rows {
        crate::flow::batch_add(conn, &batch, n).await.map_err(|e| match e {
            StoreError::Invalid { field, message } if name_rows => {
                StoreError::Invalid { field: format!("jobs[{first}].{field}"), message }
            }
            other => other,
        })?;
    }
    release_childless(conn, fx, &mut out, &parents).await?;
    Ok(out)
}

/// The columns every insert writes, in the order of [`insert_one`]'s
/// placeholders and [`insert_plain`]'s arrays (`attempts_budget` starts
/// as `max_attempts`).
const INSERT_COLS: &str = "id, queue, name, payload, state, priority, max_attempts, attempts_budget, backoff, \
     timeout_ms, max_stalls, unique_key, rate_limit_key, tags, created_at, run_at, expires_at, on_failure, \
     parent_id, batch_id";

/// Inserts one job; false when its id exists (nothing written).
async fn insert_one(conn: &mut PgConnection, job: &Job) -> StoreResult<bool> {
    let sql = format!(
        "INSERT INTO jobs ({INSERT_COLS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
         ON CONFLICT (id) DO NOTHING RETURNING seq"
    );
    let seq: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(job.id.as_str())
        .bind(&job.queue)
        .bind(&job.name)
        .bind(Json(&job.payload))
        .bind(job.state.as_str())
        .bind(job.priority)
        .bind(int("max_attempts", job.max_attempts)?)
        .bind(Json(&job.backoff))
        .bind(job.timeout_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
        .bind(int("max_stalls", job.max_stalls)?)
        .bind(&job.unique_key)
        .bind(&job.rate_limit_key)
        .bind((!job.tags.is_empty()).then_some(Json(&job.tags)))
        .bind(job.created_at.0)
        .bind(job.run_at.0)
        .bind(job.expires_at.map(|t| t.0))
        .bind(on_failure_column(job))
        .bind(job.parent_id.as_ref().map(JobId::as_str))
        .bind(&job.batch_id)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
    Ok(seq.is_some())
}

/// Inserts the new jobs among `jobs` (the `Ok`s; none with a unique key
/// or a parent) in one statement, in order; returns the ids it stored (an
/// id that exists already is skipped).
async fn insert_plain(conn: &mut PgConnection, jobs: &[Result<Job, Job>]) -> StoreResult<HashSet<String>> {
    let new: Vec<&Job> = jobs.iter().filter_map(|slot| slot.as_ref().ok()).collect();
    if new.is_empty() {
        return Ok(HashSet::new());
    }
    let mut max_attempts = Vec::with_capacity(new.len());
    let mut max_stalls = Vec::with_capacity(new.len());
    for job in &new {
        max_attempts.push(int("max_attempts", job.max_attempts)?);
        max_stalls.push(int("max_stalls", job.max_stalls)?);
    }
    let text = |f: &dyn Fn(&Job) -> String| new.iter().map(|job| f(job)).collect::<Vec<String>>();
    let json =
        |value: &dyn Fn(&Job) -> Option<String>| new.iter().map(|job| value(job)).collect::<Vec<Option<String>>>();
    let sql = format!(
        "INSERT INTO jobs ({INSERT_COLS}) \
         SELECT id, queue, name, payload::jsonb, state, priority, max_attempts, max_attempts, backoff::jsonb, \
                timeout_ms, max_stalls, NULL, rate_limit_key, tags::jsonb, $14, run_at, expires_at, on_failure, \
                NULL, batch_id \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], \
                     $8::text[], $9::bigint[], $10::int[], $11::text[], $12::text[], $13::bigint[], \
                     $15::bigint[], $16::text[], $17::text[]) WITH ORDINALITY \
              AS r(id, queue, name, payload, state, priority, max_attempts, backoff, timeout_ms, max_stalls, \
                   rate_limit_key, tags, run_at, expires_at, on_failure, batch_id, ord) \
         ORDER BY ord ON CONFLICT (id) DO NOTHING RETURNING id"
    );
    let stored: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(text(&|j| j.id.to_string()))
        .bind(text(&|j| j.queue.clone()))
        .bind(text(&|j| j.name.clone()))
        .bind(text(&|j| j.payload.to_string()))
        .bind(text(&|j| j.state.as_str().to_owned()))
        .bind(new.iter().map(|j| j.priority).collect::<Vec<i32>>())
        .bind(max_attempts)
        .bind(text(&|j| serde_json::to_string(&j.backoff).unwrap_or_default()))
        .bind(new.iter().map(|j| j.timeout_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))).collect::<Vec<_>>())
        .bind(max_stalls)
        .bind(new.iter().map(|j| j.rate_limit_key.clone()).collect::<Vec<Option<String>>>())
        .bind(json(&|j| (!j.tags.is_empty()).then(|| serde_json::to_string(&j.tags).unwrap_or_default())))
        .bind(new.iter().map(|j| j.run_at.0).collect::<Vec<i64>>())
        .bind(new[0].created_at.0)
        .bind(new.iter().map(|j| j.expires_at.map(|t| t.0)).collect::<Vec<Option<i64>>>())
        .bind(new.iter().map(|j| on_failure_column(j)).collect::<Vec<Option<&str>>>())
        .bind(new.iter().map(|j| j.batch_id.clone()).collect::<Vec<Option<String>>>())
        .fetch_all(&mut *conn)
        .await
        .db()?;
    Ok(stored.into_iter().collect())
}

/// The `on_failure` column: NULL for the default policy.
fn on_failure_column(job: &Job) -> Option<&'static str> {
    (job.on_failure != ChildFailure::FailParent).then(|| job.on_failure.as_str())
}

/// The stored job with `id`, for an insert that found it there.
async fn existing_job(conn: &mut PgConnection, id: &JobId) -> StoreResult<Job> {
    get_in(conn, id).await?.ok_or_else(|| StoreError::Backend(format!("job {id} conflicted but cannot be read")))
}

/// A parent of a flow is inserted `waiting-children` and counted in by
/// each child inserted after it; a child that is a duplicate stays where
/// it was and is not counted. A new parent whose children were all
/// duplicates would wait for nothing, forever: it starts `waiting` (or
/// `delayed`) instead, as if it had none.
async fn release_childless(
    conn: &mut PgConnection,
    fx: &mut Effects,
    out: &mut [Inserted],
    parents: &[usize],
) -> StoreResult<()> {
    let now = fx.now;
    for &i in parents {
        let job = &mut out[i].job;
        let released = if job.run_at > now { JobState::Delayed } else { JobState::Waiting };
        let changed = sqlx::query(
            "UPDATE jobs SET state = $1 WHERE id = $2 AND state = 'waiting-children' AND pending_children = 0",
        )
        .bind(released.as_str())
        .bind(job.id.as_str())
        .execute(&mut *conn)
        .await
        .db()?
        .rows_affected();
        if changed == 0 {
            continue;
        }
        job.state = released;
        fx.counts.moved(&job.queue, JobState::WaitingChildren, released);
        let kind = if released == JobState::Delayed { EventKind::Delayed } else { EventKind::Waiting };
        fx.event(PendingEvent::job(kind, &job.id, &job.queue, job.batch_id.as_deref(), now, Value::Null));
    }
    Ok(())
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
