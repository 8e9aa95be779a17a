//! The limits as configured: the `rate_limits` section of the configuration deserialises straight
//! into [`RateLimitSettings`] (keys as in the README: `per_ip = { count, period_secs }`,
//! `lockout_secs`, …), which holds the one default of each and checks its own values.

use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use resilience::{FailureMode, Quota};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::scope::{PerScope, RateLimitScope};

/// Limits as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Off only for load tests; a warning is logged at startup.
    pub enabled: bool,
    /// Addresses or CIDR ranges of peers whose `X-Forwarded-For` is believed (load balancers,
    /// the gateway), as written; [`RateLimitSettings::validate`] refuses any that is neither.
    pub trusted_proxies: Vec<String>,
    /// The quota of each scope.
    pub quotas: PerScope<Quota>,
    /// Failed logins for one account within `lockout_window` that lock it.
    pub lockout_failures: u32,
    pub lockout_window: Duration,
    /// How long a locked account refuses logins, even with the right password.
    pub lockout_duration: Duration,
    /// Failed logins per minute, all accounts together, above which the alert gauge is raised.
    pub failed_login_alert_per_minute: u32,
    /// How often idle limiter keys are forgotten.
    pub purge_interval: Duration,
    /// With a shared store: `open` lets requests through while it is down, `closed` refuses
    /// them (503) and makes the instance unready. Kept as written so that a typo is reported
    /// with every other configuration problem; [`RateLimitSettings::shared_failure_mode`] reads it.
    pub on_redis_failure: String,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_proxies: Vec::new(),
            quotas: PerScope::default(),
            lockout_failures: 5,
            lockout_window: Duration::from_secs(900),
            lockout_duration: Duration::from_secs(900),
            failed_login_alert_per_minute: 100,
            purge_interval: Duration::from_secs(60),
            on_redis_failure: "open".into(),
        }
    }
}

impl RateLimitSettings {
    /// The trusted proxy ranges (plain addresses become single-address ranges).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|raw| {
                raw.parse::<IpNet>()
                    .or_else(|_| raw.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{raw:?} is not an address or CIDR range"))
            })
            .collect()
    }

    /// What rate limits do while the shared store cannot answer.
    pub fn shared_failure_mode(&self) -> FailureMode {
        if self.on_redis_failure == "closed" { FailureMode::Closed } else { FailureMode::Open }
    }

    /// Adds a problem, named by its configuration key, for each value out of bounds.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !matches!(self.on_redis_failure.as_str(), "open" | "closed") {
            problems.push(format!("rate_limits.on_redis_failure: {:?} must be open or closed", self.on_redis_failure));
        }
        if let Err(problem) = self.trusted_proxy_nets() {
            problems.push(format!("rate_limits.trusted_proxies: {problem}"));
        }
        for (scope, quota) in self.quotas.iter() {
            if !(1..=10_000_000).contains(&quota.count)
                || !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&quota.period)
            {
                problems.push(format!(
                    "rate_limits.{}: count must be 1-10000000 and period_secs 1-86400",
                    scope.config_key()
                ));
            }
        }
        for (name, value, range) in [
            ("rate_limits.lockout_failures", u64::from(self.lockout_failures), 1..=1_000),
            ("rate_limits.lockout_window_secs", self.lockout_window.as_secs(), 1..=86_400),
            ("rate_limits.lockout_secs", self.lockout_duration.as_secs(), 1..=86_400),
            (
                "rate_limits.failed_login_alert_per_minute",
                u64::from(self.failed_login_alert_per_minute),
                1..=10_000_000,
            ),
            ("rate_limits.purge_interval_secs", self.purge_interval.as_secs(), 1..=86_400),
        ] {
            if !range.contains(&value) {
                problems.push(format!("{name}: must be between {} and {}", range.start(), range.end()));
            }
        }
    }
}

/// The keys of the section besides the scopes' quotas, which come right after `trusted_proxies`.
const LEADING_KEYS: [&str; 2] = ["enabled", "trusted_proxies"];
const TRAILING_KEYS: [&str; 6] = [
    "lockout_failures",
    "lockout_window_secs",
    "lockout_secs",
    "failed_login_alert_per_minute",
    "purge_interval_secs",
    "on_redis_failure",
];

/// Every key of the section, in order, for "unknown field" errors.
const KEYS: [&str; LEADING_KEYS.len() + RateLimitScope::COUNT + TRAILING_KEYS.len()] = {
    let mut keys = [""; LEADING_KEYS.len() + RateLimitScope::COUNT + TRAILING_KEYS.len()];
    let mut index = 0;
    while index < keys.len() {
        keys[index] = if index < LEADING_KEYS.len() {
            LEADING_KEYS[index]
        } else if index < LEADING_KEYS.len() + RateLimitScope::COUNT {
            RateLimitScope::ALL[index - LEADING_KEYS.len()].config_key()
        } else {
            TRAILING_KEYS[index - LEADING_KEYS.len() - RateLimitScope::COUNT]
        };
        index += 1;
    }
    keys
};

/// A quota as written in the configuration: `{ count = 600, period_secs = 60 }`, both required
/// (its name is in errors: "expected struct QuotaConfig").
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaConfig {
    count: u32,
    period_secs: u64,
}

impl From<Quota> for QuotaConfig {
    fn from(quota: Quota) -> Self {
        Self { count: quota.count, period_secs: quota.period.as_secs() }
    }
}

impl From<QuotaConfig> for Quota {
    /// As written, not through `Quota::new` (which would round 0 up): validation refuses 0.
    fn from(value: QuotaConfig) -> Self {
        Quota { count: value.count, period: Duration::from_secs(value.period_secs) }
    }
}

