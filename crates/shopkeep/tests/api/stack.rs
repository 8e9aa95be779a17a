//! The HTTP stack: problems for unknown routes, methods and oversized bodies; security headers;
//! request ids; CORS; compression; load shedding; request timeouts; the OpenAPI document.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD, PartialRequest, TestApp, problem, spawn_app_with};

both_backends!(
    unknown_routes_and_methods_are_problems,
    security_headers_are_on_every_response,
    request_ids_are_propagated_or_generated,
    cors_allows_only_configured_origins,
    large_responses_are_gzipped,
    openapi_describes_every_route_with_its_access,
);

async fn unknown_routes_and_methods_are_problems(app: &TestApp) {
    let missing = app.http.get(app.url("/api/v1/nothing-here")).send().await.unwrap();
    let body = problem(missing, StatusCode::NOT_FOUND).await;
    assert_eq!(body["instance"], "/api/v1/nothing-here");
    let wrong_method = app.api(Method::PUT, "/products").send().await.unwrap();
    let allow = wrong_method.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
}

async fn security_headers_are_on_every_response(app: &TestApp) {
    for response in [
        app.http.get(app.url("/health/live")).send().await.unwrap(),
        app.http.get(app.url("/api/v1/nowhere")).send().await.unwrap(),
        app.api(Method::GET, "/products").send().await.unwrap(),
    ] {
        let headers = response.headers();
        assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers.get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    }
}

async fn request_ids_are_propagated_or_generated(app: &TestApp) {
    let kept = app.http.get(app.url("/health/live")).header("x-request-id", "trace-abc.123").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-abc.123");
    let replaced = app.http.get(app.url("/health/live")).header("x-request-id", "bad id\twith spaces").send();
    let replaced = replaced.await.unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let generated = app.http.get(app.url("/health/live")).send().await.unwrap();
    assert!(uuid::Uuid::parse_str(generated.headers()["x-request-id"].to_str().unwrap()).is_ok());
}

async fn cors_allows_only_configured_origins(app: &TestApp) {
    // The default configuration allows no foreign origin.
    let preflight = app
        .http
        .request(Method::OPTIONS, app.url("/api/v1/products"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
}

async fn large_responses_are_gzipped(app: &TestApp) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "books").await;
    for index in 0..10 {
        app.add_product(&staff, category["id"].as_str().unwrap(), &format!("book-{index}"), "1.00", 1).await;
    }
    let compressed = app.http.get(app.url("/api/v1/products")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(compressed.status(), StatusCode::OK);
    assert_eq!(compressed.headers()["content-encoding"], "gzip");
    let plain = app.http.get(app.url("/api/v1/products")).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
}

async fn openapi_describes_every_route_with_its_access(app: &TestApp) {
    let response = app.http.get(app.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = document["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/users", vec!["post", "get"]),
        ("/api/v1/users/me", vec!["get", "patch"]),
        ("/api/v1/users/{id}", vec!["get", "patch"]),
        ("/api/v1/sessions", vec!["post"]),
        ("/api/v1/sessions/current", vec!["delete"]),
        ("/api/v1/api-tokens", vec!["post", "get"]),
        ("/api/v1/api-tokens/{id}", vec!["delete"]),
        ("/api/v1/categories", vec!["get", "post"]),
        ("/api/v1/categories/{idOrSlug}", vec!["get", "patch", "delete"]),
        ("/api/v1/products", vec!["get", "post"]),
        ("/api/v1/products/{idOrSlug}", vec!["get", "patch", "delete"]),
        ("/api/v1/products/{idOrSlug}/archive", vec!["post"]),
        ("/health/live", vec!["get"]),
        ("/health/ready", vec!["get"]),
    ] {
        for method in methods {
            let operation = &paths[path][method];
            assert!(operation.is_object(), "{method} {path} is not documented");
            assert!(operation["security"].is_array(), "{method} {path} declares no access");
            assert!(operation["responses"].as_object().unwrap().len() >= 2, "{method} {path} documents no errors");
        }
    }
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            assert!(operation["security"].is_array(), "{method} {path} declares no access");
        }
    }
    assert!(document["components"]["schemas"]["Problem"].is_object());
    assert!(document["components"]["securitySchemes"]["apiToken"].is_object());
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let app = spawn_app_with(Backend::Sqlite, |config| config.http.body_limit_bytes = 2_048).await;
    let huge = json!({ "email": "ada@example.com", "password": PASSWORD, "name": "x".repeat(10_000) });
    let response = app.api(Method::POST, "/users").json(&huge).send().await.unwrap();
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    let chunked = app
        .api(Method::POST, "/users")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream(serde_json::to_vec(&huge).unwrap())))
        .send()
        .await
        .unwrap();
    problem(chunked, StatusCode::PAYLOAD_TOO_LARGE).await;
    app.stop().await;
}

