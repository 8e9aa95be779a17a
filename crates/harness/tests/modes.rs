//! Each failure mode behaves as its name says, seen from a real HTTP client, over plain HTTP and
//! TLS; the harness remembers what it received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use harness::{Harness, KEPT_REQUESTS, Mode};

async fn harness(mode: Mode) -> Harness {
    Harness::start("127.0.0.1:0".parse().unwrap(), mode).await.unwrap()
}

async fn tls_harness(mode: Mode) -> Harness {
    Harness::start_tls("127.0.0.1:0".parse().unwrap(), mode).await.unwrap()
}

fn client(timeout: Duration) -> reqwest::Client {
    // reqwest is built with rustls here (feature unification): it needs a process-wide provider.
    integration::install_crypto_provider();
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// A client that trusts exactly the harness's self-signed certificate.
fn trusting_client(harness: &Harness, timeout: Duration) -> reqwest::Client {
    integration::install_crypto_provider();
    let certificate = reqwest::Certificate::from_pem(harness.certificate_pem().unwrap().as_bytes()).unwrap();
    reqwest::Client::builder().timeout(timeout).tls_certs_only([certificate]).build().unwrap()
}

#[tokio::test]
async fn healthy_modes_answer_correctly() {
    let harness = harness(Mode::Ok).await;
    let response = client(Duration::from_secs(2)).get(harness.url("/v1/ping")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["status"], "ok");

    harness.set_mode(Mode::Slow { delay: Duration::from_millis(300) });
    let started = Instant::now();
    let response = client(Duration::from_secs(2)).get(harness.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn error_statuses_and_429_with_retry_after() {
    let harness = harness(Mode::Status(503)).await;
    harness.set_path_mode("/busy", Mode::TooManyRequests { retry_after_secs: 7 });
    harness.set_path_mode("/broken", Mode::Status(500));
    let client = client(Duration::from_secs(2));
    assert_eq!(client.get(harness.url("/")).send().await.unwrap().status(), 503);
    assert_eq!(client.get(harness.url("/broken")).send().await.unwrap().status(), 500);
    let busy = client.get(harness.url("/busy")).send().await.unwrap();
    assert_eq!(busy.status(), 429);
    assert_eq!(busy.headers()["retry-after"], "7");
}

#[tokio::test]
async fn html_where_json_was_promised() {
    let harness = harness(Mode::Html).await;
    let response = client(Duration::from_secs(2)).get(harness.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert!(response.json::<serde_json::Value>().await.is_err());
}

#[tokio::test]
async fn hanging_modes_run_into_the_client_timeout() {
    for mode in [
        Mode::AcceptNeverRead,
        Mode::NeverRespond,
        Mode::HeadersNoBody,
        Mode::Trickle { interval: Duration::from_millis(200) },
    ] {
        let harness = harness(mode.clone()).await;
        let started = Instant::now();
        let result =
            async { client(Duration::from_millis(400)).get(harness.url("/")).send().await?.bytes().await }.await;
        let error = result.expect_err(&format!("{mode:?} must not complete"));
        assert!(error.is_timeout(), "{mode:?}: {error}");
        assert!(started.elapsed() < Duration::from_secs(2), "{mode:?} took {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn broken_responses_are_errors() {
    for mode in [Mode::ResetMidResponse, Mode::WrongContentLength, Mode::Garbage] {
        let harness = harness(mode.clone()).await;
        let result = async { client(Duration::from_secs(2)).get(harness.url("/")).send().await?.bytes().await }.await;
        let error = result.expect_err(&format!("{mode:?} must fail"));
        assert!(!error.is_timeout(), "{mode:?} should fail fast: {error}");
    }
}

#[tokio::test]
async fn refused_connections_and_changing_modes() {
    let nowhere = Harness::refusing_address().await.unwrap();
    let error = client(Duration::from_secs(2)).get(format!("http://{nowhere}/")).send().await.unwrap_err();
    assert!(error.is_connect(), "{error}");

    let harness = harness(Mode::Status(503)).await;
    let client = client(Duration::from_secs(2));
    assert_eq!(client.get(harness.url("/")).send().await.unwrap().status(), 503);
    harness.set_mode(Mode::Ok);
    assert_eq!(client.get(harness.url("/")).send().await.unwrap().status(), 200, "a dependency that recovers");
    assert!(harness.connections() >= 2);
}

#[tokio::test]
async fn tls_serves_a_self_signed_certificate_that_a_client_can_trust() {
    let harness = tls_harness(Mode::Ok).await;
    assert!(harness.url("/").starts_with("https://127.0.0.1:"), "{}", harness.url("/"));
    assert!(harness.certificate_pem().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    let client = trusting_client(&harness, Duration::from_secs(2));
    let response = client.get(harness.url("/v1/ping")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let by_name = client.get(format!("https://localhost:{}/", harness.address().port())).send().await.unwrap();
    assert_eq!(by_name.status(), 200, "the certificate names localhost too");

    let stranger = tls_harness(Mode::Ok).await;
    let error = client.get(stranger.url("/")).send().await.unwrap_err();
    assert!(error.is_connect(), "another harness's certificate is not trusted: {error}");
    assert!(stranger.requests().is_empty(), "nothing was read past the failed handshake");
    assert!(harness.certificate_pem() != stranger.certificate_pem(), "each harness makes its own");
    assert!(Harness::start("127.0.0.1:0".parse().unwrap(), Mode::Ok).await.unwrap().certificate_pem().is_none());
}

#[tokio::test]
async fn failure_modes_play_out_inside_tls() {
    let harness = tls_harness(Mode::Status(503)).await;
    harness.set_path_mode("/busy", Mode::TooManyRequests { retry_after_secs: 7 });
    harness.set_path_mode("/reset", Mode::ResetMidResponse);
    harness.set_path_mode("/garbage", Mode::Garbage);
    harness.set_path_mode("/hang", Mode::NeverRespond);
    let client = trusting_client(&harness, Duration::from_millis(500));
    assert_eq!(client.get(harness.url("/")).send().await.unwrap().status(), 503);
    assert_eq!(client.get(harness.url("/busy")).send().await.unwrap().headers()["retry-after"], "7");
    for path in ["/reset", "/garbage"] {
        let result = async { client.get(harness.url(path)).send().await?.bytes().await }.await;
        let error = result.expect_err(&format!("{path} must fail"));
        assert!(!error.is_timeout(), "{path} should fail fast: {error}");
    }
    let error = client.get(harness.url("/hang")).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error}");

    harness.set_mode(Mode::AcceptNeverRead);
    let error = client.get(harness.url("/")).send().await.unwrap_err();
    assert!(error.is_timeout(), "accept-never-read holds even the handshake: {error}");
}

#[tokio::test]
async fn requests_are_recorded_with_their_headers() {
    let harness = harness(Mode::Ok).await;
    let client = client(Duration::from_secs(2));
    client.get(harness.url("/v1/ping?verbose=1")).header("X-Probe", "first").send().await.unwrap();
    client
        .post(harness.url("/v1/charges"))
        .header("idempotency-key", "k-1")
        .json(&serde_json::json!({"amount": 100}))
        .send()
        .await
        .unwrap();
    let requests = harness.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("GET", "/v1/ping"));
    assert_eq!(requests[0].header("x-probe"), Some("first"));
    assert_eq!(requests[0].header("X-PROBE"), Some("first"), "names match in any case");
    assert!(requests[0].headers.iter().any(|(name, _)| name == "x-probe"), "names are stored lowercase");
    assert_eq!((requests[1].method.as_str(), requests[1].path.as_str()), ("POST", "/v1/charges"));
    assert_eq!(requests[1].header("idempotency-key"), Some("k-1"));
    assert_eq!(requests[1].header("content-type"), Some("application/json"));
    assert_eq!(requests[1].header("traceparent"), None);
}

#[tokio::test]
async fn only_the_most_recent_requests_are_kept() {
    let harness = harness(Mode::Ok).await;
    let client = client(Duration::from_secs(2));
    for index in 0..KEPT_REQUESTS + 5 {
        client.get(harness.url(&format!("/{index}"))).send().await.unwrap();
    }
    let requests = harness.requests();
    assert_eq!(requests.len(), KEPT_REQUESTS);
    assert_eq!(requests[0].path, "/5", "the oldest are forgotten first");
    assert_eq!(requests[KEPT_REQUESTS - 1].path, format!("/{}", KEPT_REQUESTS + 4));
}

#[test]
fn modes_parse_from_the_command_line() {
    assert_eq!(Mode::parse("slow:250ms"), Ok(Mode::Slow { delay: Duration::from_millis(250) }));
    assert_eq!(Mode::parse("trickle:2s"), Ok(Mode::Trickle { interval: Duration::from_secs(2) }));
    assert_eq!(Mode::parse("status:503"), Ok(Mode::Status(503)));
    assert_eq!(Mode::parse("too-many-requests:3"), Ok(Mode::TooManyRequests { retry_after_secs: 3 }));
    assert!(Mode::parse("teleport").is_err());
    assert!(Mode::parse("status:abc").is_err());
}
