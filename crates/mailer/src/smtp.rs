//! The SMTP mailer: lettre's pooled async transport (rustls with ring for TLS), a total timeout
//! around each send, and the `smtp` circuit breaker. A 5xx refusal of the message or recipient
//! is permanent and says nothing against the server; connection errors, timeouts and 4xx
//! answers are transient and count against it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{self, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use resilience::{CallOutcome, CircuitBreaker, CircuitBreakerConfig, Clock, SlidingWindow};
use shop::mail::{Mail, MailError};
use shop::ports::Mailer;
use uuid::Uuid;

use crate::endpoint::{Endpoint, Security};
use crate::message::{InvalidMessage, build_message};

/// The breaker's name, in the registry, logs and metrics.
pub const SMTP_BREAKER: &str = "smtp";

/// Settings of the SMTP mailer.
#[derive(Clone)]
pub struct SmtpConfig {
    /// `smtp://[user:pass@]host[:port]` (plain; add `?starttls=required` to upgrade with
    /// STARTTLS) or `smtps://[user:pass@]host[:port]` (TLS from the start). Ports default to 25
    /// and 465. User name and password are percent-decoded.
    pub url: String,
    /// The sender, e.g. `Shopkeep <shop@example.com>`; its domain ends every Message-ID.
    pub from: String,
    /// One whole send: taking or opening a connection, TLS, every command, the message.
    pub send_timeout: Duration,
    /// One SMTP command and its answer (lettre's own timeout, inside `send_timeout`).
    pub command_timeout: Duration,
    /// Connections kept open for reuse.
    pub max_connections: u32,
    /// An idle pooled connection is closed after this long.
    pub idle_timeout: Duration,
    /// Used by [`SmtpMailer::new`]; its name should stay [`SMTP_BREAKER`].
    pub breaker: CircuitBreakerConfig,
}

impl SmtpConfig {
    /// Defaults for a mail server: 30 s per send, 10 s per command, 4 pooled connections idle
    /// for at most a minute, and a breaker that judges the last 10 sends once it has seen 5
    /// (mail is sent a few at a time, so the HTTP default of 10 of 20 would wait too long).
    pub fn new(url: impl Into<String>, from: impl Into<String>) -> Self {
        let mut breaker = CircuitBreakerConfig::new(SMTP_BREAKER);
        breaker.window = SlidingWindow::Count(10);
        breaker.minimum_calls = 5;
        breaker.slow_call_duration = Duration::from_secs(10);
        Self {
            url: url.into(),
            from: from.into(),
            send_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(10),
            max_connections: 4,
            idle_timeout: Duration::from_secs(60),
            breaker,
        }
    }
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: show it parsed (redacted), or not at all.
        let url = Endpoint::parse(&self.url).map_or_else(|_| "<invalid>".to_owned(), |endpoint| endpoint.to_string());
        f.debug_struct("SmtpConfig")
            .field("url", &url)
            .field("from", &self.from)
            .field("send_timeout", &self.send_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("breaker", &self.breaker.name)
            .finish()
    }
}

/// Why an [`SmtpMailer`] cannot be built. Messages never contain the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpConfigError {
    #[error("invalid SMTP URL: {0}")]
    Url(String),
    #[error("invalid sender address {0:?}: expected `Name <user@example.com>` or `user@example.com`")]
    From(String),
    #[error("cannot set up TLS for the SMTP server: {0}")]
    Tls(String),
    /// lettre's connection pool starts a cleanup task when it is built.
    #[error("the SMTP mailer must be built inside a Tokio runtime")]
    NoRuntime,
}

/// Sends mail over SMTP. Clones share the connection pool and the breaker.
///
/// Build it inside a Tokio runtime and drop it there too: lettre's pool spawns a cleanup task
/// when it is built and closes its connections from a task when it is dropped.
///
/// TLS is rustls with ring and the webpki roots. It needs no process-wide rustls crypto
/// provider: lettre uses the installed one when there is one (`integration::install_crypto_provider`
/// installs ring) and ring otherwise.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    endpoint: Arc<Endpoint>,
    send_timeout: Duration,
    breaker: Arc<CircuitBreaker>,
}

