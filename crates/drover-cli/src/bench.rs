//! `drover bench`: in-process figures for one store, per `spec/cli.md`:
//! bulk enqueue, single enqueue, no-op processing, enqueue-to-start latency
//! at a fixed offered rate, and peak RSS.

use crate::cli::BenchArgs;
use crate::database::{DatabaseUrl, parse_synchronous};
use anyhow::{Context, bail};
use drover::{Client, JobContext, JobSpec, Worker};
use drover_store::Store;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Enqueue calls carry this many jobs in the bulk phase.
const BULK_CHUNK: usize = 1_000;

/// The figures, as printed on the `--json` line.
#[derive(Debug, Serialize)]
struct Figures {
    jobs: u32,
    concurrency: usize,
    payload_bytes: usize,
    synchronous: String,
    enqueue_bulk_per_s: f64,
    enqueue_single_per_s: f64,
    process_per_s: f64,
    latency_ms: Percentiles,
    offered_rate_per_s: u32,
    peak_rss_mb: f64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    http: Option<crate::bench_http::HttpFigures>,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p95: f64,
    p99: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.concurrency == 0 || args.rate == 0 {
        bail!("--jobs, --concurrency and --rate must be positive");
    }
    let synchronous = parse_synchronous(&args.synchronous)?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let url = match &args.database {
        Some(url) => DatabaseUrl::parse(url)?,
        None => DatabaseUrl::Sqlite(scratch.path().join("bench.db")),
    };
    // On PostgreSQL the bench never touches the database's own tables: it
    // works in a schema of its own, dropped afterwards (even on failure).
    let scratch_schema = matches!(url, DatabaseUrl::Postgres(_)).then(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("drover_bench_{secs}_{:08x}", fastrand::u32(..))
    });
    let store = url.open(synchronous, scratch_schema.clone()).await?;
    let result = measure(&args, &store).await;
    drop(store);
    if let Some(schema) = scratch_schema {
        url.drop_scratch_schema(&schema).await?;
    }
    result
}

/// Every phase of the bench on `store`, printing as it goes.
async fn measure(args: &BenchArgs, store: &Arc<dyn Store>) -> anyhow::Result<()> {
    let client = Client::new(store.clone());
    let payload = payload_of(args.payload_bytes);
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!(
        "drover bench: {} jobs, concurrency {}, payload {} B, synchronous={}",
        args.jobs, args.concurrency, args.payload_bytes, args.synchronous
    ));

    let enqueue_bulk_per_s = bulk_enqueue(&client, args.jobs, &payload).await?;
    say(format!("bulk enqueue      {enqueue_bulk_per_s:>12.0} jobs/s  ({BULK_CHUNK} per call)"));

    let process_per_s = process(&client, store, args.jobs, args.concurrency).await?;
    say(format!("process (no-op)   {process_per_s:>12.0} jobs/s  (concurrency {})", args.concurrency));

    let single_jobs = args.jobs.min(20_000);
    let enqueue_single_per_s = single_enqueue(&client, single_jobs, args.concurrency, &payload).await?;
    say(format!("single enqueue    {enqueue_single_per_s:>12.0} jobs/s  ({} callers)", args.concurrency));

    let latency = latency(&client, args.rate, args.latency_seconds, args.concurrency).await?;
    say(format!(
        "enqueue-to-start  p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms  (at {} jobs/s offered)",
        latency.p50, latency.p95, latency.p99, args.rate
    ));

    let http = if args.http {
        let figures =
            crate::bench_http::run(&client, args.jobs, args.rate, args.latency_seconds, args.http_workers).await?;
        let (e, s) = (&figures.http_enqueue_latency_ms, &figures.sse_latency_ms);
        say(format!(
            "HTTP enqueue      p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms  (at {} req/s offered)",
            e.p50, e.p95, e.p99, args.rate
        ));
        say(format!(
            "HTTP workers      {:>12.0} jobs/s  ({} workers, fetch 100 + ack)",
            figures.http_worker_per_s, args.http_workers
        ));
        say(format!("SSE delivery      p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms", s.p50, s.p95, s.p99));
        Some(figures)
    } else {
        None
    };

    let peak_rss_mb = peak_rss_mb();
    say(format!("peak RSS          {peak_rss_mb:>12.1} MB"));

    let figures = Figures {
        jobs: args.jobs,
        concurrency: args.concurrency,
        payload_bytes: args.payload_bytes,
        synchronous: args.synchronous.clone(),
        enqueue_bulk_per_s,
        enqueue_single_per_s,
        process_per_s,
        latency_ms: latency,
        offered_rate_per_s: args.rate,
        peak_rss_mb,
        http,
    };
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}

