//! End-to-end: schedules on the real `drover serve` binary. Interval and
//! cron (with seconds) schedules enqueue jobs named after their tick; list,
//! get, replace and delete over HTTP; bad input answers 4xx error bodies;
//! ticks missed while the server was down run once at start-up; and the
//! `drover schedules` commands round-trip.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Server, http};

async fn send(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = http().request(method, server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(server: &Server, body: Value) -> (StatusCode, Value) {
    send(server, reqwest::Method::POST, "/api/schedules", Some(body)).await
}

/// The ticks (milliseconds) of the jobs schedule `id` enqueued on `queue`.
async fn ticks(server: &Server, queue: &str, id: &str) -> Vec<i64> {
    let (status, page) = send(server, reqwest::Method::GET, &format!("/api/jobs?queue={queue}&limit=1000"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut ticks: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            let job_id = job["id"].as_str().unwrap();
            let tick = job_id.strip_prefix(&format!("sched:{id}:")).unwrap_or_else(|| panic!("job id {job_id}"));
            tick.parse().unwrap()
        })
        .collect();
    ticks.sort_unstable();
    ticks
}

/// Polls until schedule `id` enqueued at least `n` jobs on `queue`.
async fn wait_for_ticks(server: &Server, queue: &str, id: &str, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = ticks(server, queue, id).await;
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "schedule {id}: {} of {n} jobs after 20 s", found.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn millis(rfc3339: &Value) -> i64 {
    rfc3339.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn schedules_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;

    let (status, fast) = post(
        &server,
        json!({ "id": "fast", "every_ms": 200, "job": { "queue": "s-fast", "name": "tick", "payload": {"k": 1} } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{fast}");
    assert_eq!((&fast["every_ms"], &fast["cron"], &fast["timezone"]), (&json!(200), &Value::Null, &Value::Null));
    let first = millis(&fast["next_run_at"]);
    let found = wait_for_ticks(&server, "s-fast", "fast", 3).await;
    assert_eq!(found[0], first, "the first job is the first tick's");
    for tick in &found {
        assert_eq!((tick - first) % 200, 0, "tick {tick} is on the 200 ms grid from {first}");
    }
    let (_, job) = send(&server, reqwest::Method::GET, &format!("/api/jobs/sched:fast:{first}"), None).await;
    assert_eq!((&job["name"], &job["payload"]), (&json!("tick"), &json!({"k": 1})), "{job}");

    let (status, cron) = post(
        &server,
        json!({ "id": "each-second", "cron": "*/1 * * * * *", "timezone": "Europe/Berlin",
                "job": { "queue": "s-cron", "name": "tick" } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{cron}");
    let found = wait_for_ticks(&server, "s-cron", "each-second", 1).await;
    assert_eq!(found[0] % 1_000, 0, "cron ticks fall on whole seconds");

    let (status, page) = send(&server, reqwest::Method::GET, "/api/schedules", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!((ids, &page["next_cursor"]), (vec!["each-second", "fast"], &Value::Null));
    let (status, one) = send(&server, reqwest::Method::GET, "/api/schedules/fast", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(one["last_job_id"].as_str().unwrap().starts_with("sched:fast:"), "{one}");

    // Posting an existing id replaces the schedule: 200.
    let (status, replaced) =
        post(&server, json!({ "id": "fast", "every_ms": 3600000, "job": { "queue": "s-fast", "name": "tick" } })).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!((&replaced["every_ms"], &replaced["created_at"]), (&json!(3600000), &fast["created_at"]));

    let (status, deleted) = send(&server, reqwest::Method::DELETE, "/api/schedules/each-second", None).await;
    assert_eq!((status, &deleted["deleted"]), (StatusCode::OK, &json!(true)));
    for (method, path) in [
        (reqwest::Method::GET, "/api/schedules/each-second"),
        (reqwest::Method::DELETE, "/api/schedules/each-second"),
        (reqwest::Method::POST, "/api/schedules/each-second/pause"),
    ] {
        let (status, error) = send(&server, method, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
        assert_eq!(error["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn bad_schedules_get_error_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let job = json!({ "queue": "q", "name": "n" });
    for (body, field) in [
        (json!({ "id": "s", "every_ms": 0, "job": job }), "every_ms"),
        (json!({ "id": "s", "cron": "not cron", "job": job }), "cron"),
        (json!({ "id": "s", "cron": "0 0 31 2 *", "job": job }), "cron"),
        (json!({ "id": "s", "cron": "* * * * *", "timezone": "Mars/Olympus", "job": job }), "timezone"),
        (json!({ "id": "s", "cron": "* * * * *", "every_ms": 5, "job": job }), "cron"),
        (json!({ "id": "s", "job": job }), "cron"),
        (json!({ "id": "a/b", "every_ms": 5, "job": job }), "id"),
        (json!({ "id": "s", "every_ms": 5, "job": { "queue": "q", "name": "n", "id": "x" } }), "job.id"),
        (json!({ "id": "s", "every_ms": 5, "job": { "queue": "q q", "name": "n" } }), "job.queue"),
    ] {
        let (status, error) = post(&server, body.clone()).await;
        assert_eq!(status.as_u16(), 422, "{body} -> {error}");
        assert_eq!(error["error"]["code"], "validation_failed", "{error}");
        assert_eq!(error["error"]["details"]["field"], field, "{body} -> {error}");
    }
    let (status, error) = post(&server, json!({ "id": "s", "every_ms": 5, "job": job, "paused": true })).await;
    assert_eq!((status.as_u16(), &error["error"]["code"]), (422, &json!("invalid_body")), "{error}");
    let resp = http()
        .post(server.url("/api/schedules"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (_, page) = send(&server, reqwest::Method::GET, "/api/schedules", None).await;
    assert_eq!(page["items"], json!([]), "nothing was stored");
}

/// The documented policy: ticks missed while no server ran collapse into
/// one run at start-up, for the first missed tick.
#[tokio::test]
async fn missed_ticks_run_once_after_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e2e.db");
    let server = Server::start(&db).await;
    let (status, created) =
        post(&server, json!({ "id": "down", "every_ms": 3000, "job": { "queue": "s-down", "name": "n" } })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = millis(&created["next_run_at"]);
    assert!(server.terminate().await.success());
    assert!(now_ms() < first, "the server stopped before the first tick (it is 3 s away)");
    // Down for the first tick and at least two more: the point of the test,
    // not a wait for luck.
    let back_at = first + 2 * 3000 + 100;
    tokio::time::sleep(Duration::from_millis(u64::try_from(back_at - now_ms()).unwrap_or(0))).await;
    let restarted_at = now_ms();
    let server = Server::start(&db).await;
    let found = wait_for_ticks(&server, "s-down", "down", 1).await;
    assert_eq!(found[0], first, "the run at start-up is the first missed tick's");
    let missed: Vec<_> = found.iter().filter(|t| **t < restarted_at).collect();
    assert_eq!(missed, [&first], "three missed ticks, one run");
    let (_, schedule) = send(&server, reqwest::Method::GET, "/api/schedules/down", None).await;
    let next = millis(&schedule["next_run_at"]);
    assert!(next > restarted_at && (next - first) % 3000 == 0, "next tick {next} is after start-up, on the grid");
}

/// Runs `drover ARGS --server BASE --json`; (exit code, stdout, stderr).
async fn drover(server: &Server, args: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    command.args(args).args(["--server", &server.base, "--json"]);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("DROVER_")) {
        command.env_remove(key);
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let output =
        tokio::time::timeout(Duration::from_secs(60), command.output()).await.expect("finished in time").unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_of(run: &(i32, String, String)) -> Value {
    assert_eq!(run.0, 0, "exit {}; stderr: {}; stdout: {}", run.0, run.2, run.1);
    serde_json::from_str(&run.1).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", run.1))
}

#[tokio::test]
async fn cli_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("e2e.db")).await;
    let add = [
        "schedules",
        "add",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "America/New_York",
        "--queue",
        "ops",
        "--name",
        "cleanup",
        "--payload",
        r#"{"deep": true}"#,
        "--attempts",
        "5",
    ];
    let added = json_of(&drover(&server, &add).await);
    assert_eq!((&added["id"], &added["timezone"]), (&json!("nightly"), &json!("America/New_York")));
    assert_eq!((&added["job"]["payload"], &added["job"]["attempts"]), (&json!({"deep": true}), &json!(5)));
    let listed = json_of(&drover(&server, &["schedules", "list"]).await);
    assert_eq!(listed["items"][0]["id"], "nightly", "{listed}");
    let shown = json_of(&drover(&server, &["schedules", "show", "nightly"]).await);
    assert_eq!(shown["next_run_at"], added["next_run_at"]);
    let paused = json_of(&drover(&server, &["schedules", "pause", "nightly"]).await);
    assert_eq!(paused["paused"], true, "{paused}");
    let resumed = json_of(&drover(&server, &["schedules", "resume", "nightly"]).await);
    assert_eq!(resumed["paused"], false, "{resumed}");
    let removed = json_of(&drover(&server, &["schedules", "remove", "nightly"]).await);
    assert_eq!(removed["deleted"], true);
    let (code, _, stderr) = drover(&server, &["schedules", "show", "nightly"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("not_found"), "{stderr}");
    let (code, _, stderr) = drover(&server, &["schedules", "add", "s", "--queue", "q", "--name", "n"]).await;
    assert_eq!(code, 2, "neither --cron nor --every-ms is a usage error: {stderr}");
    let (code, _, stderr) =
        drover(&server, &["schedules", "add", "s", "--every-ms", "0", "--queue", "q", "--name", "n"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("every_ms"), "the server's validation error is shown: {stderr}");
}
