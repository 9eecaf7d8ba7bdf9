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
//! | `routes` | one module per resource: health, jobs, queues, workers, events |

pub mod dto;
pub mod error;
pub mod extract;
mod routes;

pub use error::{ApiError, ApiResult, ErrorCode};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use drover::Client;
use std::future::Future;
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
}

impl AppState {
    /// State over a client.
    pub fn new(client: Client) -> Self {
        Self { client, shutdown: CancellationToken::new() }
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
