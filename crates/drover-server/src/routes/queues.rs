//! `/api/queues`: list with counts, configure, pause, resume, retry-failed.

use crate::AppState;
use crate::dto::Page;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use drover_core::{JobState, QueueConfig};
use drover_store::{JobListParams, QueueInfo, StateCounts, StoreError};
use serde::Serialize;
use serde_json::{Map, Value, json};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/queues", get(list))
        .route("/api/queues/{name}", put(configure).get(show))
        .route("/api/queues/{name}/pause", post(pause))
        .route("/api/queues/{name}/resume", post(resume))
        .route("/api/queues/{name}/retry-failed", post(retry_failed))
}

/// A queue as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct QueueView {
    name: String,
    paused: bool,
    #[schema(value_type = Object)]
    counts: StateCounts,
    concurrency: Option<u32>,
    #[schema(value_type = Option<Object>)]
    rate_limit: Option<drover_core::RateLimit>,
    /// Until when the queue starts nothing: a handler's "rate limited"
    /// hold, or its rate limit used up.
    throttled_until: Option<String>,
    default_job_options: Map<String, Value>,
    #[schema(value_type = Object)]
    retention: drover_core::Retention,
}

impl From<QueueInfo> for QueueView {
    fn from(q: QueueInfo) -> Self {
        Self {
            name: q.name,
            paused: q.paused,
            counts: q.counts,
            concurrency: q.config.concurrency,
            rate_limit: q.config.rate_limit,
            throttled_until: q.throttled_until.map(crate::dto::rfc3339),
            default_job_options: q.config.default_job_options,
            retention: q.config.retention,
        }
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    drover_core::spec::validate_queue_name(name).map_err(|e| ApiError::invalid_field("name", e.message))
}

#[utoipa::path(get, path = "/api/queues", tag = "queues",
    responses((status = 200, description = "Every queue with its counts", body = Page<QueueView>)))]
pub(crate) async fn list(State(state): State<AppState>) -> ApiResult<Json<Page<QueueView>>> {
    let queues = state.client.queues().await?;
    Ok(Json(Page { items: queues.into_iter().map(QueueView::from).collect(), next_cursor: None }))
}

#[utoipa::path(get, path = "/api/queues/{name}", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, description = "One queue", body = QueueView), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn show(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<QueueView>> {
    check_name(&name)?;
    Ok(Json(state.client.store().queue_get(&name).await?.into()))
}

/// Options a queue may default for its jobs, with the check of each value.
const JOB_OPTIONS: [&str; 5] = ["attempts", "backoff", "timeout_ms", "priority", "max_stalls"];

fn validate_config(config: &QueueConfig) -> ApiResult<()> {
    if config.concurrency == Some(0) {
        return Err(ApiError::invalid_field("concurrency", "must be at least 1 (omit it for no cap)"));
    }
    if let Some(limit) = config.rate_limit {
        limit.validate().map_err(|m| ApiError::invalid_field("rate_limit", m))?;
    }
    for key in config.default_job_options.keys() {
        if !JOB_OPTIONS.contains(&key.as_str()) {
            return Err(ApiError::invalid_field(
                format!("default_job_options.{key}"),
                format!("is not a job option a queue can default (one of {})", JOB_OPTIONS.join(", ")),
            ));
        }
    }
    // The defaults must make a valid job: check them on a sample spec.
    let mut sample = json!({ "queue": "q", "name": "n" });
    for (key, value) in &config.default_job_options {
        sample[key] = value.clone();
    }
    let body: crate::dto::JobSpecBody =
        serde_json::from_value(sample).map_err(|e| ApiError::invalid_field("default_job_options", e.to_string()))?;
    body.into_spec("default_job_options.")?;
    Ok(())
}

#[utoipa::path(put, path = "/api/queues/{name}", tag = "queues", params(("name" = String, Path)), request_body = Object,
    responses((status = 200, description = "The queue with its new settings", body = QueueView), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn configure(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(config): ApiJson<QueueConfig>,
) -> ApiResult<Json<QueueView>> {
    check_name(&name)?;
    validate_config(&config)?;
    Ok(Json(state.client.store().queue_config_set(&name, config).await?.into()))
}

#[utoipa::path(post, path = "/api/queues/{name}/pause", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, description = "Paused", body = QueueView), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn pause(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<QueueView>> {
    check_name(&name)?;
    Ok(Json(state.client.pause(&name).await?.into()))
}

#[utoipa::path(post, path = "/api/queues/{name}/resume", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, description = "Resumed", body = QueueView), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn resume(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<QueueView>> {
    check_name(&name)?;
    Ok(Json(state.client.resume(&name).await?.into()))
}

/// Retries every failed job of the queue, a page at a time. A job that
/// changed state meanwhile (someone else retried it) is skipped.
#[utoipa::path(post, path = "/api/queues/{name}/retry-failed", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, description = "`{\"retried\": N}`", body = Object), (status = 422, description = "Invalid input", body = crate::error::ErrorBody)))]
pub(crate) async fn retry_failed(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let store = state.client.store();
    let mut retried = 0u64;
    loop {
        // Retried jobs leave the failed set, so each pass reads the first page again.
        let params = JobListParams {
            queue: Some(name.clone()),
            state: Some(JobState::Failed),
            limit: drover_store::MAX_PAGE,
            ..JobListParams::default()
        };
        let page = store.job_list(params).await?;
        if page.items.is_empty() {
            break;
        }
        let retries = page.items.iter().map(|job| store.job_retry(&job.id));
        let mut progressed = false;
        for outcome in futures::future::join_all(retries).await {
            match outcome {
                Ok(_) => {
                    retried += 1;
                    progressed = true;
                }
                Err(StoreError::InvalidState { .. } | StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(Json(json!({ "retried": retried })))
}
