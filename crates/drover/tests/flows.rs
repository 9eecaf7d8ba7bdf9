//! Flows and batches through the library: fan-out from a handler with
//! `ctx.enqueue_child`, fan-in with `ctx.children_results`, flows created
//! whole, and a batch's completion job; against a real SQLite store.

mod support;

use drover::{BatchSpec, EventFilter, EventKind, FlowSpec, HandlerError, JobContext, JobSpec, JobState, Worker};
use serde_json::{Value, json};
use std::time::Duration;
use support::{client, wait_for_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_fans_out_and_runs_again_with_its_childrens_results() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("pipeline", 8)
        .handler("search", |ctx: JobContext| async move {
            if ctx.children().await?.is_empty() {
                // First run: fan out one fetch per hit.
                for n in 1..=3 {
                    ctx.enqueue_child(JobSpec::new("pipeline", "fetch").payload(json!(n))).await?;
                }
                return Ok(json!("fanned out"));
            }
            // Continuation: every fetch has finished.
            let results = ctx.children_results().await?;
            let total: i64 = results.values().filter_map(Value::as_i64).sum();
            Ok(json!({ "total": total, "children": results.len() }))
        })
        .handler("fetch", |ctx: JobContext| async move {
            let n = ctx.payload().as_i64().ok_or_else(|| HandlerError::fatal("n missing"))?;
            Ok(json!(n * 10))
        })
        .start();
    let search = client.enqueue(JobSpec::new("pipeline", "search")).await.unwrap().job;
    let done = wait_for_state(&client, &search.id, JobState::Completed).await;
    assert_eq!(done.result, Some(json!({ "total": 60, "children": 3 })));
    assert_eq!(done.attempts.len(), 2, "one run to fan out, one to fan in");
    let children = client.children(&search.id).await.unwrap();
    assert_eq!(children.len(), 3);
    assert!(children.iter().all(|c| c.state == JobState::Completed));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_runs_bottom_up_and_a_batch_enqueues_its_completion_job() {
    let (client, _dir) = client().await;
    let worker = Worker::builder(client.clone())
        .queue("work", 8)
        .handler("leaf", |ctx: JobContext| async move { Ok(ctx.payload().clone()) })
        .handler("sum", |ctx: JobContext| async move {
            let results = ctx.children_results().await?;
            Ok(json!(results.values().filter_map(Value::as_i64).sum::<i64>()))
        })
        .handler("report", |_ctx: JobContext| async move { Ok(json!("reported")) })
        .start();
    let flow = FlowSpec::new(JobSpec::new("work", "sum"))
        .child(FlowSpec::new(JobSpec::new("work", "sum")).child(JobSpec::new("work", "leaf").payload(json!(1))))
        .child(JobSpec::new("work", "leaf").payload(json!(2)));
    let inserted = client.flow_insert(flow).await.unwrap();
    assert_eq!(inserted[0].job.state, JobState::WaitingChildren);
    let root = wait_for_state(&client, &inserted[0].job.id, JobState::Completed).await;
    assert_eq!(root.result, Some(json!(3)));

    let mut events = client.subscribe(EventFilter::default());
    let jobs = (0..20).map(|n| JobSpec::new("work", "leaf").payload(json!(n))).collect();
    let batch =
        client.batch_insert(BatchSpec { jobs, on_complete: Some(JobSpec::new("work", "report")) }).await.unwrap();
    assert_eq!(batch.total, 20);
    let completed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.kind == EventKind::BatchCompleted {
                return event;
            }
        }
    })
    .await
    .expect("batch:completed within 20 s");
    assert_eq!(completed.batch_id.as_deref(), Some(batch.id.as_str()));
    let info = client.batch_get(&batch.id).await.unwrap().unwrap();
    assert_eq!((info.completed, info.progress), (20, 100.0));
    let report = info.on_complete_id.expect("the completion job was enqueued");
    wait_for_state(&client, &report, JobState::Completed).await;
    worker.shutdown().await;
}
