//! `drover serve`: opens the store, runs maintenance, and serves the HTTP
//! API until SIGINT/SIGTERM.

use crate::cli::ServeArgs;
use crate::database::DatabaseUrl;
use anyhow::Context;
use drover::{Client, Maintenance, MaintenanceConfig};
use drover_server::AppState;
use drover_sqlite::Synchronous;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(&args.database)?;
    let store = url.open(Synchronous::Full).await?;
    let maintenance = Maintenance::start(store.clone(), MaintenanceConfig::default());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // One line, on stdout, that scripts and tests can read for the address.
    println!("drover listening on http://{addr} (store: {}; dashboard: http://{addr}/ — not built yet)", args.database);
    if !addr.ip().is_loopback() {
        tracing::warn!("listening beyond loopback with no API keys: anyone who can reach {addr} can use the API");
    }
    let state = AppState::new(Client::new(store));
    drover_server::run(listener, state, shutdown_signal()).await.context("serving the API")?;
    tracing::info!("stopped serving; finishing maintenance");
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
