//! The client commands, one module per resource. Each parses nothing (clap
//! did), calls the API through [`crate::client::Api`], and prints through
//! [`crate::client::output::Output`].

pub mod batches;
pub mod enqueue;
pub mod import;
pub mod jobs;
pub mod queues;
pub mod rate_limits;
pub mod schedules;
pub mod watch;

use crate::cli::JobOptions;
use serde_json::{Map, Value};

/// Writes the per-job options that were given into a job spec object,
/// leaving fields the object already has alone.
pub fn apply_job_options(spec: &mut Map<String, Value>, options: &JobOptions) {
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            spec.entry(key).or_insert(value);
        }
    };
    set("priority", options.priority.map(Value::from));
    set("delay_ms", options.delay_ms.map(Value::from));
    set("attempts", options.attempts.map(Value::from));
}
