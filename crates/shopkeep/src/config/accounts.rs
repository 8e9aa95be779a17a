//! The `accounts` and `oidc` sections: sessions, mailed links, login challenges, guests, and
//! sign-in with external OpenID Connect providers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shop::accounts::AccountSettings;

use super::durations::{HOURS, MINUTES, count, hours, minutes};
use super::secret::{Secret, secret_from_file};
use super::{Validate, check_ranges};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// A session ends this long after login.
    #[serde(rename = "session_absolute_ttl_hours", with = "hours")]
    pub session_absolute_ttl: time::Duration,
    /// A session ends after this long without requests.
    #[serde(rename = "session_idle_ttl_hours", with = "hours")]
    pub session_idle_ttl: time::Duration,
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
    #[serde(rename = "verification_ttl_hours", with = "hours")]
    pub verification_ttl: time::Duration,
    /// How long a password reset link works.
    #[serde(rename = "password_reset_ttl_minutes", with = "minutes")]
    pub password_reset_ttl: time::Duration,
    /// Roles whose sign-ins from a device new to the account wait for a mailed confirmation
    /// (`[]` turns it off; add `customer` to challenge everyone).
    pub login_challenge_roles: Vec<String>,
    /// How long a login confirmation link works.
    #[serde(rename = "login_challenge_ttl_minutes", with = "minutes")]
    pub login_challenge_ttl: time::Duration,
    /// A guest's session ends after this long unused; the guest is then deleted (hourly).
    #[serde(rename = "guest_idle_ttl_hours", with = "hours")]
    pub guest_idle_ttl: time::Duration,
    /// The guest purge's governor: at most this many guests deleted per hour.
    pub guest_purge_max_per_hour: u32,
}

/// The keys [`AccountSettings`] has take its defaults (durations are read in the unit of their
/// key, as in `orders`). The section is not read into it straight (as `orders` is) because it also
/// configures what `AccountSettings` does not hold (the password hasher, the purge jobs and
/// their governors, whose defaults are therefore here), `mail.shop_name` and
/// `oidc.login_ttl_minutes` feed it too, and `login_challenge_roles` stays text so that a bad
/// role is reported with the other problems (`app::account_service` builds the settings).
impl Default for AccountsConfig {
    fn default() -> Self {
        let owner = AccountSettings::default();
        Self {
            session_absolute_ttl: owner.session_absolute_ttl,
            session_idle_ttl: owner.session_idle_ttl,
            password_hash_concurrency: 0,
            session_purge_interval_secs: 3_600,
            session_purge_max_per_hour: 100_000,
            link_base_url: owner.link_base_url,
            verification_ttl: owner.verification_ttl,
            password_reset_ttl: owner.password_reset_ttl,
            login_challenge_roles: owner.login_challenge_roles.iter().map(|role| role.as_str().to_owned()).collect(),
            login_challenge_ttl: owner.login_challenge_ttl,
            guest_idle_ttl: owner.guest_idle_ttl,
            guest_purge_max_per_hour: 100_000,
        }
    }
}

impl Validate for AccountsConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        check_ranges(
            problems,
            [
                ("accounts.session_absolute_ttl_hours", count(self.session_absolute_ttl, HOURS), 1..=8_760),
                ("accounts.session_idle_ttl_hours", count(self.session_idle_ttl, HOURS), 1..=8_760),
                ("accounts.password_hash_concurrency", self.password_hash_concurrency as u64, 0..=1_024),
                ("accounts.session_purge_interval_secs", self.session_purge_interval_secs, 1..=604_800),
                ("accounts.session_purge_max_per_hour", u64::from(self.session_purge_max_per_hour), 1..=100_000_000),
                ("accounts.verification_ttl_hours", count(self.verification_ttl, HOURS), 1..=720),
                ("accounts.password_reset_ttl_minutes", count(self.password_reset_ttl, MINUTES), 5..=1_440),
                ("accounts.login_challenge_ttl_minutes", count(self.login_challenge_ttl, MINUTES), 5..=1_440),
                ("accounts.guest_idle_ttl_hours", count(self.guest_idle_ttl, HOURS), 1..=8_760),
                ("accounts.guest_purge_max_per_hour", u64::from(self.guest_purge_max_per_hour), 1..=100_000_000),
            ],
        );
        for role in &self.login_challenge_roles {
            if shop::accounts::Role::parse(role).is_err() {
                problems.push(format!("accounts.login_challenge_roles: {role:?} is not customer, staff or admin"));
            }
        }
        let base = self.link_base_url.as_str();
        if !(base.starts_with("https://") || base.starts_with("http://")) || url::Url::parse(base).is_err() {
            problems.push(format!("accounts.link_base_url: {base:?} must be an http(s) URL like https://shop.example"));
        }
        if self.session_idle_ttl > self.session_absolute_ttl {
            problems.push("accounts.session_idle_ttl_hours: must not exceed session_absolute_ttl_hours".into());
        }
    }
}

