//! Heartbeats on a thread of their own, with its own small runtime, so that
//! handlers that block or hog the CPU cannot starve them and lose leases.

use super::Shared;
use drover_store::{JobHeartbeat, StoreError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(super) struct HeartbeatThread {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub(super) fn spawn(shared: Arc<Shared>) -> HeartbeatThread {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let thread = std::thread::Builder::new()
        .name("drover-heartbeat".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(beat(shared, token));
        })
        .expect("the heartbeat thread starts");
    HeartbeatThread { stop, thread: Some(thread) }
}

impl HeartbeatThread {
    pub(super) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for HeartbeatThread {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn beat(shared: Arc<Shared>, stop: CancellationToken) {
    let lease_ms = u64::try_from(shared.config.lease.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(shared.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let beats: Vec<JobHeartbeat> = shared
            .active
            .lock()
            .iter()
            .map(|(id, active)| JobHeartbeat {
                id: id.clone(),
                lease_token: active.lease_token,
                lease_ms,
                progress: None,
            })
            .collect();
        if beats.is_empty() {
            continue;
        }
        match shared.store.job_heartbeat_many(beats.clone()).await {
            Ok(replies) => {
                for (beat, reply) in beats.iter().zip(replies) {
                    let stop_job = match reply {
                        Ok(reply) => reply.cancel_requested,
                        Err(StoreError::LeaseLost(_)) => true,
                        Err(_) => false,
                    };
                    if stop_job && let Some(active) = shared.active.lock().get(&beat.id) {
                        active.cancel.cancel();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = beats.len(), "heartbeat failed; leases may expire if this persists")
            }
        }
    }
}
