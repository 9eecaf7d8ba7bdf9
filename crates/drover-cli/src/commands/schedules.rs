//! `drover schedules list|show|add|remove|pause|resume`.

use crate::cli::{ScheduleAddArgs, SchedulesArgs, SchedulesCommand};
use crate::client::Api;
use crate::client::output::{Output, Table, cell, short_time};
use anyhow::Context;
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Runs a `drover schedules` subcommand.
pub async fn run(args: SchedulesArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let out = Output::new(args.client.json);
    match args.command {
        SchedulesCommand::List => {
            let items = api.list_all(&["api", "schedules"], &[], usize::MAX).await?;
            let page = json!({ "items": items, "next_cursor": null });
            out.show(&page, |page| render(page.get("items").and_then(Value::as_array).map_or(&[], |v| v)))
        }
        SchedulesCommand::Show(s) => {
            let schedule = api.get(&["api", "schedules", &s.id], &[]).await?;
            // One schedule reads best whole, job template included.
            Output { json: true, terminal: false }.print_json(&schedule)
        }
        SchedulesCommand::Add(add_args) => {
            let body = add_body(add_args)?;
            let schedule = api.call(Method::POST, &["api", "schedules"], Some(&body)).await?;
            out.show(&schedule, |s| {
                format!("schedule {} saved; next run at {}\n", cell(s, "id"), cell(s, "next_run_at"))
            })
        }
        SchedulesCommand::Remove(s) => {
            let answer = api.call(Method::DELETE, &["api", "schedules", &s.id], None::<&Value>).await?;
            out.show(&answer, |a| format!("schedule {} removed\n", cell(a, "id")))
        }
        SchedulesCommand::Pause(s) => {
            let schedule = api.call(Method::POST, &["api", "schedules", &s.id, "pause"], None::<&Value>).await?;
            out.show(&schedule, |s| format!("schedule {} is paused\n", cell(s, "id")))
        }
        SchedulesCommand::Resume(s) => {
            let schedule = api.call(Method::POST, &["api", "schedules", &s.id, "resume"], None::<&Value>).await?;
            out.show(&schedule, |s| {
                format!("schedule {} is running; next run at {}\n", cell(s, "id"), cell(s, "next_run_at"))
            })
        }
    }
}

/// The body of `POST /api/schedules` from the command line; the server
/// validates it (clap already made `--cron` and `--every-ms` exclusive).
fn add_body(args: ScheduleAddArgs) -> anyhow::Result<Value> {
    let payload = match &args.payload {
        Some(text) => serde_json::from_str(text).context("--payload is not valid JSON")?,
        None => Value::Null,
    };
    let mut job = Map::new();
    job.insert("queue".into(), args.queue.into());
    job.insert("name".into(), args.name.into());
    job.insert("payload".into(), payload);
    super::apply_job_options(&mut job, &args.job);
    let mut body = json!({ "id": args.id, "job": job });
    if let Some(cron) = args.cron {
        body["cron"] = cron.into();
    }
    if let Some(every_ms) = args.every_ms {
        body["every_ms"] = every_ms.into();
    }
    if let Some(tz) = args.timezone {
        body["timezone"] = tz.into();
    }
    Ok(body)
}

fn render(schedules: &[Value]) -> String {
    let mut table = Table::new(&["ID", "CADENCE", "TIME ZONE", "QUEUE", "NAME", "PAUSED", "NEXT RUN", "LAST RUN"]);
    for s in schedules {
        let cadence = match s.get("cron").and_then(Value::as_str) {
            Some(cron) => cron.to_owned(),
            None => format!("every {} ms", cell(s, "every_ms")),
        };
        let job = s.get("job").unwrap_or(&Value::Null);
        table.row(vec![
            cell(s, "id"),
            cadence,
            cell(s, "timezone"),
            cell(job, "queue"),
            cell(job, "name"),
            if s.get("paused") == Some(&json!(true)) { "yes" } else { "no" }.into(),
            short_time(s.get("next_run_at").unwrap_or(&Value::Null)),
            short_time(s.get("last_run_at").unwrap_or(&Value::Null)),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_cadence_job_and_times() {
        let rows = [
            json!({"id": "nightly", "cron": "0 2 * * *", "every_ms": null, "timezone": "UTC", "paused": false,
                   "job": {"queue": "ops", "name": "cleanup"}, "next_run_at": "2026-01-02T02:00:00.000Z",
                   "last_run_at": null}),
            json!({"id": "beat", "cron": null, "every_ms": 60000, "timezone": null, "paused": true,
                   "job": {"queue": "ops", "name": "ping"}, "next_run_at": "2026-01-01T00:01:00Z",
                   "last_run_at": "2026-01-01T00:00:00Z"}),
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID"), "{table}");
        assert!(lines[1].contains("0 2 * * *") && lines[1].contains("2026-01-02T02:00:00Z"), "{table}");
        assert!(lines[2].contains("every 60000 ms") && lines[2].contains("yes"), "{table}");
    }

    #[test]
    fn add_body_sets_exactly_what_was_given() {
        let args = ScheduleAddArgs {
            id: "s".into(),
            cron: None,
            every_ms: Some(5_000),
            timezone: None,
            queue: "q".into(),
            name: "n".into(),
            payload: Some(r#"{"a": 1}"#.into()),
            job: crate::cli::JobOptions { priority: Some(-1), delay_ms: None, attempts: None },
        };
        let body = add_body(args).unwrap();
        assert_eq!(
            body,
            json!({"id": "s", "every_ms": 5000, "job": {"queue": "q", "name": "n", "payload": {"a": 1}, "priority": -1}})
        );
    }
}
