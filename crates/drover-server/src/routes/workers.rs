//! The worker protocol's batch routes: `POST /api/workers/fetch` (a long
//! poll that claims jobs) and `POST /api/workers/ack` (completions and
//! failures in one store call). The per-job reports (heartbeat, progress,
//! logs, events, complete, fail) are in `job_reports`.

use crate::AppState;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::leases::{DEFAULT_LEASE_MS, token_from_wire, token_to_wire};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use drover_core::{FailureReport, JobError, JobId, LeaseToken};
use drover_store::{ClaimedJob, FinishOutcome, Finished, JobClaimParams, JobFinish, StoreError};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/workers/fetch", post(fetch)).route("/api/workers/ack", post(ack))
}

/// Longest long poll.
const MAX_WAIT_MS: u64 = 60_000;
/// Default long poll.
const DEFAULT_WAIT_MS: u64 = 30_000;
/// Shortest and longest lease a fetch may ask for.
const LEASE_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;
/// Most jobs per fetch, and items per ack.
const MAX_BATCH: u32 = 1_000;
/// Longest `retry_after_ms` accepted: a year.
const MAX_RETRY_AFTER_MS: u64 = 365 * 24 * 3_600_000;
/// The safety-net poll of a waiting fetch: the ready signal is the real
/// wake-up, this only bounds the damage of a missed one.
const FALLBACK_POLL: Duration = Duration::from_secs(5);

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FetchBody {
    worker_id: String,
    queues: Vec<String>,
    #[serde(default = "one")]
    max: u32,
    #[serde(default)]
    wait_ms: Option<u64>,
    #[serde(default)]
    lease_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

/// One claimed job on the wire.
#[derive(Serialize)]
struct FetchedJob {
    id: String,
    queue: String,
    name: String,
    payload: Value,
    attempt: u32,
    lease_token: String,
    lease_expires_at: String,
    timeout_ms: Option<u64>,
}

impl From<ClaimedJob> for FetchedJob {
    fn from(c: ClaimedJob) -> Self {
        Self {
            id: c.job.id.to_string(),
            queue: c.job.queue,
            name: c.job.name,
            payload: c.job.payload,
            attempt: c.attempt,
            lease_token: token_to_wire(c.lease_token),
            lease_expires_at: rfc3339(c.lease_expires_at),
            timeout_ms: c.job.timeout_ms,
        }
    }
}

impl FetchBody {
    fn validate(self) -> ApiResult<(JobClaimParams, Duration)> {
        if self.worker_id.is_empty() || self.worker_id.len() > 255 || self.worker_id.chars().any(char::is_control) {
            return Err(ApiError::invalid_field("worker_id", "must be 1 to 255 bytes without control characters"));
        }
        if self.queues.is_empty() || self.queues.len() > 100 {
            return Err(ApiError::invalid_field("queues", "must name 1 to 100 queues"));
        }
        for (i, queue) in self.queues.iter().enumerate() {
            drover_core::spec::validate_queue_name(queue)
                .map_err(|e| ApiError::invalid_field(format!("queues[{i}]"), e.message))?;
        }
        if !(1..=MAX_BATCH).contains(&self.max) {
            return Err(ApiError::invalid_field("max", format!("must be between 1 and {MAX_BATCH}")));
        }
        let wait_ms = self.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
        if wait_ms > MAX_WAIT_MS {
            return Err(ApiError::invalid_field("wait_ms", format!("must be at most {MAX_WAIT_MS}")));
        }
        let lease_ms = self.lease_ms.unwrap_or(DEFAULT_LEASE_MS);
        if !LEASE_RANGE_MS.contains(&lease_ms) {
            return Err(ApiError::invalid_field(
                "lease_ms",
                format!("must be between {} and {}", LEASE_RANGE_MS.start(), LEASE_RANGE_MS.end()),
            ));
        }
        let params = JobClaimParams { queues: self.queues, worker_id: self.worker_id, max: self.max, lease_ms };
        Ok((params, Duration::from_millis(wait_ms)))
    }
}

/// Claims at once if it can; else waits for an enqueue (ready signal), the
/// next delayed job coming due, the deadline or shutdown, and claims again.
/// Jobs claimed for a client that hung up meanwhile come back when their
/// lease runs out, like those of any vanished worker.
#[utoipa::path(post, path = "/api/workers/fetch", tag = "workers", request_body = FetchBody,
    responses((status = 200, description = "`{items: [{id, queue, name, payload, attempt, lease_token, lease_expires_at, timeout_ms}]}`; empty after `wait_ms`", body = Object), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn fetch(State(state): State<AppState>, ApiJson(body): ApiJson<FetchBody>) -> ApiResult<Json<Value>> {
    let (params, wait) = body.validate()?;
    let store = state.client.store();
    let deadline = Instant::now() + wait;
    let mut ready = store.ready_signal();
    loop {
        // Marked seen before the claim: an enqueue while the claim runs
        // changes the signal again, so the wait below cannot miss it.
        ready.borrow_and_update();
        let claimed = store.job_claim(params.clone()).await?;
        if !claimed.is_empty() {
            let now = store.now();
            for c in &claimed {
                state.leases.record(c.job.id.clone(), c.lease_token, params.lease_ms, c.lease_expires_at, now);
            }
            let items: Vec<FetchedJob> = claimed.into_iter().map(FetchedJob::from).collect();
            return Ok(Json(json!({ "items": items })));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || state.shutdown.is_cancelled() {
            return Ok(Json(json!({ "items": [] })));
        }
        if !drover::wait::wait_for_work(&**store, &params.queues, &mut ready, left.min(FALLBACK_POLL), &state.shutdown)
            .await
        {
            return Ok(Json(json!({ "items": [] })));
        }
    }
}

/// Deserializes a field that is present, even as `null`, into `Some`: a
/// completion's result may be null, and must differ from "no result".
pub(super) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The `error` of a failure report.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorBody {
    message: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    details: Value,
}

/// The fields of a failure, shared by `/fail` and ack items.
pub(super) struct Failure {
    pub(super) error: ErrorBody,
    pub(super) retryable: Option<bool>,
    pub(super) retry_after_ms: Option<u64>,
    pub(super) rate_limited: Option<bool>,
}

impl Failure {
    /// The engine's report; `prefix` names the item inside an ack.
    pub(super) fn into_report(self, prefix: &str) -> ApiResult<FailureReport> {
        if self.retry_after_ms.is_some_and(|ms| ms > MAX_RETRY_AFTER_MS) {
            return Err(ApiError::invalid_field(
                format!("{prefix}retry_after_ms"),
                format!("must be at most {MAX_RETRY_AFTER_MS} (a year)"),
            ));
        }
        let error = JobError { message: self.error.message, code: self.error.code, details: self.error.details };
        Ok(FailureReport {
            error,
            retryable: self.retryable.unwrap_or(true),
            retry_after: self.retry_after_ms.map(Duration::from_millis),
            rate_limited: self.rate_limited.unwrap_or(false),
        })
    }
}

/// `{"id", "state", "run_at"}` of a finished attempt.
pub(super) fn finished_json(id: &str, finished: Finished) -> Value {
    json!({ "id": id, "state": finished.state.as_str(), "run_at": finished.run_at.map(rfc3339) })
}

/// Turns a refusal into the API error, telling an unknown job (404) from a
/// lease that is not current (409): some store calls answer `LeaseLost` for
/// both, so the job is looked up on this (rare) path only.
pub(super) async fn refusal(state: &AppState, id: &JobId, e: StoreError) -> ApiError {
    if let StoreError::LeaseLost(_) = e
        && let Ok(None) = state.client.store().job_get(id).await
    {
        return ApiError::job_not_found(id.as_str());
    }
    e.into()
}

/// A path or item id; one that cannot exist is simply not found.
pub(super) fn job_id(id: &str) -> ApiResult<JobId> {
    JobId::parse(id).map_err(|_| ApiError::job_not_found(id))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    items: Vec<AckItem>,
}

/// A completion (`result`) or a failure (`error` and its options).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckItem {
    id: String,
    lease_token: String,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    #[serde(default)]
    rate_limited: Option<bool>,
}

impl AckItem {
    fn outcome(self, i: usize) -> ApiResult<FinishOutcome> {
        let prefix = format!("items[{i}].");
        match (self.result, self.error) {
            (Some(result), None) => {
                if self.retryable.is_some() || self.retry_after_ms.is_some() || self.rate_limited.is_some() {
                    return Err(ApiError::invalid_field(
                        format!("items[{i}]"),
                        "retryable, retry_after_ms and rate_limited belong to failures (items with `error`)",
                    ));
                }
                Ok(FinishOutcome::Complete(result))
            }
            (None, Some(error)) => {
                let failure = Failure {
                    error,
                    retryable: self.retryable,
                    retry_after_ms: self.retry_after_ms,
                    rate_limited: self.rate_limited,
                };
                Ok(FinishOutcome::Fail(failure.into_report(&prefix)?))
            }
            _ => Err(ApiError::invalid_field(
                format!("items[{i}]"),
                "needs exactly one of `result` (a completion) or `error` (a failure)",
            )),
        }
    }
}

/// Ends many attempts in one store call. A malformed item refuses the whole
/// request (422: a bug in the worker); a refused lease or an unknown job
/// fails only its own item.
#[utoipa::path(post, path = "/api/workers/ack", tag = "workers", request_body = AckBody,
    responses((status = 200, description = "One answer per item: `{id, ok, state}` or `{id, ok: false, error}`", body = Object), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn ack(State(state): State<AppState>, ApiJson(body): ApiJson<AckBody>) -> ApiResult<Json<Value>> {
    if body.items.is_empty() || body.items.len() > MAX_BATCH as usize {
        return Err(ApiError::invalid_field("items", format!("must hold 1 to {MAX_BATCH} items")));
    }
    // Items whose id cannot exist are answered without asking the store.
    let mut slots: Vec<(String, LeaseToken, Option<JobId>)> = Vec::with_capacity(body.items.len());
    let mut finishes = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.into_iter().enumerate() {
        let id = item.id.clone();
        let token = token_from_wire(&item.lease_token);
        let outcome = item.outcome(i)?;
        match JobId::parse(id.clone()) {
            Ok(job_id) => {
                finishes.push(JobFinish { id: job_id.clone(), lease_token: token, outcome });
                slots.push((id, token, Some(job_id)));
            }
            Err(_) => slots.push((id, token, None)),
        }
    }
    let mut results = state.client.store().job_finish_many(finishes).await?.into_iter();
    let mut items = Vec::with_capacity(slots.len());
    for (id, token, job_id) in slots {
        let Some(job_id) = job_id else {
            items.push(item_error(&id, ApiError::job_not_found(&id)));
            continue;
        };
        state.leases.forget(&job_id, token);
        match results.next() {
            Some(Ok(finished)) => {
                let mut view = finished_json(&id, finished);
                view["ok"] = json!(true);
                items.push(view);
            }
            Some(Err(e)) => items.push(item_error(&id, refusal(&state, &job_id, e).await)),
            None => {
                tracing::error!("job_finish_many answered fewer items than it was given");
                return Err(StoreError::Backend("finish answered too few items".into()).into());
            }
        }
    }
    Ok(Json(json!({ "items": items })))
}

fn item_error(id: &str, e: ApiError) -> Value {
    json!({ "id": id, "ok": false, "error": { "code": e.code.as_str(), "message": e.message } })
}
