//! Drover: durable background jobs for Rust programs.
//!
//! Embed it to enqueue jobs into a store (SQLite by default) and process them
//! with async handlers; every state change is durable before the call that
//! made it returns, and a process killed mid-job has its jobs recovered.
//!
//! | module | what it holds |
//! |---|---|
//! | [`client`] | [`Client`]: enqueue, flows, batches, get, list, cancel, retry, logs, subscribe |
//! | [`events`] | [`EventFilter`] and [`EventStream`]: in-process event streams |
//! | [`handler`] | the typed [`Job`] trait, [`HandlerError`] |
//! | [`context`] | [`JobContext`]: what a running handler can see and do |
//! | [`worker`] | [`Worker`]: claims, runs, heartbeats and reports jobs |
//! | [`maintenance`] | [`Maintenance`]: rescues expired leases, promotes due jobs |
//! | [`scheduler`] | [`Scheduler`]: fires cron and interval schedules |
//! | [`wait`] | [`wait::wait_for_work`]: how an idle fetcher sleeps without losing wake-ups |
//!
//! ```no_run
//! use drover::{Client, HandlerError, JobContext, JobSpec, Worker};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::open_sqlite("jobs.db").await?;
//! let worker = Worker::builder(client.clone())
//!     .queue("emails", 20)
//!     .handler("send_welcome", |ctx: JobContext| async move {
//!         let user = ctx.payload()["user_id"].as_u64().ok_or_else(|| HandlerError::fatal("no user_id"))?;
//!         ctx.progress(50.0).await?;
//!         Ok(json!({"sent_to": user}))
//!     })
//!     .start();
//! client.enqueue(JobSpec::new("emails", "send_welcome").payload(json!({"user_id": 7}))).await?;
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

pub mod client;
pub mod context;
pub mod error;
pub mod events;
pub mod handler;
pub mod maintenance;
pub mod scheduler;
pub mod wait;
pub mod worker;

pub use client::Client;
pub use context::JobContext;
pub use error::{Error, Result};
pub use events::{EventFilter, EventStream, EventStreamError};
pub use handler::{HandlerError, HandlerErrorKind, Job, ResultExt};
pub use maintenance::{Maintenance, MaintenanceConfig};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use worker::{Worker, WorkerBuilder, WorkerHandle};

/// The job model (`drover_core`): specs, records, states, backoff, events.
pub use drover_core as model;
pub use drover_core::{
    Backoff, BatchSpec, ChildFailure, Event, EventKind, FlowSpec, JobId, JobSpec, JobState, KeyLimit, LogLevel,
    Progress, QueueConfig, RateLimit, ScheduleSpec,
};
/// The embedded SQLite store (`drover_sqlite`).
pub use drover_sqlite as sqlite;
/// The storage seam (`drover_store`).
pub use drover_store as store;
