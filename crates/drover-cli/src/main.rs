//! The `drover` binary: parses arguments and calls the libraries.

mod bench;
mod cli;
mod database;
mod serve;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        cli::Command::Serve(args) => serve::run(args).await,
        cli::Command::Bench(args) => bench::run(args).await,
    }
}
