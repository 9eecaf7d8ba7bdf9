//! `POST /api/flows`: a job and its children (to any depth), created in one
//! transaction; every job with children starts `waiting-children`.

use crate::AppState;
use crate::dto::{JobSpecBody, JobView, Page};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/flows", post(create))
}

#[utoipa::path(post, path = "/api/flows", tag = "jobs", request_body = JobSpecBody,
    description = "A job spec with `children` (job specs, nested to any depth), created atomically. \
                   The answer lists every job, parents before their children (the root first). \
                   A `parent_id` at the root attaches the flow to an existing unfinished job.",
    responses((status = 201, description = "Created (all or nothing)", body = Page<JobView>),
        (status = 200, description = "Every job already existed (`duplicate: true`)", body = Page<JobView>),
        (status = 409, description = "The root's parent has finished", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid input, or an unknown `parent_id`", body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<JobSpecBody>,
) -> ApiResult<(StatusCode, Json<Page<JobView>>)> {
    if body.children.as_ref().is_none_or(Vec::is_empty) {
        return Err(ApiError::invalid_field("children", "a flow needs at least one child (or use POST /api/jobs)"));
    }
    let flow = body.into_flow("")?;
    let inserted = state.client.flow_insert(flow).await?;
    let any_new = inserted.iter().any(|i| !i.duplicate);
    let items = inserted
        .into_iter()
        .map(|i| {
            let mut view = JobView::list_item(i.job);
            view.duplicate = Some(i.duplicate);
            view
        })
        .collect();
    let status = if any_new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Page { items, next_cursor: None })))
}
