//! The `drover` binary: parses arguments and calls the libraries.
//!
//! | module | what it holds |
//! |---|---|
//! | `cli` | every command's arguments (clap) |
//! | `serve`, `demo`, `bench`, `database` | the server (with its `--demo` sample workers) and the in-process benchmark |
//! | `client` | the HTTP client of the API, its event-stream parser, and output (tables or JSON) |
//! | `commands` | the client commands: enqueue, jobs, queues, schedules, import |

mod bench;
mod bench_http;
mod cli;
mod client;
mod commands;
mod database;
mod demo;
mod serve;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
    let outcome = match cli.command {
        cli::Command::Serve(args) => done(serve::run(args).await),
        cli::Command::Bench(args) => done(bench::run(args).await),
        cli::Command::Enqueue(args) => done(commands::enqueue::run(args).await),
        cli::Command::Jobs(args) => commands::jobs::run(args).await,
        cli::Command::Queues(args) => done(commands::queues::run(args).await),
        cli::Command::RateLimits(args) => done(commands::rate_limits::run(args).await),
        cli::Command::Flows(args) => done(commands::batches::run_flows(args).await),
        cli::Command::Batches(args) => done(commands::batches::run(args).await),
        cli::Command::Import(args) => done(commands::import::run(args).await),
        cli::Command::Schedules(args) => done(commands::schedules::run(args).await),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // An API error already reads `error (409 invalid_state): ...`.
            if error.downcast_ref::<client::ApiError>().is_some() && error.chain().count() == 1 {
                eprintln!("{error}");
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}
