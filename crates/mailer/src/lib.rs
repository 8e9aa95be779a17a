//! The shop's [`Mailer`](shop::ports::Mailer) adapters: [`SmtpMailer`] sends over SMTP (lettre,
//! pooled connections, rustls with ring) behind a total timeout and the `smtp` circuit breaker;
//! [`OutboxMailer`] is the embedded default when no SMTP server is configured, and keeps each
//! message in the outbox table, not delivered.
//!
//! Metrics (SMTP only): `mail_sent_total{outcome}` with `sent`, `permanent` (a 5xx refusal of
//! the message), `transient` (4xx), `timeout`, `connection_error`, `breaker_open` or `invalid`;
//! and `mail_send_duration_seconds` for every send that reached for the server. Logs name the
//! recipient only in redacted form and never carry a body.

#![forbid(unsafe_code)]

mod endpoint;
mod message;
mod outbox;
mod smtp;

pub use outbox::OutboxMailer;
pub use smtp::{SMTP_BREAKER, SmtpConfig, SmtpConfigError, SmtpMailer};
