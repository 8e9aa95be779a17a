//! The integration client against the devious harness: every failure mode ends within the
//! total timeout, retries happen only for idempotent calls, and the breaker opens, half-opens
//! and closes as the dependency fails and recovers. Over TLS it trusts what it is configured to
//! trust and refuses the rest, and the `traceparent` it sends reaches the upstream.
//!
//! Nothing in this test binary installs a process-wide rustls provider: the TLS tests also prove
//! that `IntegrationClient` needs none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{Harness, Mode};
use integration::{IntegrationClient, IntegrationConfig, IntegrationError, OutboundRequest};
use resilience::{BreakerState, CircuitBreakerConfig, Idempotency, ManualClock, OpenWait, RetryConfig, SlidingWindow};

const TOTAL: Duration = Duration::from_millis(1_200);

fn config(base_url: &str) -> IntegrationConfig {
    IntegrationConfig {
        connect_timeout: Duration::from_millis(300),
        attempt_timeout: Duration::from_millis(400),
        total_timeout: TOTAL,
        breaker: CircuitBreakerConfig {
            window: SlidingWindow::Count(4),
            minimum_calls: 4,
            failure_rate_threshold: 50.0,
            open_wait: OpenWait::Fixed(Duration::from_secs(30)),
            half_open_calls: 1,
            ..CircuitBreakerConfig::new("sandbox")
        },
        retry: RetryConfig {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            budget_minimum: 1_000,
            ..RetryConfig::new("sandbox")
        },
        ..IntegrationConfig::new("sandbox", base_url)
    }
}

async fn harness(mode: Mode) -> Harness {
    Harness::start("127.0.0.1:0".parse().unwrap(), mode).await.unwrap()
}

async fn tls_harness(mode: Mode) -> Harness {
    Harness::start_tls("127.0.0.1:0".parse().unwrap(), mode).await.unwrap()
}

/// `00-{32 hex trace id}-{16 hex parent id}-01`, split into the two ids.
fn traceparent_ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{traceparent}");
    let is_hex = |part: &str, length: usize| {
        part.len() == length && part.chars().all(|character| matches!(character, '0'..='9' | 'a'..='f'))
    };
    assert!(is_hex(parts[1], 32) && is_hex(parts[2], 16), "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn client(base_url: &str) -> (Arc<ManualClock>, IntegrationClient) {
    let clock = Arc::new(ManualClock::default());
    (clock.clone(), IntegrationClient::new(config(base_url), clock).unwrap())
}

#[tokio::test]
async fn every_failure_mode_ends_within_the_total_timeout() {
    let modes = [
        Mode::Slow { delay: Duration::from_secs(5) },
        Mode::AcceptNeverRead,
        Mode::NeverRespond,
        Mode::HeadersNoBody,
        Mode::Trickle { interval: Duration::from_millis(300) },
        Mode::ResetMidResponse,
        Mode::WrongContentLength,
        Mode::Garbage,
        Mode::Status(500),
        Mode::Status(503),
        Mode::TooManyRequests { retry_after_secs: 0 },
    ];
    for mode in modes {
        let harness = harness(mode.clone()).await;
        let (_, client) = client(&harness.url(""));
        let started = Instant::now();
        let result = client.send(OutboundRequest::get("/v1/ping")).await;
        let elapsed = started.elapsed();
        assert!(result.is_err(), "{mode:?} must fail, got {result:?}");
        assert!(elapsed <= TOTAL + Duration::from_millis(300), "{mode:?} took {elapsed:?}");
    }
    let refused = Harness::refusing_address().await.unwrap();
    let (_, client) = client(&format!("http://{refused}"));
    let error = client.send(OutboundRequest::get("/hook?token=s3cr3t")).await.unwrap_err();
    assert!(matches!(error, IntegrationError::Connect { .. }), "{error:?}");
    // The text reaches logs and webhook delivery logs: no URL, so no token in a query.
    assert!(!error.to_string().contains("s3cr3t"), "{error}");
}

#[tokio::test]
async fn html_where_json_was_promised_is_an_invalid_body() {
    let harness = harness(Mode::Html).await;
    let (_, client) = client(&harness.url(""));
    let response = client.send(OutboundRequest::get("/")).await.unwrap();
    let parsed: Result<serde_json::Value, _> = response.json();
    assert!(matches!(parsed, Err(IntegrationError::InvalidBody(_))));
    let healthy = {
        harness.set_mode(Mode::Ok);
        client.send(OutboundRequest::get("/")).await.unwrap()
    };
    assert_eq!(healthy.json::<serde_json::Value>().unwrap()["status"], "ok");
}

