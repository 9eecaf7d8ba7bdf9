//! `/api/jobs`: create (single and bulk), read, list, logs, retry, cancel,
//! children.

use crate::AppState;
use crate::dto::{JobSpecBody, JobView, LogView, Page};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use drover_core::{JobId, JobState};
use drover_store::{CancelOutcome, JobListParams, MAX_PAGE};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", post(create).get(list))
        .route("/api/jobs/bulk", post(create_bulk))
        .route("/api/jobs/{id}", get(show).delete(cancel))
        .route("/api/jobs/{id}/logs", get(logs))
        .route("/api/jobs/{id}/retry", post(retry))
        .route("/api/jobs/{id}/children", get(children))
}

/// A path id: validated like a caller-supplied one, and a job that cannot
/// exist is simply not found.
fn path_id(id: &str) -> ApiResult<JobId> {
    JobId::parse(id).map_err(|_| ApiError::job_not_found(id))
}

#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = JobSpecBody,
    responses((status = 201, description = "Created", body = JobView), (status = 200, description = "A job with this id already existed (`duplicate: true`)", body = JobView), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<JobSpecBody>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let spec = body.into_spec("")?;
    let inserted = state.client.enqueue(spec).await?;
    let status = if inserted.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    let mut view = JobView::list_item(inserted.job);
    view.duplicate = Some(inserted.duplicate);
    Ok((status, Json(view)))
}

/// Most jobs in one bulk create.
const MAX_BULK: usize = 10_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkBody {
    /// The jobs, created in one transaction.
    jobs: Vec<JobSpecBody>,
}

#[utoipa::path(post, path = "/api/jobs/bulk", tag = "jobs", request_body = BulkBody,
    responses((status = 201, description = "Created (all or nothing)", body = Page<JobView>), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn create_bulk(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BulkBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if body.jobs.is_empty() || body.jobs.len() > MAX_BULK {
        return Err(ApiError::invalid_field("jobs", format!("must hold 1 to {MAX_BULK} jobs")));
    }
    let specs = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| job.into_spec(&format!("jobs[{i}].")))
        .collect::<ApiResult<Vec<_>>>()?;
    let inserted = state.client.enqueue_many(specs).await?;
    let any_new = inserted.iter().any(|i| !i.duplicate);
    let items: Vec<JobView> = inserted
        .into_iter()
        .map(|i| {
            let mut view = JobView::list_item(i.job);
            view.duplicate = Some(i.duplicate);
            view
        })
        .collect();
    let status = if any_new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "items": items }))))
}

#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job with its attempts", body = JobView), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let job = state.client.get(&path_id(&id)?).await?.ok_or_else(|| ApiError::job_not_found(&id))?;
    Ok(Json(JobView::detailed(job)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    queue: Option<String>,
    state: Option<String>,
    name: Option<String>,
    batch_id: Option<String>,
    parent_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Checks `?limit=` (default 50, 1 to 1000).
pub(crate) fn page_limit(limit: Option<u32>) -> ApiResult<u32> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_field("limit", format!("must be between 1 and {MAX_PAGE}"))),
    }
}

#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "A page of jobs, newest first", body = Page<JobView>), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<JobView>>> {
    let job_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<JobState>().map_err(|e| ApiError::invalid_field("state", e.to_string()))?),
    };
    let parent_id = match q.parent_id {
        None => None,
        Some(p) => Some(JobId::parse(p).map_err(|e| ApiError::invalid_field("parent_id", e.to_string()))?),
    };
    let params = JobListParams {
        queue: q.queue,
        state: job_state,
        name: q.name,
        batch_id: q.batch_id,
        parent_id,
        limit: page_limit(q.limit)?,
        cursor: q.cursor,
    };
    let page = state.client.list(params).await?;
    Ok(Json(Page { items: page.items.into_iter().map(JobView::list_item).collect(), next_cursor: page.next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/jobs/{id}/logs", tag = "jobs", params(("id" = String, Path, description = "Job id"), PageQuery),
    responses((status = 200, description = "Log lines, oldest first", body = Page<LogView>), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<LogView>>> {
    let job_id = path_id(&id)?;
    let limit = page_limit(q.limit)?;
    // The cursor is the number of lines already read.
    let after = match q.cursor.as_deref() {
        None => 0,
        Some(c) => {
            c.parse::<u64>().map_err(|_| ApiError::invalid_field("cursor", "is not a cursor this server issued"))?
        }
    };
    let lines = match state.client.store().job_log_list(&job_id, after, limit).await {
        Err(drover_store::StoreError::NotFound(_)) => return Err(ApiError::job_not_found(&id)),
        other => other?,
    };
    let next_cursor = (lines.len() == limit as usize).then(|| (after + lines.len() as u64).to_string());
    Ok(Json(Page { items: lines.into_iter().map(LogView::from).collect(), next_cursor }))
}

#[utoipa::path(post, path = "/api/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job, waiting again", body = JobView), (status = 404, description = "No such job", body = crate::error::ErrorBody), (status = 409, description = "Not allowed in the job's state", body = crate::error::ErrorBody)))]
pub(crate) async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let job = match state.client.retry(&path_id(&id)?).await {
        Err(drover::Error::Store(drover_store::StoreError::NotFound(_))) => return Err(ApiError::job_not_found(&id)),
        other => other?,
    };
    Ok(Json(JobView::list_item(job)))
}

#[utoipa::path(delete, path = "/api/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Cancelled, or `cancel_requested` for an active job", body = JobView), (status = 404, description = "No such job", body = crate::error::ErrorBody), (status = 409, description = "Not allowed in the job's state", body = crate::error::ErrorBody)))]
pub(crate) async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let outcome = match state.client.cancel(&path_id(&id)?).await {
        Err(drover::Error::Store(drover_store::StoreError::NotFound(_))) => return Err(ApiError::job_not_found(&id)),
        other => other?,
    };
    let job = match outcome {
        CancelOutcome::Cancelled(job) | CancelOutcome::Requested(job) => job,
    };
    Ok(Json(JobView::list_item(job)))
}

#[utoipa::path(get, path = "/api/jobs/{id}/children", tag = "jobs", params(("id" = String, Path, description = "Parent job id"), PageQuery),
    responses((status = 200, description = "The job's children", body = Page<JobView>), (status = 404, description = "No such job", body = crate::error::ErrorBody)))]
pub(crate) async fn children(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<JobView>>> {
    let parent = path_id(&id)?;
    if state.client.get(&parent).await?.is_none() {
        return Err(ApiError::job_not_found(&id));
    }
    let params = JobListParams {
        parent_id: Some(parent),
        limit: page_limit(q.limit)?,
        cursor: q.cursor,
        ..JobListParams::default()
    };
    let page = state.client.list(params).await?;
    Ok(Json(Page { items: page.items.into_iter().map(JobView::list_item).collect(), next_cursor: page.next_cursor }))
}
