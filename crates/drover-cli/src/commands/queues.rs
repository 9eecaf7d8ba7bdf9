//! `drover queues list|pause|resume|set|retry-failed`.

use crate::cli::{Limit, QueueSetArgs, QueuesArgs, QueuesCommand};
use crate::client::Api;
use crate::client::output::{Output, Table, cell};
use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};

/// The per-state counts, in the order the table shows them.
const STATES: [&str; 7] = ["waiting", "delayed", "waiting-children", "active", "completed", "failed", "cancelled"];

/// Runs a `drover queues` subcommand.
pub async fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let out = Output::new(args.client.json);
    match args.command {
        QueuesCommand::List => {
            let page = api.get(&["api", "queues"], &[]).await?;
            out.show(&page, |page| render_queues(page.get("items").and_then(Value::as_array).map_or(&[], |v| v)))
        }
        QueuesCommand::Pause(q) => {
            let queue = api.call(Method::POST, &["api", "queues", &q.queue, "pause"], None::<&Value>).await?;
            out.show(&queue, |queue| format!("queue {} is paused\n", cell(queue, "name")))
        }
        QueuesCommand::Resume(q) => {
            let queue = api.call(Method::POST, &["api", "queues", &q.queue, "resume"], None::<&Value>).await?;
            out.show(&queue, |queue| format!("queue {} is running\n", cell(queue, "name")))
        }
        QueuesCommand::Set(set_args) => {
            let queue = set(&api, set_args).await?;
            out.show(&queue, |queue| render_queues(std::slice::from_ref(queue)))
        }
        QueuesCommand::RetryFailed(q) => {
            let answer = api.call(Method::POST, &["api", "queues", &q.queue, "retry-failed"], None::<&Value>).await?;
            out.show(&answer, |a| format!("retried {} failed jobs of {}\n", cell(a, "retried"), q.queue))
        }
    }
}

/// `PUT /api/queues/{name}` replaces the whole configuration, so the current
/// one is read first and only the settings named on the command line change.
async fn set(api: &Api, args: QueueSetArgs) -> anyhow::Result<Value> {
    if args.concurrency.is_none() && args.rate_limit.is_none() {
        bail!("nothing to set: give --concurrency and/or --rate-limit");
    }
    let current = api.get(&["api", "queues", &args.queue], &[]).await?;
    let mut config = json!({
        "concurrency": current.get("concurrency").cloned().unwrap_or(Value::Null),
        "rate_limit": current.get("rate_limit").cloned().unwrap_or(Value::Null),
    });
    // Carry the settings this command does not edit, when the server shows them.
    for key in ["default_job_options", "retention"] {
        if let Some(value) = current.get(key).filter(|v| !v.is_null()) {
            config[key] = value.clone();
        }
    }
    apply_limits(&mut config, args.concurrency, args.rate_limit);
    api.call(Method::PUT, &["api", "queues", &args.queue], Some(&config)).await
}

/// Writes the limits named on the command line into a config object
/// (`concurrency`, `rate_limit`), leaving the others as they are; `none`
/// clears one. Shared by `queues set` and `rate-limits set`.
pub fn apply_limits(config: &mut Value, concurrency: Option<Limit<u32>>, rate_limit: Option<Limit<(u32, u64)>>) {
    match concurrency {
        Some(Limit::To(n)) => config["concurrency"] = json!(n),
        Some(Limit::Unlimited) => config["concurrency"] = Value::Null,
        None => {}
    }
    match rate_limit {
        Some(Limit::To((max, per_ms))) => config["rate_limit"] = json!({ "max": max, "per_ms": per_ms }),
        Some(Limit::Unlimited) => config["rate_limit"] = Value::Null,
        None => {}
    }
}

/// A rate limit as the tables show it: `MAX/PER_MSms`, blank for none.
pub fn render_rate(rate: Option<&Value>) -> String {
    rate.filter(|r| !r.is_null()).map_or_else(String::new, |r| format!("{}/{}ms", cell(r, "max"), cell(r, "per_ms")))
}

fn render_queues(queues: &[Value]) -> String {
    let mut headers = vec!["QUEUE", "PAUSED"];
    headers.extend([">WAITING", ">DELAYED", ">W-CHILDREN", ">ACTIVE", ">COMPLETED", ">FAILED", ">CANCELLED"]);
    headers.extend([">CONCURRENCY", "RATE LIMIT", "THROTTLED UNTIL"]);
    let mut table = Table::new(&headers);
    for q in queues {
        let counts = q.get("counts").unwrap_or(&Value::Null);
        let mut row = vec![cell(q, "name"), if q.get("paused") == Some(&json!(true)) { "yes" } else { "no" }.into()];
        row.extend(STATES.iter().map(|s| cell(counts, s)));
        row.push(cell(q, "concurrency"));
        row.push(render_rate(q.get("rate_limit")));
        row.push(cell(q, "throttled_until"));
        table.row(row);
    }
    table.render()
}