/// Sign-in with external OpenID Connect providers (none by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// Providers by name (`[oidc.providers.google]`, `SHOPKEEP_OIDC__PROVIDERS__GOOGLE__ISSUER`);
    /// the name appears in `/api/v1/auth/oidc/{name}/start`.
    pub providers: BTreeMap<String, OidcProviderConfig>,
    /// One call to a provider (discovery, keys, token, userinfo), retries included, must finish
    /// within this.
    pub timeout_secs: u64,
    /// How long a provider's discovery document and keys are cached.
    pub metadata_ttl_secs: u64,
    /// How long a browser has to come back from the provider's sign-in page.
    pub login_ttl_minutes: u64,
}

/// `login_ttl_minutes` defaults to `AccountSettings::default().external_login_ttl`, which it
/// sets; the other keys configure the provider clients (`app::identity_providers`).
impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            providers: BTreeMap::new(),
            timeout_secs: 10,
            metadata_ttl_secs: 3_600,
            login_ttl_minutes: count(AccountSettings::default().external_login_ttl, MINUTES),
        }
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

impl OidcConfig {
    pub(super) fn read_secret_files(&mut self, problems: &mut Vec<String>) {
        for (name, provider) in &mut self.providers {
            let key = format!("oidc.providers.{name}.client_secret");
            secret_from_file(&mut provider.client_secret, provider.client_secret_file.as_deref(), &key, problems);
        }
    }
}

impl Validate for OidcConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        check_ranges(
            problems,
            [
                ("oidc.timeout_secs", self.timeout_secs, 1..=120),
                ("oidc.metadata_ttl_secs", self.metadata_ttl_secs, 60..=604_800),
                ("oidc.login_ttl_minutes", self.login_ttl_minutes, 1..=60),
            ],
        );
        for (name, provider) in &self.providers {
            provider.validate(name, problems);
        }
    }
}

impl OidcProviderConfig {
    fn validate(&self, name: &str, problems: &mut Vec<String>) {
        let key = format!("oidc.providers.{name}");
        let name_ok = !name.is_empty()
            && name.len() <= 32
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            problems.push(format!("{key}: the name must be 1-32 of a-z, 0-9 and -"));
        }
        match url::Url::parse(&self.issuer) {
            Ok(issuer) => {
                let loopback = matches!(issuer.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
                    problems.push(format!("{key}.issuer: must be an https:// URL (http:// only on loopback)"));
                }
            }
            Err(error) => problems.push(format!("{key}.issuer: {:?} is not a URL: {error}", self.issuer)),
        }
        if self.client_id.trim().is_empty() {
            problems.push(format!("{key}.client_id: is required"));
        }
        let callback = format!("/auth/oidc/{name}/callback");
        match url::Url::parse(&self.redirect_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.path().ends_with(&callback) => {}
            _ => problems.push(format!(
                "{key}.redirect_url: must be this shop's callback URL, like https://shop.example/api/v1{callback}"
            )),
        }
        if self
            .scopes
            .as_ref()
            .is_some_and(|scopes| scopes.iter().any(|scope| scope.trim().is_empty() || scope.contains(' ')))
        {
            problems.push(format!("{key}.scopes: each scope is one non-empty word"));
        }
    }
}
