//! Rate limits: per IP on every route, per principal by tier, layered login protection, sign-up
//! per IP, trusted proxies, and the switch for load tests.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use resilience::Quota;
use serde_json::json;
use shop::accounts::Role;
use shop_api::RateLimitScope;

use crate::helpers::{Backend, PASSWORD, TestApp, problem, spawn_app_with};

async fn limited(response: Response) -> (String, String, String) {
    let retry_after = response.headers()["retry-after"].to_str().unwrap().to_owned();
    let policy = response.headers()["ratelimit-policy"].to_str().unwrap().to_owned();
    let ratelimit = response.headers()["ratelimit"].to_str().unwrap().to_owned();
    problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    (retry_after, policy, ratelimit)
}

async fn login(app: &TestApp, email: &str, password: &str) -> Response {
    app.api(Method::POST, "/sessions").json(&json!({ "email": email, "password": password })).send().await.unwrap()
}

#[tokio::test]
async fn a_login_flood_from_one_address_gets_429_with_rate_limit_headers() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    for index in 0..10 {
        let response = login(&app, &format!("user{index}@example.com"), "a wrong password").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {index}");
    }
    let (retry_after, policy, ratelimit) = limited(login(&app, "user10@example.com", "a wrong password").await).await;
    assert_eq!(retry_after, "6", "one login per 6 s is earned back at 10 per minute");
    assert_eq!(policy, "10;w=60");
    assert_eq!(ratelimit, "limit=10, remaining=0, reset=6");
    app.limiter_clock.advance(Duration::from_secs(6));
    assert_eq!(login(&app, "user11@example.com", "a wrong password").await.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn five_failures_lock_the_account_even_against_the_right_password() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app_with(backend, |_| {}).await;
        app.create_user("ada@example.com", Role::Customer).await;
        for _ in 0..5 {
            assert_eq!(login(&app, "ada@example.com", "a wrong password").await.status(), StatusCode::UNAUTHORIZED);
        }
        let locked = login(&app, "Ada@Example.com", PASSWORD).await;
        let retry_after = locked.headers()["retry-after"].to_str().unwrap().to_owned();
        let body = problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
        assert!(body["detail"].as_str().unwrap().contains("failed logins"));
        assert_eq!(retry_after, "900");
        assert_eq!(
            login(&app, "bob@example.com", PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED,
            "others unaffected"
        );
        app.limiter_clock.advance(Duration::from_secs(899));
        problem(login(&app, "ada@example.com", PASSWORD).await, StatusCode::TOO_MANY_REQUESTS).await;
        app.limiter_clock.advance(Duration::from_secs(1));
        assert_eq!(
            login(&app, "ada@example.com", PASSWORD).await.status(),
            StatusCode::CREATED,
            "unlocked after 15 min"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn the_owner_of_a_locked_account_is_told_by_mail_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app_with(backend, |_| {}).await;
        app.create_user("ada@example.com", Role::Customer).await;
        for _ in 0..5 {
            assert_eq!(login(&app, "ada@example.com", "a wrong password").await.status(), StatusCode::UNAUTHORIZED);
        }
        // Locked: more attempts during the lock send nothing more.
        for _ in 0..3 {
            problem(login(&app, "ada@example.com", "a wrong password").await, StatusCode::TOO_MANY_REQUESTS).await;
        }
        let outbox = app.outbox_with(1).await;
        assert_eq!(outbox.len(), 1, "{outbox:?}");
        let mail = &outbox[0].mail;
        assert_eq!(mail.to, "ada@example.com");
        assert!(mail.subject.contains("locked"), "{}", mail.subject);
        assert!(mail.text.contains("Hello Test User"), "{}", mail.text);
        assert!(mail.html.contains("<strong>"), "{}", mail.html);
        // An address without an account locks too, but nobody is mailed. (A minute later, so
        // the per-address login limit has room again.)
        app.limiter_clock.advance(Duration::from_secs(60));
        for _ in 0..5 {
            login(&app, "ghost@example.com", "a wrong password").await;
        }
        problem(login(&app, "ghost@example.com", "a wrong password").await, StatusCode::TOO_MANY_REQUESTS).await;
        // The notification is queued within the login request, so by now it would exist.
        let jobs: serde_json::Value =
            app.http.get(app.admin_url("/admin/v1/jobs?kind=mail.send")).send().await.unwrap().json().await.unwrap();
        assert_eq!(jobs["total"], 1, "{jobs}");
        app.stop().await;
    }
}

#[tokio::test]
async fn unknown_addresses_lock_too_so_locks_reveal_nothing() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    for _ in 0..5 {
        assert_eq!(login(&app, "ghost@example.com", "a wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    problem(login(&app, "ghost@example.com", "a wrong password").await, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}

#[tokio::test]
async fn every_route_is_limited_per_address_but_health_checks_are_not() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.rate_limits.quotas[RateLimitScope::PerIp] = Quota::new(5, Duration::from_secs(60))
    })
    .await;
    for _ in 0..5 {
        assert_eq!(app.api(Method::GET, "/products").send().await.unwrap().status(), StatusCode::OK);
    }
    let (_, policy, _) = limited(app.api(Method::GET, "/categories").send().await.unwrap()).await;
    assert_eq!(policy, "5;w=60");
    assert_eq!(app.http.get(app.url("/health/ready")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.http.get(app.url("/api/v1/health/live")).send().await.unwrap().status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn signed_in_users_are_limited_by_their_tier() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.rate_limits.quotas[RateLimitScope::Customer] = Quota::new(3, Duration::from_secs(60));
        config.rate_limits.quotas[RateLimitScope::Staff] = Quota::new(6, Duration::from_secs(60));
    })
    .await;
    let ada = app.signed_in("ada@example.com", Role::Customer).await;
    let bob = app.signed_in("bob@example.com", Role::Customer).await;
    let clerk = app.signed_in("clerk@example.com", Role::Staff).await;
    for _ in 0..3 {
        assert_eq!(ada.get(app.url("/api/v1/users/me")).send().await.unwrap().status(), StatusCode::OK);
    }
    let (_, policy, _) = limited(ada.get(app.url("/api/v1/users/me")).send().await.unwrap()).await;
    assert_eq!(policy, "3;w=60");
    assert_eq!(bob.get(app.url("/api/v1/users/me")).send().await.unwrap().status(), StatusCode::OK, "per user");
    for _ in 0..6 {
        assert_eq!(clerk.get(app.url("/api/v1/users/me")).send().await.unwrap().status(), StatusCode::OK);
    }
    limited(clerk.get(app.url("/api/v1/users/me")).send().await.unwrap()).await;
    app.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    let quota = Quota::new(2, Duration::from_secs(60));
    let direct =
        spawn_app_with(Backend::Sqlite, |config| config.rate_limits.quotas[RateLimitScope::PerIp] = quota).await;
    for client in ["203.0.113.1", "203.0.113.2"] {
        let response = direct.api(Method::GET, "/products").header("x-forwarded-for", client).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let spoofed = direct.api(Method::GET, "/products").header("x-forwarded-for", "203.0.113.3").send();
    limited(spoofed.await.unwrap()).await;
    direct.stop().await;

    let proxied = spawn_app_with(Backend::Sqlite, |config| {
        config.rate_limits.quotas[RateLimitScope::PerIp] = quota;
        config.rate_limits.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    for _ in 0..2 {
        let response = proxied.api(Method::GET, "/products").header("x-forwarded-for", "203.0.113.1").send().await;
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    let third = proxied.api(Method::GET, "/products").header("x-forwarded-for", "203.0.113.1").send().await.unwrap();
    limited(third).await;
    let other = proxied.api(Method::GET, "/products").header("x-forwarded-for", "203.0.113.2").send().await.unwrap();
    assert_eq!(other.status(), StatusCode::OK, "each client behind the proxy has its own limit");
    proxied.stop().await;
}

#[tokio::test]
async fn sign_ups_are_limited_per_address() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.rate_limits.quotas[RateLimitScope::SignupPerIp] = Quota::new(2, Duration::from_secs(3_600))
    })
    .await;
    for index in 0..2 {
        let response = app
            .api(Method::POST, "/users")
            .json(&json!({ "email": format!("new{index}@example.com"), "password": PASSWORD, "name": "New" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let third = app
        .api(Method::POST, "/users")
        .json(&json!({ "email": "new2@example.com", "password": PASSWORD, "name": "New" }))
        .send()
        .await
        .unwrap();
    let (_, policy, _) = limited(third).await;
    assert_eq!(policy, "2;w=3600");
    app.stop().await;
}

#[tokio::test]
async fn limits_can_be_switched_off_for_load_tests() {
    let app = spawn_app_with(Backend::Sqlite, |config| config.rate_limits.enabled = false).await;
    app.create_user("ada@example.com", Role::Customer).await;
    for _ in 0..20 {
        assert_eq!(login(&app, "ada@example.com", "a wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login(&app, "ada@example.com", PASSWORD).await.status(), StatusCode::CREATED);
    app.stop().await;
}

fn redis_url() -> String {
    std::env::var("SHOPKEEP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn two_instances_sharing_redis_enforce_one_limit() {
    let prefix = format!("shopkeep-test-{}", uuid::Uuid::new_v4().simple());
    let configure = |config: &mut shopkeep::config::Config| {
        config.redis.url = Some(shopkeep::config::Secret::new(redis_url()));
        config.redis.key_prefix = prefix.clone();
        config.rate_limits.quotas[RateLimitScope::PerIp] = Quota::new(4, Duration::from_secs(3_600));
    };
    let first = spawn_app_with(Backend::Sqlite, configure).await;
    let second = spawn_app_with(Backend::Sqlite, configure).await;
    let mut statuses = Vec::new();
    for index in 0..6 {
        let app = if index % 2 == 0 { &first } else { &second };
        statuses.push(app.api(Method::GET, "/products").send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "one budget of 4 across both instances");
    let ready: serde_json::Value =
        first.http.get(first.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["rateLimits"], "ok");
    let admin: serde_json::Value =
        first.http.get(first.admin_url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(admin["rateLimits"]["backend"], "redis");
    assert_eq!(admin["rateLimits"]["onFailure"], "open");
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn two_instances_sharing_redis_share_the_account_lockout() {
    let prefix = format!("shopkeep-test-{}", uuid::Uuid::new_v4().simple());
    let configure = |config: &mut shopkeep::config::Config| {
        config.redis.url = Some(shopkeep::config::Secret::new(redis_url()));
        config.redis.key_prefix = prefix.clone();
    };
    let first = spawn_app_with(Backend::Sqlite, configure).await;
    let second = spawn_app_with(Backend::Sqlite, configure).await;
    // One database is enough: the lock is keyed by the address typed, account or not.
    for index in 0..5 {
        let app = if index % 2 == 0 { &first } else { &second };
        assert_eq!(login(app, "ada@example.com", "a wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    for app in [&first, &second] {
        let locked = login(app, "ADA@example.com", "a wrong password").await;
        let retry_after: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((899..=900).contains(&retry_after), "{retry_after}");
        let body = problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
        assert!(body["detail"].as_str().unwrap().contains("failed logins"));
    }
    assert_eq!(
        login(&first, "bob@example.com", "a wrong password").await.status(),
        StatusCode::UNAUTHORIZED,
        "others unaffected"
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn without_redis_limits_fail_open_or_closed_as_configured() {
    // Nothing listens on port 1: Redis is "down".
    let open = spawn_app_with(Backend::Sqlite, |config| {
        config.redis.url = Some(shopkeep::config::Secret::new("redis://127.0.0.1:1"));
    })
    .await;
    assert_eq!(open.api(Method::GET, "/products").send().await.unwrap().status(), StatusCode::OK);
    let ready = open.http.get(open.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "failing open keeps serving");
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["rateLimits"], "redis unreachable; failing open");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["cache"], "redis unreachable; reads served by the local cache and the database");
    open.stop().await;

    let closed = spawn_app_with(Backend::Sqlite, |config| {
        config.redis.url = Some(shopkeep::config::Secret::new("redis://127.0.0.1:1"));
        config.rate_limits.on_redis_failure = "closed".into();
    })
    .await;
    let refused = closed.api(Method::GET, "/products").send().await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "5");
    let body = problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["detail"].as_str().unwrap().contains("rate limiting is unavailable"));
    let ready = closed.http.get(closed.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE, "failing closed takes the instance out");
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["rateLimits"], "redis unreachable; failing closed");
    closed.stop().await;
}
