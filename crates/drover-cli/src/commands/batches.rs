//! `drover flows create` and `drover batches create|show`.

use crate::cli::{BatchesArgs, BatchesCommand, FlowsArgs, FlowsCommand};
use crate::client::Api;
use crate::client::output::{Output, Table, cell};
use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::BufReader;
use std::path::Path;

/// Runs a `drover flows` subcommand.
pub async fn run_flows(args: FlowsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let out = Output::new(args.client.json);
    match args.command {
        FlowsCommand::Create(file) => {
            let text =
                std::fs::read_to_string(&file.file).with_context(|| format!("reading {}", file.file.display()))?;
            let flow: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.file.display()))?;
            let created = api.call(Method::POST, &["api", "flows"], Some(&flow)).await?;
            out.show(&created, |created| {
                super::jobs::render_jobs(&json!({ "items": created.get("items").cloned().unwrap_or_default() }))
            })
        }
    }
}

/// Runs a `drover batches` subcommand.
pub async fn run(args: BatchesArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let out = Output::new(args.client.json);
    match args.command {
        BatchesCommand::Create(create) => {
            let jobs = read_jobs(&create.file)?;
            let on_complete = match &create.on_complete {
                None => Value::Null,
                Some(text) => serde_json::from_str(text).context("--on-complete is not valid JSON")?,
            };
            let body = json!({ "jobs": jobs, "on_complete": on_complete });
            let created = api.call(Method::POST, &["api", "batches"], Some(&body)).await?;
            out.show(&created, |c| format!("batch {} created with {} jobs\n", cell(c, "id"), cell(c, "total")))
        }
        BatchesCommand::Show(id) => {
            let batch = api.get(&["api", "batches", &id.id], &[]).await?;
            out.show(&batch, render_batch)
        }
    }
}

/// The job specs of a JSONL file, each line an object; the server checks
/// each spec and names the bad one (`jobs[i].field`).
fn read_jobs(path: &Path) -> anyhow::Result<Vec<Value>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut jobs = Vec::new();
    for record in super::import::jsonl(BufReader::new(file)) {
        let (line, value) = record?;
        if !value.is_object() {
            bail!("line {line}: expected a JSON object (a job spec)");
        }
        jobs.push(value);
    }
    if jobs.is_empty() {
        bail!("{} holds no jobs", path.display());
    }
    Ok(jobs)
}

fn render_batch(batch: &Value) -> String {
    let mut table = Table::new(&[
        "BATCH",
        "STATE",
        ">TOTAL",
        ">WAITING",
        ">ACTIVE",
        ">COMPLETED",
        ">FAILED",
        ">CANCELLED",
        ">PROGRESS",
    ]);
    table.row(vec![
        cell(batch, "id"),
        cell(batch, "state"),
        cell(batch, "total"),
        cell(batch, "waiting"),
        cell(batch, "active"),
        cell(batch, "completed"),
        cell(batch, "failed"),
        cell(batch, "cancelled"),
        format!("{}%", cell(batch, "progress")),
    ]);
    table.render()
}
