//! A rendered message and the job that sends it.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::Email;
use crate::jobs::NewJob;

/// The job kind that sends one message.
pub const SEND_MAIL: &str = "mail.send";
/// The queue mail jobs go to (its own bulkhead: a slow SMTP server holds up nothing else).
pub const MAIL_QUEUE: &str = "mail";

/// A rendered message, ready to send; also the payload of a `mail.send` job.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// The job payload: `{"to", "subject", "text", "html"}`.
    pub fn to_payload(&self) -> serde_json::Value {
        serde_json::json!({ "to": self.to, "subject": self.subject, "text": self.text, "html": self.html })
    }

    /// Reads a job payload back; a payload without the four strings is an error.
    pub fn from_payload(payload: &serde_json::Value) -> Result<Self, String> {
        let field = |name: &str| {
            payload[name].as_str().map(str::to_owned).ok_or_else(|| format!("mail payload without a {name:?} string"))
        };
        let mail = Self { to: field("to")?, subject: field("subject")?, text: field("text")?, html: field("html")? };
        Email::parse(&mail.to).map_err(|problem| format!("mail payload recipient {problem}"))?;
        Ok(mail)
    }

    /// The recipient in a form safe for logs.
    pub fn redacted_recipient(&self) -> String {
        Email::parse(&self.to).map_or_else(|_| "***".to_owned(), |email| email.redacted())
    }
}

/// The `mail.send` job for `mail`, with its own attempts (a mail server can be down for a while).
/// `unique_key` (e.g. `lockout:<user>:<hour>`) keeps one mail of a kind pending per occasion.
pub fn send_mail_job(mail: &Mail, unique_key: Option<String>, now: OffsetDateTime) -> NewJob {
    let job = NewJob::new(SEND_MAIL, mail.to_payload(), now).queue(MAIL_QUEUE).max_attempts(12);
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
