//! End-to-end: the `drover` client commands (enqueue, jobs, queues, import)
//! run as the real binary against a real `drover serve`, checking what they
//! print and how they exit.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::{Server, http};

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    (server, dir)
}

/// What one run of the binary left.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout parsed as one JSON document; panics with both streams otherwise.
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "exit {}; stderr: {}; stdout: {}", self.code, self.stderr, self.stdout);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `drover ARGS --server BASE --json`, with a deadline.
async fn drover(server: &Server, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    command.args(args).args(["--server", &server.base, "--json"]);
    run(command).await
}

async fn run(command: tokio::process::Command) -> Run {
    run_env(command, &[]).await
}

/// Runs a command with only `vars` of the `DROVER_` variables set.
async fn run_env(mut command: tokio::process::Command, vars: &[(&str, &str)]) -> Run {
    // A caller's environment must not change what the commands do.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("DROVER_")) {
        command.env_remove(key);
    }
    command.envs(vars.iter().copied());
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command finished in time")
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Every job of a queue, through the API (all pages).
async fn jobs_of(server: &Server, queue: &str) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let mut url = reqwest::Url::parse(&server.url("/api/jobs")).unwrap();
        url.query_pairs_mut().append_pair("queue", queue).append_pair("limit", "1000");
        if let Some(c) = &cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let page: Value = http().get(url).send().await.unwrap().json().await.unwrap();
        jobs.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return jobs,
        }
    }
}