// By hand rather than derived: the scopes' keys come from the scope table, and `flatten` would
// lose `deny_unknown_fields` and the configuration loader's error locations.
impl Serialize for RateLimitSettings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut section = serializer.serialize_struct("RateLimitsConfig", KEYS.len())?;
        section.serialize_field("enabled", &self.enabled)?;
        section.serialize_field("trusted_proxies", &self.trusted_proxies)?;
        for (scope, quota) in self.quotas.iter() {
            section.serialize_field(scope.config_key(), &QuotaConfig::from(*quota))?;
        }
        section.serialize_field("lockout_failures", &self.lockout_failures)?;
        section.serialize_field("lockout_window_secs", &self.lockout_window.as_secs())?;
        section.serialize_field("lockout_secs", &self.lockout_duration.as_secs())?;
        section.serialize_field("failed_login_alert_per_minute", &self.failed_login_alert_per_minute)?;
        section.serialize_field("purge_interval_secs", &self.purge_interval.as_secs())?;
        section.serialize_field("on_redis_failure", &self.on_redis_failure)?;
        section.end()
    }
}

impl<'de> Deserialize<'de> for RateLimitSettings {
    /// Keys left out keep their default; unknown keys are refused.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("RateLimitsConfig", &KEYS, SectionVisitor)
    }
}

/// A key of the section. Refusing an unknown one while the key itself is read (as derived
/// code does) lets the configuration loader name it in the error's location.
struct Key(&'static str);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field identifier")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                KEYS.iter()
                    .find(|known| **known == key)
                    .map(|known| Key(known))
                    .ok_or_else(|| E::unknown_field(key, &KEYS))
            }
        }

        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct SectionVisitor;

impl<'de> Visitor<'de> for SectionVisitor {
    type Value = RateLimitSettings;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct RateLimitsConfig")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RateLimitSettings, A::Error> {
        let mut settings = RateLimitSettings::default();
        while let Some(Key(key)) = map.next_key()? {
            if let Some(scope) = RateLimitScope::from_config_key(key) {
                settings.quotas[scope] = map.next_value::<QuotaConfig>()?.into();
                continue;
            }
            match key {
                "enabled" => settings.enabled = map.next_value()?,
                "trusted_proxies" => settings.trusted_proxies = map.next_value()?,
                "lockout_failures" => settings.lockout_failures = map.next_value()?,
                "lockout_window_secs" => settings.lockout_window = Duration::from_secs(map.next_value()?),
                "lockout_secs" => settings.lockout_duration = Duration::from_secs(map.next_value()?),
                "failed_login_alert_per_minute" => settings.failed_login_alert_per_minute = map.next_value()?,
                "purge_interval_secs" => settings.purge_interval = Duration::from_secs(map.next_value()?),
                "on_redis_failure" => settings.on_redis_failure = map.next_value()?,
                // Every key of KEYS is handled above; this arm only satisfies the match.
                _ => return Err(de::Error::unknown_field(key, &KEYS)),
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_known_once() {
        let mut keys = KEYS.to_vec();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), KEYS.len());
        assert!(!KEYS.contains(&""));
    }

    #[test]
    fn defaults_are_valid() {
        let mut problems = Vec::new();
        RateLimitSettings::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_zero_quota_is_refused_by_name() {
        let mut settings = RateLimitSettings::default();
        settings.quotas[RateLimitScope::MailPerAccount] = Quota { count: 0, period: Duration::from_secs(60) };
        let mut problems = Vec::new();
        settings.validate(&mut problems);
        assert_eq!(problems, ["rate_limits.mail_per_account: count must be 1-10000000 and period_secs 1-86400"]);
    }

    #[test]
    fn the_section_round_trips_and_keys_left_out_keep_their_default() {
        let defaults = RateLimitSettings::default();
        let written = serde_json::to_value(&defaults).unwrap();
        assert_eq!(written["per_ip"], serde_json::json!({ "count": 600, "period_secs": 60 }));
        assert_eq!(written["lockout_secs"], 900);
        assert_eq!(serde_json::from_value::<RateLimitSettings>(written).unwrap(), defaults);
        let partial: RateLimitSettings =
            serde_json::from_str(r#"{ "login_per_ip": { "count": 3, "period_secs": 10 }, "lockout_window_secs": 60 }"#)
                .unwrap();
        assert_eq!(partial.quotas[RateLimitScope::LoginPerIp], Quota::new(3, Duration::from_secs(10)));
        assert_eq!(partial.lockout_window, Duration::from_secs(60));
        assert_eq!(partial.quotas[RateLimitScope::PerIp], defaults.quotas[RateLimitScope::PerIp]);
        assert_eq!(partial.lockout_duration, defaults.lockout_duration);
    }

    #[test]
    fn unknown_keys_and_incomplete_quotas_are_refused() {
        let unknown = serde_json::from_str::<RateLimitSettings>(r#"{ "per_ipp": { "count": 1 } }"#).unwrap_err();
        assert!(unknown.to_string().starts_with("unknown field `per_ipp`, expected one of `enabled`"), "{unknown}");
        let incomplete = serde_json::from_str::<RateLimitSettings>(r#"{ "per_ip": { "count": 1 } }"#).unwrap_err();
        assert!(incomplete.to_string().contains("missing field `period_secs`"), "{incomplete}");
        let extra =
            serde_json::from_str::<RateLimitSettings>(r#"{ "staff": { "count": 1, "period_secs": 1, "burst": 2 } }"#)
                .unwrap_err();
        assert!(extra.to_string().contains("unknown field `burst`"), "{extra}");
    }
}
