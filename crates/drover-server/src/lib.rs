//! Drover's HTTP server: the REST API, the worker protocol for workers in
//! any language, and live events, per `shared/spec/http-api.md`.
//!
//! [`router`] builds the axum [`Router`] from an [`AppState`]; [`run`] serves
//! it on a listener the caller bound, until the caller's shutdown future
//! resolves. Tests start a real server on port 0 the same way.
//!
//! | module | what it holds |
//! |---|---|
//! | [`error`] | [`ApiError`] and the one table of error codes |
//! | [`extract`] | JSON and query extractors that answer with [`ApiError`] |
//! | [`dto`] | wire shapes: jobs, attempts, logs, pages, job specs |
//! | [`event_log`] | recent events kept for SSE resume, read by every subscriber |
//! | [`leases`] | lease lengths HTTP workers asked for; lease tokens on the wire |
//! | `routes` | one module per resource: health, jobs, queues, workers, job reports, events |

pub mod dto;
pub mod error;
pub mod event_log;
pub mod extract;
pub mod leases;
mod routes;

pub use error::{ApiError, ApiResult, ErrorCode};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use drover::Client;
use event_log::EventLog;
use leases::LeaseBook;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted: 1 MiB.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// What every handler shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The door to the store.
    pub client: Client,
    /// Fired when the server shuts down, so long-lived responses (long
    /// polls, event streams) end and graceful shutdown can complete.
    pub shutdown: CancellationToken,
    /// Recent events, for SSE and WebSocket subscribers and resume.
    pub events: Arc<EventLog>,
    /// Lease lengths granted to HTTP workers, for their heartbeats.
    pub leases: Arc<LeaseBook>,
}

impl AppState {
    /// State over a client. Starts the task that copies the store's events
    /// into the [`EventLog`] (it stops when `shutdown` fires), so it must be
    /// called inside a tokio runtime.
    pub fn new(client: Client) -> Self {
        let shutdown = CancellationToken::new();
        // Subscribed here, before any request can run, so that no event of
        // this server's life is missing from the log.
        let events = EventLog::start(client.store().events(), shutdown.clone());
        Self { client, shutdown, events, leases: Arc::new(LeaseBook::default()) }
    }
}

/// The whole API as an axum router.
pub fn router(state: AppState) -> Router {
    routes::router()
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// accepting, ends long-lived responses and waits for requests in flight.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown.clone();
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            token.cancel();
        })
        .await
}
