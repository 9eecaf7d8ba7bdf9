//! `/api/schedules`: create or replace, list, read, pause, resume and
//! delete cron and interval schedules. Every `drover serve` runs a scheduler that fires
//! them; a tick enqueues one job, `sched:{id}:{tick ms}`, however many
//! servers race for it (ADR 0006).

use crate::AppState;
use crate::dto::{JobSpecBody, Page, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::jobs::page_limit;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_core::{JobSpec, Schedule, ScheduleSpec};
use drover_store::ScheduleListParams;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/schedules", get(list).post(create))
        .route("/api/schedules/{id}", get(show).delete(remove))
        .route("/api/schedules/{id}/pause", post(pause))
        .route("/api/schedules/{id}/resume", post(resume))
}

/// The body of `POST /api/schedules`: exactly one of `cron` and `every_ms`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleBody {
    /// The schedule's id: 1–128 letters, digits, `_ - .`. Posting an
    /// existing id replaces that schedule.
    id: String,
    /// Cron expression: 5 fields, or 6 with seconds first.
    #[serde(default)]
    cron: Option<String>,
    /// Fixed interval in milliseconds.
    #[serde(default)]
    every_ms: Option<u64>,
    /// IANA time zone of `cron` (default `UTC`).
    #[serde(default)]
    timezone: Option<String>,
    /// The job each tick enqueues (no `id`, `run_at`, `expires_at` or `parent_id`).
    job: JobSpecBody,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ScheduleView {
    /// The schedule's id.
    id: String,
    /// Cron expression, or null for an interval schedule.
    cron: Option<String>,
    /// Interval in milliseconds, or null for a cron schedule.
    every_ms: Option<u64>,
    /// The zone `cron` is read in; null for interval schedules.
    timezone: Option<String>,
    /// The job template.
    #[schema(value_type = Object)]
    job: JobSpec,
    /// When the next tick fires.
    next_run_at: String,
    /// The last tick that fired.
    last_run_at: Option<String>,
    /// The job that tick enqueued.
    last_job_id: Option<String>,
    /// True while the schedule fires nothing.
    paused: bool,
    /// When the schedule was first created.
    created_at: String,
    /// When it was last created or replaced.
    updated_at: String,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        Self {
            id: s.spec.id,
            cron: s.spec.cron,
            every_ms: s.spec.every_ms,
            timezone: s.spec.timezone,
            job: s.spec.job,
            next_run_at: rfc3339(s.next_run_at),
            last_run_at: s.last_run_at.map(rfc3339),
            last_job_id: s.last_job_id.map(|id| id.as_str().to_owned()),
            paused: s.paused,
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

fn schedule_not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no schedule with id `{id}`")).details(json!({ "id": id }))
}

#[utoipa::path(post, path = "/api/schedules", tag = "schedules", request_body = ScheduleBody,
    responses((status = 201, description = "Created", body = ScheduleView), (status = 200, description = "A schedule with this id existed and was replaced", body = ScheduleView), (status = 422, description = "Invalid input (field in `details.field`)", body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    // The template is checked like a job body, except the fields a schedule
    // sets itself, which the store refuses with their names.
    let job = body.job.into_spec("job.")?;
    let spec = ScheduleSpec { id: body.id, cron: body.cron, every_ms: body.every_ms, timezone: body.timezone, job };
    let upserted = state.client.schedule_upsert(spec).await?;
    let status = if upserted.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(upserted.schedule.into())))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/schedules", tag = "schedules", params(ListQuery),
    responses((status = 200, description = "A page of schedules, by id", body = Page<ScheduleView>), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<ScheduleView>>> {
    let params = ScheduleListParams { limit: page_limit(q.limit)?, cursor: q.cursor };
    let page = state.client.schedule_list(params).await?;
    Ok(Json(Page { items: page.items.into_iter().map(Into::into).collect(), next_cursor: page.next_cursor }))
}

#[utoipa::path(get, path = "/api/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, description = "One schedule", body = ScheduleView), (status = 404, description = "No such schedule", body = crate::error::ErrorBody)))]
pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ScheduleView>> {
    let schedule = state.client.schedule_get(&id).await?.ok_or_else(|| schedule_not_found(&id))?;
    Ok(Json(schedule.into()))
}

#[utoipa::path(delete, path = "/api/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, description = "Deleted: `{\"id\", \"deleted\": true}`; jobs it enqueued stay", body = Object), (status = 404, description = "No such schedule", body = crate::error::ErrorBody)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    if !state.client.schedule_delete(&id).await? {
        return Err(schedule_not_found(&id));
    }
    Ok(Json(json!({ "id": id, "deleted": true })))
}

#[utoipa::path(post, path = "/api/schedules/{id}/pause", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, description = "Paused: it fires nothing until resumed", body = ScheduleView), (status = 404, description = "No such schedule", body = crate::error::ErrorBody)))]
pub(crate) async fn pause(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(state.client.schedule_pause(&id).await.map_err(|e| not_found_as_schedule(e, &id))?.into()))
}

#[utoipa::path(post, path = "/api/schedules/{id}/resume", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, description = "Resumed from the first tick after now", body = ScheduleView), (status = 404, description = "No such schedule", body = crate::error::ErrorBody)))]
pub(crate) async fn resume(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(state.client.schedule_resume(&id).await.map_err(|e| not_found_as_schedule(e, &id))?.into()))
}

/// The store's not-found, with the same message and details as the other
/// schedule routes.
fn not_found_as_schedule(e: drover::Error, id: &str) -> ApiError {
    match e {
        drover::Error::Store(drover_store::StoreError::NotFound(_)) => schedule_not_found(id),
        other => other.into(),
    }
}
