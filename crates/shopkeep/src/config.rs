//! Configuration: defaults < TOML file < environment (`SHOPKEEP_SECTION__KEY`, `DATABASE_URL`),
//! secrets from `*_FILE` paths, validated as a whole so every problem is reported at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize, Serializer};

/// The whole configuration. Field docs are the reference; the README repeats them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub accounts: AccountsConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub rate_limits: RateLimitsConfig,
    pub redis: RedisConfig,
    pub jobs: JobsConfig,
    pub mail: MailConfig,
    pub oidc: OidcConfig,
    pub orders: OrdersConfig,
    pub payments: PaymentsConfig,
    pub webhooks: WebhooksConfig,
}

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

/// The payment provider. Without a URL (the embedded default) the built-in test mode approves
/// every charge and charges nothing; orders say so.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// The provider's API base URL (`https://api.payments.example`); https except on loopback.
    pub url: Option<String>,
    /// The secret API key. Secret.
    pub secret: Option<Secret>,
    /// A file holding the secret API key.
    pub secret_file: Option<PathBuf>,
    /// One call to the provider, retries included, must finish within this.
    pub timeout_secs: u64,
    /// One attempt must answer within this.
    pub attempt_timeout_secs: u64,
    /// Calls to the provider at once (a bulkhead).
    pub max_concurrent: usize,
    /// The provider's name in its webhook URL: `POST /api/v1/payment-webhooks/{name}`.
    pub name: String,
    /// The secret the provider signs its webhooks with; without it webhooks are refused (404)
    /// and only polling settles unknown payments. Secret.
    pub webhook_secret: Option<Secret>,
    /// A file holding the webhook signing secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// While rotating the signing secret: the old one, still accepted. Secret.
    pub webhook_previous_secret: Option<Secret>,
    /// A webhook signed longer ago than this (or this far in the future) is a replay: refused.
    pub webhook_tolerance_secs: u64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            secret_file: None,
            timeout_secs: 10,
            attempt_timeout_secs: 4,
            max_concurrent: 32,
            name: "provider".into(),
            webhook_secret: None,
            webhook_secret_file: None,
            webhook_previous_secret: None,
            webhook_tolerance_secs: 300,
        }
    }
}

/// Checkout and orders.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersConfig {
    /// An order still awaiting its payment this long after checkout is settled with the
    /// provider: paid if charged, else cancelled and its stock released.
    pub pending_payment_timeout_minutes: u64,
    /// After an unknown payment outcome (timeout), the provider is asked again after this.
    pub settle_after_secs: u64,
    /// `Idempotency-Key`s are remembered this long.
    pub idempotency_ttl_hours: u64,
    /// A checkout holds its key this long; if its process dies, a retry resumes it after that.
    pub idempotency_lock_secs: u64,
    /// Carts untouched this long are emptied (daily).
    pub abandoned_cart_ttl_days: u64,
    /// Applied payment webhook events are remembered this long, so redeliveries are no-ops.
    pub payment_event_retention_days: u64,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            pending_payment_timeout_minutes: 30,
            settle_after_secs: 60,
            idempotency_ttl_hours: 24,
            idempotency_lock_secs: 60,
            abandoned_cart_ttl_days: 30,
            payment_event_retention_days: 30,
        }
    }
}

/// Sign-in with external OpenID Connect providers (none by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// Providers by name (`[oidc.providers.google]`, `SHOPKEEP_OIDC__PROVIDERS__GOOGLE__ISSUER`);
    /// the name appears in `/api/v1/auth/oidc/{name}/start`.
    pub providers: std::collections::BTreeMap<String, OidcProviderConfig>,
    /// One call to a provider (discovery, keys, token, userinfo), retries included, must finish
    /// within this.
    pub timeout_secs: u64,
    /// How long a provider's discovery document and keys are cached.
    pub metadata_ttl_secs: u64,
    /// How long a browser has to come back from the provider's sign-in page.
    pub login_ttl_minutes: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self { providers: Default::default(), timeout_secs: 10, metadata_ttl_secs: 3_600, login_ttl_minutes: 10 }
    }
}

/// One OpenID Connect provider (a confidential client using `client_secret_basic`, or a public
/// one without a secret; PKCE either way).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// The issuer, e.g. `https://accounts.google.com`; HTTPS except on loopback (tests, demos).
    pub issuer: String,
    pub client_id: String,
    /// Secret.
    pub client_secret: Option<Secret>,
    /// A file holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// Our callback as registered with the provider:
    /// `https://shop.example/api/v1/auth/oidc/{name}/callback`.
    pub redirect_url: String,
    /// Scopes besides `openid`; `email` is needed to sign in (default `email`, `profile`).
    pub scopes: Option<Vec<String>>,
}

