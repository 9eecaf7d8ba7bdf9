//! `drover jobs list|show|retry|cancel|logs|children` (and `watch`, in
//! [`super::watch`]).

use crate::cli::{JobsArgs, JobsCommand, JobsListArgs};
use crate::client::Api;
use crate::client::output::{Output, Table, cell, progress_cell, short_time, text};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::ExitCode;

/// Most log lines `jobs logs` reads.
const MAX_LOG_LINES: usize = 100_000;

/// Runs a `drover jobs` subcommand.
pub async fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.client)?;
    let out = Output::new(args.client.json);
    match args.command {
        JobsCommand::List(list_args) => list(&api, out, list_args).await?,
        JobsCommand::Show(id) => {
            let job = api.job(&id.id).await?;
            out.show(&job, render_job)?;
        }
        JobsCommand::Retry(id) => {
            let job = api.call(Method::POST, &["api", "jobs", &id.id, "retry"], None::<&Value>).await?;
            out.show(&job, |job| format!("job {} is {} again\n", cell(job, "id"), cell(job, "state")))?;
        }
        JobsCommand::Cancel(id) => {
            let job = api.call(Method::DELETE, &["api", "jobs", &id.id], None::<&Value>).await?;
            out.show(&job, |job| {
                if job.get("state").and_then(Value::as_str) == Some("cancelled") {
                    format!("job {} is cancelled\n", cell(job, "id"))
                } else {
                    format!("job {} is {}; its worker has been asked to stop\n", cell(job, "id"), cell(job, "state"))
                }
            })?;
        }
        JobsCommand::Logs(id) => {
            let lines = api.list_all(&["api", "jobs", &id.id, "logs"], &[], MAX_LOG_LINES).await?;
            out.show(&json!({ "items": lines }), |_| render_logs(&lines))?;
        }
        JobsCommand::Children(id) => {
            let page = api.get(&["api", "jobs", &id.id, "children"], &[("limit", "1000".to_owned())]).await?;
            out.show(&page, render_jobs)?;
        }
        JobsCommand::Watch(id) => return super::watch::run(&api, out, &id.id).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(api: &Api, out: Output, args: JobsListArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    let mut add = |key, value: Option<String>| {
        if let Some(value) = value {
            query.push((key, value));
        }
    };
    add("queue", args.queue);
    add("state", args.state.map(|s| s.as_str().to_owned()));
    add("name", args.name);
    add("batch_id", args.batch_id);
    add("parent_id", args.parent_id);
    add("limit", args.limit.map(|l| l.to_string()));
    add("cursor", args.cursor);
    let page = api.get(&["api", "jobs"], &query).await?;
    out.show(&page, render_jobs)
}

/// A page of jobs as a table, with the cursor of the next page if any.
pub fn render_jobs(page: &Value) -> String {
    let mut table = Table::new(&["ID", "QUEUE", "NAME", "STATE", ">ATTEMPTS", ">PROGRESS", "CREATED"]);
    for job in page.get("items").and_then(Value::as_array).into_iter().flatten() {
        table.row(vec![
            cell(job, "id"),
            cell(job, "queue"),
            cell(job, "name"),
            cell(job, "state"),
            format!("{}/{}", cell(job, "attempts_made"), cell(job, "max_attempts")),
            progress_cell(job.get("progress").unwrap_or(&Value::Null)),
            short_time(job.get("created_at").unwrap_or(&Value::Null)),
        ]);
    }
    let mut text = table.render();
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        text.push_str(&format!("more: --cursor {cursor}\n"));
    }
    text
}

/// A job as `field: value` lines, then its attempts as a table.
fn render_job(job: &Value) -> String {
    let mut lines = Table::new(&["", ""]);
    let fields = [
        "id",
        "queue",
        "name",
        "state",
        "priority",
        "created_at",
        "run_at",
        "started_at",
        "finished_at",
        "worker_id",
        "parent_id",
        "batch_id",
    ];
    for field in fields {
        let value = cell(job, field);
        if !value.is_empty() {
            lines.row(vec![format!("{field}:"), value]);
        }
    }
    lines.row(vec!["attempts:".into(), format!("{} of {}", cell(job, "attempts_made"), cell(job, "max_attempts"))]);
    lines.row(vec!["progress:".into(), progress_cell(job.get("progress").unwrap_or(&Value::Null))]);
    for field in ["payload", "result", "error"] {
        let value = cell(job, field);
        if !value.is_empty() {
            lines.row(vec![format!("{field}:"), value]);
        }
    }
    // The heading row of a two-column key/value list is empty: skip it.
    let rendered = lines.render();
    let mut shown: String = rendered.split_inclusive('\n').skip(1).collect();
    let attempts = job.get("attempts").and_then(Value::as_array).filter(|a| !a.is_empty());
    if let Some(attempts) = attempts {
        let mut table = Table::new(&[">#", "OUTCOME", "STARTED", "FINISHED", "WORKER", "ERROR"]);
        for a in attempts {
            let error = a.get("error").and_then(|e| e.get("message")).map(text).unwrap_or_default();
            table.row(vec![
                cell(a, "attempt"),
                cell(a, "outcome"),
                short_time(a.get("started_at").unwrap_or(&Value::Null)),
                short_time(a.get("finished_at").unwrap_or(&Value::Null)),
                cell(a, "worker_id"),
                error,
            ]);
        }
        shown.push('\n');
        shown.push_str(&table.render());
    }
    shown
}

fn render_logs(lines: &[Value]) -> String {
    let mut table = Table::new(&["AT", "LEVEL", "MESSAGE", "METADATA"]);
    for line in lines {
        let metadata = match line.get("metadata") {
            Some(Value::Object(m)) if m.is_empty() => String::new(),
            Some(m) => text(m),
            None => String::new(),
        };
        table.row(vec![cell(line, "at"), cell(line, "level"), cell(line, "message"), metadata]);
    }
    table.render()
}
