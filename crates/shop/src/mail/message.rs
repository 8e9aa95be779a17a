//! A rendered message and the job that sends it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::Email;
use crate::jobs::{JobPayload, NewJob};

/// The queue mail jobs go to (its own bulkhead: a slow SMTP server holds up nothing else).
pub const MAIL_QUEUE: &str = "mail";
/// The kind of the recurring outbox purge (a job without a payload).
pub const PURGE_MAIL_OUTBOX: &str = "mail.purge_outbox";

/// A rendered message, ready to send; also the payload of a `mail.send` job
/// (`{"to", "subject", "text", "html"}`; a payload whose recipient is no address is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MailFields")]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    pub fn new(to: &Email, subject: impl Into<String>, text: impl Into<String>, html: impl Into<String>) -> Self {
        Self { to: to.as_str().to_owned(), subject: subject.into(), text: text.into(), html: html.into() }
    }

    /// The recipient in a form safe for logs.
    pub fn redacted_recipient(&self) -> String {
        Email::parse(&self.to).map_or_else(|_| "***".to_owned(), |email| email.redacted())
    }
}

impl JobPayload for Mail {
    const KIND: &'static str = "mail.send";
}

/// A `mail.send` payload as stored, before its recipient is checked.
#[derive(Deserialize)]
struct MailFields {
    to: String,
    subject: String,
    text: String,
    html: String,
}

impl TryFrom<MailFields> for Mail {
    type Error = String;

    fn try_from(fields: MailFields) -> Result<Self, Self::Error> {
        Email::parse(&fields.to).map_err(|problem| format!("mail payload recipient {problem}"))?;
        Ok(Self { to: fields.to, subject: fields.subject, text: fields.text, html: fields.html })
    }
}

/// The `mail.send` job for `mail`, with its own attempts (a mail server can be down for a while).
/// `unique_key` (e.g. `lockout:<user>:<hour>`) keeps one mail of a kind pending per occasion.
pub fn send_mail_job(mail: &Mail, unique_key: Option<String>, now: OffsetDateTime) -> NewJob {
    let job = NewJob::of(mail, now).queue(MAIL_QUEUE).max_attempts(12);
    match unique_key {
        Some(key) => job.unique_key(key),
        None => job,
    }
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Try again later: the server is down, slow, or said 4xx; the breaker is open.
    #[error("mail not sent, will retry: {0}")]
    Transient(String),
    /// Will never be accepted: the server said 5xx to this message or recipient.
    #[error("mail refused: {0}")]
    Permanent(String),
}

/// A message kept in the outbox table because no SMTP server is configured: not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    /// The id of the job that sent it (so a job run twice stores it once).
    pub id: Uuid,
    pub mail: Mail,
    pub created_at: OffsetDateTime,
}
