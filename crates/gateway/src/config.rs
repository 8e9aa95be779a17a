//! The gateway's configuration: listeners, backends and every policy, read from defaults < a TOML
//! file < `SHOPKEEP_GATEWAY__*` variables, and checked as a whole so every problem is reported
//! at once before anything listens.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use http::uri::Authority;
use serde::{Deserialize, Serialize};

use crate::balance::{Algorithm, HashKey};

/// The whole gateway configuration. Every duration is in milliseconds (`*_ms`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Public listener.
    pub listen: String,
    /// Admin listener: backends, metrics, health. Loopback unless `admin_token` is set.
    pub admin_listen: String,
    /// Bearer token the admin listener requires (always when it is not on loopback).
    pub admin_token: Option<AdminToken>,
    /// A file holding the admin token (container secrets); not together with `admin_token`.
    pub admin_token_file: Option<String>,
    /// `p2c_peak_ewma` (default), `round_robin`, `weighted_round_robin`, `least_connections`
    /// or `consistent_hash`.
    pub balance: Algorithm,
    /// What `consistent_hash` hashes: `client_ip`, `header:<name>` or `cookie:<name>`.
    pub hash_key: String,
    /// The upstream pool at start; the admin API changes it while running.
    pub backends: Vec<BackendConfig>,
    pub health: HealthConfig,
    pub outlier: OutlierConfig,
    pub timeouts: TimeoutConfig,
    pub retries: RetriesConfig,
    pub limits: LimitsConfig,
    /// Peak-EWMA: how fast a latency estimate forgets (the time constant).
    pub ewma_decay_ms: u64,
    /// Latency charged to a backend for a fast failure (5xx, 429, refused connection), so a
    /// backend that fails fast does not look fast; a longer `Retry-After` lengthens it.
    pub failure_penalty_ms: u64,
    /// A backend that becomes healthy, or is added, ramps from a tenth of its weight to all of
    /// it over this time (0: at once).
    pub slow_start_ms: u64,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace_ms: u64,
    /// On shutdown, how long to keep accepting with readiness 503 before closing the listener,
    /// so a balancer in front notices first (its check interval × fall count).
    pub drain_delay_ms: u64,
    /// Worker threads, each running its connections and their upstream connections on one
    /// thread (as nginx's workers do); 0: one per core the process may run on.
    pub workers: usize,
    /// TLS on the public listener (HTTP/1.1 and HTTP/2 by ALPN); plain HTTP when absent.
    pub tls: Option<TlsSettings>,
    /// A PEM file of extra certificate authorities trusted for backends with `tls = true`
    /// (a private CA), besides the web's roots.
    pub upstream_ca_file: Option<String>,
    pub log: LogSettings,
}

/// The certificate the public listener serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM: the certificate, then its chain.
    pub certificate_file: String,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// How often the files are checked for a renewal (SIGHUP reloads at once).
    #[serde(default = "default_tls_reload_ms")]
    pub reload_interval_ms: u64,
}

fn default_tls_reload_ms() -> u64 {
    10_000
}

/// The gateway's log lines (the binary applies them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter: `info`, `gateway=debug,info`…
    pub level: String,
    /// `json` (one object per line) or `human`.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { level: "info".into(), format: "json".into() }
    }
}

/// One backend: a `serve` instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Share of traffic relative to the others (0: none); 1 unless given.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Reach it over HTTPS (its certificate checked against the web roots and
    /// `upstream_ca_file`); plain HTTP unless given.
    #[serde(default)]
    pub tls: bool,
}

fn default_weight() -> u32 {
    1
}

/// Active health checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Path asked with GET; a 2xx answer is healthy.
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive passes that bring an unhealthy backend back.
    pub rise: u32,
    /// Consecutive failures that take a healthy backend out.
    pub fall: u32,
}

/// Passive outlier ejection (Envoy's semantics) and the panic threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive 5xx answers (or failures to get one) that eject a backend; 0 turns it off.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (refused, reset, timed out, 502/503/504) that eject; 0: off.
    pub consecutive_gateway_failures: u32,
    /// First ejection's length; each further ejection is this times the number of ejections.
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    /// At most this share of the pool is ejected at once (at least one backend, never all).
    pub max_ejection_percent: u32,
    /// Below this share of routable backends healthy, every backend gets traffic (0: never).
    pub panic_threshold_percent: u32,
}

/// Timeouts of one forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    pub connect_ms: u64,
    /// From sending the request to the response's headers.
    pub first_byte_ms: u64,
    /// The whole exchange, the response body included.
    pub total_ms: u64,
    /// Longest pause between two pieces of a response body.
    pub idle_ms: u64,
    /// How long an idle upstream connection is kept for reuse.
    pub keep_alive_ms: u64,
}

