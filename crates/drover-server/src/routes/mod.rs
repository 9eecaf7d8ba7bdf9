//! The routes, one module per resource.

mod health;
mod jobs;
mod queues;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::Router;
use axum::http::{Method, Uri};

pub(crate) fn router() -> Router<AppState> {
    Router::new().merge(health::router()).merge(jobs::router()).merge(queues::router())
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, format!("no route for {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
}
