//! The embedded default when no SMTP server is configured: each message is kept in the outbox
//! table, clearly not delivered, where `shopkeep admin mail list` shows it.

use std::sync::Arc;

use async_trait::async_trait;
use shop::Clock;
use shop::Store;
use shop::mail::{Mail, MailError, OutboxMail};
use shop::ports::Mailer;
use uuid::Uuid;

/// Stores mail instead of sending it. The message id is the row's id, so a job that runs twice
/// stores its message once.
#[derive(Clone)]
pub struct OutboxMailer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl OutboxMailer {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, mail: &Mail, message_id: Uuid) -> Result<(), MailError> {
        let stored = OutboxMail { id: message_id, mail: mail.clone(), created_at: self.clock.now() };
        let inserted = self
            .store
            .insert_outbox_mail(&stored)
            .await
            .map_err(|error| MailError::Transient(format!("failed to store the mail in the outbox: {error}")))?;
        let to = mail.redacted_recipient();
        if inserted {
            tracing::info!(
                to = %to, subject = %mail.subject, messageId = %message_id,
                "mail stored in the outbox, not delivered (no SMTP_URL)"
            );
        } else {
            tracing::debug!(to = %to, messageId = %message_id, "mail already in the outbox, not stored again");
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "outbox"
    }
}

impl std::fmt::Debug for OutboxMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMailer").finish_non_exhaustive()
    }
}