/// Retries: only idempotent requests (whose body, if any, is small enough to keep for a second
/// attempt), only to another backend, within a budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetriesConfig {
    /// Further attempts after the first (0: no retries).
    pub max_retries: u32,
    /// Retries may be at most this fraction of requests in a budget window.
    pub budget_ratio: f64,
    /// Retries always allowed per window.
    pub budget_minimum: u32,
    pub budget_window_ms: u64,
    /// An idempotent request with a declared body up to this size is read first and kept, so it
    /// can be sent again; a larger one is streamed and never retried.
    pub max_replay_body_bytes: u64,
}

/// Sizes and counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
    /// Requests in flight through the gateway; beyond it, 503 + `Retry-After` (load shedding).
    pub max_in_flight: usize,
    /// Requests in flight to one backend; a full backend is skipped.
    pub max_in_flight_per_backend: usize,
    /// Idle keep-alive connections kept per backend.
    pub max_idle_per_backend: usize,
    /// Requests per second per client IP (GCRA, burst = one second's worth); 0 turns it off.
    pub per_ip_per_second: u32,
}

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8000".into(),
            admin_listen: "127.0.0.1:9100".into(),
            admin_token: None,
            admin_token_file: None,
            balance: Algorithm::P2cPeakEwma,
            hash_key: "client_ip".into(),
            backends: Vec::new(),
            health: HealthConfig::default(),
            outlier: OutlierConfig::default(),
            timeouts: TimeoutConfig::default(),
            retries: RetriesConfig::default(),
            limits: LimitsConfig::default(),
            ewma_decay_ms: 10_000,
            failure_penalty_ms: 1_000,
            slow_start_ms: 10_000,
            shutdown_grace_ms: 30_000,
            drain_delay_ms: 0,
            workers: 0,
            tls: None,
            upstream_ca_file: None,
            log: LogSettings::default(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { path: "/health/ready".into(), interval_ms: 2_000, timeout_ms: 1_000, rise: 2, fall: 2 }
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failures: 3,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
        }
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self { connect_ms: 1_000, first_byte_ms: 15_000, total_ms: 60_000, idle_ms: 30_000, keep_alive_ms: 60_000 }
    }
}

impl Default for RetriesConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            budget_ratio: 0.2,
            budget_minimum: 10,
            budget_window_ms: 10_000,
            max_replay_body_bytes: 64 * 1024,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 8 * 1024 * 1024,
            max_response_body_bytes: 64 * 1024 * 1024,
            max_in_flight: 10_000,
            max_in_flight_per_backend: 1_000,
            max_idle_per_backend: 256,
            per_ip_per_second: 0,
        }
    }
}

