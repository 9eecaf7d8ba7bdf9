//! The routes, one module per resource.

mod batches;
mod docs;
mod events;
mod flows;
mod health;
mod job_reports;
mod jobs;
mod queues;
mod rate_limits;
mod schedules;
mod workers;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::Router;
use axum::http::{Method, Uri};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(jobs::router())
        .merge(flows::router())
        .merge(batches::router())
        // After `jobs`: `/api/jobs/{id}/logs` gets its POST merged into the GET.
        .merge(job_reports::router())
        .merge(queues::router())
        .merge(rate_limits::router())
        .merge(schedules::router())
        .merge(workers::router())
        .merge(events::router())
        .merge(docs::router())
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, format!("no route for {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
}
