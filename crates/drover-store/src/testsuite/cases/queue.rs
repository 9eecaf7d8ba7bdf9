//! Cases about queues: config round trip, counts per state, the queue list.

use super::support::*;
use crate::testsuite::{Factory, fresh};
use crate::{FinishOutcome, StateCounts};
use drover_core::{FailureReport, JobError, JobSpec, QueueConfig, RateLimit, Retention, RetentionRule};
use serde_json::json;

fn config() -> QueueConfig {
    let mut defaults = serde_json::Map::new();
    defaults.insert("attempts".into(), json!(5));
    QueueConfig {
        concurrency: Some(4),
        rate_limit: Some(RateLimit { max: 10, per_ms: 1_000 }),
        default_job_options: defaults,
        retention: Retention {
            completed: RetentionRule { count: Some(10), age_ms: None },
            failed: RetentionRule { count: None, age_ms: Some(60_000) },
        },
    }
}

/// A queue never seen reads as unpaused with the default config and zero
/// counts; a config set is returned and read back whole, and a second set
/// replaces it rather than merging.
pub async fn queue_config_and_counts(make: Factory) {
    let t = fresh(make).await;
    let unknown = t.store.queue_get("never-seen").await.unwrap();
    assert_eq!(unknown.name, "never-seen");
    assert!(!unknown.paused);
    assert_eq!(unknown.config, QueueConfig::default());
    assert_eq!(unknown.counts, StateCounts::default());

    let set = t.store.queue_config_set("mail", config()).await.unwrap();
    assert_eq!((set.name.as_str(), &set.config), ("mail", &config()));
    assert_eq!(t.store.queue_get("mail").await.unwrap().config, config());

    let smaller = QueueConfig { concurrency: Some(1), ..QueueConfig::default() };
    t.store.queue_config_set("mail", smaller.clone()).await.unwrap();
    let read = t.store.queue_get("mail").await.unwrap();
    assert_eq!(read.config, smaller, "a set replaces the whole config");
    assert!(!read.paused, "config and pause are separate");
    t.store.queue_pause_set("mail", true).await.unwrap();
    t.store.queue_config_set("mail", config()).await.unwrap();
    assert!(t.store.queue_get("mail").await.unwrap().paused, "setting the config keeps the pause");
}

/// A config for a badly named queue is refused with `Invalid`.
pub async fn queue_config_refuses_bad_name(make: Factory) {
    let t = fresh(make).await;
    for bad in ["", "has space", "tab\tname", &"x".repeat(129)] {
        assert_invalid(t.store.queue_config_set(bad, QueueConfig::default()).await, None);
    }
}

/// Queue counts report exactly how many jobs sit in each state.
pub async fn queue_counts_per_state(make: Factory) {
    let t = fresh(make).await;
    let q = |name: &str| JobSpec::new("count", name);
    // Two of each: completed, failed, cancelled, active, delayed; three waiting.
    insert_all(&t, (0..2).map(|_| q("c")).collect()).await;
    for c in claim(&t, &["count"], 2).await {
        finish_ok(&t, &c, json!(null)).await;
    }
    insert_all(&t, (0..2).map(|_| q("f")).collect()).await;
    for c in claim(&t, &["count"], 2).await {
        let fatal = FailureReport::fatal(JobError::new("x"));
        finish(&t, &c.job.id, c.lease_token, FinishOutcome::Fail(fatal)).await.unwrap();
    }
    for job in insert_all(&t, (0..2).map(|_| q("x")).collect()).await {
        t.store.job_cancel(&job.id).await.unwrap();
    }
    insert_all(&t, (0..2).map(|_| q("a")).collect()).await;
    assert_eq!(claim(&t, &["count"], 2).await.len(), 2);
    insert_all(&t, (0..2).map(|_| q("d").delay_ms(60_000)).collect()).await;
    insert_all(&t, (0..3).map(|_| q("w")).collect()).await;
    insert_one(&t, JobSpec::new("elsewhere", "noise")).await;

    let expected =
        StateCounts { waiting: 3, delayed: 2, waiting_children: 0, active: 2, completed: 2, failed: 2, cancelled: 2 };
    assert_eq!(counts(&t, "count").await, expected);
    assert_eq!(counts(&t, "elsewhere").await.total(), 1);
}

/// `queue_list` names every configured queue and every queue holding jobs,
/// once each, sorted by name, with its counts.
pub async fn queue_list_sorted_with_counts(make: Factory) {
    let t = fresh(make).await;
    insert_all(&t, vec![JobSpec::new("zeta", "j"), JobSpec::new("alpha", "j"), JobSpec::new("alpha", "j")]).await;
    t.store.queue_config_set("mid", config()).await.unwrap();
    t.store.queue_config_set("alpha", config()).await.unwrap();
    let list = t.store.queue_list().await.unwrap();
    let names: Vec<&str> = list.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert_eq!(list[0].counts.waiting, 2);
    assert_eq!(list[0].config, config());
    assert_eq!(list[1].counts.total(), 0);
    assert_eq!(list[2].counts.waiting, 1);
    assert_eq!(list[2].config, QueueConfig::default());
}