#[tokio::test]
async fn enqueue_prints_the_job_and_show_reads_it_back() {
    let (server, _dir) = server().await;
    let args = ["enqueue", "mail", "welcome", "--payload", r#"{"user": 7}"#, "--priority", "-2", "--attempts", "5"];
    let job = drover(&server, &[&args[..], &["--id", "job-1", "--delay-ms", "60000"]].concat()).await.json();
    assert_eq!(job["id"], "job-1");
    assert_eq!((job["queue"].as_str(), job["name"].as_str()), (Some("mail"), Some("welcome")));
    assert_eq!(job["payload"], json!({ "user": 7 }));
    assert_eq!((job["priority"].as_i64(), job["max_attempts"].as_u64()), (Some(-2), Some(5)));
    assert_eq!(job["state"], "delayed");
    assert_eq!(job["duplicate"], false);

    let shown = drover(&server, &["jobs", "show", "job-1"]).await.json();
    assert_eq!(shown["id"], "job-1");
    assert_eq!(shown["payload"], json!({ "user": 7 }));
    assert_eq!(shown["attempts"], json!([]), "show includes the attempt history");

    // The same id again is the existing job.
    let again = drover(&server, &["enqueue", "mail", "welcome", "--id", "job-1"]).await.json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["payload"], json!({ "user": 7 }));

    // A payload from a file; no payload is null.
    let file = _dir.path().join("payload.json");
    std::fs::write(&file, r#"{"from": "file"}"#).unwrap();
    let job = drover(&server, &["enqueue", "mail", "f", "--payload-file", file.to_str().unwrap()]).await.json();
    assert_eq!(job["payload"], json!({ "from": "file" }));
    assert_eq!(drover(&server, &["enqueue", "mail", "bare"]).await.json()["payload"], Value::Null);

    let bad = drover(&server, &["enqueue", "mail", "welcome", "--payload", "{nope"]).await;
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("--payload is not valid JSON"), "{}", bad.stderr);
    let refused = drover(&server, &["enqueue", "", "welcome"]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.starts_with("error (422 validation_failed): queue"), "{}", refused.stderr);
    let missing = drover(&server, &["jobs", "show", "nope"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("error (404 not_found)"), "{}", missing.stderr);
}

#[tokio::test]
async fn env_variables_stand_in_for_flags() {
    let (server, _dir) = server().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    command.args(["enqueue", "envq", "n"]);
    let job = run_env(command, &[("DROVER_SERVER", &server.base), ("DROVER_PRIORITY", "9")]).await.json();
    assert_eq!(job["priority"], 9);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    command.args(["jobs", "list"]);
    let vars = [("DROVER_SERVER", server.base.as_str()), ("DROVER_QUEUE", "envq"), ("DROVER_JSON", "true")];
    assert_eq!(run_env(command, &vars).await.json()["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn jobs_list_filters_by_queue_state_name_and_limit() {
    let (server, _dir) = server().await;
    for (queue, name, id) in [("a", "x", "a1"), ("a", "x", "a2"), ("a", "y", "a3"), ("b", "x", "b1")] {
        drover(&server, &["enqueue", queue, name, "--id", id]).await.json();
    }
    assert_eq!(drover(&server, &["jobs", "cancel", "a2"]).await.json()["state"], "cancelled");

    let ids = |page: &Value| -> Vec<String> {
        let mut ids: Vec<String> =
            page["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&drover(&server, &["jobs", "list", "--queue", "a"]).await.json()), ["a1", "a2", "a3"]);
    assert_eq!(ids(&drover(&server, &["jobs", "list", "--state", "cancelled"]).await.json()), ["a2"]);
    let waiting_a = drover(&server, &["jobs", "list", "--queue", "a", "--state", "waiting"]).await.json();
    assert_eq!(ids(&waiting_a), ["a1", "a3"]);
    assert_eq!(ids(&drover(&server, &["jobs", "list", "--name", "x", "--queue", "a"]).await.json()), ["a1", "a2"]);
    assert_eq!(ids(&drover(&server, &["jobs", "list"]).await.json()).len(), 4);

    let first = drover(&server, &["jobs", "list", "--limit", "3"]).await.json();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let rest = drover(&server, &["jobs", "list", "--limit", "3", "--cursor", &cursor]).await.json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);

    let bad_state = drover(&server, &["jobs", "list", "--state", "sleeping"]).await;
    assert_eq!(bad_state.code, 2, "clap refuses unknown states: {}", bad_state.stderr);
}

#[tokio::test]
async fn retry_and_cancel_report_api_errors_and_states() {
    let (server, _dir) = server().await;
    drover(&server, &["enqueue", "q", "n", "--id", "j"]).await.json();

    let refused = drover(&server, &["jobs", "retry", "j"]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.starts_with("error (409 invalid_state): job is waiting"), "{}", refused.stderr);
    assert!(refused.stdout.is_empty());

    assert_eq!(drover(&server, &["jobs", "cancel", "j"]).await.json()["state"], "cancelled");
    let twice = drover(&server, &["jobs", "cancel", "j"]).await;
    assert_eq!(twice.code, 1);
    assert!(twice.stderr.starts_with("error (409 invalid_state)"), "{}", twice.stderr);

    // A cancelled job can be retried.
    assert_eq!(drover(&server, &["jobs", "retry", "j"]).await.json()["state"], "waiting");

    // Ids with URL-special characters reach the right job.
    drover(&server, &["enqueue", "q", "n", "--id", "a/b?c#d"]).await.json();
    assert_eq!(drover(&server, &["jobs", "show", "a/b?c#d"]).await.json()["id"], "a/b?c#d");

    assert_eq!(drover(&server, &["jobs", "logs", "j"]).await.json(), json!({ "items": [] }));

    // Nothing listening: a readable error naming the server.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    command.args(["jobs", "show", "j", "--server", "http://127.0.0.1:9", "--json"]);
    let down = run(command).await;
    assert_eq!(down.code, 1);
    assert!(down.stderr.contains("cannot connect: http://127.0.0.1:9/"), "{}", down.stderr);
}

#[tokio::test]
async fn queues_list_pause_resume_set_and_retry_failed() {
    let (server, _dir) = server().await;
    drover(&server, &["enqueue", "emails", "n"]).await.json();
    drover(&server, &["enqueue", "emails", "n"]).await.json();

    let list = drover(&server, &["queues", "list"]).await.json();
    let emails = list["items"].as_array().unwrap().iter().find(|q| q["name"] == "emails").expect("listed").clone();
    assert_eq!(emails["paused"], false);
    assert_eq!(emails["counts"]["waiting"], 2);

    assert_eq!(drover(&server, &["queues", "pause", "emails"]).await.json()["paused"], true);
    let list = drover(&server, &["queues", "list"]).await.json();
    assert_eq!(list["items"].as_array().unwrap().iter().find(|q| q["name"] == "emails").unwrap()["paused"], true);
    assert_eq!(drover(&server, &["queues", "resume", "emails"]).await.json()["paused"], false);

    let set =
        drover(&server, &["queues", "set", "emails", "--concurrency", "4", "--rate-limit", "10/1000"]).await.json();
    assert_eq!(set["concurrency"], 4);
    assert_eq!(set["rate_limit"], json!({ "max": 10, "per_ms": 1000 }));
    // Settings not named keep their value.
    let set = drover(&server, &["queues", "set", "emails", "--concurrency", "none"]).await.json();
    assert_eq!(set["concurrency"], Value::Null);
    assert_eq!(set["rate_limit"], json!({ "max": 10, "per_ms": 1000 }));
    let set = drover(&server, &["queues", "set", "emails", "--rate-limit", "none"]).await.json();
    assert_eq!(set["rate_limit"], Value::Null);

    let bad = drover(&server, &["queues", "set", "emails", "--rate-limit", "10"]).await;
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("MAX/PER_MS"), "{}", bad.stderr);
    let nothing = drover(&server, &["queues", "set", "emails"]).await;
    assert_eq!(nothing.code, 1);
    assert!(nothing.stderr.contains("nothing to set"), "{}", nothing.stderr);

    assert_eq!(drover(&server, &["queues", "retry-failed", "emails"]).await.json(), json!({ "retried": 0 }));
}

fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let text: String = lines.into_iter().map(|l| l + "\n").collect();
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn import_jsonl_sends_every_line_in_batches() {
    let (server, dir) = server().await;
    let file = dir.path().join("jobs.jsonl");
    write_lines(&file, (1..=2_500).map(|i| json!({ "row": i, "name": format!("n{i}") }).to_string()));
    let path = file.to_str().unwrap();

    let summary = drover(&server, &["import", "imp", "handle", "--file", path, "--id-prefix", "r"]).await.json();
    assert_eq!(summary["total"], 2_500);
    assert_eq!(summary["created"], 2_500);
    assert_eq!(summary["duplicates"], 0);
    assert_eq!(summary["requests"], 3, "batches of 1000 by default");

    let jobs = jobs_of(&server, "imp").await;
    assert_eq!(jobs.len(), 2_500);
    let mut rows: Vec<u64> = jobs.iter().map(|j| j["payload"]["row"].as_u64().unwrap()).collect();
    rows.sort_unstable();
    assert_eq!(rows, (1..=2_500).collect::<Vec<_>>());
    let job = jobs.iter().find(|j| j["payload"]["row"] == 42).unwrap();
    assert_eq!((job["id"].as_str(), job["name"].as_str()), (Some("r-42"), Some("handle")));

    // A re-run with the same id prefix lands nothing new.
    let again =
        drover(&server, &["import", "imp", "handle", "--file", path, "--id-prefix", "r", "--batch", "700"]).await;
    let again = again.json();
    assert_eq!((again["created"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(2_500)));
    assert_eq!(again["requests"], 4);
    assert_eq!(jobs_of(&server, "imp").await.len(), 2_500);
}

#[tokio::test]
async fn import_jsonl_specs_take_their_own_fields() {
    let (server, dir) = server().await;
    let file = dir.path().join("specs.jsonl");
    write_lines(
        &file,
        [
            json!({ "payload": 1, "priority": 3 }).to_string(),
            String::new(),
            json!({ "queue": "other", "name": "own", "id": "s2" }).to_string(),
        ],
    );
    let path = file.to_str().unwrap();
    let summary = drover(&server, &["import", "sp", "dflt", "--file", path, "--specs", "--attempts", "7"]).await.json();
    assert_eq!(summary["created"], 2);
    let sp = jobs_of(&server, "sp").await;
    assert_eq!(sp.len(), 1);
    assert_eq!((sp[0]["name"].as_str(), sp[0]["priority"].as_i64()), (Some("dflt"), Some(3)));
    assert_eq!(sp[0]["max_attempts"], 7);
    let other = jobs_of(&server, "other").await;
    assert_eq!((other[0]["id"].as_str(), other[0]["name"].as_str()), (Some("s2"), Some("own")));
}

#[tokio::test]
async fn import_csv_rows_become_payload_objects() {
    let (server, dir) = server().await;
    let file = dir.path().join("people.csv");
    let rows = (1..=2_500).map(|i| format!("{i},\"Doe, J{i}\",0{i}"));
    write_lines(&file, std::iter::once("id,name,zip".to_owned()).chain(rows));
    let summary = drover(&server, &["import", "csvq", "person", "--file", file.to_str().unwrap(), "--batch", "1000"])
        .await
        .json();
    assert_eq!(summary["created"], 2_500);
    let jobs = jobs_of(&server, "csvq").await;
    assert_eq!(jobs.len(), 2_500);
    let job = jobs.iter().find(|j| j["payload"]["id"] == "17").unwrap();
    assert_eq!(job["payload"], json!({ "id": "17", "name": "Doe, J17", "zip": "017" }));
}

#[tokio::test]
async fn a_bad_line_stops_the_import_before_anything_is_sent() {
    let (server, dir) = server().await;
    let file = dir.path().join("bad.jsonl");
    let lines =
        (1..=2_000).map(|i| if i == 1_234 { "{\"row\": oops}".to_owned() } else { json!({ "row": i }).to_string() });
    write_lines(&file, lines);
    let run = drover(&server, &["import", "badq", "n", "--file", file.to_str().unwrap(), "--batch", "100"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("line 1234: not valid JSON"), "{}", run.stderr);
    assert!(jobs_of(&server, "badq").await.is_empty(), "nothing was imported");

    // A line the server would refuse is caught too, with its number.
    let file = dir.path().join("bad-spec.jsonl");
    write_lines(&file, [json!({}).to_string(), json!({ "priority": "high" }).to_string()]);
    let run = drover(&server, &["import", "badq", "n", "--file", file.to_str().unwrap(), "--specs"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("line 2: not a valid job spec"), "{}", run.stderr);

    let file = dir.path().join("bad.csv");
    write_lines(&file, ["a,b".to_owned(), "1,2".to_owned(), "3".to_owned()]);
    let run = drover(&server, &["import", "badq", "n", "--file", file.to_str().unwrap()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("line 3:"), "{}", run.stderr);
    assert!(jobs_of(&server, "badq").await.is_empty(), "nothing was imported");

    let unknown = dir.path().join("jobs.txt");
    std::fs::write(&unknown, "{}\n").unwrap();
    let run = drover(&server, &["import", "badq", "n", "--file", unknown.to_str().unwrap()]).await;
    assert!(run.code == 1 && run.stderr.contains("--format"), "{}", run.stderr);
}

/// Claims the one job of `queue` over the worker protocol, or `None` when
/// this server has no worker protocol yet.
async fn claim(server: &Server, queue: &str) -> Option<(String, String)> {
    let body = json!({ "worker_id": "cli-e2e", "queues": [queue], "max": 1, "wait_ms": 10_000 });
    let resp = http().post(server.url("/api/workers/fetch")).json(&body).send().await.unwrap();
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let answer: Value = resp.json().await.unwrap();
    let item = &answer["items"][0];
    Some((item["id"].as_str().unwrap().to_owned(), item["lease_token"].as_str().unwrap().to_owned()))
}

#[tokio::test]
async fn watch_exits_with_how_the_job_ended() {
    let (server, _dir) = server().await;
    // An already-finished job returns at once, with its end in the exit status.
    drover(&server, &["enqueue", "w", "n", "--id", "gone"]).await.json();
    drover(&server, &["jobs", "cancel", "gone"]).await.json();
    let watched = drover(&server, &["jobs", "watch", "gone"]).await;
    assert_eq!(watched.code, 4, "{}", watched.stderr);
    assert_eq!(watched.json_any()["state"], "cancelled");

    // A job that ends while watched: completed through the worker protocol.
    drover(&server, &["enqueue", "w", "n", "--id", "live"]).await.json();
    let base = server.base.clone();
    let watch = tokio::spawn(async move {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
        command.args(["jobs", "watch", "live", "--server", &base, "--json"]);
        run(command).await
    });
    match claim(&server, "w").await {
        Some((id, lease)) => {
            assert_eq!(id, "live");
            let report = |route: &str, body: Value| {
                http().post(server.url(&format!("/api/jobs/live/{route}"))).json(&body).send()
            };
            let resp = report("progress", json!({ "lease_token": lease, "progress": { "total": 10, "processed": 5 } }));
            assert!(resp.await.unwrap().status().is_success());
            let resp = report("complete", json!({ "lease_token": lease, "result": { "ok": true } })).await.unwrap();
            assert!(resp.status().is_success());
            let watched = watch.await.unwrap();
            let job = watched.json();
            assert_eq!(job["state"], "completed");
            assert_eq!(job["result"], json!({ "ok": true }));

            // A job that fails for good while watched: exit status 3.
            drover(&server, &["enqueue", "w", "n", "--id", "doomed", "--attempts", "1"]).await.json();
            let base = server.base.clone();
            let watch = tokio::spawn(async move {
                let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
                command.args(["jobs", "watch", "doomed", "--server", &base, "--json"]);
                run(command).await
            });
            let (_, lease) = claim(&server, "w").await.unwrap();
            let fail = json!({ "lease_token": lease, "error": { "message": "boom" }, "retryable": false });
            let resp = http().post(server.url("/api/jobs/doomed/fail")).json(&fail).send().await.unwrap();
            assert!(resp.status().is_success());
            let watched = watch.await.unwrap();
            assert_eq!(watched.code, 3, "{}", watched.stderr);
            assert_eq!(watched.json_any()["state"], "failed");
        }
        None => {
            // No worker protocol on this server yet: end the job by cancelling it.
            drover(&server, &["jobs", "cancel", "live"]).await.json();
            let watched = watch.await.unwrap();
            assert_eq!(watched.code, 4, "{}", watched.stderr);
        }
    }
}

impl Run {
    /// Stdout as JSON whatever the exit status.
    fn json_any(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}