#[tokio::test]
async fn only_idempotent_calls_are_retried() {
    let harness = harness(Mode::Status(503)).await;
    let (_, client) = client(&harness.url(""));
    let before = harness.connections();
    assert!(client.send(OutboundRequest::get("/")).await.is_err());
    assert_eq!(harness.connections() - before, 2, "a GET is tried twice");
    let before = harness.connections();
    let charge =
        OutboundRequest::post_json("/v1/charges", &serde_json::json!({"amount": 100}), Idempotency::NotIdempotent);
    let error = client.send(charge).await.unwrap_err();
    assert!(matches!(error, IntegrationError::Status { status, .. } if status == 503), "{error:?}");
    assert_eq!(harness.connections() - before, 1, "a non-idempotent POST is tried once");
}

#[tokio::test]
async fn the_breaker_opens_half_opens_and_closes_as_the_dependency_recovers() {
    let harness = harness(Mode::Status(503)).await;
    let (clock, client) = client(&harness.url(""));
    let once = || OutboundRequest { idempotency: Idempotency::NotIdempotent, ..OutboundRequest::get("/") };
    for _ in 0..4 {
        assert!(matches!(client.send(once()).await, Err(IntegrationError::Status { .. })));
    }
    assert_eq!(client.breaker().state(), BreakerState::Open);
    let before = harness.connections();
    let started = Instant::now();
    let error = client.send(once()).await.unwrap_err();
    let IntegrationError::BreakerOpen(rejected) = error else { panic!("expected a fast refusal, got {error:?}") };
    assert_eq!(rejected.retry_after, Some(Duration::from_secs(30)));
    assert!(started.elapsed() < Duration::from_millis(100), "fail fast");
    assert_eq!(harness.connections(), before, "an open breaker does not call");

    harness.set_mode(Mode::Ok);
    clock.advance(Duration::from_secs(30));
    let probe = client.send(once()).await.unwrap();
    assert_eq!(probe.status, 200);
    assert_eq!(client.breaker().state(), BreakerState::Closed, "one good probe closes it");
    assert!(client.send(once()).await.is_ok());
}

