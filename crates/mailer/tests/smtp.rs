//! `SmtpMailer` against a real SMTP server (aiosmtpd, started per test by `support::SmtpSink`):
//! what arrives, how refusals and outages are classified, and the `smtp` breaker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailer::{SMTP_BREAKER, SmtpConfig, SmtpMailer};
use resilience::{BreakerState, CircuitBreakerConfig, Clock, ManualClock, OpenWait, SlidingWindow};
use shop::mail::{Mail, MailError};
use shop::ports::Mailer as _;
use support::{CapturedLogs, SmtpSink, closed_port};
use uuid::Uuid;

const FROM: &str = "Shopkeep <shop@shop.example>";
const OPEN_WAIT: Duration = Duration::from_secs(30);

fn mail() -> Mail {
    Mail {
        to: "bob@example.com".into(),
        subject: "Your account is locked — Größe".into(),
        // Non-ASCII and a line longer than 78 characters, so lettre has to encode the body.
        text: format!("Hello Bob,\nyour account is locked for an hour. Grüße!\n{}\n", "x".repeat(120)),
        html: format!(
            "<p>Hello Bob,</p>\n<p>your account is locked for an hour. Grüße!</p>\n<p>{}</p>\n",
            "y".repeat(120)
        ),
    }
}

/// A breaker that opens after `failures` consecutive failures and waits [`OPEN_WAIT`]; one
/// successful probe closes it.
fn breaker_config(failures: u32) -> CircuitBreakerConfig {
    let mut config = CircuitBreakerConfig::new(SMTP_BREAKER);
    config.window = SlidingWindow::Count(failures);
    config.minimum_calls = failures;
    config.failure_rate_threshold = 100.0;
    config.open_wait = OpenWait::Fixed(OPEN_WAIT);
    config.half_open_calls = 1;
    config
}

fn mailer_for(url: &str, breaker_failures: u32, clock: &Arc<ManualClock>) -> SmtpMailer {
    let mut config = SmtpConfig::new(url, FROM);
    config.send_timeout = Duration::from_secs(5);
    config.command_timeout = Duration::from_secs(5);
    config.breaker = breaker_config(breaker_failures);
    SmtpMailer::new(config, Arc::clone(clock) as Arc<dyn Clock>).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::default())
}

