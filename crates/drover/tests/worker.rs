//! The worker runtime against a real SQLite store.

mod support;

use drover::model::AttemptOutcome;
use drover::{Backoff, EventFilter, EventKind, HandlerError, Job, JobContext, JobSpec, JobState, LogLevel, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{client, wait_for_job, wait_for_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_jobs_and_records_results() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("math", 8)
        .handler("double", |ctx: JobContext| async move {
            let n = ctx.payload()["n"].as_i64().ok_or_else(|| HandlerError::fatal("n missing"))?;
            Ok(json!({ "doubled": n * 2 }))
        })
        .start();
    let specs = (0..200).map(|n| JobSpec::new("math", "double").payload(json!({ "n": n }))).collect();
    let inserted = client.enqueue_many(specs).await.unwrap();
    for (n, ins) in inserted.iter().enumerate() {
        let job = wait_for_state(&client, &ins.job.id, JobState::Completed).await;
        assert_eq!(job.result, Some(json!({ "doubled": n * 2 })));
        assert_eq!(job.attempts.len(), 1);
        assert_eq!(job.attempts[0].outcome, AttemptOutcome::Completed);
        assert_eq!(job.worker_id.as_deref(), Some(worker.worker_id()));
    }
    worker.shutdown().await;
}

#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl Job for Greet {
    const NAME: &'static str = "greet";
    const QUEUE: &'static str = "greetings";
    type Output = String;

    async fn run(self, _ctx: JobContext) -> Result<String, HandlerError> {
        Ok(format!("hello, {}", self.name))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_jobs_round_trip_and_bad_payloads_fail_for_good() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone()).register::<Greet>().start();
    let good = client.enqueue_job(&Greet { name: "Ada".into() }).await.unwrap().job;
    let bad = client.enqueue(JobSpec::new("greetings", "greet").payload(json!({ "nom": 1 }))).await.unwrap().job;
    let good = wait_for_state(&client, &good.id, JobState::Completed).await;
    assert_eq!(good.result, Some(json!("hello, Ada")));
    let bad = wait_for_state(&client, &bad.id, JobState::Failed).await;
    assert_eq!(bad.attempts_made, 1, "a payload mismatch is not retried");
    assert!(bad.error.unwrap().message.contains("payload does not match"));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_wakes_an_idle_worker_without_polling() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("q", 4)
        .poll_interval(Duration::from_secs(3_600))
        .handler("noop", |_ctx: JobContext| async { Ok(Value::Null) })
        .start();
    // Let the fetcher go idle on an empty queue first.
    let first = client.enqueue(JobSpec::new("q", "noop")).await.unwrap().job;
    wait_for_state(&client, &first.id, JobState::Completed).await;
    let second = client.enqueue(JobSpec::new("q", "noop")).await.unwrap().job;
    // With an hour-long poll interval, only the push wake-up can run it.
    wait_for_state(&client, &second.id, JobState::Completed).await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_job_starts_when_due_without_polling() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("q", 4)
        .poll_interval(Duration::from_secs(3_600))
        .maintenance(None)
        .handler("noop", |_ctx: JobContext| async { Ok(Value::Null) })
        .start();
    let job = client.enqueue(JobSpec::new("q", "noop").delay_ms(300)).await.unwrap().job;
    assert_eq!(job.state, JobState::Delayed);
    let done = wait_for_state(&client, &job.id, JobState::Completed).await;
    assert!(done.started_at.unwrap() >= job.run_at, "started before it was due");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_retry_with_backoff_then_succeed() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("q", 2)
        .handler("flaky", |ctx: JobContext| async move {
            if ctx.attempt() < 3 {
                Err(HandlerError::retryable(format!("try {}", ctx.attempt())))
            } else {
                Ok(json!("ok"))
            }
        })
        .start();
    let spec = JobSpec::new("q", "flaky").attempts(5).backoff(Backoff::fixed(20));
    let job = client.enqueue(spec).await.unwrap().job;
    let job = wait_for_state(&client, &job.id, JobState::Completed).await;
    let outcomes: Vec<_> = job.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Failed, AttemptOutcome::Failed, AttemptOutcome::Completed]);
    assert_eq!(job.attempts[1].error.as_ref().unwrap().message, "try 2");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_and_exhausted_attempts_dead_letter() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("q", 2)
        .handler("fatal", |_ctx: JobContext| async {
            Err::<Value, _>(HandlerError::fatal("bad input").details(json!({ "field": "x" })))
        })
        .handler("always", |_ctx: JobContext| async { Err::<Value, _>(HandlerError::retryable("down")) })
        .start();
    let fatal = client.enqueue(JobSpec::new("q", "fatal").attempts(5)).await.unwrap().job;
    let always = client.enqueue(JobSpec::new("q", "always").attempts(2).backoff(Backoff::fixed(10))).await.unwrap().job;
    let fatal = wait_for_state(&client, &fatal.id, JobState::Failed).await;
    assert_eq!(fatal.attempts_made, 1);
    assert_eq!(fatal.error.unwrap().details, json!({ "field": "x" }));
    let always = wait_for_state(&client, &always.id, JobState::Failed).await;
    assert_eq!(always.attempts.len(), 2);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_are_caught_and_recorded() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("q", 2)
        .handler("boom", |ctx: JobContext| async move {
            if ctx.payload()["panic"] == json!(true) {
                panic!("kaboom");
            }
            Ok(json!("fine"))
        })
        .start();
    let boom =
        client.enqueue(JobSpec::new("q", "boom").attempts(1).payload(json!({ "panic": true }))).await.unwrap().job;
    let boom = wait_for_state(&client, &boom.id, JobState::Failed).await;
    let error = boom.error.unwrap();
    assert_eq!(error.code.as_deref(), Some("panic"));
    assert!(error.message.contains("kaboom"));
    // The worker survives and keeps processing.
    let fine = client.enqueue(JobSpec::new("q", "boom")).await.unwrap().job;
    wait_for_state(&client, &fine.id, JobState::Completed).await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_end_the_attempt_as_retryable() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("q", 2)
        .handler("slow", |ctx: JobContext| async move {
            ctx.cancelled().await;
            Ok(Value::Null)
        })
        .start();
    let job = client
        .enqueue(JobSpec::new("q", "slow").timeout_ms(50).attempts(2).backoff(Backoff::fixed(10)))
        .await
        .unwrap()
        .job;
    let job = wait_for_state(&client, &job.id, JobState::Failed).await;
    assert_eq!(job.attempts.len(), 2, "a timeout is retried");
    assert!(job.attempts.iter().all(|a| a.error.as_ref().unwrap().code.as_deref() == Some("timeout")));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_reaches_its_handler() {
    let (client, _dir) = client().await;
    let cleaned_up = Arc::new(AtomicUsize::new(0));
    let seen = cleaned_up.clone();
    let worker = Worker::builder(client.clone())
        .queue("q", 2)
        .handler("browse", move |ctx: JobContext| {
            let seen = seen.clone();
            async move {
                ctx.cancelled().await;
                seen.fetch_add(1, Ordering::SeqCst);
                Err::<Value, _>(HandlerError::retryable("stopped: cancelled"))
            }
        })
        .start();
    let job = client.enqueue(JobSpec::new("q", "browse")).await.unwrap().job;
    wait_for_state(&client, &job.id, JobState::Active).await;
    let outcome = client.cancel(&job.id).await.unwrap();
    assert!(outcome.job().cancel_requested);
    let job = wait_for_state(&client, &job.id, JobState::Cancelled).await;
    assert_eq!(cleaned_up.load(Ordering::SeqCst), 1, "the handler saw the cancel");
    assert_eq!(job.attempts.last().unwrap().outcome, AttemptOutcome::Cancelled);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_bound_handler_keeps_its_lease() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("q", 1)
        .lease(Duration::from_millis(300))
        .heartbeat_interval(Duration::from_millis(50))
        .maintenance(Some(drover::MaintenanceConfig { interval: Duration::from_millis(20), ..Default::default() }))
        .handler("crunch", |_ctx: JobContext| async {
            // Blocks its runtime thread, as a CPU-bound handler would, for
            // three lease lengths.
            std::thread::sleep(Duration::from_millis(900));
            Ok(json!("crunched"))
        })
        .start();
    let job = client.enqueue(JobSpec::new("q", "crunch")).await.unwrap().job;
    let job = wait_for_state(&client, &job.id, JobState::Completed).await;
    assert_eq!(job.stalls, 0, "the lease never expired");
    assert_eq!(job.attempts.len(), 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_logs_and_custom_events_reach_subscribers() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("leads", 2)
        .handler("search", |ctx: JobContext| async move {
            ctx.progress(drover::Progress::Detailed { total: Some(2), processed: 1, failed: 0, message: None }).await?;
            ctx.log(LogLevel::Info, "found a lead", json!({ "lead": 1 })).await?;
            ctx.emit("lead:add", json!({ "name": "Acme" })).await?;
            Ok(json!({ "leads": 1 }))
        })
        .start();
    let id = drover::JobId::parse("search-1").unwrap();
    let mut events = client.subscribe(EventFilter::job(id.clone()));
    client.enqueue(JobSpec::new("leads", "search").id(id.clone())).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.last() != Some(&EventKind::Completed) {
        let event =
            tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("events keep coming").unwrap();
        if event.kind == EventKind::Custom("lead:add".into()) {
            assert_eq!(event.data, json!({ "name": "Acme" }));
        }
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        [
            EventKind::Waiting,
            EventKind::Active,
            EventKind::Progress,
            EventKind::Custom("lead:add".into()),
            EventKind::Completed
        ]
    );
    let logs = client.logs(&id, 0).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].message, "found a lead");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish() {
    let (client, _dir) = client().await;
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .queue("q", 1)
        .handler("work", move |_ctx: JobContext| {
            let _ = started_tx.send(());
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(json!("done"))
            }
        })
        .start();
    let job = client.enqueue(JobSpec::new("q", "work")).await.unwrap().job;
    started_rx.recv().await.unwrap();
    worker.shutdown().await;
    let job = client.get(&job.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed, "shutdown waited for the running job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_jobs_that_outlive_the_grace() {
    let (client, _dir) = client().await;
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .queue("q", 1)
        .shutdown_grace(Duration::from_millis(50))
        .handler("forever", move |_ctx: JobContext| {
            let _ = started_tx.send(());
            std::future::pending::<Result<Value, HandlerError>>()
        })
        .start();
    let job = client.enqueue(JobSpec::new("q", "forever")).await.unwrap().job;
    started_rx.recv().await.unwrap();
    worker.shutdown().await;
    let job = wait_for_job(&client, &job.id, Duration::from_secs(5), |j| j.state != JobState::Active).await;
    assert_eq!(job.state, JobState::Waiting, "handed back at once, not left to its lease");
    assert_eq!(job.attempts_made, 0, "the unfinished attempt was handed back");
    assert_eq!(job.attempts.last().unwrap().outcome, AttemptOutcome::Released);
}