/// Outgoing mail. Without an SMTP URL (the embedded default) mail is kept in the outbox table,
/// clearly not delivered, and listed by `shopkeep admin mail list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// `smtp://user:pass@host:587?starttls=required` or `smtps://…:465` (also `SMTP_URL`). Secret.
    #[serde(serialize_with = "serialize_optional_redacted_url")]
    pub smtp_url: Option<Secret>,
    /// A file holding the SMTP URL (also `SMTP_URL_FILE`).
    pub smtp_url_file: Option<PathBuf>,
    /// The sender: `Shop Name <shop@example.com>`.
    pub from: String,
    /// The shop's name in subjects and greetings.
    pub shop_name: String,
    /// One send, connection included, must finish within this.
    pub timeout_secs: u64,
    /// Outbox mail is deleted after this many days (steady state).
    pub outbox_retention_days: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            smtp_url_file: None,
            from: "Shopkeep <shop@localhost>".into(),
            shop_name: "Shopkeep".into(),
            timeout_secs: 10,
            outbox_retention_days: 30,
        }
    }
}

/// The job queue and its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// `serve` runs a worker in-process (`serve --no-worker` overrides it).
    pub run_worker_in_serve: bool,
    /// Queues served and how many jobs of each run at once (a bulkhead per queue).
    pub queues: std::collections::BTreeMap<String, usize>,
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
    pub schedules: std::collections::BTreeMap<String, String>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            run_worker_in_serve: true,
            queues: [("default".to_owned(), 8), ("mail".to_owned(), 4), ("webhooks".to_owned(), 4)]
                .into_iter()
                .collect(),
            batch_size: 16,
            poll_interval_ms: 1_000,
            lease_secs: 60,
            job_timeout_secs: 300,
            retry_base_secs: 30,
            retry_max_secs: 3_600,
            shutdown_timeout_secs: 30,
            succeeded_retention_hours: 24,
            dead_retention_days: 30,
            schedules: Default::default(),
        }
    }
}

/// Redis, when shops run several instances: shared rate limits (more to come).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; unset (the embedded default) keeps everything in process. Secret.
    #[serde(serialize_with = "serialize_optional_redacted_url")]
    pub url: Option<Secret>,
    /// Each Redis command must answer within this.
    pub timeout_ms: u64,
    /// Prefix of every key, so several shops can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, timeout_ms: 200, key_prefix: "shopkeep".into() }
    }
}

fn serialize_optional_redacted_url<S: Serializer>(url: &Option<Secret>, serializer: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(&redacted_url(url.expose())),
        None => serializer.serialize_none(),
    }
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (embedded) or `postgres://user:password@host/db`. Secret.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: Secret,
    /// A file holding the URL (container secrets); replaces `url`.
    pub url_file: Option<PathBuf>,
    pub max_connections: u32,
    /// PostgreSQL: connections kept open when idle.
    pub min_connections: u32,
    pub acquire_timeout_secs: u64,
    /// PostgreSQL: the server cancels statements running longer than this.
    pub statement_timeout_secs: u64,
    /// SQLite: how long a statement waits for another connection's lock.
    pub busy_timeout_secs: u64,
    /// Apply pending migrations when `serve` starts. Default: on for SQLite, off for PostgreSQL.
    pub migrate_on_start: Option<bool>,
    /// PostgreSQL behind PgBouncer (transaction mode): no prepared-statement cache.
    pub pgbouncer: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// A session ends this long after login.
    pub session_absolute_ttl_hours: u64,
    /// A session ends after this long without requests.
    pub session_idle_ttl_hours: u64,
    /// Password hashes computed at once (0: one per CPU).
    pub password_hash_concurrency: usize,
    /// How often expired sessions are purged.
    pub session_purge_interval_secs: u64,
    /// The purge's governor: at most this many sessions deleted per hour, so a clock or
    /// configuration mistake cannot sign everyone out at once.
    pub session_purge_max_per_hour: u32,
    /// Where links in mail point (the storefront): `{base}/verify-email?token=…`,
    /// `{base}/reset-password?token=…`.
    pub link_base_url: String,
    /// How long an email verification link works.
    pub verification_ttl_hours: u64,
    /// How long a password reset link works.
    pub password_reset_ttl_minutes: u64,
    /// Roles whose sign-ins from a device new to the account wait for a mailed confirmation
    /// (`[]` turns it off; add `customer` to challenge everyone).
    pub login_challenge_roles: Vec<String>,
    /// How long a login confirmation link works.
    pub login_challenge_ttl_minutes: u64,
    /// A guest's session ends after this long unused; the guest is then deleted (hourly).
    pub guest_idle_ttl_hours: u64,
    /// The guest purge's governor: at most this many guests deleted per hour.
    pub guest_purge_max_per_hour: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `shopkeep=debug,info`…
    pub level: String,
    /// `json` (one object per line) or `human`.
    pub format: String,
}

/// `count` requests per `period_secs`, with bursts up to `count`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub count: u32,
    pub period_secs: u64,
}

