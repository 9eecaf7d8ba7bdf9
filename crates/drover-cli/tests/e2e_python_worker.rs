//! End-to-end: `examples/python-worker/worker.py` (standard-library Python)
//! runs jobs from the real `drover serve` over the HTTP worker protocol.

#[path = "support/protocol.rs"]
mod protocol;
mod support;

use protocol::{SseReader, enqueue, get};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use support::Server;

fn worker_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-worker/worker.py")
}

fn python_available() -> bool {
    std::process::Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_python_worker_completes_jobs_with_the_right_results() {
    if !python_available() {
        eprintln!("SKIPPED: python3 is not installed; the Python worker example cannot be tested here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let mut events = SseReader::open(&server, "/api/events?queue=py", None).await;
    let texts = ["hello", "drover", "jobs in any language", "ünïcödé", "x"];
    let mut ids = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let spec = json!({ "queue": "py", "name": "shout", "id": format!("py-{n}"), "payload": { "text": text } });
        ids.push(enqueue(&server, spec).await);
    }
    let bad = enqueue(&server, json!({ "queue": "py", "name": "shout", "id": "py-bad", "payload": { "n": 1 } })).await;

    let run = tokio::process::Command::new("python3")
        .arg(worker_script())
        .args(["--url", &server.base, "--queue", "py", "--batch", "4", "--max-jobs", "6", "--idle-exit", "20"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the worker exits").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("processed 6 jobs"), "{stdout}");

    for (id, text) in ids.iter().zip(texts) {
        let (_, job) = get(&server, &format!("/api/jobs/{id}")).await;
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["result"], json!({ "text": text.to_uppercase(), "length": text.chars().count() }));
        assert_eq!(job["progress"], 100.0);
        let (_, logs) = get(&server, &format!("/api/jobs/{id}/logs")).await;
        assert_eq!(logs["items"][0]["message"], "upper-casing", "{logs}");
    }
    let (_, job) = get(&server, &format!("/api/jobs/{bad}")).await;
    assert_eq!(job["state"], "failed", "a fatal error is not retried: {job}");
    assert_eq!(job["attempts_made"], 1);
    assert!(job["error"]["message"].as_str().unwrap().contains("text"), "{job}");

    let mut done = Vec::new();
    while done.len() < texts.len() {
        let frame = events.until(|f| f.event == "demo:done").await;
        done.push(frame.data["job_id"].as_str().unwrap().to_owned());
    }
    done.sort();
    assert_eq!(done, ids, "each handler's custom event reached SSE");
}