/// A body without Content-Length (chunked), in 1 KiB pieces.
fn futures_stream(bytes: Vec<u8>) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::iter(bytes.chunks(1024).map(|chunk| Ok(chunk.to_vec())).collect::<Vec<_>>())
}

#[tokio::test]
async fn https_mode_sets_hsts_and_secure_host_cookies() {
    let app = spawn_app_with(Backend::Sqlite, |config| config.http.https = true).await;
    let response = app
        .api(Method::POST, "/users")
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers()["strict-transport-security"].to_str().unwrap().contains("max-age="));
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-shopkeep_session="), "{cookie}");
    assert!(cookie.contains("; Secure") && cookie.contains("Path=/") && !cookie.contains("Domain"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let me = app.api(Method::GET, "/users/me").header("cookie", session).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn cors_preflight_for_an_allowed_origin() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.http.allowed_origins = vec!["https://shop.example".into()];
        config.http.cors_max_age_secs = 600;
    })
    .await;
    let preflight = app
        .http
        .request(Method::OPTIONS, app.url("/api/v1/products"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://shop.example");
    assert_eq!(preflight.headers()["access-control-max-age"], "600");
    assert_eq!(preflight.headers()["access-control-allow-credentials"], "true");
    let other = app
        .http
        .request(Method::OPTIONS, app.url("/api/v1/products"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A cookie-authenticated write from the allowed origin passes the Origin check.
    let client = app.signed_in("ada@example.com", Role::Customer).await;
    let write = client
        .patch(app.url("/api/v1/users/me"))
        .header("origin", "https://shop.example")
        .json(&json!({ "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed() {
    let app = spawn_app_with(Backend::Sqlite, |config| config.http.max_in_flight = 1).await;
    let body = json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" });
    let held = PartialRequest::start(app.address, "POST", "/api/v1/users", &body).await;
    // Wait until the held request is being served (it owns the only permit).
    let mut shed = None;
    for _ in 0..50 {
        let response = app.http.get(app.url("/api/v1/products")).send().await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shed = shed.expect("a request beyond the limit is shed");
    assert_eq!(shed.headers()["retry-after"], "1");
    let body = problem(shed, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["detail"].as_str().unwrap().contains("overloaded"));
    let (status, _) = held.finish().await;
    assert_eq!(status, 201, "the request in flight completes");
    assert_eq!(app.http.get(app.url("/api/v1/products")).send().await.unwrap().status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn requests_running_past_the_timeout_get_503() {
    let app = spawn_app_with(Backend::Sqlite, |config| config.http.request_timeout_secs = 1).await;
    let body = json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" });
    let stalled = PartialRequest::start(app.address, "POST", "/api/v1/users", &body).await;
    let (status, response) = stalled.read_response().await;
    assert_eq!(status, 503, "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(response.to_ascii_lowercase().contains("retry-after"), "{response}");
    app.stop().await;
}

#[tokio::test]
async fn an_adaptive_in_flight_limit_serves_and_reports_its_limit() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.http.adaptive_concurrency = true;
        config.http.min_in_flight = 2;
        config.http.max_in_flight = 64;
    })
    .await;
    for _ in 0..20 {
        assert_eq!(app.api(Method::GET, "/products").send().await.unwrap().status(), StatusCode::OK);
    }
    let metrics = app.http.get(app.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let limit_line = metrics.lines().find(|line| line.starts_with("load_shed_limit ")).expect("the limit is exported");
    let limit: f64 = limit_line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!((2.0..=64.0).contains(&limit), "{limit_line}");
    app.stop().await;
}
