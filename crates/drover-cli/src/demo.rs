//! `drover serve --demo`: sample workers and a trickle of sample jobs, so a
//! newcomer sees the API and the dashboard move without writing a worker.
//!
//! Three queues, each showing off part of the product:
//!
//! | queue | job | what it shows |
//! |---|---|---|
//! | `demo-import` | `import_contacts` | detailed progress over ~5 s, log lines |
//! | `demo-enrich` | `enrich_lead` | a rate-limit key (`crm`: 2 at once, 5 per second), 429 holds, retries, a custom `lead:add` event |
//! | `demo-report` | `build_report` | fan-out: enqueues follow-up jobs |
//!
//! The handlers pace themselves with `tokio::time::sleep` (that is the
//! demo's workload) and stop as soon as their job is cancelled.

use drover::{
    ChildFailure, Client, HandlerError, JobContext, JobSpec, KeyLimit, LogLevel, Progress, RateLimit, Worker,
    WorkerHandle,
};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Queue of the import jobs.
pub const IMPORT_QUEUE: &str = "demo-import";
/// Queue of the enrichment jobs.
pub const ENRICH_QUEUE: &str = "demo-enrich";
/// Queue of the report jobs.
pub const REPORT_QUEUE: &str = "demo-report";

const IMPORT_JOB: &str = "import_contacts";
const ENRICH_JOB: &str = "enrich_lead";
/// The rate-limit key of the pretend CRM that `enrich_lead` calls.
const CRM_KEY: &str = "crm";
const REPORT_JOB: &str = "build_report";

/// How long shutdown lets running demo jobs finish before handing them back.
/// Short, because nobody should wait on sample work after Ctrl-C; an import
/// handed back simply runs again on the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The running demo: its worker and the producer of sample jobs.
pub struct Demo {
    worker: WorkerHandle,
    producer: JoinHandle<()>,
    stop_producer: oneshot::Sender<()>,
}

impl Demo {
    /// Starts the demo worker on `client` (the server's own store, so its
    /// jobs show in the API) and a producer that enqueues one sample job
    /// every `interval` to twice that, at random.
    pub fn start(client: Client, interval: Duration) -> Demo {
        let worker = Worker::builder(client.clone())
            .worker_id(format!("drover-demo:{}", std::process::id()))
            .queue(IMPORT_QUEUE, 2)
            .queue(ENRICH_QUEUE, 4)
            .queue(REPORT_QUEUE, 1)
            .handler(IMPORT_JOB, import_contacts)
            .handler(ENRICH_JOB, enrich_lead)
            .handler(REPORT_JOB, build_report)
            .shutdown_grace(SHUTDOWN_GRACE)
            // `serve` already runs maintenance on this store; a second loop
            // would only duplicate its work.
            .maintenance(None)
            .start();
        // A zero interval would enqueue in a busy loop.
        let interval = interval.max(Duration::from_millis(10));
        let (stop_producer, stopped) = oneshot::channel();
        let producer = tokio::spawn(produce(client, interval, stopped));
        Demo { worker, producer, stop_producer }
    }

    /// Stops enqueueing, then shuts the worker down gracefully (running jobs
    /// get the shutdown grace, then are handed back).
    pub async fn shutdown(self) {
        let _ = self.stop_producer.send(());
        let _ = self.producer.await;
        self.worker.shutdown().await;
    }
}

/// Enqueues one job of each kind at once (so every demo queue shows up
/// straight away), then a random mix until told to stop.
async fn produce(client: Client, interval: Duration, mut stop: oneshot::Receiver<()>) {
    let mut serial = 0u64;
    let crm = KeyLimit { concurrency: Some(2), rate_limit: Some(RateLimit { max: 5, per_ms: 1_000 }) };
    if let Err(error) = client.rate_limit_set(CRM_KEY, crm).await {
        tracing::warn!(%error, "demo: could not set the crm rate limit");
    }
    for spec in [import_spec(serial), enrich_spec(serial), report_spec(serial)] {
        submit(&client, spec).await;
    }
    loop {
        // Jitter, so the charts look like traffic rather than a metronome.
        let pause = interval + interval.mul_f64(fastrand::f64());
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(pause) => {}
        }
        serial += 1;
        let spec = match fastrand::u64(..10) {
            0..=2 => import_spec(serial),
            3..=7 => enrich_spec(serial),
            _ => report_spec(serial),
        };
        submit(&client, spec).await;
    }
}

/// Enqueues, logging rather than failing: a missed sample job does not
/// matter, and the server must keep running.
async fn submit(client: &Client, spec: JobSpec) {
    if let Err(error) = client.enqueue(spec).await {
        tracing::warn!(%error, "demo: could not enqueue a sample job");
    }
}

fn import_spec(serial: u64) -> JobSpec {
    let rows = fastrand::u64(200..=2_000);
    JobSpec::new(IMPORT_QUEUE, IMPORT_JOB).payload(json!({ "file": format!("contacts-{serial:04}.csv"), "rows": rows }))
}

fn enrich_spec(serial: u64) -> JobSpec {
    JobSpec::new(ENRICH_QUEUE, ENRICH_JOB).payload(sample_lead(serial)).rate_limit_key(CRM_KEY)
}

