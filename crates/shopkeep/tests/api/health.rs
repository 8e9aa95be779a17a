//! Health on both listeners, metrics, the admin token, readiness while draining, and graceful shutdown.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD, PartialRequest, TestApp, spawn_app, spawn_app_with};

both_backends!(health_on_both_listeners, metrics_count_requests_and_business_events);

async fn health_on_both_listeners(app: &TestApp) {
    for url in [app.url("/health/live"), app.url("/api/v1/health/live"), app.admin_url("/health/live")] {
        let response = app.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
    }
    let ready: Value = app.http.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready, json!({ "status": "ok", "database": "ok" }));
    let admin = app.http.get(app.admin_url("/health/ready")).send().await.unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    let admin: Value = admin.json().await.unwrap();
    assert_eq!(admin["status"], "ok");
    assert_eq!(admin["database"]["status"], "ok");
    assert!(admin["database"]["latencyMs"].as_f64().unwrap() >= 0.0);
    let backend = if app.backend == Backend::Sqlite { "sqlite" } else { "postgres" };
    assert_eq!(admin["database"]["backend"], backend);
    assert!(admin["database"]["poolMax"].as_u64().unwrap() >= 1);
    assert!(admin["version"].is_string());
}

async fn metrics_count_requests_and_business_events(app: &TestApp) {
    let signup = app
        .api(Method::POST, "/users")
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::CREATED);
    let failed_login =
        app.api(Method::POST, "/sessions").json(&json!({ "email": "ada@example.com", "password": "wrong password!" }));
    assert_eq!(failed_login.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let product = format!("/products/{}", uuid::Uuid::now_v7());
    assert_eq!(app.api(Method::GET, &product).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let metrics = app.http.get(app.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    for expected in [
        r#"http_requests_total{method="POST",route="/api/v1/users",status="201"}"#,
        r#"route="/api/v1/products/{idOrSlug}",status="404""#,
        "http_request_duration_seconds_bucket",
        "http_requests_in_flight",
        r#"db_pool_connections{state="idle"}"#,
        r#"db_pool_connections{state="waiting"}"#,
        "accounts_signups_total",
        r#"accounts_logins_total{outcome="failed"}"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from metrics:\n{text}");
    }
    assert!(!text.contains(&product[10..]), "raw ids never become labels");
}

#[tokio::test]
async fn metrics_need_the_admin_token_when_configured() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.admin.token = Some(shopkeep::config::Secret::new("an-admin-token-of-length"));
    })
    .await;
    let anonymous = app.http.get(app.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = app.http.get(app.admin_url("/metrics")).bearer_auth("an-admin-token-of-lengtX").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = app.http.get(app.admin_url("/metrics")).bearer_auth("an-admin-token-of-length").send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    let health = app.http.get(app.admin_url("/health/ready")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "health needs no token");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_after_the_shutdown_signal() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" });
    let in_flight = PartialRequest::start(app.address, "POST", "/api/v1/users", &body).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.shutdown_token().cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, response) = in_flight.finish().await;
    assert_eq!(status, 201, "{response}");
    let address = app.address;
    app.wait_stopped().await.expect("clean shutdown");
    assert!(tokio::net::TcpStream::connect(address).await.is_err(), "the listener is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_while_draining() {
    let app = spawn_app_with(Backend::Sqlite, |config| config.server.drain_delay_secs = 2).await;
    assert_eq!(app.http.get(app.url("/health/ready")).send().await.unwrap().status(), StatusCode::OK);
    app.shutdown_token().cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let draining = app.http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(draining.json::<Value>().await.unwrap()["status"], "draining");
    let admin = app.http.get(app.admin_url("/health/ready")).send().await.unwrap();
    assert_eq!(admin.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.http.get(app.url("/health/live")).send().await.unwrap().status(), StatusCode::OK);
    app.wait_stopped().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_when_the_database_is_unreachable() {
    let app = spawn_app(Backend::Postgres).await;
    assert_eq!(app.http.get(app.url("/health/ready")).send().await.unwrap().status(), StatusCode::OK);
    // Take the database away underneath the running server.
    store_sqlx::provisioning::drop_database(app.config.database.url.expose()).await.unwrap();
    let response = app.http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    let admin: Value = app.http.get(app.admin_url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(admin["status"], "unavailable");
    assert!(admin["database"]["latencyMs"].is_null());
    app.stop().await;
}
