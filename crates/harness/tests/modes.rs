//! Each failure mode behaves as its name says, seen from a real HTTP client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use harness::{Harness, Mode};

async fn harness(mode: Mode) -> Harness {
    Harness::start("127.0.0.1:0".parse().unwrap(), mode).await.unwrap()
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
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

#[test]
fn modes_parse_from_the_command_line() {
    assert_eq!(Mode::parse("slow:250ms"), Ok(Mode::Slow { delay: Duration::from_millis(250) }));
    assert_eq!(Mode::parse("trickle:2s"), Ok(Mode::Trickle { interval: Duration::from_secs(2) }));
    assert_eq!(Mode::parse("status:503"), Ok(Mode::Status(503)));
    assert_eq!(Mode::parse("too-many-requests:3"), Ok(Mode::TooManyRequests { retry_after_secs: 3 }));
    assert!(Mode::parse("teleport").is_err());
    assert!(Mode::parse("status:abc").is_err());
}
