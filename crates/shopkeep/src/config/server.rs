//! The `server`, `http`, `admin` and `log` sections: the listeners, the public HTTP stack, the
//! admin token and logging.

use std::net::SocketAddr;
use std::path::PathBuf;

use resilience::ConcurrencyLimit;
use serde::{Deserialize, Serialize};
use shop_api::HttpSettings;

use super::durations::{SECS, std_count};
use super::secret::{Secret, read_secret_file};
use super::{Validate, check_ranges};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Public API listener.
    pub listen: String,
    /// Admin listener (health, metrics); keep it on loopback or set `admin.token`.
    pub admin_listen: String,
    /// How long in-flight requests may run after a shutdown signal before being cut off.
    pub shutdown_timeout_secs: u64,
    /// How long to keep answering (with readiness 503) before closing the listener, so load
    /// balancers notice the instance is leaving. 0 closes at once.
    pub drain_delay_secs: u64,
    /// Serve the public listener over TLS with this PEM certificate chain (and `tls_key_file`);
    /// plain HTTP when unset (TLS at a proxy or `shopkeep gateway`).
    pub tls_certificate_file: Option<String>,
    /// The PEM private key of `tls_certificate_file`.
    pub tls_key_file: Option<String>,
    /// How often the two files are checked for a renewal.
    pub tls_reload_interval_secs: u64,
}

impl ServerConfig {
    /// The certificate and key files, when the public listener serves TLS.
    pub fn tls(&self) -> Option<(&str, &str)> {
        Some((self.tls_certificate_file.as_deref()?, self.tls_key_file.as_deref()?))
    }

    pub fn tls_reload_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.tls_reload_interval_secs)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            shutdown_timeout_secs: 30,
            drain_delay_secs: 0,
            tls_certificate_file: None,
            tls_key_file: None,
            tls_reload_interval_secs: 10,
        }
    }
}

impl Validate for ServerConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        let listen = parse_address("server.listen", &self.listen, problems);
        let admin_listen = parse_address("server.admin_listen", &self.admin_listen, problems);
        if let (Some(listen), Some(admin)) = (listen, admin_listen)
            && listen == admin
            && listen.port() != 0
        {
            problems.push("server.admin_listen: must differ from server.listen".into());
        }
        if self.shutdown_timeout_secs == 0 || self.shutdown_timeout_secs > 3_600 {
            problems.push("server.shutdown_timeout_secs: must be between 1 and 3600".into());
        }
        if self.tls_certificate_file.is_some() != self.tls_key_file.is_some() {
            problems.push(
                "server.tls_key_file: give both server.tls_certificate_file and server.tls_key_file, or neither".into(),
            );
        }
        if !(1..=86_400).contains(&self.tls_reload_interval_secs) {
            problems.push("server.tls_reload_interval_secs: must be between 1 and 86400".into());
        }
        if self.drain_delay_secs > 300 {
            problems.push("server.drain_delay_secs: must be at most 300".into());
        }
    }
}

fn parse_address(name: &str, raw: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match raw.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            problems.push(format!("{name}: {raw:?} is not an address like 127.0.0.1:8080"));
            None
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Browser origins allowed by CORS and the Origin check, e.g. `https://shop.example`.
    pub allowed_origins: Vec<String>,
    pub cors_max_age_secs: u64,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// Requests served at once; beyond this, 503 + `Retry-After`. With `adaptive_concurrency`,
    /// the upper bound of the adaptive limit.
    pub max_in_flight: usize,
    /// Let the in-flight limit follow latency (gradient style) between `min_in_flight` and
    /// `max_in_flight`, instead of staying at `max_in_flight`.
    pub adaptive_concurrency: bool,
    /// The lower bound of the adaptive limit.
    pub min_in_flight: usize,
    /// Served over HTTPS (TLS terminated here or by a proxy): Secure `__Host-` cookie, HSTS.
    pub https: bool,
    /// `Cache-Control: max-age` of public catalog reads.
    pub catalog_max_age_secs: u64,
}

