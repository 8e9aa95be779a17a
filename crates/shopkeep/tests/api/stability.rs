//! The admin stability page and breaker controls: `GET /admin/v1/status` and
//! `POST /admin/v1/breakers/{name}/{reset|force-open|disable}`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Backend, TestApp, problem, spawn_app_with};

const TOKEN: &str = "an-admin-token-of-length";

async fn status(app: &TestApp) -> Value {
    let response = app.http.get(app.admin_url("/admin/v1/status")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn act(app: &TestApp, name: &str, action: &str) -> reqwest::Response {
    app.http
        .post(app.admin_url(&format!("/admin/v1/breakers/{name}/{action}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_redis_breaker_opens_shows_on_the_status_page_and_operators_control_it() {
    // Nothing listens on port 1: every call to "Redis" fails.
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.redis.url = Some(shopkeep::config::Secret::new("redis://127.0.0.1:1"));
        config.admin.token = Some(shopkeep::config::Secret::new(TOKEN));
    })
    .await;
    let before = status(&app).await;
    assert_eq!(before["breakers"][0]["name"], "redis");
    assert_eq!(before["breakers"][0]["state"], "closed");
    assert_eq!(before["rateLimits"]["store"], "redis");
    assert_eq!(before["rateLimits"]["onStoreFailure"], "open");
    assert_eq!(before["rateLimits"]["perIp"], serde_json::json!({ "count": 600, "periodSeconds": 60 }));
    assert_eq!(before["rateLimits"]["lockout"]["failures"], 5);
    assert_eq!(before["loadShedding"]["mode"], "fixed");
    assert_eq!(before["loadShedding"]["limit"], 512);

    // Each request asks Redis twice (per IP, per principal); five requests make the ten calls
    // the breaker needs before it judges. Failing open, every request is still served.
    for _ in 0..5 {
        assert_eq!(app.api(Method::GET, "/products").send().await.unwrap().status(), StatusCode::OK);
    }
    let open = status(&app).await;
    let breaker = &open["breakers"][0];
    assert_eq!(breaker["state"], "open");
    assert_eq!(breaker["callsInWindow"], 10);
    assert_eq!(breaker["failureRate"], 100.0);
    assert_eq!(breaker["retryAfterSeconds"], 1.0);
    assert_eq!(
        app.api(Method::GET, "/products").send().await.unwrap().status(),
        StatusCode::OK,
        "still open for business"
    );

    // After the wait, one probe goes to Redis; it fails, and the wait doubles.
    app.limiter_clock.advance(Duration::from_secs(1));
    assert_eq!(app.api(Method::GET, "/products").send().await.unwrap().status(), StatusCode::OK);
    let reopened = status(&app).await;
    assert_eq!(reopened["breakers"][0]["state"], "open");
    assert_eq!(reopened["breakers"][0]["retryAfterSeconds"], 2.0);

    let reset = act(&app, "redis", "reset").await;
    assert_eq!(reset.status(), StatusCode::OK);
    let reset: Value = reset.json().await.unwrap();
    assert_eq!(reset["state"], "closed");
    assert_eq!(reset["callsInWindow"], 0);
    let forced: Value = act(&app, "redis", "force-open").await.json().await.unwrap();
    assert_eq!(forced["state"], "forced_open");
    assert!(forced["retryAfterSeconds"].is_null(), "forced open has no end");
    let disabled: Value = act(&app, "redis", "disable").await.json().await.unwrap();
    assert_eq!(disabled["state"], "disabled");
    assert_eq!(status(&app).await["breakers"][0]["state"], "disabled");

    problem(act(&app, "smtp", "reset").await, StatusCode::NOT_FOUND).await;
    problem(act(&app, "redis", "explode").await, StatusCode::NOT_FOUND).await;
    let unauthenticated = app.http.post(app.admin_url("/admin/v1/breakers/redis/reset")).send().await.unwrap();
    problem(unauthenticated, StatusCode::UNAUTHORIZED).await;
    let wrong = app
        .http
        .post(app.admin_url("/admin/v1/breakers/redis/reset"))
        .bearer_auth("an-admin-token-of-lengtX")
        .send()
        .await
        .unwrap();
    problem(wrong, StatusCode::UNAUTHORIZED).await;
    let anonymous_status = app.http.get(app.admin_url("/admin/v1/status")).send().await.unwrap();
    problem(anonymous_status, StatusCode::UNAUTHORIZED).await;
    let get_reset =
        app.http.get(app.admin_url("/admin/v1/breakers/redis/reset")).bearer_auth(TOKEN).send().await.unwrap();
    problem(get_reset, StatusCode::METHOD_NOT_ALLOWED).await;

    // The three actions taken are audited, newest first, with the state before; the refused
    // ones (unknown breaker or action, no token) are not.
    let audit: Value = app
        .http
        .get(app.admin_url("/admin/v1/audit?action=breaker."))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> =
        audit["data"].as_array().unwrap().iter().map(|entry| entry["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["breaker.disable", "breaker.force-open", "breaker.reset"]);
    assert_eq!(audit["data"][2]["target"], "breaker:redis");
    assert_eq!(audit["data"][2]["before"]["state"], "open");
    assert_eq!(audit["data"][2]["after"]["state"], "closed");
    assert_eq!(audit["data"][2]["actor"], "admin-token");
    app.stop().await;
}

#[tokio::test]
async fn without_an_admin_token_the_status_is_readable_on_loopback_but_actions_are_refused() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.http.adaptive_concurrency = true;
    })
    .await;
    let response = app.http.get(app.admin_url("/admin/v1/status")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["breakers"], serde_json::json!([]));
    assert_eq!(body["rateLimits"]["store"], "memory");
    assert!(body["rateLimits"]["onStoreFailure"].is_null());
    assert_eq!(body["loadShedding"]["mode"], "adaptive");
    assert_eq!(body["draining"], false);
    let refused = app.http.post(app.admin_url("/admin/v1/breakers/redis/reset")).send().await.unwrap();
    let problem = problem(refused, StatusCode::FORBIDDEN).await;
    assert!(problem["detail"].as_str().unwrap().contains("admin.token"), "{problem}");
    app.stop().await;
}
