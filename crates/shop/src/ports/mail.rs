//! Ports of outgoing mail: the outbox table and the mailer.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;
use crate::mail::{Mail, MailError, OutboxMail};
use crate::pagination::{Page, PageRequest};

/// Mail kept in the database because no SMTP server is configured (the embedded default):
/// clearly not delivered, listed by `shopkeep admin mail list`.
#[async_trait]
pub trait MailOutboxRepository: Send + Sync {
    /// Stores a message; `false` when one with the same id (the sending job's) is already there.
    async fn insert_outbox_mail(&self, mail: &OutboxMail) -> Result<bool, StoreError>;
    /// Most recent first.
    async fn list_outbox_mail(&self, page: &PageRequest) -> Result<Page<OutboxMail>, StoreError>;
    /// Deletes at most `limit` messages stored before `before` (exclusive; steady state).
    async fn purge_outbox_mail(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}

/// Sends mail: over SMTP, or into the outbox table when no server is configured.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends `mail`. `message_id` is the same for every attempt of one job, so a message sent
    /// twice (a crash between sending and acknowledging) is recognisably one message.
    async fn send(&self, mail: &Mail, message_id: Uuid) -> Result<(), MailError>;
    /// `smtp` or `outbox`, for logs and status.
    fn kind(&self) -> &'static str;
}
