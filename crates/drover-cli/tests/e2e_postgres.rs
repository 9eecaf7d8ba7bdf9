//! Two `drover serve` processes on one PostgreSQL database (issue 5), each
//! with HTTP workers attached: every job is completed exactly once, a
//! concurrency cap and a rate limit set through one server hold across
//! both, an enqueue on one server wakes a long-poll on the other at once,
//! and an SSE client on one sees jobs completed through the other.
//!
//! Each test gets its own schema (`drover_postgres::testing::TestDb`,
//! passed as `--schema`). Without `DROVER_TEST_POSTGRES_URL` the tests
//! skip; with `DROVER_REQUIRE_POSTGRES=1` (CI) that is a failure.

#[path = "support/protocol.rs"]
mod protocol;
mod support;

use drover_postgres::testing::TestDb;
use futures::future::join_all;
use protocol::{SseReader, get, millis, post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::Server;
use tokio::sync::Mutex;

/// Two servers on the test's schema; `None` when PostgreSQL is not
/// configured here.
async fn two_servers() -> Option<(TestDb, Server, Server)> {
    let db = TestDb::new().await?;
    let args = ["--schema", db.schema()];
    // Both start at once: migrations must be safe when they race.
    let (a, b) = tokio::join!(Server::start_url(db.url(), &args), Server::start_url(db.url(), &args));
    Some((db, a, b))
}

/// What the workers saw: how often each job was fetched and acknowledged.
#[derive(Default)]
struct Tally {
    fetched: HashMap<String, u32>,
    acked: HashMap<String, u32>,
}

/// What a test's workers share: the tally, how many jobs they hold right
/// now and at most, and the stop flag.
#[derive(Clone, Default)]
struct Crew {
    tally: Arc<Mutex<Tally>>,
    holding: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// An HTTP worker on `server`: fetches up to `max` jobs of `queue`, holds
/// them for `work`, acknowledges them all as completed; until the crew
/// stops. Counts what it holds in the crew's gauges.
async fn http_worker(server: &Server, name: String, queue: &str, max: u32, work: Duration, crew: Crew) {
    while !crew.stop.load(Ordering::SeqCst) {
        let body = json!({ "worker_id": name, "queues": [queue], "max": max, "wait_ms": 500, "lease_ms": 60_000 });
        let (status, answer) = post(server, "/api/workers/fetch", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let items = answer["items"].as_array().unwrap().clone();
        if items.is_empty() {
            continue;
        }
        let holding = crew.holding.fetch_add(items.len(), Ordering::SeqCst) + items.len();
        crew.peak.fetch_max(holding, Ordering::SeqCst);
        {
            let mut tally = crew.tally.lock().await;
            for job in &items {
                *tally.fetched.entry(job["id"].as_str().unwrap().to_owned()).or_default() += 1;
            }
        }
        if !work.is_zero() {
            tokio::time::sleep(work).await;
        }
        crew.holding.fetch_sub(items.len(), Ordering::SeqCst);
        let acks: Vec<Value> = items
            .iter()
            .map(|job| json!({ "id": job["id"], "lease_token": job["lease_token"], "result": { "by": name } }))
            .collect();
        let (status, answer) = post(server, "/api/workers/ack", json!({ "items": acks })).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let mut tally = crew.tally.lock().await;
        for item in answer["items"].as_array().unwrap() {
            assert_eq!(item["ok"], true, "every ack is accepted: {item}");
            *tally.acked.entry(item["id"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
}

/// The count of `state` jobs in `queue`, as `server` reports it.
async fn count(server: &Server, queue: &str, state: &str) -> u64 {
    let (status, info) = get(server, &format!("/api/queues/{queue}")).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    info["counts"][state].as_u64().unwrap_or(0)
}

/// Polls `check` every 50 ms until it holds; panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_jobs_across_two_servers_complete_exactly_once() {
    let Some((_db, a, b)) = two_servers().await else { return };
    const JOBS: usize = 20_000;
    const CHUNK: usize = 500;
    let crew = Crew::default();
    let servers = [&a, &b];
    // Four HTTP workers on each server, fetching while the jobs arrive.
    let workers = join_all(
        (0..8).map(|n| http_worker(servers[n % 2], format!("w{n}"), "bulk", 100, Duration::ZERO, crew.clone())),
    );
    let enqueue_and_wait = async {
        // Enqueued across both servers, alternating chunks.
        for (i, chunk) in (0..JOBS).collect::<Vec<_>>().chunks(CHUNK).enumerate() {
            let jobs: Vec<Value> =
                chunk.iter().map(|n| json!({ "queue": "bulk", "name": "n", "id": format!("job-{n}") })).collect();
            let (status, answer) = post(servers[i % 2], "/api/jobs/bulk", json!({ "jobs": jobs })).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
        eventually(Duration::from_secs(300), "every job completed", || async {
            count(&a, "bulk", "completed").await == JOBS as u64
        })
        .await;
        crew.stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(workers, enqueue_and_wait);

    let tally = crew.tally.lock().await;
    assert_eq!(tally.fetched.len(), JOBS, "every job was handed out");
    assert!(tally.fetched.values().all(|n| *n == 1), "no job was handed out twice");
    assert_eq!(tally.acked.len(), JOBS);
    assert!(tally.acked.values().all(|n| *n == 1));
    // Both servers agree on the counts.
    for server in servers {
        assert_eq!(count(server, "bulk", "completed").await, JOBS as u64);
        assert_eq!(count(server, "bulk", "waiting").await, 0);
        assert_eq!(count(server, "bulk", "active").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cap_and_a_rate_limit_set_on_one_server_hold_across_both() {
    let Some((_db, a, b)) = two_servers().await else { return };
    const JOBS: usize = 30;
    let config = json!({ "concurrency": 2, "rate_limit": { "max": 10, "per_ms": 1_000 } });
    let resp = support::http().put(a.url("/api/queues/limited")).json(&config).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let jobs: Vec<Value> =
        (0..JOBS).map(|n| json!({ "queue": "limited", "name": "n", "id": format!("l{n}") })).collect();
    let (status, answer) = post(&b, "/api/jobs/bulk", json!({ "jobs": jobs })).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    let crew = Crew::default();
    let servers = [&a, &b];
    // Three workers per server, each asking for 10 at once and holding
    // each batch 40 ms: without the limits they would start all 30 at once.
    let workers =
        join_all((0..6).map(|n| {
            http_worker(servers[n % 2], format!("w{n}"), "limited", 10, Duration::from_millis(40), crew.clone())
        }));
    let wait = async {
        eventually(Duration::from_secs(60), "every limited job completed", || async {
            count(&b, "limited", "completed").await == JOBS as u64
        })
        .await;
        crew.stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(workers, wait);
    assert!(crew.peak.load(Ordering::SeqCst) <= 2, "at most 2 held at once across both servers");

    // The jobs' own start and finish times, as the database recorded them.
    let (status, page) = get(&a, "/api/jobs?queue=limited&limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), JOBS);
    let mut starts: Vec<i64> = items.iter().map(|j| millis(&j["started_at"])).collect();
    starts.sort_unstable();
    for (i, start) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().take_while(|s| **s < start + 1_000).count();
        assert!(in_window <= 10, "{in_window} starts within 1 s from {start}: {starts:?}");
    }
    let spans: Vec<(i64, i64)> = items.iter().map(|j| (millis(&j["started_at"]), millis(&j["finished_at"]))).collect();
    for (start, _) in &spans {
        let running = spans.iter().filter(|(s, f)| s <= start && start < f).count();
        assert!(running <= 2, "{running} jobs active at {start}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enqueue_on_one_server_wakes_a_fetch_and_an_event_stream_on_the_other() {
    let Some((_db, a, b)) = two_servers().await else { return };
    let mut events = SseReader::open(&a, "/api/events?queue=wake", None).await;
    // A long-poll on B, waiting far longer than the test allows.
    let fetch = async {
        let started = Instant::now();
        let body = json!({ "worker_id": "b1", "queues": ["wake"], "max": 1, "wait_ms": 20_000, "lease_ms": 30_000 });
        let (status, answer) = post(&b, "/api/workers/fetch", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        (started.elapsed(), answer["items"].as_array().unwrap().clone())
    };
    let enqueue = async {
        // Give the long-poll time to start waiting first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        protocol::enqueue(&a, json!({ "queue": "wake", "name": "n", "id": "wake-1" })).await
    };
    let ((waited, items), _) = tokio::join!(fetch, enqueue);
    assert_eq!(items.len(), 1);
    // The fallback poll is 5 s: well under it, the notification woke B.
    assert!(waited < Duration::from_secs(3), "B woke after {waited:?}");
    let token = items[0]["lease_token"].clone();
    let (status, done) =
        post(&b, "/api/jobs/wake-1/complete", json!({ "lease_token": token, "result": { "ok": true } })).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    // A's stream sees B's claim and completion.
    let completed = events.until(|f| f.event == "job:completed").await;
    assert_eq!(completed.data["job_id"], "wake-1");
    assert_eq!(completed.data["data"], json!({ "ok": true }));
}

/// A TCP proxy in front of PostgreSQL that the test can take down: the
/// server under test connects through it, so "the database went away" is
/// every connection cut and new ones refused, without touching the real
/// server that other tests share.
struct FlakyProxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl FlakyProxy {
    async fn start(target: String) -> FlakyProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped at once: the connection is refused
                }
                let target = target.clone();
                let mut cut = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        FlakyProxy { addr, up, cut }
    }

    /// Cuts every connection and refuses new ones.
    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Lets connections through again.
    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `/readyz`'s status.
async fn readyz(server: &Server) -> StatusCode {
    support::http().get(server.url("/readyz")).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_database_answers_503_then_everything_recovers_by_itself() {
    let Some(db) = TestDb::new().await else { return };
    let mut url = reqwest::Url::parse(db.url()).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(5432));
    let proxy = FlakyProxy::start(target).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr.port())).unwrap();
    let server = Server::start_url(url.as_str(), &["--schema", db.schema()]).await;
    protocol::enqueue(&server, json!({ "queue": "r", "name": "n", "id": "before" })).await;
    assert_eq!(readyz(&server).await, StatusCode::OK);

    proxy.down();
    eventually(Duration::from_secs(60), "/readyz fails", || async {
        readyz(&server).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (status, body) = post(&server, "/api/jobs", json!({ "queue": "r", "name": "n", "id": "during" })).await;
    protocol::assert_error(status, &body, 503, "unavailable");

    proxy.up();
    eventually(Duration::from_secs(60), "/readyz recovers", || async { readyz(&server).await == StatusCode::OK }).await;
    // The client retries its refused enqueue under the same id: one job.
    let (status, body) = post(&server, "/api/jobs", json!({ "queue": "r", "name": "n", "id": "during" })).await;
    assert!(status.is_success(), "{body}");
    let (status, body) = post(&server, "/api/jobs", json!({ "queue": "r", "name": "n", "id": "during" })).await;
    assert_eq!(status, StatusCode::OK, "a second retry finds the job: {body}");
    // Nothing accepted was lost: both jobs run.
    let jobs = protocol::fetch(&server, "r", 10, 5_000, 30_000).await;
    let mut ids: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["before", "during"]);
}