#[tokio::test]
async fn client_errors_are_returned_and_do_not_trip_the_breaker() {
    let harness = harness(Mode::Status(404)).await;
    let (_, client) = client(&harness.url(""));
    for _ in 0..6 {
        let response = client.send(OutboundRequest::get("/missing")).await.unwrap();
        assert_eq!(response.status, 404);
    }
    assert_eq!(client.breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn https_works_with_the_configured_extra_root_certificate() {
    assert!(rustls::crypto::CryptoProvider::get_default().is_none(), "this binary installs no provider");
    let harness = tls_harness(Mode::Ok).await;
    let clock = Arc::new(ManualClock::default());
    let config = IntegrationConfig {
        extra_root_certificates: vec![harness.certificate_pem().unwrap().to_owned()],
        ..config(&harness.url(""))
    };
    assert!(config.base_url.starts_with("https://"));
    let client = IntegrationClient::new(config, clock).unwrap();
    let response = client.send(OutboundRequest::get("/v1/ping")).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.json::<serde_json::Value>().unwrap()["status"], "ok");
    let received = harness.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/v1/ping");
    traceparent_ids(received[0].header("traceparent").expect("the traceparent crossed TLS"));
}

#[tokio::test]
async fn a_server_with_an_untrusted_certificate_is_refused() {
    let trusted = tls_harness(Mode::Ok).await;
    let untrusted = tls_harness(Mode::Ok).await;
    let clock = Arc::new(ManualClock::default());
    let trusting_another = IntegrationConfig {
        extra_root_certificates: vec![trusted.certificate_pem().unwrap().to_owned()],
        ..config(&untrusted.url(""))
    };
    let trusting_the_webpki_roots_only = config(&untrusted.url(""));
    for config in [trusting_another, trusting_the_webpki_roots_only] {
        let client = IntegrationClient::new(config, clock.clone()).unwrap();
        let once = || OutboundRequest { idempotency: Idempotency::NotIdempotent, ..OutboundRequest::get("/") };
        for _ in 0..4 {
            let error = client.send(once()).await.unwrap_err();
            let IntegrationError::Connect { detail, .. } = &error else { panic!("expected a refusal, got {error:?}") };
            assert!(detail.contains("certificate"), "the cause is in the detail: {detail}");
        }
        assert_eq!(client.breaker().state(), BreakerState::Open, "each refusal counts as a failure");
        assert!(matches!(client.send(once()).await, Err(IntegrationError::BreakerOpen(_))));
    }
    assert!(untrusted.connections() >= 8, "the calls reached the server's TCP listener");
    assert!(untrusted.requests().is_empty(), "but no request was ever sent");
    assert!(trusted.requests().is_empty());
}

#[tokio::test]
async fn an_extra_root_certificate_that_is_not_a_pem_certificate_is_a_configuration_error() {
    let clock: Arc<ManualClock> = Arc::new(ManualClock::default());
    for broken in ["", "not a certificate", "-----BEGIN CERTIFICATE-----\nbm90IGRlcg==\n-----END CERTIFICATE-----\n"] {
        let config =
            IntegrationConfig { extra_root_certificates: vec![broken.to_owned()], ..config("https://127.0.0.1:1") };
        let error = IntegrationClient::new(config, clock.clone()).unwrap_err();
        assert!(
            matches!(&error, IntegrationError::Config { detail, .. } if detail.contains("extra root certificate 0")),
            "{broken:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn the_traceparent_reaches_the_upstream() {
    let harness = harness(Mode::Ok).await;
    let (_, client) = client(&harness.url(""));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let child = OutboundRequest { trace_id: Some(trace_id.to_owned()), ..OutboundRequest::get("/v1/child") };
    client.send(child).await.unwrap();
    client.send(OutboundRequest::get("/v1/root")).await.unwrap();
    let received = harness.requests();
    assert_eq!(received.len(), 2);
    let (child_trace, _) = traceparent_ids(received[0].header("traceparent").unwrap());
    assert_eq!(child_trace, trace_id, "the call continues the caller's trace");
    let (root_trace, _) = traceparent_ids(received[1].header("traceparent").unwrap());
    assert_ne!(root_trace, trace_id, "without a caller's trace, a new one starts");
}

#[tokio::test]
async fn retried_attempts_share_the_trace_and_differ_in_span() {
    let harness = harness(Mode::Status(503)).await;
    let (_, client) = client(&harness.url(""));
    assert!(client.send(OutboundRequest::get("/")).await.is_err());
    let received = harness.requests();
    assert_eq!(received.len(), 2, "a GET is tried twice");
    let (first_trace, first_span) = traceparent_ids(received[0].header("traceparent").unwrap());
    let (second_trace, second_span) = traceparent_ids(received[1].header("traceparent").unwrap());
    assert_eq!(first_trace, second_trace);
    assert_ne!(first_span, second_span);
}

#[tokio::test]
async fn the_delivery_report_counts_only_attempts_that_may_have_reached_the_dependency() {
    // Refused connections and an open breaker: nothing sent, whatever the retries.
    let refused = Harness::refusing_address().await.unwrap();
    let (_, unreachable) = client(&format!("http://{refused}"));
    let (result, delivery) = unreachable.send_reporting(OutboundRequest::get("/")).await;
    assert!(matches!(result, Err(IntegrationError::Connect { .. })), "{result:?}");
    assert!(delivery.nothing_sent(), "{delivery:?}");

    // Two calls of two sent attempts each, all answered 503, open the breaker (four calls at
    // 50 %); the next call is refused before it is sent. (A retry refused by a breaker that
    // opened between attempts is covered by the payments tests of `shopkeep`.)
    let harness = harness(Mode::Status(503)).await;
    let (_, client) = client(&harness.url(""));
    let (result, delivery) = client.send_reporting(OutboundRequest::get("/")).await;
    assert!(matches!(result, Err(IntegrationError::Status { .. })), "{result:?}");
    assert_eq!(delivery.attempts_sent, 2);
    let (result, delivery) = client.send_reporting(OutboundRequest::get("/")).await;
    assert!(result.is_err());
    assert_eq!(delivery.attempts_sent, 2);
    assert_eq!(client.breaker().state(), BreakerState::Open);
    let (result, delivery) = client.send_reporting(OutboundRequest::get("/")).await;
    assert!(matches!(result, Err(IntegrationError::BreakerOpen(_))), "{result:?}");
    assert!(delivery.nothing_sent());
}