impl QuotaConfig {
    const fn new(count: u32, period_secs: u64) -> Self {
        Self { count, period_secs }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Off only for load tests (`SHOPKEEP_RATE_LIMITS__ENABLED=false`); a warning is logged.
    pub enabled: bool,
    /// Addresses or CIDR ranges of proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Every request from one client address.
    pub per_ip: QuotaConfig,
    /// Requests without a signed-in user, per client address.
    pub anonymous: QuotaConfig,
    /// Requests per signed-in customer.
    pub customer: QuotaConfig,
    /// Requests per signed-in staff member or admin.
    pub staff: QuotaConfig,
    /// Requests per API token.
    pub api_token: QuotaConfig,
    /// Login attempts per client address.
    pub login_per_ip: QuotaConfig,
    /// Sign-ups per client address.
    pub signup_per_ip: QuotaConfig,
    /// Requests that send mail (password reset links) per client address…
    pub mail_per_ip: QuotaConfig,
    /// …and per address they mail to.
    pub mail_per_account: QuotaConfig,
    /// Uses of mailed tokens (reset and verification links) per client address.
    pub token_per_ip: QuotaConfig,
    /// Failed logins within `lockout_window_secs` that lock the account.
    pub lockout_failures: u32,
    pub lockout_window_secs: u64,
    /// How long a locked account refuses logins.
    pub lockout_secs: u64,
    /// Failed logins per minute (all accounts) that raise `accounts_failed_login_alert`.
    pub failed_login_alert_per_minute: u32,
    /// How often idle limiter keys are forgotten.
    pub purge_interval_secs: u64,
    /// With Redis: `open` lets requests through while Redis is down, `closed` refuses them
    /// (503) and makes the instance unready.
    pub on_redis_failure: String,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_proxies: Vec::new(),
            per_ip: QuotaConfig::new(600, 60),
            anonymous: QuotaConfig::new(300, 60),
            customer: QuotaConfig::new(600, 60),
            staff: QuotaConfig::new(1_200, 60),
            api_token: QuotaConfig::new(1_200, 60),
            login_per_ip: QuotaConfig::new(10, 60),
            signup_per_ip: QuotaConfig::new(20, 3_600),
            mail_per_ip: QuotaConfig::new(10, 3_600),
            mail_per_account: QuotaConfig::new(3, 3_600),
            token_per_ip: QuotaConfig::new(10, 60),
            lockout_failures: 5,
            lockout_window_secs: 900,
            lockout_secs: 900,
            failed_login_alert_per_minute: 100,
            purge_interval_secs: 60,
            on_redis_failure: "open".into(),
        }
    }
}

impl RateLimitsConfig {
    /// The trusted proxy ranges (plain addresses become single-address ranges).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|raw| {
                raw.parse::<ipnet::IpNet>()
                    .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{raw:?} is not an address or CIDR range"))
            })
            .collect()
    }

    fn validate(&self, problems: &mut Vec<String>) {
        if !matches!(self.on_redis_failure.as_str(), "open" | "closed") {
            problems.push(format!("rate_limits.on_redis_failure: {:?} must be open or closed", self.on_redis_failure));
        }
        if let Err(problem) = self.trusted_proxy_nets() {
            problems.push(format!("rate_limits.trusted_proxies: {problem}"));
        }
        for (name, quota) in [
            ("per_ip", self.per_ip),
            ("anonymous", self.anonymous),
            ("customer", self.customer),
            ("staff", self.staff),
            ("api_token", self.api_token),
            ("login_per_ip", self.login_per_ip),
            ("signup_per_ip", self.signup_per_ip),
            ("mail_per_ip", self.mail_per_ip),
            ("mail_per_account", self.mail_per_account),
            ("token_per_ip", self.token_per_ip),
        ] {
            if !(1..=10_000_000).contains(&quota.count) || !(1..=86_400).contains(&quota.period_secs) {
                problems.push(format!("rate_limits.{name}: count must be 1-10000000 and period_secs 1-86400"));
            }
        }
        for (name, value, range) in [
            ("rate_limits.lockout_failures", u64::from(self.lockout_failures), 1..=1_000),
            ("rate_limits.lockout_window_secs", self.lockout_window_secs, 1..=86_400),
            ("rate_limits.lockout_secs", self.lockout_secs, 1..=86_400),
            (
                "rate_limits.failed_login_alert_per_minute",
                u64::from(self.failed_login_alert_per_minute),
                1..=10_000_000,
            ),
            ("rate_limits.purge_interval_secs", self.purge_interval_secs, 1..=86_400),
        ] {
            if !range.contains(&value) {
                problems.push(format!("{name}: must be between {} and {}", range.start(), range.end()));
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for `/metrics` and `/admin/*` on the admin listener. Secret.
    pub token: Option<Secret>,
    /// A file holding the token; replaces `token`.
    pub token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            shutdown_timeout_secs: 30,
            drain_delay_secs: 0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            cors_max_age_secs: 86_400,
            body_limit_bytes: 64 * 1024,
            request_timeout_secs: 15,
            max_in_flight: 512,
            adaptive_concurrency: false,
            min_in_flight: 8,
            https: false,
            catalog_max_age_secs: 60,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret("sqlite://data/shopkeep.db".into()),
            url_file: None,
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_secs: 5,
            statement_timeout_secs: 10,
            busy_timeout_secs: 5,
            migrate_on_start: None,
            pgbouncer: false,
        }
    }
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            session_absolute_ttl_hours: 24 * 30,
            session_idle_ttl_hours: 24 * 7,
            password_hash_concurrency: 0,
            session_purge_interval_secs: 3_600,
            session_purge_max_per_hour: 100_000,
            link_base_url: "http://localhost:8080".into(),
            verification_ttl_hours: 48,
            password_reset_ttl_minutes: 30,
            login_challenge_roles: vec!["staff".into(), "admin".into()],
            login_challenge_ttl_minutes: 15,
            guest_idle_ttl_hours: 24,
            guest_purge_max_per_hour: 100_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "json".into() }
    }
}

