//! The `webhooks` section: merchant webhooks, their URL rules, delivery attempts, automatic
//! disabling and the delivery log's retention.

use serde::{Deserialize, Serialize};

use super::{Validate, check_ranges};

/// Merchant webhooks: endpoints registered through the API, deliveries made by jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Accept `http://` endpoint URLs (tests, local development); otherwise only `https://`.
    pub allow_insecure_urls: bool,
    /// Accept endpoints on loopback, private and link-local addresses (tests, an intranet).
    pub allow_private_networks: bool,
    /// Endpoints that may exist at once.
    pub max_endpoints: u32,
    /// One delivery attempt (connect, send, answer) must finish within this.
    pub timeout_secs: u64,
    /// Attempts per delivery; the job queue's backoff (`jobs.retry_base_secs` doubling up to
    /// `jobs.retry_max_secs`) runs between them.
    pub max_attempts: u32,
    /// An endpoint whose delivery used its last attempt is disabled when this many attempts in
    /// a row (across its deliveries) failed.
    pub disable_after_failures: u32,
    /// The `webhook_auto_disable` governor: endpoints disabled automatically per hour at most,
    /// per worker process.
    pub auto_disable_max_per_hour: u32,
    /// Deliveries sent at once to one endpoint, per worker process (each endpoint's bulkhead).
    pub max_concurrent: usize,
    /// Finished deliveries are deleted from the log this long after they were created.
    pub retention_days: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_insecure_urls: false,
            allow_private_networks: false,
            max_endpoints: 20,
            timeout_secs: 10,
            max_attempts: 15,
            disable_after_failures: 15,
            auto_disable_max_per_hour: 5,
            max_concurrent: 4,
            retention_days: 30,
        }
    }
}

impl Validate for WebhooksConfig {
    /// The `webhooks` queue they are delivered from is checked with `jobs.queues`.
    fn validate(&self, problems: &mut Vec<String>) {
        check_ranges(
            problems,
            [
                ("webhooks.max_endpoints", u64::from(self.max_endpoints), 1..=1_000),
                ("webhooks.timeout_secs", self.timeout_secs, 1..=60),
                ("webhooks.max_attempts", u64::from(self.max_attempts), 1..=30),
                ("webhooks.disable_after_failures", u64::from(self.disable_after_failures), 1..=10_000),
                ("webhooks.auto_disable_max_per_hour", u64::from(self.auto_disable_max_per_hour), 0..=1_000),
                ("webhooks.max_concurrent", self.max_concurrent as u64, 1..=256),
                ("webhooks.retention_days", self.retention_days, 1..=3_650),
            ],
        );
    }
}
