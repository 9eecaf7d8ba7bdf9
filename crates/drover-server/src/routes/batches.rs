//! `/api/batches`: create a batch of jobs with an optional completion job,
//! and read its aggregate counts.

use crate::AppState;
use crate::dto::{BatchView, JobSpecBody};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::ApiJson;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use drover_core::BatchSpec;
use drover_core::flow::MAX_FLOW_JOBS;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/batches", post(create)).route("/api/batches/{id}", get(show))
}

/// The body of `POST /api/batches`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    /// The jobs (1 to 10,000); their `batch_id` is set by the batch.
    jobs: Vec<JobSpecBody>,
    /// Enqueued once, when every job of the batch has finished.
    #[serde(default)]
    on_complete: Option<JobSpecBody>,
}

/// The answer to `POST /api/batches`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BatchCreated {
    /// The new batch's id.
    id: String,
    /// How many jobs it holds.
    total: u64,
}

#[utoipa::path(post, path = "/api/batches", tag = "batches", request_body = BatchBody,
    responses((status = 201, description = "Created (all or nothing)", body = BatchCreated),
        (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BatchBody>,
) -> ApiResult<(StatusCode, Json<BatchCreated>)> {
    if body.jobs.is_empty() || body.jobs.len() > MAX_FLOW_JOBS {
        return Err(ApiError::invalid_field("jobs", format!("must hold 1 to {MAX_FLOW_JOBS} jobs")));
    }
    let jobs = body
        .jobs
        .into_iter()
        .enumerate()
        // A job naming a batch of its own is refused by the store
        // (`jobs[i].batch_id`), like every other rule of batches.
        .map(|(i, job)| job.into_spec(&format!("jobs[{i}].")))
        .collect::<ApiResult<Vec<_>>>()?;
    let on_complete = body.on_complete.map(|job| job.into_spec("on_complete.")).transpose()?;
    let created = state.client.batch_insert(BatchSpec { jobs, on_complete }).await?;
    Ok((StatusCode::CREATED, Json(BatchCreated { id: created.id, total: created.total })))
}

#[utoipa::path(get, path = "/api/batches/{id}", tag = "batches", params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, description = "The batch's counts", body = BatchView),
        (status = 404, description = "No such batch", body = crate::error::ErrorBody)))]
pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<BatchView>> {
    let batch = state.client.batch_get(&id).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, format!("no batch with id `{id}`")).details(json!({ "id": id }))
    })?;
    Ok(Json(BatchView::from(batch)))
}