/// A secret string: never printed by `Debug`, `Display` or `config check`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// A database URL for display: the password replaced, everything else kept (it helps debugging).
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("[redacted]"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "[unparseable, redacted]".into(),
    }
}

fn serialize_redacted_url<S: Serializer>(url: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redacted_url(url.expose()))
}

/// Which database backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Every problem found, each on its own line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem{}):", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Loads defaults, then the TOML file (if given; it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigErrors> {
        let mut given = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigErrors(vec![format!("config file {} does not exist", path.display())]));
            }
            given = given.merge(Toml::file_exact(path));
        }
        given = given
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database.url".into()))
            .merge(Env::raw().only(&["DATABASE_URL_FILE"]).map(|_| "database.url_file".into()))
            .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
            .merge(Env::raw().only(&["SMTP_URL"]).map(|_| "mail.smtp_url".into()))
            .merge(Env::raw().only(&["SMTP_URL_FILE"]).map(|_| "mail.smtp_url_file".into()))
            // Only keys with a section (`SHOPKEEP_LOG__LEVEL`), so that other SHOPKEEP_ variables
            // (SHOPKEEP_ADMIN_PASSWORD, test settings) are not mistaken for configuration.
            .merge(Env::prefixed("SHOPKEEP_").filter(|key| key.as_str().contains("__")).split("__"));
        let mut problems = Vec::new();
        // A secret and its file from any two sources would leave the winner to precedence: refuse.
        for (value, file) in [
            ("database.url", "database.url_file"),
            ("admin.token", "admin.token_file"),
            ("mail.smtp_url", "mail.smtp_url_file"),
        ] {
            if given.contains(value) && given.contains(file) {
                problems.push(format!("{file}: give either {value} or {file}, not both"));
            }
        }
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(given);
        let mut config: Config = figment.extract().map_err(|error| {
            ConfigErrors(error.into_iter().map(|error| error.to_string()).chain(problems.iter().cloned()).collect())
        })?;
        config.read_secret_files(&mut problems);
        config.validate(&mut problems);
        if problems.is_empty() { Ok(config) } else { Err(ConfigErrors(problems)) }
    }

    fn read_secret_files(&mut self, problems: &mut Vec<String>) {
        if let Some(path) = &self.database.url_file {
            match read_secret(path) {
                Ok(value) => self.database.url = Secret(value),
                Err(problem) => problems.push(format!("database.url_file: {problem}")),
            }
        }
        if let Some(path) = &self.mail.smtp_url_file {
            match read_secret(path) {
                Ok(value) => self.mail.smtp_url = Some(Secret(value)),
                Err(problem) => problems.push(format!("mail.smtp_url_file: {problem}")),
            }
        }
        secret_from_file(&mut self.payments.secret, self.payments.secret_file.as_deref(), "payments.secret", problems);
        secret_from_file(
            &mut self.payments.webhook_secret,
            self.payments.webhook_secret_file.as_deref(),
            "payments.webhook_secret",
            problems,
        );
        for (name, provider) in &mut self.oidc.providers {
            let key = format!("oidc.providers.{name}.client_secret");
            secret_from_file(&mut provider.client_secret, provider.client_secret_file.as_deref(), &key, problems);
        }
        if let Some(path) = &self.admin.token_file {
            match read_secret(path) {
                Ok(value) => self.admin.token = Some(Secret(value)),
                Err(problem) => problems.push(format!("admin.token_file: {problem}")),
            }
        }
    }

    fn validate_orders(&self, problems: &mut Vec<String>) {
        let orders = &self.orders;
        for (name, value, range) in [
            ("orders.pending_payment_timeout_minutes", orders.pending_payment_timeout_minutes, 1..=10_080),
            ("orders.settle_after_secs", orders.settle_after_secs, 1..=3_600),
            ("orders.idempotency_ttl_hours", orders.idempotency_ttl_hours, 1..=720),
            ("orders.idempotency_lock_secs", orders.idempotency_lock_secs, 5..=3_600),
            ("orders.abandoned_cart_ttl_days", orders.abandoned_cart_ttl_days, 1..=3_650),
            ("orders.payment_event_retention_days", orders.payment_event_retention_days, 1..=3_650),
        ] {
            if !range.contains(&value) {
                problems.push(format!("{name}: must be between {} and {}", range.start(), range.end()));
            }
        }
        let payments = &self.payments;
        if let Some(url) = &payments.url {
            match url::Url::parse(url) {
                Ok(parsed) => {
                    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                        problems.push("payments.url: must be an https:// URL (http:// only on loopback)".into());
                    }
                }
                Err(error) => problems.push(format!("payments.url: {url:?} is not a URL: {error}")),
            }
            if payments.secret.as_ref().is_none_or(|secret| secret.expose().trim().is_empty()) {
                problems.push("payments.secret: is required with payments.url".into());
            }
        }
        if !(1..=120).contains(&payments.timeout_secs)
            || !(1..=payments.timeout_secs.max(1)).contains(&payments.attempt_timeout_secs)
        {
            problems.push("payments.timeout_secs: must be 1-120, and attempt_timeout_secs 1 to timeout_secs".into());
        }
        if !(1..=1_024).contains(&payments.max_concurrent) {
            problems.push("payments.max_concurrent: must be between 1 and 1024".into());
        }
        let name_ok = (1..=50).contains(&payments.name.len())
            && payments.name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if !name_ok {
            problems.push("payments.name: must be 1-50 characters of a-z, 0-9 and -".into());
        }
        if payments.webhook_secret.is_some() && payments.url.is_none() {
            problems.push("payments.webhook_secret: needs payments.url (the test mode sends no webhooks)".into());
        }
        // An empty or short key would let anyone sign webhooks.
        let min = payments::WebhookVerifier::MIN_SECRET_LEN;
        for (key, secret) in [
            ("payments.webhook_secret", &payments.webhook_secret),
            ("payments.webhook_previous_secret", &payments.webhook_previous_secret),
        ] {
            if secret.as_ref().is_some_and(|secret| secret.expose().trim().len() < min) {
                problems.push(format!("{key}: must be at least {min} characters"));
            }
        }
        if payments.webhook_previous_secret.is_some() && payments.webhook_secret.is_none() {
            problems.push("payments.webhook_previous_secret: needs payments.webhook_secret".into());
        }
        if !(10..=3_600).contains(&payments.webhook_tolerance_secs) {
            problems.push("payments.webhook_tolerance_secs: must be between 10 and 3600".into());
        }
        if orders.settle_after_secs >= orders.pending_payment_timeout_minutes.saturating_mul(60) {
            problems
                .push("orders.settle_after_secs: must be shorter than orders.pending_payment_timeout_minutes".into());
        }
    }

    fn validate_oidc(&self, problems: &mut Vec<String>) {
        let oidc = &self.oidc;
        for (name, value, range) in [
            ("oidc.timeout_secs", oidc.timeout_secs, 1..=120),
            ("oidc.metadata_ttl_secs", oidc.metadata_ttl_secs, 60..=604_800),
            ("oidc.login_ttl_minutes", oidc.login_ttl_minutes, 1..=60),
        ] {
            if !range.contains(&value) {
                problems.push(format!("{name}: must be between {} and {}", range.start(), range.end()));
            }
        }
        for (name, provider) in &oidc.providers {
            let key = format!("oidc.providers.{name}");
            let name_ok = !name.is_empty()
                && name.len() <= 32
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !name_ok {
                problems.push(format!("{key}: the name must be 1-32 of a-z, 0-9 and -"));
            }
            match url::Url::parse(&provider.issuer) {
                Ok(issuer) => {
                    let loopback = matches!(issuer.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                    if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
                        problems.push(format!("{key}.issuer: must be an https:// URL (http:// only on loopback)"));
                    }
                }
                Err(error) => problems.push(format!("{key}.issuer: {:?} is not a URL: {error}", provider.issuer)),
            }
            if provider.client_id.trim().is_empty() {
                problems.push(format!("{key}.client_id: is required"));
            }
            let callback = format!("/auth/oidc/{name}/callback");
            match url::Url::parse(&provider.redirect_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.path().ends_with(&callback) => {}
                _ => problems.push(format!(
                    "{key}.redirect_url: must be this shop's callback URL, like https://shop.example/api/v1{callback}"
                )),
            }
            if provider
                .scopes
                .as_ref()
                .is_some_and(|scopes| scopes.iter().any(|scope| scope.trim().is_empty() || scope.contains(' ')))
            {
                problems.push(format!("{key}.scopes: each scope is one non-empty word"));
            }
        }
    }

    /// Checks the configuration again, e.g. after command-line overrides.
    pub fn revalidate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        self.validate(&mut problems);
        if problems.is_empty() { Ok(()) } else { Err(ConfigErrors(problems)) }
    }

    fn validate_webhooks(&self, problems: &mut Vec<String>) {
        let webhooks = &self.webhooks;
        for (name, value, range) in [
            ("webhooks.max_endpoints", u64::from(webhooks.max_endpoints), 1..=1_000),
            ("webhooks.timeout_secs", webhooks.timeout_secs, 1..=60),
            ("webhooks.max_attempts", u64::from(webhooks.max_attempts), 1..=30),
            ("webhooks.disable_after_failures", u64::from(webhooks.disable_after_failures), 1..=10_000),
            ("webhooks.auto_disable_max_per_hour", u64::from(webhooks.auto_disable_max_per_hour), 0..=1_000),
            ("webhooks.max_concurrent", webhooks.max_concurrent as u64, 1..=256),
            ("webhooks.retention_days", webhooks.retention_days, 1..=3_650),
        ] {
            if !range.contains(&value) {
                problems.push(format!("{name}: must be between {} and {}", range.start(), range.end()));
            }
        }
        if !self.jobs.queues.contains_key(shop::webhooks::WEBHOOKS_QUEUE) {
            problems.push(format!(
                "jobs.queues: the {:?} queue is needed (webhooks are delivered from it)",
                shop::webhooks::WEBHOOKS_QUEUE
            ));
        }
    }

    fn validate(&self, problems: &mut Vec<String>) {
        self.validate_oidc(problems);
        self.validate_webhooks(problems);
        self.validate_orders(problems);
        let listen = parse_address("server.listen", &self.server.listen, problems);
        let admin_listen = parse_address("server.admin_listen", &self.server.admin_listen, problems);
        if let (Some(listen), Some(admin)) = (listen, admin_listen)
            && listen == admin
            && listen.port() != 0
        {
            problems.push("server.admin_listen: must differ from server.listen".into());
        }
        let token = self.admin.token.as_ref().map(Secret::expose);
        if let Some(admin) = admin_listen
            && !admin.ip().is_loopback()
            && token.is_none()
        {
            problems
                .push(format!("admin.token: required when server.admin_listen ({admin}) is not a loopback address"));
        }
        if token.is_some_and(|token| token.len() < 16) {
            problems.push("admin.token: must be at least 16 characters".into());
        }
        if self.server.shutdown_timeout_secs == 0 || self.server.shutdown_timeout_secs > 3_600 {
            problems.push("server.shutdown_timeout_secs: must be between 1 and 3600".into());
        }
        if self.server.drain_delay_secs > 300 {
            problems.push("server.drain_delay_secs: must be at most 300".into());
        }
        for origin in &self.http.allowed_origins {
            if !is_origin(origin) {
                problems.push(format!(
                    "http.allowed_origins: {origin:?} is not an origin like https://shop.example (scheme, host, optional port; no path; no *)"
                ));
            }
        }
        if !(1_024..=64 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            problems.push("http.body_limit_bytes: must be between 1024 and 67108864".into());
        }
        if self.http.adaptive_concurrency && self.http.min_in_flight > self.http.max_in_flight {
            problems.push("http.min_in_flight: must not exceed http.max_in_flight".into());
        }
        if self.http.request_timeout_secs == 0 || self.http.request_timeout_secs > 600 {
            problems.push("http.request_timeout_secs: must be between 1 and 600".into());
        }
        for (name, value, range) in [
            ("http.max_in_flight", self.http.max_in_flight as u64, 1..=1_000_000),
            ("http.min_in_flight", self.http.min_in_flight as u64, 1..=1_000_000),
            ("http.cors_max_age_secs", self.http.cors_max_age_secs, 0..=86_400),
            ("http.catalog_max_age_secs", self.http.catalog_max_age_secs, 0..=31_536_000),
            ("database.max_connections", u64::from(self.database.max_connections), 1..=1_000),
            ("database.acquire_timeout_secs", self.database.acquire_timeout_secs, 1..=300),
            ("database.statement_timeout_secs", self.database.statement_timeout_secs, 1..=3_600),
            ("database.busy_timeout_secs", self.database.busy_timeout_secs, 1..=300),
            ("accounts.session_absolute_ttl_hours", self.accounts.session_absolute_ttl_hours, 1..=8_760),
            ("accounts.session_idle_ttl_hours", self.accounts.session_idle_ttl_hours, 1..=8_760),
            ("accounts.password_hash_concurrency", self.accounts.password_hash_concurrency as u64, 0..=1_024),
            ("accounts.session_purge_interval_secs", self.accounts.session_purge_interval_secs, 1..=604_800),
            (
                "accounts.session_purge_max_per_hour",
                u64::from(self.accounts.session_purge_max_per_hour),
                1..=100_000_000,
            ),
            ("accounts.verification_ttl_hours", self.accounts.verification_ttl_hours, 1..=720),
            ("accounts.password_reset_ttl_minutes", self.accounts.password_reset_ttl_minutes, 5..=1_440),
            ("accounts.login_challenge_ttl_minutes", self.accounts.login_challenge_ttl_minutes, 5..=1_440),
            ("accounts.guest_idle_ttl_hours", self.accounts.guest_idle_ttl_hours, 1..=8_760),
            ("accounts.guest_purge_max_per_hour", u64::from(self.accounts.guest_purge_max_per_hour), 1..=100_000_000),
            ("jobs.batch_size", u64::from(self.jobs.batch_size), 1..=1_000),
            ("jobs.poll_interval_ms", self.jobs.poll_interval_ms, 10..=600_000),
            ("jobs.lease_secs", self.jobs.lease_secs, 3..=86_400),
            ("jobs.job_timeout_secs", self.jobs.job_timeout_secs, 1..=86_400),
            ("jobs.retry_base_secs", self.jobs.retry_base_secs, 1..=86_400),
            ("jobs.retry_max_secs", self.jobs.retry_max_secs, 1..=604_800),
            ("jobs.shutdown_timeout_secs", self.jobs.shutdown_timeout_secs, 1..=3_600),
            ("jobs.succeeded_retention_hours", self.jobs.succeeded_retention_hours, 1..=87_600),
            ("jobs.dead_retention_days", self.jobs.dead_retention_days, 1..=3_650),
        ] {
            if !range.contains(&value) {
                problems.push(format!("{name}: must be between {} and {}", range.start(), range.end()));
            }
        }
        if let Some(url) = &self.mail.smtp_url
            && !(url.expose().starts_with("smtp://") || url.expose().starts_with("smtps://"))
        {
            problems.push(format!("mail.smtp_url: {} must start with smtp:// or smtps://", redacted_url(url.expose())));
        }
        let address = self
            .mail
            .from
            .rsplit_once('<')
            .map_or(self.mail.from.as_str(), |(_, rest)| rest.strip_suffix('>').unwrap_or(rest));
        if !address.contains('@') || address.trim() != address || address.is_empty() {
            problems.push(format!(
                "mail.from: {:?} must be an address, optionally with a name: Shop <shop@example.com>",
                self.mail.from
            ));
        }
        if self.mail.shop_name.trim().is_empty() || self.mail.shop_name.len() > 100 {
            problems.push("mail.shop_name: must be 1 to 100 characters".into());
        }
        for (name, value, range) in [
            ("mail.timeout_secs", self.mail.timeout_secs, 1..=300),
            ("mail.outbox_retention_days", self.mail.outbox_retention_days, 1..=3_650),
        ] {
            if !range.contains(&value) {
                problems.push(format!("{name}: must be between {} and {}", range.start(), range.end()));
            }
        }
        if !self.jobs.queues.contains_key(shop::mail::MAIL_QUEUE) {
            problems
                .push(format!("jobs.queues: the {:?} queue is needed (mail is sent from it)", shop::mail::MAIL_QUEUE));
        }
        for role in &self.accounts.login_challenge_roles {
            if shop::accounts::Role::parse(role).is_err() {
                problems.push(format!("accounts.login_challenge_roles: {role:?} is not customer, staff or admin"));
            }
        }
        let base = self.accounts.link_base_url.as_str();
        if !(base.starts_with("https://") || base.starts_with("http://")) || url::Url::parse(base).is_err() {
            problems.push(format!("accounts.link_base_url: {base:?} must be an http(s) URL like https://shop.example"));
        }
        if self.jobs.queues.is_empty() {
            problems.push("jobs.queues: at least one queue is needed".into());
        }
        for (queue, concurrency) in &self.jobs.queues {
            if !(1..=1_024).contains(concurrency) {
                problems.push(format!("jobs.queues.{queue}: concurrency must be between 1 and 1024"));
            }
        }
        for (name, expression) in &self.jobs.schedules {
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
        if self.jobs.retry_base_secs > self.jobs.retry_max_secs {
            problems.push("jobs.retry_base_secs: must not exceed jobs.retry_max_secs".into());
        }
        if let Err(problem) = self.backend() {
            problems.push(format!("database.url: {problem}"));
        }
        if self.database.min_connections > self.database.max_connections {
            problems.push("database.min_connections: must not exceed database.max_connections".into());
        }
        if self.accounts.session_idle_ttl_hours > self.accounts.session_absolute_ttl_hours {
            problems.push("accounts.session_idle_ttl_hours: must not exceed session_absolute_ttl_hours".into());
        }
        self.rate_limits.validate(problems);
        if let Some(url) = &self.redis.url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("redis+unix://"))
        {
            problems.push(format!("redis.url: {} must start with redis://", redacted_url(url.expose())));
        }
        if !(1..=60_000).contains(&self.redis.timeout_ms) {
            problems.push("redis.timeout_ms: must be between 1 and 60000".into());
        }
        if !matches!(self.log.format.as_str(), "json" | "human") {
            problems.push(format!("log.format: {:?} must be json or human", self.log.format));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!("log.level: {:?} is not a valid filter: {error}", self.log.level));
        }
    }

    /// The backend the database URL selects.
    pub fn backend(&self) -> Result<Backend, String> {
        let url = self.database.url.expose();
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(format!("{} must start with sqlite:, postgres:// or postgresql://", redacted_url(url)))
        }
    }

    /// Whether `serve` applies migrations at start (the default depends on the backend).
    pub fn migrate_on_start(&self) -> bool {
        self.database.migrate_on_start.unwrap_or(matches!(self.backend(), Ok(Backend::Sqlite)))
    }

    pub fn listen(&self) -> SocketAddr {
        self.server.listen.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    pub fn admin_listen(&self) -> SocketAddr {
        self.server.admin_listen.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090)))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_timeout_secs)
    }

    /// The configuration as TOML, secrets redacted, for `config check`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# could not render configuration: {error}\n"))
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

