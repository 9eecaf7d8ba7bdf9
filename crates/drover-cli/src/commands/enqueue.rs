//! `drover enqueue`: `POST /api/jobs`, printing the job as JSON.

use crate::cli::EnqueueArgs;
use crate::client::Api;
use crate::client::output::Output;
use anyhow::Context;
use serde_json::{Map, Value};
use std::io::Read;

/// Runs `drover enqueue`.
pub async fn run(args: EnqueueArgs) -> anyhow::Result<()> {
    let payload = match (&args.payload, &args.payload_file) {
        (Some(text), _) => serde_json::from_str(text).context("--payload is not valid JSON")?,
        (None, Some(path)) => {
            let text = if path.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("reading the payload from stdin")?;
                text
            } else {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
            };
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?
        }
        (None, None) => Value::Null,
    };
    let mut spec = Map::new();
    spec.insert("queue".into(), args.queue.into());
    spec.insert("name".into(), args.name.into());
    spec.insert("payload".into(), payload);
    if let Some(id) = args.id {
        spec.insert("id".into(), id.into());
    }
    super::apply_job_options(&mut spec, &args.job);
    let api = Api::new(&args.client)?;
    let job = api.job_create(&Value::Object(spec)).await?;
    // The contract: enqueue prints the job as JSON, terminal or not.
    Output { json: true, terminal: false }.print_json(&job)
}
