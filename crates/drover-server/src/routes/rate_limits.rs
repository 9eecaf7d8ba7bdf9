//! `/api/rate-limits`: concurrency caps and rate limits per rate-limit key
//! or key prefix (`tenant:*`), and where a key stands now.

use crate::AppState;
use crate::dto::{Page, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::ApiJson;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use drover_core::{KeyLimit, RateLimit};
use drover_store::{RateLimitRule, RateLimitState};
use serde::Serialize;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/rate-limits", get(list))
        .route("/api/rate-limits/{key}", get(show).put(set).delete(remove))
}

/// A rule: the limits of one key, or of each key with a prefix.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RuleView {
    /// The key, or a prefix followed by `*`.
    key: String,
    /// Most jobs with the key active at once, across all workers.
    concurrency: Option<u32>,
    /// Most starts per window: `{"max", "per_ms"}`.
    #[schema(value_type = Option<Object>)]
    rate_limit: Option<RateLimit>,
}

impl From<RateLimitRule> for RuleView {
    fn from(rule: RateLimitRule) -> Self {
        Self { key: rule.key, concurrency: rule.limit.concurrency, rate_limit: rule.limit.rate_limit }
    }
}

/// Where one key stands now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyStateView {
    key: String,
    /// The rule that applies: the key's own, or the longest matching prefix.
    rule: Option<RuleView>,
    /// Jobs with the key active now.
    active: u64,
    /// Starts of jobs with the key in the current rate-limit window.
    started_in_window: u32,
    /// Until when no job with the key starts: a handler's "rate limited"
    /// hold, or the rate limit used up.
    throttled_until: Option<String>,
}

impl From<RateLimitState> for KeyStateView {
    fn from(s: RateLimitState) -> Self {
        Self {
            key: s.key,
            rule: s.rule.map(RuleView::from),
            active: s.active,
            started_in_window: s.started_in_window,
            throttled_until: s.throttled_until.map(rfc3339),
        }
    }
}

fn check_key(key: &str) -> ApiResult<()> {
    drover_core::limit::validate_key_pattern(key).map_err(|m| ApiError::invalid_field("key", m))
}

#[utoipa::path(get, path = "/api/rate-limits", tag = "queues",
    responses((status = 200, description = "Every key and prefix rule, by key", body = Page<RuleView>)))]
pub(crate) async fn list(State(state): State<AppState>) -> ApiResult<Json<Page<RuleView>>> {
    let rules = state.client.rate_limits().await?;
    Ok(Json(Page { items: rules.into_iter().map(RuleView::from).collect(), next_cursor: None }))
}

#[utoipa::path(get, path = "/api/rate-limits/{key}", tag = "queues", params(("key" = String, Path)),
    responses((status = 200, description = "Where the key stands now", body = KeyStateView),
        (status = 422, description = "Invalid key", body = crate::error::ErrorBody)))]
pub(crate) async fn show(State(state): State<AppState>, Path(key): Path<String>) -> ApiResult<Json<KeyStateView>> {
    check_key(&key)?;
    Ok(Json(state.client.rate_limit_get(&key).await?.into()))
}

#[utoipa::path(put, path = "/api/rate-limits/{key}", tag = "queues", params(("key" = String, Path)),
    request_body(content = Object, description = "`{\"concurrency\": 4, \"rate_limit\": {\"max\": 10, \"per_ms\": 60000}}`"),
    responses((status = 200, description = "The rule as stored", body = RuleView),
        (status = 422, description = "Invalid key or limits", body = crate::error::ErrorBody)))]
pub(crate) async fn set(
    State(state): State<AppState>,
    Path(key): Path<String>,
    ApiJson(limit): ApiJson<KeyLimit>,
) -> ApiResult<Json<RuleView>> {
    check_key(&key)?;
    limit.validate().map_err(|(field, m)| ApiError::invalid_field(field, m))?;
    Ok(Json(state.client.rate_limit_set(&key, limit).await?.into()))
}

#[utoipa::path(delete, path = "/api/rate-limits/{key}", tag = "queues", params(("key" = String, Path)),
    responses((status = 204, description = "Removed"),
        (status = 404, description = "No rule for this key", body = crate::error::ErrorBody)))]
pub(crate) async fn remove(State(state): State<AppState>, Path(key): Path<String>) -> ApiResult<StatusCode> {
    check_key(&key)?;
    if state.client.rate_limit_delete(&key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::NotFound, format!("no rate limit is set for key {key}")))
    }
}
