//! A small typed HTTP client for the Drover API (`shared/spec/http-api.md`),
//! used by the client commands, and how they print what it answers.
//!
//! Every request carries explicit timeouts and, when an API key is given,
//! `Authorization: Bearer <key>`. A 4xx/5xx answer becomes an [`ApiError`]
//! that reads `error (409 invalid_state): job is completed: ...`.
//!
//! ```ignore
//! let api = Api::new(&opts)?;
//! let job = api.job(&"job-1".into()).await?;
//! ```

pub mod events;
pub mod output;

use crate::cli::ClientOpts;
use anyhow::{Context, bail};
use reqwest::header::{ACCEPT, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// An error answer of the API: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The API's error code, e.g. `invalid_state`.
    pub code: String,
    /// The API's human sentence.
    pub message: String,
    /// Structured context (`{"field": ...}`).
    pub details: Value,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error ({} {}): {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Reads an error answer. A body that is not the API's error shape (a
    /// proxy's HTML page, an empty body) still gives a readable error.
    async fn from_response(response: Response) -> Self {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        match parsed.as_ref().and_then(|v| v.get("error")) {
            Some(error) => ApiError {
                status,
                code: error.get("code").and_then(Value::as_str).unwrap_or("unknown").to_owned(),
                message: error.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
                details: error.get("details").cloned().unwrap_or(Value::Null),
            },
            None => ApiError {
                status,
                code: status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
                message: truncate(text.trim(), 200),
                details: Value::Null,
            },
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The Drover API at one base URL.
#[derive(Debug, Clone)]
pub struct Api {
    /// For ordinary requests: bounded end to end.
    http: reqwest::Client,
    /// For event streams: no total timeout (a stream lasts as long as the
    /// job), but a read timeout so a dead connection is noticed and resumed.
    streaming: reqwest::Client,
    /// Where the API lives, with a trailing slash so joins keep its path.
    base: Url,
    /// Sent as a bearer token.
    api_key: Option<String>,
}

/// A stream that hears nothing for this long is treated as dropped.
/// Servers send keep-alive comments well within it.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting should never take long; fail fast when nothing listens.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Api {
    /// A client for the server and key in `opts`.
    pub fn new(opts: &ClientOpts) -> anyhow::Result<Self> {
        let mut base = Url::parse(&opts.server)
            .with_context(|| format!("--server {:?} is not a URL like http://127.0.0.1:8080", opts.server))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--server {:?} must be an http:// or https:// URL", opts.server);
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let agent = concat!("drover-cli/", env!("CARGO_PKG_VERSION"));
        let http = reqwest::Client::builder()
            .user_agent(agent)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_millis(opts.timeout_ms.max(1)))
            .build()
            .context("building the HTTP client")?;
        let streaming = reqwest::Client::builder()
            .user_agent(agent)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(STREAM_READ_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, streaming, base, api_key: opts.api_key.clone() })
    }

    /// The URL of `segments` below the base, each segment percent-encoded
    /// (a job id may hold `/` or `?`).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http URLs have paths");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn request(&self, client: &reqwest::Client, method: Method, url: Url) -> RequestBuilder {
        let request = client.request(method, url);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends a request and reads a JSON answer (`null` for 204 No Content),
    /// or the API error.
    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request.header(ACCEPT, "application/json").send().await.map_err(|e| self.transport(e))?;
        if !response.status().is_success() {
            return Err(ApiError::from_response(response).await.into());
        }
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = response.text().await.map_err(|e| self.transport(e))?;
        serde_json::from_str(&text).context("the server answered with something that is not JSON")
    }

    /// Says which server could not be reached, and why.
    fn transport(&self, e: reqwest::Error) -> anyhow::Error {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        anyhow::Error::new(e).context(format!("{what}: {} (is `drover serve` running there? see --server)", self.base))
    }

    /// `GET` a path, with query parameters.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.send(self.request(&self.http, Method::GET, url)).await
    }

    /// A request with a JSON body.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Value> {
        let mut request = self.request(&self.http, method, self.url(segments));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// `GET /api/jobs/{id}`: the job with its attempts.
    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        self.get(&["api", "jobs", id], &[]).await
    }

    /// `POST /api/jobs`: create one job.
    pub async fn job_create(&self, spec: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, &["api", "jobs"], Some(spec)).await
    }

    /// `POST /api/jobs/bulk`: create jobs, all or nothing. `body` is the
    /// already serialized `{"jobs": [...]}`, so the caller can size it.
    pub async fn job_create_bulk(&self, body: String) -> anyhow::Result<Value> {
        let request = self
            .request(&self.http, Method::POST, self.url(&["api", "jobs", "bulk"]))
            .header(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        self.send(request).await
    }

    /// Follows `next_cursor` through every page of a list, up to `max` items.
    pub async fn list_all(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        max: usize,
    ) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", "1000".to_owned()));
            if let Some(c) = cursor.take() {
                q.push(("cursor", c));
            }
            let page = self.get(segments, &q).await?;
            if let Some(list) = page.get("items").and_then(Value::as_array) {
                items.extend(list.iter().cloned());
            }
            cursor = page.get("next_cursor").and_then(Value::as_str).map(str::to_owned);
            if cursor.is_none() || items.len() >= max {
                items.truncate(max);
                return Ok(items);
            }
        }
    }

    /// Opens `GET /api/events` with `query`, resuming after `last_event_id`.
    /// Returns once the server has accepted the subscription (headers read).
    pub async fn events(&self, query: &[(&str, &str)], last_event_id: Option<&str>) -> anyhow::Result<Response> {
        let mut url = self.url(&["api", "events"]);
        url.query_pairs_mut().extend_pairs(query);
        let mut request = self.request(&self.streaming, Method::GET, url).header(ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if !response.status().is_success() {
            return Err(ApiError::from_response(response).await.into());
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(server: &str) -> Api {
        let opts = ClientOpts { server: server.into(), api_key: None, json: true, timeout_ms: 1000 };
        Api::new(&opts).unwrap()
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_segments() {
        assert_eq!(api("http://h:1").url(&["api", "jobs", "a/b?c"]).as_str(), "http://h:1/api/jobs/a%2Fb%3Fc");
        assert_eq!(api("http://h:1/drover").url(&["api", "queues"]).as_str(), "http://h:1/drover/api/queues");
        assert_eq!(api("http://h:1/drover/").url(&["api"]).as_str(), "http://h:1/drover/api");
    }

    #[test]
    fn api_errors_read_like_the_spec() {
        let e = ApiError {
            status: StatusCode::CONFLICT,
            code: "invalid_state".into(),
            message: "job is completed: only failed or cancelled jobs can be retried".into(),
            details: Value::Null,
        };
        assert_eq!(
            e.to_string(),
            "error (409 invalid_state): job is completed: only failed or cancelled jobs can be retried"
        );
    }

    #[test]
    fn servers_must_be_http_urls() {
        let opts = ClientOpts { server: "127.0.0.1:8080".into(), api_key: None, json: true, timeout_ms: 1000 };
        assert!(Api::new(&opts).is_err());
    }
}
