//! `drover serve`: opens the store, runs maintenance and the scheduler, and
//! serves the HTTP API until SIGINT/SIGTERM; with `--demo`, sample workers
//! and jobs too.

use crate::cli::ServeArgs;
use crate::database::DatabaseUrl;
use crate::demo::Demo;
use anyhow::Context;
use drover::{Client, Maintenance, MaintenanceConfig, Scheduler, SchedulerConfig};
use drover_server::AppState;
use drover_sqlite::Synchronous;
use std::time::Duration;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(&args.database)?;
    if args.schema.is_some() && !matches!(url, DatabaseUrl::Postgres(_)) {
        anyhow::bail!("--schema applies to a postgres:// database only");
    }
    let store = url.open(Synchronous::Full, args.schema.clone()).await?;
    let maintenance = Maintenance::start(store.clone(), MaintenanceConfig::default());
    // Every server runs a scheduler; ticks raced by several insert one job.
    let scheduler = Scheduler::start(store.clone(), SchedulerConfig::default());
    // With no API keys (they arrive with workspaces), the API is open: the
    // contract allows that on loopback only.
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {}: without API keys the API is open, so it listens on loopback only \
             (e.g. --listen 127.0.0.1:8080)",
            args.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let client = Client::new(store);
    // The demo works on the server's own client, so its jobs are the ones the
    // API lists and streams.
    let demo = args.demo.then(|| Demo::start(client.clone(), Duration::from_millis(args.demo_interval_ms)));
    let demo_note = if demo.is_some() { "; demo: sample workers and jobs running on queues demo-*" } else { "" };
    // One line, on stdout, that scripts and tests can read for the address
    // (it must stay the first `http://` word of the line).
    println!(
        "drover listening on http://{addr} (store: {}; API docs: http://{addr}/docs; dashboard: not built yet; \
         no API keys: open to local clients only{demo_note})",
        url.display()
    );
    let state = AppState::new(client);
    let served = drover_server::run(listener, state, shutdown_signal()).await.context("serving the API");
    // The demo worker talks to the store, not the API, so it can finish after
    // the listener closed; it stops even when serving failed, so its running
    // jobs are handed back rather than left to lease expiry.
    if let Some(demo) = demo {
        tracing::info!("stopping the demo worker");
        demo.shutdown().await;
    }
    served?;
    tracing::info!("stopped serving; finishing maintenance");
    scheduler.stop().await;
    maintenance.stop().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
