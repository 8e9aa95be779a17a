//! The `flags` section: how often each instance reloads its feature flags, which request
//! header names the caller's country for flag rules, and how long the audit log keeps entries.

use serde::{Deserialize, Serialize};

use super::{Validate, check_ranges};

/// Feature flags and the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlagsConfig {
    /// Each instance checks the stored flags' generation this often and reloads them when it
    /// moved: a change made on any instance is evaluated everywhere within this bound.
    pub refresh_interval_ms: u64,
    /// A request header carrying the caller's ISO country code for `country` conditions (for
    /// example `cf-ipcountry` behind Cloudflare); unset: only checkout knows a country (the
    /// shipping address).
    pub country_header: Option<String>,
    /// Audit entries older than this are purged (by the daily `audit.purge` job).
    pub audit_retention_days: u32,
}

impl Default for FlagsConfig {
    fn default() -> Self {
        Self { refresh_interval_ms: 500, country_header: None, audit_retention_days: 400 }
    }
}

impl FlagsConfig {
    pub fn refresh_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.refresh_interval_ms)
    }
}

impl Validate for FlagsConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        check_ranges(
            problems,
            [
                ("flags.refresh_interval_ms", self.refresh_interval_ms, 50..=60_000),
                ("flags.audit_retention_days", u64::from(self.audit_retention_days), 1..=36_500),
            ],
        );
        if let Some(header) = &self.country_header
            && axum::http::HeaderName::try_from(header.as_str()).is_err()
        {
            problems.push("flags.country_header: must be a valid HTTP header name".into());
        }
    }
}