/// Every problem found, each on its own line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        writeln!(f, "invalid gateway configuration ({count} problem{}):", if count == 1 { "" } else { "s" })?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl GatewayConfig {
    /// Loads defaults, then the TOML file (if given; it must exist), then `SHOPKEEP_GATEWAY__*`
    /// variables (`SHOPKEEP_GATEWAY__HEALTH__INTERVAL_MS=500`), then reads the token file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigErrors> {
        let mut figment = Figment::from(Serialized::defaults(GatewayConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigErrors(vec![format!("config file {} does not exist", path.display())]));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("SHOPKEEP_GATEWAY__").split("__"));
        let mut config: GatewayConfig = figment
            .extract()
            .map_err(|error| ConfigErrors(error.into_iter().map(|error| error.to_string()).collect()))?;
        let mut problems = Vec::new();
        if let Some(path) = config.admin_token_file.clone() {
            if config.admin_token.is_some() {
                problems.push("admin_token_file: give either admin_token or admin_token_file, not both".into());
            }
            match std::fs::read_to_string(&path) {
                Ok(token) => config.admin_token = Some(AdminToken::new(token.trim())),
                Err(error) => problems.push(format!("admin_token_file: cannot read {path}: {error}")),
            }
        }
        config.validate(&mut problems);
        if problems.is_empty() { Ok(config) } else { Err(ConfigErrors(problems)) }
    }

    /// Checks the configuration again, e.g. after command-line overrides.
    pub fn check(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        self.validate(&mut problems);
        if problems.is_empty() { Ok(()) } else { Err(ConfigErrors(problems)) }
    }

    fn validate(&self, problems: &mut Vec<String>) {
        let listen = parse_address("listen", &self.listen, problems);
        let admin = parse_address("admin_listen", &self.admin_listen, problems);
        if let (Some(listen), Some(admin)) = (listen, admin)
            && listen.port() != 0
            && listen == admin
        {
            problems.push("admin_listen: must differ from listen".into());
        }
        if let Some(admin) = admin
            && !admin.ip().is_loopback()
            && self.admin_token.is_none()
        {
            problems.push(format!("admin_token: required when admin_listen ({admin}) is not a loopback address"));
        }
        if let Some(token) = &self.admin_token
            && token.expose().len() < 16
        {
            problems.push("admin_token: must be at least 16 characters".into());
        }
        if let Err(problem) = HashKey::parse(&self.hash_key) {
            problems.push(format!("hash_key: {problem}"));
        }
        let mut names = HashSet::new();
        for (index, backend) in self.backends.iter().enumerate() {
            if let Err(problem) = backend.check() {
                problems.push(format!("backends[{index}]: {problem}"));
            }
            if !names.insert(backend.name.as_str()) {
                problems.push(format!("backends[{index}].name: {:?} is used twice", backend.name));
            }
        }
        let ms = |key: &str, value: u64, min: u64, max: u64, problems: &mut Vec<String>| {
            if !(min..=max).contains(&value) {
                problems.push(format!("{key}: must be between {min} and {max}"));
            }
        };
        ms("health.interval_ms", self.health.interval_ms, 50, 3_600_000, problems);
        ms("health.timeout_ms", self.health.timeout_ms, 10, 60_000, problems);
        if self.health.timeout_ms > self.health.interval_ms {
            problems.push("health.timeout_ms: must not exceed health.interval_ms".into());
        }
        if !self.health.path.starts_with('/') {
            problems.push("health.path: must start with /".into());
        }
        ms("health.rise", u64::from(self.health.rise), 1, 100, problems);
        ms("health.fall", u64::from(self.health.fall), 1, 100, problems);
        ms("outlier.consecutive_5xx", u64::from(self.outlier.consecutive_5xx), 0, 10_000, problems);
        ms(
            "outlier.consecutive_gateway_failures",
            u64::from(self.outlier.consecutive_gateway_failures),
            0,
            10_000,
            problems,
        );
        ms("outlier.base_ejection_ms", self.outlier.base_ejection_ms, 100, 86_400_000, problems);
        ms(
            "outlier.max_ejection_ms",
            self.outlier.max_ejection_ms,
            self.outlier.base_ejection_ms,
            86_400_000,
            problems,
        );
        ms("outlier.max_ejection_percent", u64::from(self.outlier.max_ejection_percent), 0, 100, problems);
        ms("outlier.panic_threshold_percent", u64::from(self.outlier.panic_threshold_percent), 0, 100, problems);
        ms("timeouts.connect_ms", self.timeouts.connect_ms, 10, 60_000, problems);
        ms("timeouts.first_byte_ms", self.timeouts.first_byte_ms, 10, 3_600_000, problems);
        ms("timeouts.total_ms", self.timeouts.total_ms, self.timeouts.first_byte_ms, 3_600_000, problems);
        ms("timeouts.idle_ms", self.timeouts.idle_ms, 10, 3_600_000, problems);
        ms("timeouts.keep_alive_ms", self.timeouts.keep_alive_ms, 0, 3_600_000, problems);
        ms("retries.max_retries", u64::from(self.retries.max_retries), 0, 10, problems);
        if !(0.0..=1.0).contains(&self.retries.budget_ratio) {
            problems.push("retries.budget_ratio: must be between 0 and 1".into());
        }
        ms("retries.budget_window_ms", self.retries.budget_window_ms, 100, 3_600_000, problems);
        ms("retries.max_replay_body_bytes", self.retries.max_replay_body_bytes, 0, 16 * 1024 * 1024, problems);
        ms("limits.max_request_body_bytes", self.limits.max_request_body_bytes, 0, 1 << 40, problems);
        ms("limits.max_response_body_bytes", self.limits.max_response_body_bytes, 1, 1 << 40, problems);
        ms("limits.max_in_flight", self.limits.max_in_flight as u64, 1, 10_000_000, problems);
        ms("limits.max_in_flight_per_backend", self.limits.max_in_flight_per_backend as u64, 1, 10_000_000, problems);
        ms("limits.max_idle_per_backend", self.limits.max_idle_per_backend as u64, 0, 100_000, problems);
        ms("limits.per_ip_per_second", u64::from(self.limits.per_ip_per_second), 0, 1_000_000, problems);
        ms("ewma_decay_ms", self.ewma_decay_ms, 100, 3_600_000, problems);
        ms("failure_penalty_ms", self.failure_penalty_ms, 0, 600_000, problems);
        ms("slow_start_ms", self.slow_start_ms, 0, 3_600_000, problems);
        ms("shutdown_grace_ms", self.shutdown_grace_ms, 0, 3_600_000, problems);
        ms("workers", self.workers as u64, 0, 256, problems);
        ms("drain_delay_ms", self.drain_delay_ms, 0, 300_000, problems);
        if let Some(tls) = &self.tls {
            if tls.certificate_file.is_empty() || tls.key_file.is_empty() {
                problems.push("tls: certificate_file and key_file are both required".into());
            }
            ms("tls.reload_interval_ms", tls.reload_interval_ms, 100, 86_400_000, problems);
        }
        if !matches!(self.log.format.as_str(), "json" | "human") {
            problems.push(format!("log.format: {:?} must be json or human", self.log.format));
        }
    }

    pub fn listen_address(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|error| format!("listen {:?}: {error}", self.listen))
    }

    pub fn admin_address(&self) -> Result<SocketAddr, String> {
        self.admin_listen.parse().map_err(|error| format!("admin_listen {:?}: {error}", self.admin_listen))
    }

    /// The configuration as pretty JSON with the token hidden (`shopkeep gateway --check`).
    pub fn to_redacted_json(&self) -> String {
        let mut shown = self.clone();
        if shown.admin_token.is_some() {
            shown.admin_token = Some(AdminToken::new("<redacted>"));
        }
        match serde_json::to_string_pretty(&shown) {
            Ok(json) => format!("{json}\n"),
            Err(error) => format!("cannot show the configuration: {error}\n"),
        }
    }
}

