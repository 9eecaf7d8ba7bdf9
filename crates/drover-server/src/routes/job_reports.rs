//! What an HTTP worker reports about one job it holds, each under its lease
//! token: `POST /api/jobs/{id}/heartbeat`, `/progress`, `/logs`, `/events`,
//! `/complete` and `/fail`. A wrong or expired lease is 409 `lease_lost`,
//! an unknown job 404.
//!
//! `/api/jobs/{id}/logs` also has a GET (reading the log) in `jobs`; axum
//! merges the two method routers of the same path.

use super::workers::{ErrorBody, Failure, finished_json, job_id, present, refusal};
use crate::AppState;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::leases::token_from_wire;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use drover_core::{EventKind, LogLevel, Progress};
use drover_store::{FinishOutcome, JobEventEmit, JobFinish, JobHeartbeat, JobLogAppend, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/jobs/{id}/heartbeat", post(heartbeat))
        .route("/api/jobs/{id}/progress", post(progress))
        .route("/api/jobs/{id}/logs", post(log))
        .route("/api/jobs/{id}/events", post(emit))
        .route("/api/jobs/{id}/complete", post(complete))
        .route("/api/jobs/{id}/fail", post(fail))
}

/// Longest log line accepted, in bytes.
const MAX_LOG_MESSAGE: usize = 64 * 1024;

fn check_progress(progress: &Progress) -> ApiResult<()> {
    progress.validate().map_err(|e| ApiError::invalid_field("progress", e))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    lease_token: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    progress: Option<Progress>,
}

