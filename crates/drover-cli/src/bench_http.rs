//! `drover bench --http`: the same store behind a real `drover serve` router
//! on a loopback port, measured from HTTP clients in the same process:
//! enqueue latency at a fixed rate, HTTP-worker throughput with batch fetch
//! and batch ack, and SSE delivery latency after a state change.

use crate::client::events::SseParser;
use anyhow::{Context, bail};
use drover::{Client, JobSpec};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    fn of(mut samples_us: Vec<u64>) -> Self {
        samples_us.sort_unstable();
        let at = |q: f64| samples_us[((samples_us.len() - 1) as f64 * q).round() as usize] as f64 / 1_000.0;
        Self { p50: at(0.50), p95: at(0.95), p99: at(0.99) }
    }
}

/// The HTTP figures.
#[derive(Debug, Serialize)]
pub struct HttpFigures {
    /// `POST /api/jobs` latency at the offered rate.
    pub http_enqueue_latency_ms: Percentiles,
    /// Requests per second offered in that phase.
    pub http_enqueue_rate_per_s: u32,
    /// Jobs per second through `fetch` (batches of 100) and `ack`.
    pub http_worker_per_s: f64,
    /// Time from an enqueue to its `job:waiting` event on an SSE stream.
    pub sse_latency_ms: Percentiles,
}

/// Serves `client`'s store on a loopback port and measures it.
pub async fn run(client: &Client, jobs: u32, rate: u32, seconds: u32, workers: usize) -> anyhow::Result<HttpFigures> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(drover_server::run(listener, drover_server::AppState::new(client.clone()), async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;

    let http_enqueue_latency_ms = enqueue_latency(&http, &base, rate, seconds).await?;
    let http_worker_per_s = worker_throughput(client, &http, &base, jobs, workers).await?;
    let sse_latency_ms = sse_latency(client, &http, &base).await?;

    let _ = stop_tx.send(());
    server.await.context("the benchmark server panicked")??;
    Ok(HttpFigures { http_enqueue_latency_ms, http_enqueue_rate_per_s: rate, http_worker_per_s, sse_latency_ms })
}

async fn enqueue_latency(http: &reqwest::Client, base: &str, rate: u32, seconds: u32) -> anyhow::Result<Percentiles> {
    let total = (rate * seconds).max(1) as usize;
    let url = format!("{base}/api/jobs");
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..total {
        ticker.tick().await;
        let (http, url) = (http.clone(), url.clone());
        calls.spawn(async move {
            let started = Instant::now();
            let resp = http.post(&url).json(&json!({ "queue": "bench-http-enqueue", "name": "noop" })).send().await?;
            anyhow::ensure!(resp.status().is_success(), "enqueue answered {}", resp.status());
            resp.bytes().await?;
            anyhow::Ok(started.elapsed().as_micros() as u64)
        });
    }
    let mut samples = Vec::with_capacity(total);
    while let Some(done) = calls.join_next().await {
        samples.push(done??);
    }
    Ok(Percentiles::of(samples))
}

/// Workers fetch up to 100 jobs, then ack them in one call, until every job
/// is acknowledged.
async fn worker_throughput(
    client: &Client,
    http: &reqwest::Client,
    base: &str,
    jobs: u32,
    workers: usize,
) -> anyhow::Result<f64> {
    let mut left = jobs as usize;
    while left > 0 {
        let n = left.min(1_000);
        client.enqueue_many((0..n).map(|_| JobSpec::new("bench-http-work", "noop")).collect()).await?;
        left -= n;
    }
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (http, base, acked) = (http.clone(), base.to_owned(), acked.clone());
        tasks.spawn(async move {
            let fetch =
                json!({ "worker_id": format!("bench-{w}"), "queues": ["bench-http-work"], "max": 100, "wait_ms": 100 });
            while acked.load(std::sync::atomic::Ordering::Relaxed) < u64::from(jobs) {
                let got: Value =
                    http.post(format!("{base}/api/workers/fetch")).json(&fetch).send().await?.json().await?;
                let items = got["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    continue;
                }
                let acks: Vec<Value> = items
                    .iter()
                    .map(|job| json!({ "id": job["id"], "lease_token": job["lease_token"], "result": null }))
                    .collect();
                let resp = http.post(format!("{base}/api/workers/ack")).json(&json!({ "items": acks })).send().await?;
                anyhow::ensure!(resp.status().is_success(), "ack answered {}", resp.status());
                resp.bytes().await?;
                acked.fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    let deadline = Duration::from_secs(600);
    while let Some(done) = tokio::time::timeout(deadline, tasks.join_next()).await.context("HTTP workers stalled")? {
        done??;
    }
    Ok(f64::from(jobs) / started.elapsed().as_secs_f64())
}

/// Enqueues 1,000 jobs at 200 per second and times each one's `job:waiting`
/// event on an SSE stream filtered to their queue.
async fn sse_latency(client: &Client, http: &reqwest::Client, base: &str) -> anyhow::Result<Percentiles> {
    const JOBS: usize = 1_000;
    let resp =
        http.get(format!("{base}/api/events?queue=bench-http-sse")).timeout(Duration::from_secs(3_600)).send().await?;
    anyhow::ensure!(resp.status().is_success(), "SSE answered {}", resp.status());
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let reader = tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { return };
            let now = Instant::now();
            for event in parser.push(&chunk) {
                if event.event == "job:waiting"
                    && let Ok(data) = serde_json::from_str::<Value>(&event.data)
                    && let Some(id) = data["job_id"].as_str()
                    && arrived_tx.send((id.to_owned(), now)).is_err()
                {
                    return;
                }
            }
        }
    });
    // The stream is live once a warm-up job's event comes through.
    let warm_up = client.enqueue(JobSpec::new("bench-http-sse", "noop")).await?.job.id.to_string();
    loop {
        let (id, _) = tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv())
            .await
            .context("no SSE event within 10 s")?
            .context("the SSE stream ended")?;
        if id == warm_up {
            break;
        }
    }
    let mut sent = HashMap::with_capacity(JOBS);
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    for _ in 0..JOBS {
        ticker.tick().await;
        let started = Instant::now();
        let id = client.enqueue(JobSpec::new("bench-http-sse", "noop")).await?.job.id.to_string();
        sent.insert(id, started);
    }
    let mut samples = Vec::with_capacity(JOBS);
    while samples.len() < JOBS {
        let (id, at) = tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv())
            .await
            .context("SSE events stopped coming")?
            .context("the SSE stream ended")?;
        if let Some(started) = sent.get(&id) {
            samples.push(at.duration_since(*started).as_micros() as u64);
        }
    }
    reader.abort();
    if samples.is_empty() {
        bail!("no SSE sample");
    }
    Ok(Percentiles::of(samples))
}