fn report_spec(serial: u64) -> JobSpec {
    let regions = ["north", "south", "east", "west"];
    JobSpec::new(REPORT_QUEUE, REPORT_JOB).payload(
        json!({ "report": format!("weekly-{serial:04}"), "region": regions[fastrand::usize(..regions.len())] }),
    )
}

fn sample_lead(serial: u64) -> Value {
    let names = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"];
    let companies = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark"];
    let name = names[fastrand::usize(..names.len())];
    let company = companies[fastrand::usize(..companies.len())];
    json!({
        "lead_id": serial,
        "name": name,
        "email": format!("{}.{serial}@{}.example", name.to_lowercase(), company.to_lowercase()),
    })
}

/// Sleeps for `duration` unless the job is cancelled first; `Err` then, so
/// the handler returns at once.
async fn pace(ctx: &JobContext, duration: Duration) -> Result<(), HandlerError> {
    tokio::select! {
        () = ctx.cancelled() => Err(HandlerError::fatal("cancelled while running")),
        () = tokio::time::sleep(duration) => Ok(()),
    }
}

fn millis(range: std::ops::RangeInclusive<u64>) -> Duration {
    Duration::from_millis(fastrand::u64(range))
}

/// A CSV import in ten steps over ~5 s, reporting detailed progress (rows
/// processed and failed) and a few log lines.
async fn import_contacts(ctx: JobContext) -> Result<Value, HandlerError> {
    const STEPS: u64 = 10;
    let file = ctx.payload()["file"].as_str().unwrap_or("contacts.csv").to_owned();
    let total = ctx.payload()["rows"].as_u64().unwrap_or(1_000);
    ctx.log(LogLevel::Info, format!("importing {total} rows from {file}"), json!({ "file": file })).await?;
    let mut failed = 0;
    for step in 1..=STEPS {
        pace(&ctx, Duration::from_millis(500)).await?;
        let processed = total * step / STEPS;
        // A few bad rows per step, as real files have.
        failed += fastrand::u64(0..=2).min(processed - failed);
        let message = format!("{processed} of {total} rows");
        ctx.progress(Progress::Detailed { total: Some(total), processed, failed, message: Some(message) }).await?;
        if step % 4 == 0 {
            ctx.log(LogLevel::Info, format!("checkpoint at row {processed}"), json!({ "failed": failed })).await?;
        }
    }
    if failed > 0 {
        ctx.log(LogLevel::Warn, format!("{failed} rows skipped (invalid email)"), Value::Null).await?;
    }
    Ok(json!({ "file": file, "imported": total - failed, "skipped": failed }))
}

/// Looks a lead up in a pretend CRM: sometimes rate-limited (retried in 2 s
/// without spending an attempt, every `crm` job held back meanwhile), sometimes a transient error (retried with
/// backoff), mostly a `lead:add` event and a result.
async fn enrich_lead(ctx: JobContext) -> Result<Value, HandlerError> {
    pace(&ctx, millis(200..=900)).await?;
    let lead = ctx.payload().clone();
    match fastrand::u64(..100) {
        0..=11 => {
            ctx.log(LogLevel::Warn, "CRM answered 429 Too Many Requests", json!({ "retry_after_ms": 2_000 })).await?;
            Err(HandlerError::rate_limited(Duration::from_secs(2)))
        }
        12..=21 => Err(HandlerError::retryable("CRM timed out").details(json!({ "upstream": "crm.example" }))),
        _ => {
            let score = fastrand::u64(1..=100);
            let enriched = json!({ "lead": lead, "score": score, "industry": "software" });
            ctx.emit("lead:add", enriched.clone()).await?;
            ctx.log(LogLevel::Info, format!("lead scored {score}"), Value::Null).await?;
            Ok(enriched)
        }
    }
}

/// Builds a report in two halves; between them it fans out, enqueueing a few
/// `enrich_lead` children (a flow: the report waits for them in
/// `waiting-children` and runs again once they finish, to sum them up).
async fn build_report(ctx: JobContext) -> Result<Value, HandlerError> {
    let children = ctx.children().await?;
    if !children.is_empty() {
        // The continuation: every lead has been enriched (or given up on).
        let enriched = ctx.children_results().await?;
        ctx.progress(100.0).await?;
        return Ok(
            json!({ "report": ctx.payload()["report"], "follow_ups": children.len(), "enriched": enriched.len() }),
        );
    }
    ctx.progress(10.0).await?;
    pace(&ctx, millis(500..=1_000)).await?;
    let leads = fastrand::u64(2..=4);
    for n in 0..leads {
        let spec = JobSpec::new(ENRICH_QUEUE, ENRICH_JOB)
            .payload(sample_lead(fastrand::u64(10_000..=99_999) + n))
            .rate_limit_key(CRM_KEY)
            // A lead that cannot be enriched does not sink the report.
            .on_failure(ChildFailure::Ignore);
        ctx.enqueue_child(spec).await?;
    }
    ctx.log(LogLevel::Info, format!("queued {leads} leads to enrich"), Value::Null).await?;
    ctx.progress(60.0).await?;
    pace(&ctx, millis(500..=1_000)).await?;
    ctx.progress(100.0).await?;
    Ok(json!({ "report": ctx.payload()["report"], "follow_ups": leads }))
}