/// Extends the lease by the length the fetch asked for.
#[utoipa::path(post, path = "/api/jobs/{id}/heartbeat", tag = "workers", params(("id" = String, Path, description = "Job id")), request_body = HeartbeatBody,
    responses((status = 200, description = "`{lease_expires_at, cancel_requested}`", body = Object), (status = 409, description = "Wrong or expired lease: stop working on the job (`lease_lost`)", body = crate::error::ErrorBody), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    if let Some(p) = &body.progress {
        check_progress(p)?;
    }
    let token = token_from_wire(&body.lease_token);
    let lease_ms = state.leases.lease_ms(&id, token);
    let beat = JobHeartbeat { id: id.clone(), lease_token: token, lease_ms, progress: body.progress };
    let reply = state.client.store().job_heartbeat_many(vec![beat]).await?.pop();
    match reply {
        Some(Ok(reply)) => {
            state.leases.extended(&id, token, reply.lease_expires_at);
            Ok(Json(json!({
                "lease_expires_at": rfc3339(reply.lease_expires_at),
                "cancel_requested": reply.cancel_requested,
            })))
        }
        Some(Err(e)) => Err(refusal(&state, &id, e).await),
        None => Err(StoreError::Backend("heartbeat answered no item".into()).into()),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgressBody {
    lease_token: String,
    #[schema(value_type = Object)]
    progress: Progress,
}

#[utoipa::path(post, path = "/api/jobs/{id}/progress", tag = "workers", params(("id" = String, Path, description = "Job id")), request_body = ProgressBody,
    responses((status = 200, description = "Recorded", body = Object), (status = 409, description = "Wrong or expired lease: stop working on the job (`lease_lost`)", body = crate::error::ErrorBody), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProgressBody>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    check_progress(&body.progress)?;
    let token = token_from_wire(&body.lease_token);
    match state.client.store().job_progress(&id, token, body.progress).await {
        Ok(()) => Ok(Json(json!({ "ok": true }))),
        Err(e) => Err(refusal(&state, &id, e).await),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogBody {
    lease_token: String,
    #[serde(default)]
    level: Option<String>,
    message: String,
    #[serde(default)]
    metadata: Value,
}

#[utoipa::path(post, path = "/api/jobs/{id}/logs", tag = "workers", params(("id" = String, Path, description = "Job id")), request_body = LogBody,
    responses((status = 200, description = "Appended", body = Object), (status = 409, description = "Wrong or expired lease: stop working on the job (`lease_lost`)", body = crate::error::ErrorBody), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LogBody>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    let level = match body.level.as_deref() {
        None => LogLevel::Info,
        Some(l) => LogLevel::parse(l)
            .ok_or_else(|| ApiError::invalid_field("level", "must be one of debug, info, warn, error"))?,
    };
    if body.message.len() > MAX_LOG_MESSAGE {
        return Err(ApiError::invalid_field("message", format!("must be at most {MAX_LOG_MESSAGE} bytes")));
    }
    let params = JobLogAppend {
        id: id.clone(),
        lease_token: token_from_wire(&body.lease_token),
        level,
        message: body.message,
        metadata: body.metadata,
    };
    match state.client.store().job_log_append(params).await {
        Ok(()) => Ok(Json(json!({ "ok": true }))),
        Err(e) => Err(refusal(&state, &id, e).await),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmitBody {
    lease_token: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

/// Publishes a handler-defined event (`lead:add`); the reserved `job:`,
/// `queue:` and `batch:` namespaces are refused with 422.
#[utoipa::path(post, path = "/api/jobs/{id}/events", tag = "workers", params(("id" = String, Path, description = "Job id")), request_body = EmitBody,
    responses((status = 200, description = "Published", body = Object), (status = 409, description = "Wrong or expired lease: stop working on the job (`lease_lost`)", body = crate::error::ErrorBody), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn emit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EmitBody>,
) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    EventKind::validate_custom(&body.kind).map_err(|e| ApiError::invalid_field("type", e))?;
    let params = JobEventEmit {
        id: id.clone(),
        lease_token: token_from_wire(&body.lease_token),
        kind: body.kind,
        data: body.data,
    };
    match state.client.store().job_event_emit(params).await {
        Ok(()) => Ok(Json(json!({ "ok": true }))),
        Err(e) => Err(refusal(&state, &id, e).await),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteBody {
    lease_token: String,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
}

#[utoipa::path(post, path = "/api/jobs/{id}/complete", tag = "workers", params(("id" = String, Path, description = "Job id")), request_body = CompleteBody,
    responses((status = 200, description = "The job's new state", body = Object), (status = 409, description = "Wrong or expired lease: stop working on the job (`lease_lost`)", body = crate::error::ErrorBody), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> ApiResult<Json<Value>> {
    let outcome = FinishOutcome::Complete(body.result.unwrap_or(Value::Null));
    finish_one(&state, &id, &body.lease_token, outcome).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailBody {
    lease_token: String,
    error: ErrorBody,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    #[serde(default)]
    rate_limited: Option<bool>,
}

#[utoipa::path(post, path = "/api/jobs/{id}/fail", tag = "workers", params(("id" = String, Path, description = "Job id")), request_body = FailBody,
    responses((status = 200, description = "The job's new state (delayed for a retry, failed, cancelled)", body = Object), (status = 409, description = "Wrong or expired lease: stop working on the job (`lease_lost`)", body = crate::error::ErrorBody), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn fail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> ApiResult<Json<Value>> {
    let failure = Failure {
        error: body.error,
        retryable: body.retryable,
        retry_after_ms: body.retry_after_ms,
        rate_limited: body.rate_limited,
    };
    let outcome = FinishOutcome::Fail(failure.into_report("")?);
    finish_one(&state, &id, &body.lease_token, outcome).await
}

/// One completion or failure: `{"id", "state", "run_at"}`.
async fn finish_one(state: &AppState, id: &str, token: &str, outcome: FinishOutcome) -> ApiResult<Json<Value>> {
    let job = job_id(id)?;
    let token = token_from_wire(token);
    let item = JobFinish { id: job.clone(), lease_token: token, outcome };
    let result = state.client.store().job_finish_many(vec![item]).await?.pop();
    state.leases.forget(&job, token);
    match result {
        Some(Ok(finished)) => Ok(Json(finished_json(id, finished))),
        Some(Err(e)) => Err(refusal(state, &job, e).await),
        None => Err(StoreError::Backend("finish answered no item".into()).into()),
    }
}
