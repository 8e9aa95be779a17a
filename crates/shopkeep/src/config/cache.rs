//! The `cache` section: the in-process cache of catalog and search reads — its size, TTLs and
//! how stale a read may be after another instance wrote — and the shared Redis tier behind it.

use serde::{Deserialize, Serialize};
use shop::cache::CacheSettings;
use time::Duration;

use super::{Validate, check_ranges};

/// Read caching. Defaults: `shop::cache::CacheSettings::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Off: every read goes to the database.
    pub enabled: bool,
    /// Upper bound of the memory each cache holds (an estimate of its entries' bytes).
    pub capacity_mb: u64,
    /// How long an entry lives at most.
    pub ttl_ms: u64,
    /// Each entry's TTL is shortened by a random fraction up to this (0–0.5), so entries
    /// filled together do not expire together.
    pub ttl_jitter: f64,
    /// How long a "not found" is remembered.
    pub negative_ttl_ms: u64,
    /// The most a read may lag a write made by another instance (or by SQL from outside):
    /// each instance checks the database's catalog generation this often. Writes made by the
    /// instance itself are seen by its next read.
    pub max_staleness_ms: u64,
    /// With `redis.url` set: local misses of catalog and search reads look in Redis (shared by
    /// every instance) before the database, and writes are announced to every instance over
    /// Redis pub/sub, so they are seen elsewhere within milliseconds, not `max_staleness_ms`.
    pub shared: bool,
    /// How long one instance may fill a shared key alone while the others wait for its value.
    pub lease_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        let defaults = CacheSettings::default();
        let millis = |duration: Duration| u64::try_from(duration.whole_milliseconds()).unwrap_or(u64::MAX);
        Self {
            enabled: defaults.enabled,
            capacity_mb: defaults.capacity_bytes / (1024 * 1024),
            ttl_ms: millis(defaults.ttl),
            ttl_jitter: defaults.jitter,
            negative_ttl_ms: millis(defaults.negative_ttl),
            max_staleness_ms: millis(defaults.max_staleness),
            shared: true,
            lease_ms: millis(defaults.lease),
        }
    }
}

impl CacheConfig {
    pub fn settings(&self) -> CacheSettings {
        let millis = |ms: u64| Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX));
        CacheSettings {
            enabled: self.enabled,
            capacity_bytes: self.capacity_mb.saturating_mul(1024 * 1024),
            ttl: millis(self.ttl_ms),
            jitter: self.ttl_jitter,
            negative_ttl: millis(self.negative_ttl_ms),
            max_staleness: millis(self.max_staleness_ms),
            lease: millis(self.lease_ms),
        }
    }
}

impl Validate for CacheConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        check_ranges(
            problems,
            [
                ("cache.capacity_mb", self.capacity_mb, 1..=65_536),
                ("cache.ttl_ms", self.ttl_ms, 1..=86_400_000),
                ("cache.negative_ttl_ms", self.negative_ttl_ms, 1..=86_400_000),
                ("cache.max_staleness_ms", self.max_staleness_ms, 10..=60_000),
                ("cache.lease_ms", self.lease_ms, 10..=10_000),
            ],
        );
        if !(0.0..=0.5).contains(&self.ttl_jitter) {
            problems.push(format!("cache.ttl_jitter: must be between 0 and 0.5, not {}", self.ttl_jitter));
        }
    }
}
