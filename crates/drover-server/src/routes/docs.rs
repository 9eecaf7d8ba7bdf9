//! `GET /openapi.json` (generated from the handlers' annotations) and
//! `GET /docs` (Swagger UI, vendored: nothing is fetched from the internet).

use super::{batches, events, flows, health, job_reports, jobs, queues, rate_limits, schedules, workers};
use crate::AppState;
use crate::dto::{AttemptView, BatchView, JobSpecBody, JobView, LogView};
use crate::error::{ErrorBody, ErrorDetail};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

/// The OpenAPI document of the whole API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Drover",
        description = "Durable background jobs: REST API, worker protocol and live events. \
                       Contract: shared/spec/http-api.md; error codes: docs/decisions/0004-http-api-choices.md."
    ),
    paths(
        health::healthz,
        health::readyz,
        jobs::create,
        jobs::create_bulk,
        jobs::list,
        jobs::show,
        jobs::logs,
        jobs::retry,
        jobs::cancel,
        jobs::children,
        flows::create,
        batches::create,
        batches::show,
        queues::list,
        queues::show,
        queues::configure,
        queues::pause,
        queues::resume,
        queues::retry_failed,
        rate_limits::list,
        rate_limits::show,
        rate_limits::set,
        rate_limits::remove,
        schedules::create,
        schedules::list,
        schedules::show,
        schedules::remove,
        schedules::pause,
        schedules::resume,
        workers::fetch,
        workers::ack,
        job_reports::heartbeat,
        job_reports::progress,
        job_reports::log,
        job_reports::emit,
        job_reports::complete,
        job_reports::fail,
        events::sse,
        events::ws,
    ),
    components(schemas(JobView, AttemptView, LogView, JobSpecBody, BatchView, ErrorBody, ErrorDetail)),
    tags(
        (name = "jobs", description = "Enqueue, inspect, cancel and retry jobs"),
        (name = "queues", description = "Queue counts, settings, pause and resume; rate limits and caps per key"),
        (name = "schedules", description = "Cron and interval schedules that enqueue jobs"),
        (name = "batches", description = "Groups of jobs with aggregate counts and a completion job"),
        (name = "workers", description = "The worker protocol, for workers in any language"),
        (name = "events", description = "Live lifecycle and custom events (SSE, WebSocket)"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub(crate) struct ApiDoc;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/docs", get(docs_page))
        .route("/docs/swagger-ui-bundle.js", get(bundle))
        .route("/docs/swagger-ui.css", get(css))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn docs_page() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Drover API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
  </script>
</body>
</html>"##,
    )
}

async fn bundle() -> impl IntoResponse {
    let js: &'static [u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=86400")], js)
}

async fn css() -> impl IntoResponse {
    let css: &'static [u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=86400")], css)
}
