//! The `mail` section: outgoing mail over SMTP, or the outbox table when no server is given.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{Secret, read_secret_file, redacted_url, serialize_optional_redacted_url};
use super::{Validate, check_ranges};

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

impl MailConfig {
    pub(super) fn read_secret_files(&mut self, problems: &mut Vec<String>) {
        if let Some(url) = read_secret_file(self.smtp_url_file.as_deref(), "mail.smtp_url_file", problems) {
            self.smtp_url = Some(url);
        }
    }
}

impl Validate for MailConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.smtp_url
            && !(url.expose().starts_with("smtp://") || url.expose().starts_with("smtps://"))
        {
            problems.push(format!("mail.smtp_url: {} must start with smtp:// or smtps://", redacted_url(url.expose())));
        }
        let address =
            self.from.rsplit_once('<').map_or(self.from.as_str(), |(_, rest)| rest.strip_suffix('>').unwrap_or(rest));
        if !address.contains('@') || address.trim() != address || address.is_empty() {
            problems.push(format!(
                "mail.from: {:?} must be an address, optionally with a name: Shop <shop@example.com>",
                self.from
            ));
        }
        if self.shop_name.trim().is_empty() || self.shop_name.len() > 100 {
            problems.push("mail.shop_name: must be 1 to 100 characters".into());
        }
        check_ranges(
            problems,
            [
                ("mail.timeout_secs", self.timeout_secs, 1..=300),
                ("mail.outbox_retention_days", self.outbox_retention_days, 1..=3_650),
            ],
        );
    }
}
