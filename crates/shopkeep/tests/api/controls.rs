//! Runtime controls on the admin listener: drain and undrain, the cache flush, each audited.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use shop::accounts::Role;

use crate::helpers::{Backend, TestApp, problem, spawn_app_with};

const TOKEN: &str = "an-admin-token-of-length";

crate::both_backends!(configured with_token:
    a_drained_instance_is_unready_but_serves_until_undrained,
    caches_are_flushed_on_request,
    operators_list_and_end_a_users_sessions,
);

async fn operators_list_and_end_a_users_sessions(app: &TestApp) {
    let laptop = app.signed_in("cat@example.com", Role::Customer).await;
    let phone = app.new_client();
    let signed_in = phone
        .post(app.url("/api/v1/sessions"))
        .json(&serde_json::json!({ "email": "cat@example.com", "password": crate::helpers::PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::CREATED);
    let me: Value = laptop.get(app.url("/api/v1/users/me")).send().await.unwrap().json().await.unwrap();
    let id = me["id"].as_str().unwrap().to_owned();

    let listed: Value = admin(app, Method::GET, &format!("/admin/v1/users/{id}/sessions")).await.json().await.unwrap();
    assert_eq!(listed["total"], 2);
    assert!(listed["data"][0]["lastSeenAt"].is_string() && listed["data"][0].get("tokenHash").is_none());
    let ended = admin(app, Method::DELETE, &format!("/admin/v1/users/{id}/sessions")).await;
    assert_eq!(ended.json::<Value>().await.unwrap()["ended"], 2);
    // Signed out everywhere at once on this instance.
    for client in [&laptop, &phone] {
        let me = client.get(app.url("/api/v1/users/me")).send().await.unwrap();
        assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(audit_actions(app, "sessions.").await, ["sessions.end"]);

    let unknown = uuid::Uuid::now_v7();
    problem(admin(app, Method::GET, &format!("/admin/v1/users/{unknown}/sessions")).await, StatusCode::NOT_FOUND).await;
    problem(admin(app, Method::DELETE, &format!("/admin/v1/users/{unknown}/sessions")).await, StatusCode::NOT_FOUND)
        .await;
    problem(admin(app, Method::DELETE, "/admin/v1/users/not-an-id/sessions").await, StatusCode::NOT_FOUND).await;
    let anonymous = app.http.delete(app.admin_url(&format!("/admin/v1/users/{id}/sessions"))).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_eq!(audit_actions(app, "sessions.").await.len(), 1, "refusals are not audited");
}

/// The log filter is the process's (one subscriber per test process): one test changes it, on
/// one backend, and puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_is_read_and_replaced_live() {
    let app = spawn_app_with(Backend::Sqlite, with_token).await;
    the_log_filter_is_read_and_replaced(&app).await;
    app.stop().await;
}

/// Every audited action records its row first or in its own transaction: with audit rows
/// refused (a trigger on the SQLite file), a drain, a flag write and a log-filter change each
/// fail and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_whose_audit_row_cannot_be_written_is_not_taken() {
    let app = spawn_app_with(Backend::Sqlite, with_token).await;
    let mut raw =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(app.config.database.url.expose()).await.unwrap();
    let refuse =
        "create trigger refuse_audit before insert on audit_log begin select raise(abort, 'audit refused'); end;";
    sqlx::raw_sql(refuse).execute(&mut raw).await.unwrap();

    problem(admin(&app, Method::POST, "/admin/v1/drain").await, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(app.http.get(app.url("/health/ready")).send().await.unwrap().status(), StatusCode::OK, "not drained");
    let flag = app.http.put(app.admin_url("/admin/v1/flags/maintenance")).bearer_auth(TOKEN);
    let flag = flag.json(&serde_json::json!({ "kind": "boolean", "enabled": true, "default": true }));
    problem(flag.send().await.unwrap(), StatusCode::INTERNAL_SERVER_ERROR).await;
    let flags: Value = admin(&app, Method::GET, "/admin/v1/flags").await.json().await.unwrap();
    assert_eq!(flags["total"], 0, "no flag without its audit row");
    let before: Value = admin(&app, Method::GET, "/admin/v1/log-level").await.json().await.unwrap();
    let filter = app.http.put(app.admin_url("/admin/v1/log-level")).bearer_auth(TOKEN);
    let filter = filter.json(&serde_json::json!({ "filter": "trace" }));
    problem(filter.send().await.unwrap(), StatusCode::INTERNAL_SERVER_ERROR).await;
    let after: Value = admin(&app, Method::GET, "/admin/v1/log-level").await.json().await.unwrap();
    assert_eq!(after, before, "the filter stays");
    drop(raw);
    app.stop().await;
}

async fn the_log_filter_is_read_and_replaced(app: &TestApp) {
    let current: Value = admin(app, Method::GET, "/admin/v1/log-level").await.json().await.unwrap();
    let before = current["filter"].as_str().unwrap().to_owned();
    assert!(!before.is_empty());
    let put = |body: Value| app.http.put(app.admin_url("/admin/v1/log-level")).bearer_auth(TOKEN).json(&body).send();
    let bad = put(serde_json::json!({ "filter": "shopkeep=loud" })).await.unwrap();
    let bad = problem(bad, StatusCode::BAD_REQUEST).await;
    assert_eq!(bad["errors"][0]["field"], "filter");
    problem(put(serde_json::json!({ "filter": "" })).await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(put(serde_json::json!({ "level": "debug" })).await.unwrap(), StatusCode::BAD_REQUEST).await;
    let anonymous = app.http.put(app.admin_url("/admin/v1/log-level")).json(&serde_json::json!({ "filter": "info" }));
    problem(anonymous.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;

    let changed: Value =
        put(serde_json::json!({ "filter": "error,shopkeep=error" })).await.unwrap().json().await.unwrap();
    // The filter in force, as the subscriber writes it (directives in its own order).
    let in_force = changed["filter"].as_str().unwrap().to_owned();
    assert!(in_force.contains("shopkeep=error") && in_force.contains("error"), "{changed}");
    assert_eq!(changed["before"].as_str(), Some(before.as_str()));
    let now: Value = admin(app, Method::GET, "/admin/v1/log-level").await.json().await.unwrap();
    assert_eq!(now["filter"].as_str(), Some(in_force.as_str()));
    let restored = put(serde_json::json!({ "filter": before })).await.unwrap();
    assert_eq!(restored.status(), StatusCode::OK);
    // Two changes audited; the refused ones not.
    assert_eq!(audit_actions(app, "log.").await, ["log.level", "log.level"]);
}

fn with_token(config: &mut shopkeep::config::Config) {
    config.admin.token = Some(shopkeep::config::Secret::new(TOKEN));
}

async fn admin(app: &TestApp, method: Method, path: &str) -> reqwest::Response {
    app.http.request(method, app.admin_url(path)).bearer_auth(TOKEN).send().await.unwrap()
}

async fn audit_actions(app: &TestApp, prefix: &str) -> Vec<String> {
    let audit: Value = admin(app, Method::GET, &format!("/admin/v1/audit?action={prefix}")).await.json().await.unwrap();
    audit["data"].as_array().unwrap().iter().map(|entry| entry["action"].as_str().unwrap().to_owned()).collect()
}

async fn a_drained_instance_is_unready_but_serves_until_undrained(app: &TestApp) {
    assert_eq!(app.http.get(app.url("/health/ready")).send().await.unwrap().status(), StatusCode::OK);
    let drained = admin(app, Method::POST, "/admin/v1/drain").await;
    assert_eq!(drained.status(), StatusCode::OK);
    let drained: Value = drained.json().await.unwrap();
    assert_eq!((drained["draining"].as_bool(), drained["shuttingDown"].as_bool()), (Some(true), Some(false)));
    // Twice is the same.
    assert_eq!(admin(app, Method::POST, "/admin/v1/drain").await.status(), StatusCode::OK);

    let public_ready = app.http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(public_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let admin_ready = app.http.get(app.admin_url("/health/ready")).send().await.unwrap();
    assert_eq!(admin_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(admin_ready.json::<Value>().await.unwrap()["status"], "draining");
    // Still serving: live, the API, the admin listener.
    assert_eq!(app.http.get(app.url("/health/live")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.api(Method::GET, "/products").send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(admin(app, Method::GET, "/admin/v1/status").await.status(), StatusCode::OK);

    let undrained: Value = admin(app, Method::POST, "/admin/v1/undrain").await.json().await.unwrap();
    assert_eq!(undrained["draining"], false);
    assert_eq!(app.http.get(app.url("/health/ready")).send().await.unwrap().status(), StatusCode::OK);

    // Refused without the token, and not audited then.
    let anonymous = app.http.post(app.admin_url("/admin/v1/drain")).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let get = admin(app, Method::GET, "/admin/v1/drain").await;
    problem(get, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(audit_actions(app, "instance.").await, ["instance.undrain", "instance.drain", "instance.drain"]);
    let audit: Value = admin(app, Method::GET, "/admin/v1/audit?action=instance.drain").await.json().await.unwrap();
    assert_eq!(audit["data"][1]["target"], format!("instance:{}", app.address));
    assert_eq!(audit["data"][1]["before"]["drained"], false);
}

async fn caches_are_flushed_on_request(app: &TestApp) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "things").await;
    app.add_product(&staff, category["id"].as_str().unwrap(), "lamp", "10.00", 5).await;
    for _ in 0..2 {
        assert_eq!(app.api(Method::GET, "/products/lamp").send().await.unwrap().status(), StatusCode::OK);
    }
    let product_cache = |status: &Value, field: &str| -> u64 {
        let caches = status["caches"].as_array().unwrap();
        let products = caches.iter().find(|cache| cache["name"] == "products" && cache["tier"] == "local").unwrap();
        products[field].as_u64().unwrap()
    };
    let status: Value = admin(app, Method::GET, "/admin/v1/status").await.json().await.unwrap();
    let (hits, misses) = (product_cache(&status, "hits"), product_cache(&status, "misses"));
    assert!(hits >= 1, "the second read was a hit: {status}");
    let flushed: Value = admin(app, Method::POST, "/admin/v1/caches/flush").await.json().await.unwrap();
    let products = flushed["caches"].as_array().unwrap().iter().find(|cache| cache["name"] == "products").unwrap();
    assert!(products["entriesDropped"].as_u64().unwrap() >= 1, "{flushed}");
    // The next read misses: it was dropped.
    assert_eq!(app.api(Method::GET, "/products/lamp").send().await.unwrap().status(), StatusCode::OK);
    let status: Value = admin(app, Method::GET, "/admin/v1/status").await.json().await.unwrap();
    assert_eq!((product_cache(&status, "hits"), product_cache(&status, "misses")), (hits, misses + 1));
    assert_eq!(audit_actions(app, "caches.").await, ["caches.flush"]);
}