/// The keys take the defaults of `shop_api::HttpSettings`, in the unit of their key. The section
/// is not read into it straight (as `orders` is) because its `concurrency` is computed from
/// three keys (`max_in_flight`, `adaptive_concurrency`, `min_in_flight`; `app` builds it), and
/// a fixed limit has no lower bound: then `min_in_flight` has its own default here.
impl Default for HttpConfig {
    fn default() -> Self {
        let owner = HttpSettings::default();
        let (max_in_flight, adaptive_concurrency, min_in_flight) = match owner.concurrency {
            ConcurrencyLimit::Fixed(limit) => (limit, false, 8),
            ConcurrencyLimit::Adaptive { min, max, .. } => (max, true, min),
        };
        Self {
            allowed_origins: owner.allowed_origins,
            cors_max_age_secs: std_count(owner.cors_max_age, SECS),
            body_limit_bytes: owner.body_limit_bytes,
            request_timeout_secs: std_count(owner.request_timeout, SECS),
            max_in_flight,
            adaptive_concurrency,
            min_in_flight,
            https: owner.https,
            catalog_max_age_secs: std_count(owner.catalog_max_age, SECS),
        }
    }
}

impl Validate for HttpConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        for origin in &self.allowed_origins {
            if !is_origin(origin) {
                problems.push(format!(
                    "http.allowed_origins: {origin:?} is not an origin like https://shop.example (scheme, host, optional port; no path; no *)"
                ));
            }
        }
        if !(1_024..=64 * 1024 * 1024).contains(&self.body_limit_bytes) {
            problems.push("http.body_limit_bytes: must be between 1024 and 67108864".into());
        }
        if self.adaptive_concurrency && self.min_in_flight > self.max_in_flight {
            problems.push("http.min_in_flight: must not exceed http.max_in_flight".into());
        }
        if self.request_timeout_secs == 0 || self.request_timeout_secs > 600 {
            problems.push("http.request_timeout_secs: must be between 1 and 600".into());
        }
        check_ranges(
            problems,
            [
                ("http.max_in_flight", self.max_in_flight as u64, 1..=1_000_000),
                ("http.min_in_flight", self.min_in_flight as u64, 1..=1_000_000),
                ("http.cors_max_age_secs", self.cors_max_age_secs, 0..=86_400),
                ("http.catalog_max_age_secs", self.catalog_max_age_secs, 0..=31_536_000),
            ],
        );
    }
}

fn is_origin(raw: &str) -> bool {
    match url::Url::parse(raw) {
        Ok(url) => {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && (url.path() == "/" || url.path().is_empty())
                && !raw.ends_with('/')
                && url.query().is_none()
                && url.username().is_empty()
        }
        Err(_) => false,
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for `/metrics` and `/admin/*` on the admin listener. Secret.
    pub token: Option<Secret>,
    /// A file holding the token; replaces `token`.
    pub token_file: Option<PathBuf>,
    /// Where the CLI's control commands (`shopkeep admin flags|audit|breakers|drain|…`) reach
    /// the admin listener (`http://10.0.0.5:9090`);
    /// default: `server.admin_listen` (on loopback when it listens on every address).
    pub url: Option<String>,
}

impl AdminConfig {
    pub(super) fn read_secret_files(&mut self, problems: &mut Vec<String>) {
        if let Some(token) = read_secret_file(self.token_file.as_deref(), "admin.token_file", problems) {
            self.token = Some(token);
        }
    }
}

impl Validate for AdminConfig {
    /// Whether a token is required depends on `server.admin_listen`: [`super::Config`] checks that.
    fn validate(&self, problems: &mut Vec<String>) {
        if self.token.as_ref().is_some_and(|token| token.expose().len() < 16) {
            problems.push("admin.token: must be at least 16 characters".into());
        }
        if let Some(url) = &self.url
            && !url::Url::parse(url).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        {
            problems.push("admin.url: must be an http:// or https:// URL".into());
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `shopkeep=debug,info`…
    pub level: String,
    /// `json` (one object per line) or `human`.
    pub format: String,
    /// Lines waiting for stdout at most; beyond, lines are dropped and counted
    /// (`log_lines_dropped_total`) instead of making requests wait.
    pub buffer_lines: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "json".into(), buffer_lines: 128_000 }
    }
}

impl Validate for LogConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if !(1_000..=10_000_000).contains(&self.buffer_lines) {
            problems.push("log.buffer_lines: must be between 1000 and 10000000".into());
        }
        if !matches!(self.format.as_str(), "json" | "human") {
            problems.push(format!("log.format: {:?} must be json or human", self.format));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            problems.push(format!("log.level: {:?} is not a valid filter: {error}", self.level));
        }
    }
}