fn parse_address(key: &str, raw: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match raw.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            problems.push(format!("{key}: {raw:?} is not an address like 127.0.0.1:8000"));
            None
        }
    }
}

impl BackendConfig {
    /// Checks the name, address and weight; the message names the bad key.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(format!("name: {:?} must be 1–64 letters, digits, '-', '_' or '.'", self.name));
        }
        parse_backend_address(&self.address).map_err(|problem| format!("address: {problem}"))?;
        if self.weight > MAX_WEIGHT {
            return Err(format!("weight: must be between 0 and {MAX_WEIGHT}"));
        }
        Ok(())
    }
}

/// The largest weight a backend may have.
pub const MAX_WEIGHT: u32 = 1_000;

/// A backend address: `host:port`, nothing else (no scheme, no path).
pub fn parse_backend_address(raw: &str) -> Result<Authority, String> {
    let authority: Authority = raw.parse().map_err(|_| format!("{raw:?} is not host:port"))?;
    if authority.port_u16().is_none() || authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(format!("{raw:?} is not host:port"));
    }
    Ok(authority)
}

/// Milliseconds as a duration.
pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        GatewayConfig::default().check().unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = GatewayConfig {
            listen: "nowhere".into(),
            admin_listen: "0.0.0.0:9100".into(),
            hash_key: "header:".into(),
            backends: vec![
                BackendConfig { name: "a".into(), address: "127.0.0.1:1".into(), weight: 1, tls: false },
                BackendConfig { name: "a".into(), address: "http://x/".into(), weight: 5_000, tls: false },
            ],
            health: HealthConfig { interval_ms: 10, timeout_ms: 20, ..HealthConfig::default() },
            ..GatewayConfig::default()
        };
        let problems = config.check().unwrap_err().0;
        for expected in [
            "listen:",
            "admin_token: required",
            "hash_key:",
            "backends[1]: address",
            "used twice",
            "health.interval_ms",
        ] {
            assert!(problems.iter().any(|problem| problem.contains(expected)), "{expected} missing from {problems:#?}");
        }
    }

    #[test]
    fn backend_addresses_are_host_and_port_only() {
        assert!(parse_backend_address("127.0.0.1:8080").is_ok());
        assert!(parse_backend_address("shop-1.internal:8080").is_ok());
        for bad in ["127.0.0.1", "http://127.0.0.1:80", "user@host:80", "host:80/path", ""] {
            assert!(parse_backend_address(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_example_in_deploy_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/gateway/gateway.toml");
        let config = GatewayConfig::load(Some(&path)).unwrap();
        assert_eq!(config.backends.len(), 3);
    }

    #[test]
    fn the_token_is_never_shown() {
        let config = GatewayConfig { admin_token: Some(AdminToken::new("a-very-secret-token")), ..Default::default() };
        assert!(!format!("{config:?}").contains("a-very-secret-token"));
        assert!(!config.to_redacted_json().contains("a-very-secret-token"));
    }
}