/// Reads the optional secret `key` from `{key}_file` when one is given; both given is a problem
/// (which one wins would be up to precedence).
fn secret_from_file(secret: &mut Option<Secret>, file: Option<&Path>, key: &str, problems: &mut Vec<String>) {
    let Some(path) = file else { return };
    if secret.is_some() {
        problems.push(format!("{key}_file: give either {key} or {key}_file, not both"));
    }
    match read_secret(path) {
        Ok(value) => *secret = Some(Secret(value)),
        Err(problem) => problems.push(format!("{key}_file: {problem}")),
    }
}

fn read_secret(path: &Path) -> Result<String, String> {
    let content = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let value = content.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with_toml(toml: &str) -> Result<Config, ConfigErrors> {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("shopkeep.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(Some(&path))
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = with_toml("").unwrap();
        assert_eq!(config.backend(), Ok(Backend::Sqlite));
        assert!(config.migrate_on_start());
        assert_eq!(config.listen(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.shutdown_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = with_toml(
            r#"
            [server]
            listen = "nowhere"
            admin_listen = "0.0.0.0:9090"
            [http]
            allowed_origins = ["*", "https://ok.example"]
            body_limit_bytes = 10
            [database]
            url = "mysql://x"
            [log]
            format = "xml"
            "#,
        )
        .unwrap_err();
        let text = errors.to_string();
        for expected in
            ["server.listen", "admin.token", "http.allowed_origins", "body_limit_bytes", "database.url", "log.format"]
        {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert_eq!(errors.0.len(), 6, "{text}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let errors = with_toml("[server]\nlisten = 5\nbogus = true\n").unwrap_err();
        assert!(errors.to_string().contains("bogus") || errors.to_string().contains("listen"), "{errors}");
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let directory = tempfile::tempdir().unwrap();
        let secret_path = directory.path().join("token");
        std::fs::write(&secret_path, "a-very-long-admin-token\n").unwrap();
        let config = with_toml(&format!(
            "[admin]\ntoken_file = {:?}\n[database]\nurl = \"postgres://shop:hunter2hunter2@db/shop\"\n",
            secret_path.display().to_string()
        ))
        .unwrap();
        assert_eq!(config.admin.token.as_ref().map(Secret::expose), Some("a-very-long-admin-token"));
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("a-very-long-admin-token"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://shop:%5Bredacted%5D@db/shop") || shown.contains("[redacted]"), "{shown}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn oidc_providers_are_validated_and_their_secrets_never_print() {
        let directory = tempfile::tempdir().unwrap();
        let secret_path = directory.path().join("client-secret");
        std::fs::write(&secret_path, "a-client-secret\n").unwrap();
        let config = with_toml(&format!(
            r#"
            [oidc.providers.google]
            issuer = "https://accounts.google.com"
            client_id = "shop"
            client_secret_file = {:?}
            redirect_url = "https://shop.example/api/v1/auth/oidc/google/callback"
            "#,
            secret_path.display().to_string()
        ))
        .unwrap();
        let google = &config.oidc.providers["google"];
        assert_eq!(google.client_secret.as_ref().map(Secret::expose), Some("a-client-secret"));
        assert!(!config.to_redacted_toml().contains("a-client-secret"));
        let errors = with_toml(
            r#"
            [oidc.providers."Bad Name"]
            issuer = "http://idp.example"
            redirect_url = "https://shop.example/elsewhere"
            scopes = ["email profile"]
            "#,
        )
        .unwrap_err()
        .to_string();
        for problem in
            ["the name must be", "must be an https:// URL", "client_id: is required", "redirect_url", "scopes"]
        {
            assert!(errors.contains(problem), "{problem} missing:\n{errors}");
        }
    }

    #[test]
    fn a_payment_provider_needs_a_secure_url_and_a_secret() {
        let errors = with_toml("[payments]\nurl = \"http://payments.example\"\n[orders]\nsettle_after_secs = 7200\n")
            .unwrap_err()
            .to_string();
        for problem in ["payments.url: must be an https://", "payments.secret: is required", "orders.settle_after_secs"]
        {
            assert!(errors.contains(problem), "{problem} missing:\n{errors}");
        }
        let config = with_toml("[payments]\nurl = \"https://payments.example\"\nsecret = \"sk_live_abc\"\n").unwrap();
        assert!(!config.to_redacted_toml().contains("sk_live_abc"));
    }

    #[test]
    fn recurring_jobs_take_cron_schedules() {
        let config = with_toml("[jobs.schedules]\n\"mail.purge_outbox\" = \"30 3 * * *\"\n").unwrap();
        assert_eq!(config.jobs.schedules["mail.purge_outbox"], "30 3 * * *");
        let errors = with_toml("[jobs.schedules]\n\"mail.purge\" = \"@daily\"\n\"sessions.purge\" = \"61 * * * *\"\n")
            .unwrap_err()
            .to_string();
        assert!(errors.contains("no such recurring job"), "{errors}");
        assert!(errors.contains("is not a cron expression"), "{errors}");
    }

    #[test]
    fn a_secret_and_its_file_together_are_refused() {
        let errors =
            with_toml("[admin]\ntoken = \"a-long-enough-token\"\ntoken_file = \"/run/secrets/token\"\n").unwrap_err();
        assert!(errors.to_string().contains("not both"), "{errors}");
    }

    #[test]
    fn absurd_values_are_refused_before_they_can_panic() {
        let errors = with_toml(
            "[accounts]\nsession_purge_interval_secs = 9000000000000000000\n[database]\nacquire_timeout_secs = 99999999999\n[http]\nmax_in_flight = 999999999999\n",
        )
        .unwrap_err();
        let text = errors.to_string();
        for key in ["session_purge_interval_secs", "acquire_timeout_secs", "max_in_flight"] {
            assert!(text.contains(key), "{key} missing:\n{text}");
        }
    }

    #[test]
    fn missing_secret_file_is_a_problem() {
        let errors = with_toml("[admin]\ntoken_file = \"/nonexistent/token\"\n").unwrap_err();
        assert!(errors.to_string().contains("admin.token_file"), "{errors}");
    }
}
