//! Configuration: defaults < TOML file < environment (`SHOPKEEP_SECTION__KEY`, `DATABASE_URL`),
//! secrets from `*_FILE` paths, validated as a whole so every problem is reported at once.
//!
//! Each section lives in its own file with its defaults and its checks (`Validate`). Where a
//! crate owns the settings a section configures, the section deserialises straight into them
//! and their defaults are the owner's: `rate_limits` into `shop_api::RateLimitSettings`,
//! `orders` into `shop::orders::OrderSettings` (through a serde remote definition in
//! `orders.rs`, which keeps the keys and their units out of the domain). `accounts`
//! (`shop::accounts::AccountSettings`), `jobs` (`shop::jobs::JobSettings`,
//! `worker::WorkerSettings`) and `http` (`shop_api::HttpSettings`) do not map one to one onto
//! their owners' settings, so each stays a section of its own that the application turns into
//! those settings (each `Default` says why), but each takes its defaults from those owners.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use shop::orders::OrderSettings;
use shop_api::RateLimitSettings;

mod accounts;
mod cache;
mod database;
mod durations;
mod flags;
mod jobs;
mod mail;
mod orders;
mod search;
mod secret;
mod server;
#[cfg(test)]
mod tests;
mod webhooks;

pub use accounts::{AccountsConfig, OidcConfig, OidcProviderConfig};
pub use cache::CacheConfig;
pub use database::{Backend, DatabaseConfig, RedisConfig};
pub use flags::FlagsConfig;
pub use jobs::JobsConfig;
pub use mail::MailConfig;
pub use orders::PaymentsConfig;
pub use search::SearchConfig;
pub use secret::{Secret, redacted_url};
pub use server::{AdminConfig, HttpConfig, LogConfig, ServerConfig};
pub use webhooks::WebhooksConfig;

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
    /// Keys and defaults: `shop_api::RateLimitSettings` and its `RateLimitScope` table.
    pub rate_limits: RateLimitSettings,
    pub redis: RedisConfig,
    pub jobs: JobsConfig,
    pub mail: MailConfig,
    pub oidc: OidcConfig,
    /// Keys: the `orders` file's `OrdersSection`; defaults: `OrderSettings::default()`. Its
    /// `shop_name` is not read here (it is `mail.shop_name`).
    #[serde(with = "orders::OrdersSection")]
    pub orders: OrderSettings,
    pub payments: PaymentsConfig,
    pub webhooks: WebhooksConfig,
    pub search: SearchConfig,
    pub cache: CacheConfig,
    pub flags: FlagsConfig,
}

/// A section that checks its own values.
trait Validate {
    /// Adds one problem per bad value, starting with its key: `http.body_limit_bytes: …`.
    fn validate(&self, problems: &mut Vec<String>);
}

impl Validate for RateLimitSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        RateLimitSettings::validate(self, problems);
    }
}

/// Adds `{key}: must be between {min} and {max}` for each value outside its range.
fn check_ranges<T: PartialOrd + fmt::Display, const N: usize>(
    problems: &mut Vec<String>,
    checks: [(&str, T, RangeInclusive<T>); N],
) {
    for (key, value, range) in checks {
        if !range.contains(&value) {
            problems.push(format!("{key}: must be between {} and {}", range.start(), range.end()));
        }
    }
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
            .merge(Env::raw().only(&["DATABASE_REPLICA_URL"]).map(|_| "database.replica_url".into()))
            .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
            .merge(Env::raw().only(&["SMTP_URL"]).map(|_| "mail.smtp_url".into()))
            .merge(Env::raw().only(&["SMTP_URL_FILE"]).map(|_| "mail.smtp_url_file".into()))
            // Only keys with a section (`SHOPKEEP_LOG__LEVEL`), so that other SHOPKEEP_ variables
            // (SHOPKEEP_ADMIN_PASSWORD, test settings) are not mistaken for configuration.
            // SHOPKEEP_GATEWAY__* belong to `shopkeep gateway`, whose configuration is its own.
            .merge(
                Env::prefixed("SHOPKEEP_")
                    .filter(|key| {
                        key.as_str().contains("__") && !key.as_str().to_ascii_lowercase().starts_with("gateway__")
                    })
                    .split("__"),
            );
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
        self.database.read_secret_files(problems);
        self.mail.read_secret_files(problems);
        self.payments.read_secret_files(problems);
        self.oidc.read_secret_files(problems);
        self.admin.read_secret_files(problems);
    }

    /// Checks the configuration again, e.g. after command-line overrides.
    pub fn revalidate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        self.validate(&mut problems);
        if problems.is_empty() { Ok(()) } else { Err(ConfigErrors(problems)) }
    }

    /// Every section's checks, then those that span sections.
    fn validate(&self, problems: &mut Vec<String>) {
        let sections: [&dyn Validate; 17] = [
            &self.server,
            &self.http,
            &self.database,
            &self.accounts,
            &self.log,
            &self.admin,
            &self.rate_limits,
            &self.redis,
            &self.jobs,
            &self.mail,
            &self.oidc,
            &self.orders,
            &self.payments,
            &self.webhooks,
            &self.search,
            &self.cache,
            &self.flags,
        ];
        for section in sections {
            section.validate(problems);
        }
        // Over TLS the session cookie must be Secure (and HSTS sent): say so rather than guess.
        if self.server.tls().is_some() && !self.http.https {
            problems.push("http.https: must be true when server.tls_certificate_file is set".into());
        }
        // An admin listener others can reach must not serve metrics and actions to anyone.
        if let Ok(admin) = self.server.admin_listen.parse::<SocketAddr>()
            && !admin.ip().is_loopback()
            && self.admin.token.is_none()
        {
            problems
                .push(format!("admin.token: required when server.admin_listen ({admin}) is not a loopback address"));
        }
    }

    /// The backend the database URL selects.
    pub fn backend(&self) -> Result<Backend, String> {
        self.database.backend()
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