fn payload_of(bytes: usize) -> Value {
    if bytes == 0 { Value::Null } else { json!({ "data": "x".repeat(bytes.saturating_sub(11)) }) }
}

async fn bulk_enqueue(client: &Client, jobs: u32, payload: &Value) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut left = jobs as usize;
    while left > 0 {
        let n = left.min(BULK_CHUNK);
        let specs = (0..n).map(|_| JobSpec::new("bench-process", "noop").payload(payload.clone())).collect();
        client.enqueue_many(specs).await?;
        left -= n;
    }
    Ok(f64::from(jobs) / started.elapsed().as_secs_f64())
}

async fn process(client: &Client, store: &Arc<dyn Store>, jobs: u32, concurrency: usize) -> anyhow::Result<f64> {
    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    let started = Instant::now();
    let worker = Worker::builder(client.clone())
        .queue("bench-process", concurrency)
        .handler("noop", move |_ctx: JobContext| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok(Value::Null) }
        })
        .start();
    let deadline = started + Duration::from_secs(600);
    // Counting jobs per state scans the queue, which would steal CPU from the
    // run it measures: watch the handlers' counter, and ask the store only
    // once every job has run, until every completion is committed.
    loop {
        let done = ran.load(Ordering::Relaxed) >= u64::from(jobs)
            && store.queue_get("bench-process").await?.counts.completed >= u64::from(jobs);
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("processing did not finish within 10 minutes ({} of {jobs} ran)", ran.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    worker.shutdown().await;
    Ok(f64::from(jobs) / elapsed.as_secs_f64())
}

async fn single_enqueue(client: &Client, jobs: u32, callers: usize, payload: &Value) -> anyhow::Result<f64> {
    let started = Instant::now();
    let per_caller = jobs as usize / callers;
    let extra = jobs as usize % callers;
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let client = client.clone();
        let payload = payload.clone();
        let n = per_caller + usize::from(caller < extra);
        tasks.spawn(async move {
            for _ in 0..n {
                client.enqueue(JobSpec::new("bench-single", "noop").payload(payload.clone())).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(f64::from(jobs) / started.elapsed().as_secs_f64())
}

/// Offers `rate` jobs per second for `seconds` and measures, per job, the
/// time from the enqueue call to the handler starting.
async fn latency(client: &Client, rate: u32, seconds: u32, concurrency: usize) -> anyhow::Result<Percentiles> {
    let total = (rate * seconds).max(1) as usize;
    let base = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let worker = Worker::builder(client.clone())
        .queue("bench-latency", concurrency)
        .handler("timed", move |ctx: JobContext| {
            let sent_us = ctx.payload()["t_us"].as_u64().unwrap_or(0);
            let now_us = base.elapsed().as_micros() as u64;
            let _ = tx.send(now_us.saturating_sub(sent_us));
            async { Ok(Value::Null) }
        })
        .start();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut enqueues = tokio::task::JoinSet::new();
    for _ in 0..total {
        ticker.tick().await;
        let client = client.clone();
        let t_us = base.elapsed().as_micros() as u64;
        enqueues.spawn(async move {
            client.enqueue(JobSpec::new("bench-latency", "timed").payload(json!({ "t_us": t_us }))).await
        });
    }
    while let Some(done) = enqueues.join_next().await {
        done??;
    }
    let mut samples = Vec::with_capacity(total);
    while samples.len() < total {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(us)) => samples.push(us),
            _ => bail!("only {} of {total} latency jobs started within a minute", samples.len()),
        }
    }
    worker.shutdown().await;
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1_000.0;
    Ok(Percentiles { p50: at(0.50), p95: at(0.95), p99: at(0.99) })
}

/// Peak resident set size of this process (VmHWM), in MB; 0 where /proc
/// is missing.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
