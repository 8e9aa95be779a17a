//! The `jobs` section: the job queue's worker, its queues, retries, retention and the cron
//! schedules of recurring jobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::durations::{DAYS, HOURS, SECS, std_count, std_millis};
use super::{Validate, check_ranges};

/// The job queue and its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// `serve` runs a worker in-process (`serve --no-worker` overrides it).
    pub run_worker_in_serve: bool,
    /// Queues served and how many jobs of each run at once (a bulkhead per queue).
    pub queues: BTreeMap<String, usize>,
    /// Most jobs taken by one claim.
    pub batch_size: u32,
    /// How often an idle queue is polled.
    pub poll_interval_ms: u64,
    /// How long a claimed job is leased; a heartbeat renews it while the job runs.
    pub lease_secs: u64,
    /// One attempt running longer fails.
    pub job_timeout_secs: u64,
    /// Backoff between attempts: from this, doubling, jittered…
    pub retry_base_secs: u64,
    /// …up to this.
    pub retry_max_secs: u64,
    /// On shutdown, running jobs get this long to finish; the rest are given back.
    pub shutdown_timeout_secs: u64,
    /// Succeeded jobs are deleted this long after finishing (steady state).
    pub succeeded_retention_hours: u64,
    /// Dead jobs are kept this long for operators.
    pub dead_retention_days: u64,
    /// Cron expressions (UTC) replacing the built-in intervals of recurring jobs, by job name:
    /// `"mail.purge_outbox" = "30 3 * * *"`. Five fields, six with seconds first, or
    /// `@hourly`/`@daily`/`@weekly`.
    pub schedules: BTreeMap<String, String>,
}

/// The retention keys take the defaults of `shop::jobs::JobSettings`, the worker's keys those
/// of `worker::WorkerSettings::new`, in the unit of their key. The section is not read into
/// them straight (as `orders` is) because it configures both of them and this crate besides
/// (`run_worker_in_serve`, `schedules`), and `retry_max_secs` also bounds stale webhook
/// deliveries (`app::webhook_service`); `crate::jobs` builds the settings. `queues` has its
/// own default: the worker's serves only `default`, while this crate's jobs need `mail` and
/// `webhooks` too.
impl Default for JobsConfig {
    fn default() -> Self {
        let retention = shop::jobs::JobSettings::default();
        let worker = worker::WorkerSettings::new(String::new());
        Self {
            run_worker_in_serve: true,
            queues: [("default".to_owned(), 8), ("mail".to_owned(), 4), ("webhooks".to_owned(), 4)]
                .into_iter()
                .collect(),
            batch_size: worker.batch_size,
            poll_interval_ms: std_millis(worker.poll_interval),
            lease_secs: std_count(worker.lease, SECS),
            job_timeout_secs: std_count(worker.job_timeout, SECS),
            retry_base_secs: std_count(worker.retry_base, SECS),
            retry_max_secs: std_count(worker.retry_max, SECS),
            shutdown_timeout_secs: std_count(worker.shutdown_timeout, SECS),
            succeeded_retention_hours: std_count(retention.succeeded_retention, HOURS),
            dead_retention_days: std_count(retention.dead_retention, DAYS),
            schedules: BTreeMap::new(),
        }
    }
}

impl Validate for JobsConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        check_ranges(
            problems,
            [
                ("jobs.batch_size", u64::from(self.batch_size), 1..=1_000),
                ("jobs.poll_interval_ms", self.poll_interval_ms, 10..=600_000),
                ("jobs.lease_secs", self.lease_secs, 3..=86_400),
                ("jobs.job_timeout_secs", self.job_timeout_secs, 1..=86_400),
                ("jobs.retry_base_secs", self.retry_base_secs, 1..=86_400),
                ("jobs.retry_max_secs", self.retry_max_secs, 1..=604_800),
                ("jobs.shutdown_timeout_secs", self.shutdown_timeout_secs, 1..=3_600),
                ("jobs.succeeded_retention_hours", self.succeeded_retention_hours, 1..=87_600),
                ("jobs.dead_retention_days", self.dead_retention_days, 1..=3_650),
            ],
        );
        if self.retry_base_secs > self.retry_max_secs {
            problems.push("jobs.retry_base_secs: must not exceed jobs.retry_max_secs".into());
        }
        self.validate_queues(problems);
        for (name, expression) in &self.schedules {
            if !crate::jobs::RECURRING.contains(&name.as_str()) {
                problems.push(format!(
                    "jobs.schedules.{name:?}: no such recurring job (there are {})",
                    crate::jobs::RECURRING.join(", ")
                ));
            }
            if let Err(problem) = shop::jobs::CronSchedule::parse(expression) {
                problems.push(format!("jobs.schedules.{name:?}: {problem}"));
            }
        }
    }
}

impl JobsConfig {
    fn validate_queues(&self, problems: &mut Vec<String>) {
        if self.queues.is_empty() {
            problems.push("jobs.queues: at least one queue is needed".into());
        }
        for (queue, why) in [
            (shop::mail::MAIL_QUEUE, "mail is sent from it"),
            (shop::webhooks::WEBHOOKS_QUEUE, "webhooks are delivered from it"),
        ] {
            if !self.queues.contains_key(queue) {
                problems.push(format!("jobs.queues: the {queue:?} queue is needed ({why})"));
            }
        }
        for (queue, concurrency) in &self.queues {
            if !(1..=1_024).contains(concurrency) {
                problems.push(format!("jobs.queues.{queue}: concurrency must be between 1 and 1024"));
            }
        }
    }
}
