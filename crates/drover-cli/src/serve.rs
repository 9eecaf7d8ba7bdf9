//! `drover serve`. For now it opens the store and runs maintenance (lease
//! rescue, promotion of due jobs) until SIGINT/SIGTERM; the HTTP API lands
//! with the next milestone (issue 3).

use crate::cli::ServeArgs;
use crate::database::DatabaseUrl;
use drover::{Maintenance, MaintenanceConfig};
use drover_sqlite::Synchronous;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(&args.database)?;
    let store = url.open(Synchronous::Full).await?;
    let maintenance = Maintenance::start(store, MaintenanceConfig::default());
    tracing::info!(
        store = %args.database,
        listen = %args.listen,
        "drover serve: store open, maintenance running; the HTTP API and dashboard are not built yet (press Ctrl-C to stop)"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
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
