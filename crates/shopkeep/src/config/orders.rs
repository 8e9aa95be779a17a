//! The `orders` and `payments` sections: checkout timings, read straight into
//! `shop::orders::OrderSettings`, and the payment provider.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shop::orders::OrderSettings;

use super::durations::{days, hours, minutes, secs};
use super::secret::{Secret, secret_from_file};
use super::{Validate, check_ranges};

/// The `orders` section, read into [`OrderSettings`] with serde's remote derive: the keys and
/// their units are the configuration's business, not the domain's, and each default is the one
/// of `OrderSettings::default()`. Listing every field also means that a new setting does not
/// compile until it has its key here.
#[derive(Serialize, Deserialize)]
#[serde(remote = "OrderSettings", default = "OrderSettings::default", deny_unknown_fields)]
// The name errors have always shown ("expected struct OrdersConfig"), not the remote type's.
#[serde(expecting = "struct OrdersConfig")]
pub(super) struct OrdersSection {
    /// An order still awaiting its payment this long after checkout is settled with the
    /// provider: paid if charged, else cancelled and its stock released.
    #[serde(rename = "pending_payment_timeout_minutes", with = "minutes")]
    pending_payment_timeout: time::Duration,
    /// After an unknown payment outcome (timeout), the provider is asked again after this.
    #[serde(rename = "settle_after_secs", with = "secs")]
    settle_after: time::Duration,
    /// `Idempotency-Key`s are remembered this long.
    #[serde(rename = "idempotency_ttl_hours", with = "hours")]
    idempotency_ttl: time::Duration,
    /// A checkout holds its key this long; if its process dies, a retry resumes it after that.
    #[serde(rename = "idempotency_lock_secs", with = "secs")]
    idempotency_lock: time::Duration,
    /// Carts untouched this long are emptied (daily).
    #[serde(rename = "abandoned_cart_ttl_days", with = "days")]
    abandoned_cart_ttl: time::Duration,
    /// Applied payment webhook events are remembered this long, so redeliveries are no-ops.
    #[serde(rename = "payment_event_retention_days", with = "days")]
    payment_event_retention: time::Duration,
    /// Not a key of this section: `mail.shop_name` (see `app::order_service`).
    #[serde(skip)]
    shop_name: String,
}

impl Validate for OrderSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        check_ranges(
            problems,
            [
                ("orders.pending_payment_timeout_minutes", self.pending_payment_timeout.whole_minutes(), 1..=10_080),
                ("orders.settle_after_secs", self.settle_after.whole_seconds(), 1..=3_600),
                ("orders.idempotency_ttl_hours", self.idempotency_ttl.whole_hours(), 1..=720),
                ("orders.idempotency_lock_secs", self.idempotency_lock.whole_seconds(), 5..=3_600),
                ("orders.abandoned_cart_ttl_days", self.abandoned_cart_ttl.whole_days(), 1..=3_650),
                ("orders.payment_event_retention_days", self.payment_event_retention.whole_days(), 1..=3_650),
            ],
        );
        if self.settle_after >= self.pending_payment_timeout {
            problems
                .push("orders.settle_after_secs: must be shorter than orders.pending_payment_timeout_minutes".into());
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

impl PaymentsConfig {
    pub(super) fn read_secret_files(&mut self, problems: &mut Vec<String>) {
        secret_from_file(&mut self.secret, self.secret_file.as_deref(), "payments.secret", problems);
        secret_from_file(
            &mut self.webhook_secret,
            self.webhook_secret_file.as_deref(),
            "payments.webhook_secret",
            problems,
        );
    }

    fn validate_url(&self, problems: &mut Vec<String>) {
        let Some(url) = &self.url else { return };
        match url::Url::parse(url) {
            Ok(parsed) => {
                let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                    problems.push("payments.url: must be an https:// URL (http:// only on loopback)".into());
                }
            }
            Err(error) => problems.push(format!("payments.url: {url:?} is not a URL: {error}")),
        }
        if self.secret.as_ref().is_none_or(|secret| secret.expose().trim().is_empty()) {
            problems.push("payments.secret: is required with payments.url".into());
        }
    }

    fn validate_webhooks(&self, problems: &mut Vec<String>) {
        if self.webhook_secret.is_some() && self.url.is_none() {
            problems.push("payments.webhook_secret: needs payments.url (the test mode sends no webhooks)".into());
        }
        // An empty or short key would let anyone sign webhooks.
        let min = payments::WebhookVerifier::MIN_SECRET_LEN;
        for (key, secret) in [
            ("payments.webhook_secret", &self.webhook_secret),
            ("payments.webhook_previous_secret", &self.webhook_previous_secret),
        ] {
            if secret.as_ref().is_some_and(|secret| secret.expose().trim().len() < min) {
                problems.push(format!("{key}: must be at least {min} characters"));
            }
        }
        if self.webhook_previous_secret.is_some() && self.webhook_secret.is_none() {
            problems.push("payments.webhook_previous_secret: needs payments.webhook_secret".into());
        }
        if !(10..=3_600).contains(&self.webhook_tolerance_secs) {
            problems.push("payments.webhook_tolerance_secs: must be between 10 and 3600".into());
        }
    }
}

impl Validate for PaymentsConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        self.validate_url(problems);
        if !(1..=120).contains(&self.timeout_secs)
            || !(1..=self.timeout_secs.max(1)).contains(&self.attempt_timeout_secs)
        {
            problems.push("payments.timeout_secs: must be 1-120, and attempt_timeout_secs 1 to timeout_secs".into());
        }
        if !(1..=1_024).contains(&self.max_concurrent) {
            problems.push("payments.max_concurrent: must be between 1 and 1024".into());
        }
        let name_ok = (1..=50).contains(&self.name.len())
            && self.name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if !name_ok {
            problems.push("payments.name: must be 1-50 characters of a-z, 0-9 and -".into());
        }
        self.validate_webhooks(problems);
    }
}
