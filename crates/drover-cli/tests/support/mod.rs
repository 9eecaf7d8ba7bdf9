//! End-to-end test support: the real `drover` binary on port 0, and an HTTP
//! client for it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `drover serve` on a SQLite file.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The process, killed on drop.
    pub child: Child,
    /// The database file.
    pub db: PathBuf,
}

impl Server {
    /// Starts `drover serve` on `db` and waits for its listening line.
    pub async fn start(db: &Path) -> Server {
        Self::start_with(db, &[]).await
    }

    /// Like [`Server::start`], with more `serve` arguments (e.g. `--demo`).
    pub async fn start_with(db: &Path, extra_args: &[&str]) -> Server {
        let mut server = Self::start_url(&format!("sqlite://{}", db.display()), extra_args).await;
        server.db = db.to_owned();
        server
    }

    /// Starts `drover serve --database URL` (any store URL) with more
    /// arguments; `db` is left empty.
    pub async fn start_url(url: &str, extra_args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", url])
            .args(extra_args)
            .env("DROVER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the drover binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("drover printed its listening line in time")
            .unwrap()
            .expect("drover exited before listening");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { base, child, db: PathBuf::new() }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM, and wait for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        // The standard library can only SIGKILL a child; kill(1) sends SIGTERM.
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("exits after SIGTERM").unwrap()
    }
}

/// An HTTP client with a short timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}
