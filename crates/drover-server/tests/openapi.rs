//! The OpenAPI document is generated from the code and covers the routes;
//! the docs page and its assets are served without the internet.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drover::Client;
use drover_server::{AppState, router};
use serde_json::Value;
use tower::ServiceExt;

async fn app() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open_sqlite(dir.path().join("api.db")).await.unwrap();
    (router(AppState::new(client)), dir)
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, Vec<u8>, String) {
    let resp = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
    (status, body, content_type)
}

#[tokio::test]
async fn openapi_document_lists_the_routes() {
    let (app, _dir) = app().await;
    let (status, body, _) = get(&app, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/jobs", "post"),
        ("/api/jobs", "get"),
        ("/api/jobs/bulk", "post"),
        ("/api/jobs/{id}", "get"),
        ("/api/jobs/{id}", "delete"),
        ("/api/jobs/{id}/logs", "get"),
        ("/api/jobs/{id}/retry", "post"),
        ("/api/jobs/{id}/children", "get"),
        ("/api/flows", "post"),
        ("/api/batches", "post"),
        ("/api/batches/{id}", "get"),
        ("/api/queues", "get"),
        ("/api/queues/{name}", "put"),
        ("/api/queues/{name}/pause", "post"),
        ("/api/queues/{name}/resume", "post"),
        ("/api/queues/{name}/retry-failed", "post"),
        ("/api/rate-limits", "get"),
        ("/api/rate-limits/{key}", "get"),
        ("/api/rate-limits/{key}", "put"),
        ("/api/rate-limits/{key}", "delete"),
        ("/api/schedules", "post"),
        ("/api/schedules", "get"),
        ("/api/schedules/{id}", "get"),
        ("/api/schedules/{id}", "delete"),
        ("/api/schedules/{id}/pause", "post"),
        ("/api/schedules/{id}/resume", "post"),
        ("/api/workers/fetch", "post"),
        ("/api/workers/ack", "post"),
        ("/api/jobs/{id}/heartbeat", "post"),
        ("/api/jobs/{id}/progress", "post"),
        ("/api/jobs/{id}/logs", "post"),
        ("/api/jobs/{id}/events", "post"),
        ("/api/jobs/{id}/complete", "post"),
        ("/api/jobs/{id}/fail", "post"),
        ("/api/events", "get"),
        ("/api/ws", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from the document");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in
        ["JobView", "JobSpecBody", "ErrorBody", "FetchBody", "AckBody", "FailBody", "ScheduleBody", "ScheduleView"]
    {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
}

#[tokio::test]
async fn docs_page_is_served_offline() {
    let (app, _dir) = app().await;
    let (status, page, content_type) = get(&app, "/docs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    let page = String::from_utf8(page).unwrap();
    assert!(!page.contains("https://"), "the page loads nothing from the internet");
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"] {
        assert!(page.contains(asset));
        let (status, body, _) = get(&app, asset).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(body.len() > 10_000, "{asset} is the real asset");
    }
}