/// How a send ended, for the metric label and the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// A 5xx refusal of this message or recipient.
    Refused,
    /// A 4xx answer, or a 5xx that refuses us rather than the message (authentication).
    Deferred,
    Timeout,
    /// Could not connect, TLS failed, the connection broke, or the server broke the protocol.
    ConnectionError,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Refused => "permanent",
            Self::Deferred => "transient",
            Self::Timeout => "timeout",
            Self::ConnectionError => "connection_error",
        }
    }

    fn breaker(self) -> CallOutcome {
        match self {
            Self::Sent => CallOutcome::Success,
            // The server is healthy: it read the message and said no to it.
            Self::Refused => CallOutcome::Ignored,
            Self::Deferred | Self::Timeout | Self::ConnectionError => CallOutcome::Failure,
        }
    }
}

impl SmtpMailer {
    /// Builds the mailer and its own breaker (from `config.breaker`, time from `clock`); register
    /// [`SmtpMailer::breaker`] in the process's `BreakerRegistry`.
    pub fn new(config: SmtpConfig, clock: Arc<dyn Clock>) -> Result<Self, SmtpConfigError> {
        let breaker = Arc::new(CircuitBreaker::new(config.breaker.clone(), clock));
        Self::with_breaker(config, breaker)
    }

    /// Builds the mailer around a breaker made elsewhere (`config.breaker` is not used).
    pub fn with_breaker(config: SmtpConfig, breaker: Arc<CircuitBreaker>) -> Result<Self, SmtpConfigError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let from = config.from.parse::<Mailbox>().map_err(|_| SmtpConfigError::From(config.from.clone()))?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SmtpConfigError::NoRuntime);
        }
        let tls_parameters =
            || TlsParameters::new(endpoint.host.clone()).map_err(|error| SmtpConfigError::Tls(error.to_string()));
        let tls = match endpoint.security {
            Security::None => Tls::None,
            Security::StartTls => Tls::Required(tls_parameters()?),
            Security::ImplicitTls => Tls::Wrapper(tls_parameters()?),
        };
        let pool = PoolConfig::new().max_size(config.max_connections.max(1)).idle_timeout(config.idle_timeout);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(endpoint.host.as_str())
            .port(endpoint.port)
            .tls(tls)
            .timeout(Some(config.command_timeout))
            .pool_config(pool);
        if let Some((user, password)) = &endpoint.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            endpoint: Arc::new(endpoint),
            send_timeout: config.send_timeout,
            breaker,
        })
    }

    /// The `smtp` breaker, for the registry (status page, operator resets).
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// Sends through the breaker and the total timeout; the outcome is logged and counted once.
    async fn send_message(&self, mail: &Mail, message: lettre::Message) -> Result<(), MailError> {
        let recipient = mail.redacted_recipient();
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(rejected) => {
                metrics::counter!("mail_sent_total", "outcome" => "breaker_open").increment(1);
                tracing::debug!(
                    to = %recipient, breaker = %rejected.state,
                    "mail not sent: the smtp breaker refuses calls"
                );
                return Err(MailError::Transient(rejected.to_string()));
            }
        };
        let started = Instant::now();
        let result = tokio::time::timeout(self.send_timeout, self.transport.send(message)).await;
        let elapsed = started.elapsed();
        let (outcome, error) = match result {
            Ok(Ok(_response)) => (Outcome::Sent, None),
            Ok(Err(error)) => {
                let outcome = classify(&error);
                let detail = redact_address(&error.to_string(), &mail.to, &recipient);
                (outcome, Some(detail))
            }
            Err(_elapsed) => (Outcome::Timeout, Some(format!("no answer within {:?}", self.send_timeout))),
        };
        permit.record(outcome.breaker());
        metrics::counter!("mail_sent_total", "outcome" => outcome.label()).increment(1);
        metrics::histogram!("mail_send_duration_seconds").record(elapsed.as_secs_f64());
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let server = self.endpoint.as_ref();
        match error {
            None => {
                tracing::debug!(to = %recipient, %server, elapsedMs = elapsed_ms, "mail sent");
                Ok(())
            }
            Some(detail) => {
                tracing::debug!(
                    to = %recipient, %server, outcome = outcome.label(), error = %detail, elapsedMs = elapsed_ms,
                    "mail not sent"
                );
                if outcome == Outcome::Refused {
                    Err(MailError::Permanent(format!("the SMTP server refused the message: {detail}")))
                } else {
                    Err(MailError::Transient(format!("SMTP server {server}: {detail}")))
                }
            }
        }
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &Mail, message_id: Uuid) -> Result<(), MailError> {
        let message = match build_message(mail, message_id, &self.from) {
            Ok(message) => message,
            Err(invalid) => {
                // Nothing was asked of the server, so the breaker hears nothing.
                metrics::counter!("mail_sent_total", "outcome" => "invalid").increment(1);
                tracing::debug!(to = %mail.redacted_recipient(), error = %invalid, "mail not sent: invalid message");
                return Err(MailError::Permanent(match invalid {
                    InvalidMessage::Recipient => format!("invalid recipient {}", mail.redacted_recipient()),
                    InvalidMessage::Assembly(_) => invalid.to_string(),
                }));
            }
        };
        self.send_message(mail, message).await
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("server", &self.endpoint.to_string())
            .field("from", &self.from.to_string())
            .field("send_timeout", &self.send_timeout)
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// Reply codes that refuse the client rather than the message: authentication required (530),
/// mechanism too weak (534), credentials invalid (535), encryption required (538). Retrying the
/// message cannot help until the configuration is fixed, and no message may be dead-lettered
/// for it, so they are transient and count against the server as configured.
const REFUSES_THE_CLIENT: [u16; 4] = [530, 534, 535, 538];

fn classify(error: &smtp::Error) -> Outcome {
    if let Some(code) = error.status() {
        let number = code.to_string().parse::<u16>().unwrap_or(0);
        return if error.is_permanent() && !REFUSES_THE_CLIENT.contains(&number) {
            Outcome::Refused
        } else {
            Outcome::Deferred
        };
    }
    if error.is_timeout() { Outcome::Timeout } else { Outcome::ConnectionError }
}

/// The server's text with every occurrence of the recipient's address (in any ASCII case)
/// replaced by its redacted form: servers like to quote the address they refuse.
fn redact_address(text: &str, address: &str, redacted: &str) -> String {
    let address = address.trim();
    if address.is_empty() {
        return text.to_owned();
    }
    // ASCII lowercasing keeps byte offsets, so positions found in the copy hold in the original.
    let haystack = text.to_ascii_lowercase();
    let needle = address.to_ascii_lowercase();
    let mut result = String::with_capacity(text.len());
    let mut position = 0;
    while let Some(found) = haystack[position..].find(&needle) {
        result.push_str(&text[position..position + found]);
        result.push_str(redacted);
        position += found + needle.len();
    }
    result.push_str(&text[position..]);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_recipient_in_server_answers() {
        let answer = "permanent error (550): 5.1.1 <Bob@Example.com>: no such user bob@example.com";
        assert_eq!(
            redact_address(answer, "bob@example.com", "b***@example.com"),
            "permanent error (550): 5.1.1 <b***@example.com>: no such user b***@example.com"
        );
        assert_eq!(redact_address("no address here", "bob@example.com", "b***"), "no address here");
    }

    #[test]
    fn the_debug_form_hides_the_password() {
        let config = SmtpConfig::new("smtps://shop:hunter2@smtp.example.com", "shop@example.com");
        let debug = format!("{config:?}");
        assert!(debug.contains("smtps://shop:***@smtp.example.com:465"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let config = SmtpConfig::new("smtp://127.0.0.1:2525", "shop@example.com");
        let clock = Arc::new(resilience::MonotonicClock);
        assert_eq!(SmtpMailer::new(config, clock).unwrap_err(), SmtpConfigError::NoRuntime);
    }

    #[tokio::test]
    async fn builds_for_every_kind_of_url_and_refuses_a_bad_sender() {
        let clock: Arc<dyn Clock> = Arc::new(resilience::MonotonicClock);
        for url in
            ["smtp://127.0.0.1:2525", "smtp://u:p@mail.example.com:587?starttls=required", "smtps://mail.example.com"]
        {
            SmtpMailer::new(SmtpConfig::new(url, "Shopkeep <shop@example.com>"), Arc::clone(&clock)).unwrap();
        }
        let error = SmtpMailer::new(SmtpConfig::new("smtp://127.0.0.1", "not an address"), clock).unwrap_err();
        assert!(matches!(error, SmtpConfigError::From(_)), "{error:?}");
    }
}
