//! Outgoing mail: the message, the templates that write it (text and HTML), and the job that
//! sends it. Mail is never sent from a request: a state change enqueues a `mail.send` job
//! carrying the rendered message, and the worker hands it to the configured [`Mailer`]
//! (SMTP, or the outbox table when no SMTP server is configured).
//!
//! [`Mailer`]: crate::ports::Mailer

mod message;
mod templates;

pub use message::{MAIL_QUEUE, Mail, MailError, OutboxMail, PURGE_MAIL_OUTBOX, send_mail_job};
pub use templates::{
    HtmlEscaped, account_locked, external_identity_unlinked, login_challenge, order_confirmation, password_reset,
    verify_email,
};