fn transient(result: Result<(), MailError>) -> String {
    match result {
        Err(MailError::Transient(detail)) => detail,
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn delivers_from_to_subject_message_id_and_both_parts() {
    let sink = SmtpSink::start();
    let mailer = mailer_for(&sink.url(), 5, &clock());
    let message_id = Uuid::now_v7();
    let logs = CapturedLogs::default();
    let guard = logs.install();

    mailer.send(&mail(), message_id).await.unwrap_or_else(|error| panic!("{error}; sink: {}", sink.stderr()));

    drop(guard);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{}", sink.stderr());
    let message = &messages[0];
    assert_eq!(message.header("From").unwrap(), "Shopkeep <shop@shop.example>");
    assert_eq!(message.header("To").unwrap(), "bob@example.com");
    assert_eq!(message.header("Subject").unwrap(), "Your account is locked — Größe");
    assert_eq!(message.header("Message-ID").unwrap(), format!("<{message_id}@shop.example>"));
    assert!(message.header("Date").is_some());
    assert!(message.header("Content-Type").unwrap().starts_with("multipart/alternative"));
    let parts = message.parts();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts[0].content_type.starts_with("text/plain"), "{parts:?}");
    assert_eq!(parts[0].content, mail().text);
    assert!(parts[1].content_type.starts_with("text/html"), "{parts:?}");
    assert_eq!(parts[1].content, mail().html);
    assert_eq!(mailer.breaker().state(), BreakerState::Closed);

    // One debug line with the redacted recipient; never the address, never the body.
    let logs = logs.text();
    assert!(logs.contains("mail sent") && logs.contains("b***@example.com"), "{logs}");
    assert!(!logs.contains("bob@example.com") && !logs.contains("Hello Bob"), "{logs}");
}

#[tokio::test]
async fn a_550_refusal_is_permanent_and_leaves_the_breaker_closed() {
    let sink = SmtpSink::rejecting(550);
    let mailer = mailer_for(&sink.url(), 1, &clock());

    for _ in 0..3 {
        match mailer.send(&mail(), Uuid::now_v7()).await {
            Err(MailError::Permanent(detail)) => {
                assert!(detail.contains("550"), "{detail}");
                // The sink quotes the recipient; the error (which ends up in the job's record) must not.
                assert!(detail.contains("b***@example.com") && !detail.contains("bob@example.com"), "{detail}");
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    // A breaker that opens on a single failure is still closed and has recorded nothing.
    let snapshot = mailer.breaker().snapshot();
    assert_eq!(snapshot.state, BreakerState::Closed);
    assert_eq!(snapshot.calls_in_window, 0);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_451_answer_is_transient_and_counts_against_the_breaker() {
    let sink = SmtpSink::rejecting(451);
    let mailer = mailer_for(&sink.url(), 10, &clock());

    let detail = transient(mailer.send(&mail(), Uuid::now_v7()).await);

    assert!(detail.contains("451"), "{detail}");
    assert!(!detail.contains("bob@example.com"), "{detail}");
    let snapshot = mailer.breaker().snapshot();
    assert_eq!((snapshot.calls_in_window, snapshot.failure_rate), (1, Some(100.0)));
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn nothing_listening_is_transient_within_the_send_timeout() {
    let mut config = SmtpConfig::new(format!("smtp://127.0.0.1:{}", closed_port()), FROM);
    config.send_timeout = Duration::from_secs(2);
    let mailer = SmtpMailer::new(config, clock() as Arc<dyn Clock>).unwrap();

    let started = Instant::now();
    transient(mailer.send(&mail(), Uuid::now_v7()).await);

    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(mailer.breaker().snapshot().calls_in_window, 1);
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_transient_timeout() {
    // Accepts connections and never says a word (not even the greeting).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut config = SmtpConfig::new(format!("smtp://127.0.0.1:{port}"), FROM);
    config.send_timeout = Duration::from_millis(300);
    config.command_timeout = Duration::from_secs(10);
    let mailer = SmtpMailer::new(config, clock() as Arc<dyn Clock>).unwrap();

    let started = Instant::now();
    let detail = transient(mailer.send(&mail(), Uuid::now_v7()).await);

    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(detail.contains("no answer within"), "{detail}");
    assert_eq!(mailer.breaker().snapshot().failure_rate, Some(100.0));
    silent.abort();
}

#[tokio::test]
async fn an_open_breaker_fails_at_once_without_connecting() {
    let sink = SmtpSink::rejecting(451);
    let mailer = mailer_for(&sink.url(), 3, &clock());

    for _ in 0..3 {
        transient(mailer.send(&mail(), Uuid::now_v7()).await);
    }
    assert_eq!(mailer.breaker().state(), BreakerState::Open);
    sink.wait_for_connections(3);
    let before = sink.connections();

    for _ in 0..5 {
        let started = Instant::now();
        let detail = transient(mailer.send(&mail(), Uuid::now_v7()).await);
        assert!(started.elapsed() < Duration::from_millis(100), "took {:?}", started.elapsed());
        assert!(detail.contains("circuit breaker smtp is open"), "{detail}");
    }

    // Our own marker connection is the only one the sink saw since the breaker opened.
    assert_eq!(sink.mark(), before + 1);
}

#[tokio::test]
async fn after_the_open_wait_a_healthy_server_closes_the_breaker() {
    // The server is down: nothing listens on its port.
    let port = closed_port();
    let clock = clock();
    let mailer = mailer_for(&format!("smtp://127.0.0.1:{port}"), 2, &clock);
    for _ in 0..2 {
        transient(mailer.send(&mail(), Uuid::now_v7()).await);
    }
    assert_eq!(mailer.breaker().state(), BreakerState::Open);

    // It comes back where it was; the breaker still refuses until its wait is over.
    let sink = SmtpSink::start_on(port);
    transient(mailer.send(&mail(), Uuid::now_v7()).await);
    assert!(sink.messages().is_empty());

    clock.advance(OPEN_WAIT);
    let message_id = Uuid::now_v7();
    mailer.send(&mail(), message_id).await.unwrap_or_else(|error| panic!("{error}; sink: {}", sink.stderr()));

    assert_eq!(mailer.breaker().state(), BreakerState::Closed);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].header("Message-ID").unwrap(), format!("<{message_id}@shop.example>"));
}

#[tokio::test]
async fn tls_against_a_plain_server_is_transient_without_a_crypto_provider_installed() {
    // Neither test installs a process-wide rustls provider: lettre falls back to ring.
    let sink = SmtpSink::start();
    let implicit = mailer_for(&format!("smtps://127.0.0.1:{}", sink.port()), 10, &clock());
    let detail = transient(implicit.send(&mail(), Uuid::now_v7()).await);
    assert!(detail.contains("smtps://127.0.0.1"), "{detail}");

    // aiosmtpd without a certificate offers no STARTTLS; a required upgrade never falls back.
    let upgrade = mailer_for(&format!("smtp://127.0.0.1:{}?starttls=required", sink.port()), 10, &clock());
    transient(upgrade.send(&mail(), Uuid::now_v7()).await);

    assert!(sink.messages().is_empty(), "a message went out in plain text");
    assert_eq!(implicit.breaker().snapshot().failure_rate, Some(100.0));
    assert_eq!(upgrade.breaker().snapshot().failure_rate, Some(100.0));
}

#[tokio::test]
async fn an_undeliverable_recipient_is_permanent_and_never_reaches_the_server() {
    let sink = SmtpSink::start();
    let mailer = mailer_for(&sink.url(), 1, &clock());
    let mut bad = mail();
    bad.to = "bob at example.com".into();

    match mailer.send(&bad, Uuid::now_v7()).await {
        Err(MailError::Permanent(detail)) => assert!(!detail.contains("bob at"), "{detail}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }

    assert_eq!(mailer.breaker().snapshot().calls_in_window, 0);
    assert_eq!(sink.mark(), 1, "the mailer connected to the server");
}
