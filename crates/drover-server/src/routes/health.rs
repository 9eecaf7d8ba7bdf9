//! `/healthz` (the process is up) and `/readyz` (the store answers).

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up", body = Object)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "The store answers", body = Object), (status = 503, description = "The store does not answer", body = crate::error::ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    // Any store failure means "not ready", whatever its kind.
    state.client.store().queue_list().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(ErrorCode::Unavailable, "the store is not reachable")
    })?;
    Ok(Json(json!({ "status": "ready" })))
}
