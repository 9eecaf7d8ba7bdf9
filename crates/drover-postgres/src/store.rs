//! [`Store`] for [`PgStore`]: each method is the inherent method of the
//! same name in the module that holds its area (see the crate docs).

use crate::PgStore;
use async_trait::async_trait;
use drover_core::{
    BatchSpec, Event, FlowSpec, Job, JobId, JobSpec, KeyLimit, LeaseToken, LogEntry, Progress, QueueConfig, Schedule,
    ScheduleSpec, Timestamp,
};
use drover_store::{
    BatchInfo, BatchInserted, CancelOutcome, ClaimedJob, Finished, HeartbeatReply, Inserted, JobClaimParams,
    JobEventEmit, JobFinish, JobHeartbeat, JobListParams, JobLogAppend, JobPage, QueueInfo, RateLimitRule,
    RateLimitState, RescueReport, ScheduleFired, ScheduleListParams, SchedulePage, ScheduleUpserted, Store,
    StoreResult,
};
use tokio::sync::{broadcast, watch};

#[async_trait]
impl Store for PgStore {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn job_insert_many(&self, specs: Vec<JobSpec>) -> StoreResult<Vec<Inserted>> {
        crate::jobs::job_insert_many(self, specs).await
    }

    async fn job_get(&self, id: &JobId) -> StoreResult<Option<Job>> {
        crate::jobs::job_get(self, id).await
    }

    async fn job_list(&self, params: JobListParams) -> StoreResult<JobPage> {
        crate::list::job_list(self, params).await
    }

    async fn job_claim(&self, params: JobClaimParams) -> StoreResult<Vec<ClaimedJob>> {
        crate::claim::job_claim(self, params).await
    }

    async fn job_heartbeat_many(&self, beats: Vec<JobHeartbeat>) -> StoreResult<Vec<StoreResult<HeartbeatReply>>> {
        crate::lease::job_heartbeat_many(self, beats).await
    }

    async fn job_progress(&self, id: &JobId, lease_token: LeaseToken, progress: Progress) -> StoreResult<()> {
        crate::lease::job_progress(self, id, lease_token, progress).await
    }

    async fn job_log_append(&self, params: JobLogAppend) -> StoreResult<()> {
        crate::lease::job_log_append(self, params).await
    }

    async fn job_log_list(&self, id: &JobId, after: u64, limit: u32) -> StoreResult<Vec<LogEntry>> {
        crate::lease::job_log_list(self, id, after, limit).await
    }

    async fn job_event_emit(&self, params: JobEventEmit) -> StoreResult<()> {
        crate::lease::job_event_emit(self, params).await
    }

    async fn job_finish_many(&self, items: Vec<JobFinish>) -> StoreResult<Vec<StoreResult<Finished>>> {
        crate::finish::job_finish_many(self, items).await
    }

    async fn job_cancel(&self, id: &JobId) -> StoreResult<CancelOutcome> {
        crate::admin::job_cancel(self, id).await
    }

    async fn job_retry(&self, id: &JobId) -> StoreResult<Job> {
        crate::admin::job_retry(self, id).await
    }

    async fn job_rescue_expired(&self) -> StoreResult<RescueReport> {
        crate::maintenance::job_rescue_expired(self).await
    }

    async fn job_promote_due(&self) -> StoreResult<u64> {
        crate::maintenance::job_promote_due(self).await
    }

    async fn job_expire_due(&self) -> StoreResult<u64> {
        crate::maintenance::job_expire_due(self).await
    }

    async fn job_retention_sweep(&self, limit: u32) -> StoreResult<u64> {
        crate::retention::job_retention_sweep(self, limit).await
    }

    async fn job_next_due(&self, queues: &[String]) -> StoreResult<Option<Timestamp>> {
        crate::claim::job_next_due(self, queues).await
    }

    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        crate::queues::queue_list(self).await
    }

    async fn queue_get(&self, name: &str) -> StoreResult<QueueInfo> {
        crate::queues::queue_get(self, name).await
    }

    async fn queue_config_set(&self, name: &str, config: QueueConfig) -> StoreResult<QueueInfo> {
        crate::queues::queue_config_set(self, name, config).await
    }

    async fn rate_limit_set(&self, key: &str, limit: KeyLimit) -> StoreResult<RateLimitRule> {
        crate::limits::rate_limit_set(self, key, limit).await
    }

    async fn rate_limit_delete(&self, key: &str) -> StoreResult<bool> {
        crate::limits::rate_limit_delete(self, key).await
    }

    async fn rate_limit_list(&self) -> StoreResult<Vec<RateLimitRule>> {
        crate::limits::rate_limit_list(self).await
    }

    async fn rate_limit_get(&self, key: &str) -> StoreResult<RateLimitState> {
        crate::limits::rate_limit_get(self, key).await
    }

    async fn queue_pause_set(&self, name: &str, paused: bool) -> StoreResult<QueueInfo> {
        crate::queues::queue_pause_set(self, name, paused).await
    }

    fn ready_signal(&self) -> watch::Receiver<u64> {
        self.shared.ready.subscribe()
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.bus.subscribe()
    }

    async fn schedule_upsert(&self, spec: ScheduleSpec) -> StoreResult<ScheduleUpserted> {
        crate::schedules::schedule_upsert(self, spec).await
    }

    async fn schedule_get(&self, id: &str) -> StoreResult<Option<Schedule>> {
        crate::schedules::schedule_get(self, id).await
    }

    async fn schedule_list(&self, params: ScheduleListParams) -> StoreResult<SchedulePage> {
        crate::schedules::schedule_list(self, params).await
    }

    async fn schedule_pause_set(&self, id: &str, paused: bool) -> StoreResult<Schedule> {
        crate::schedules::schedule_pause_set(self, id, paused).await
    }

    async fn schedule_delete(&self, id: &str) -> StoreResult<bool> {
        crate::schedules::schedule_delete(self, id).await
    }

    async fn schedule_fire_due(&self) -> StoreResult<Vec<ScheduleFired>> {
        crate::schedules::schedule_fire_due(self).await
    }

    async fn schedule_next_due(&self) -> StoreResult<Option<Timestamp>> {
        crate::schedules::schedule_next_due(self).await
    }

    fn schedule_signal(&self) -> watch::Receiver<u64> {
        self.shared.schedules.subscribe()
    }

    async fn job_children(&self, id: &JobId) -> StoreResult<Vec<Job>> {
        crate::flow::job_children(self, id).await
    }

    async fn flow_insert(&self, flow: FlowSpec) -> StoreResult<Vec<Inserted>> {
        crate::flow::flow_insert(self, flow).await
    }

    async fn batch_insert(&self, batch: BatchSpec) -> StoreResult<BatchInserted> {
        crate::flow::batch_insert(self, batch).await
    }

    async fn batch_get(&self, id: &str) -> StoreResult<Option<BatchInfo>> {
        crate::flow::batch_get(self, id).await
    }
}
