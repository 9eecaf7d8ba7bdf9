//! Command-line arguments (see `shared/spec/cli.md`). Every flag also reads
//! `DROVER_` + its name in upper snake case.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;

/// Durable background jobs: server, client and benchmark.
#[derive(Debug, Parser)]
#[command(name = "drover", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Drover server on a store.
    Serve(ServeArgs),
    /// Measure enqueue, processing and latency against a store.
    Bench(BenchArgs),
}

/// Arguments of `drover serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "DROVER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Store URL: `sqlite://PATH`.
    #[arg(long, env = "DROVER_DATABASE", default_value = "sqlite://drover.db")]
    pub database: String,
}

/// Arguments of `drover bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Store URL (`sqlite://PATH`); a fresh temporary SQLite file by default.
    #[arg(long, env = "DROVER_DATABASE")]
    pub database: Option<String>,
    /// Jobs enqueued in bulk and then processed.
    #[arg(long, env = "DROVER_JOBS", default_value_t = 100_000)]
    pub jobs: u32,
    /// Worker concurrency, and concurrent callers of the single-enqueue phase.
    #[arg(long, env = "DROVER_CONCURRENCY", default_value_t = 50)]
    pub concurrency: usize,
    /// Size of each job's payload.
    #[arg(long, env = "DROVER_PAYLOAD_BYTES", default_value_t = 0)]
    pub payload_bytes: usize,
    /// Jobs per second offered in the latency phase.
    #[arg(long, env = "DROVER_RATE", default_value_t = 1_000)]
    pub rate: u32,
    /// Length of the latency phase, in seconds.
    #[arg(long, env = "DROVER_LATENCY_SECONDS", default_value_t = 5)]
    pub latency_seconds: u32,
    /// SQLite durability: `full` (survives power loss) or `normal`.
    #[arg(long, env = "DROVER_SYNCHRONOUS", default_value = "full")]
    pub synchronous: String,
    /// Print the figures as one JSON object on the last line.
    #[arg(long, env = "DROVER_JSON")]
    pub json: bool,
}
