//! Feature flags end to end: the admin routes and their failure paths, the audit log, the
//! shop's own flags (sign-ups, guest checkout, fuzzy search, login challenges, maintenance) and
//! a change on one instance reaching another within the refresh bound.

use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::helpers::{Backend, PASSWORD, TestApp, error_fields, problem, spawn_app_with};

const TOKEN: &str = "an-admin-token-of-length";

crate::both_backends!(configured configure:
    flags_are_created_changed_rolled_out_and_deleted_with_audit,
    flag_routes_failure_paths,
    maintenance_refuses_writes_but_not_reads_and_rules_can_exempt_staff,
    signups_and_guest_checkout_can_be_closed,
    fuzzy_search_can_be_switched_off,
    a_flag_changed_on_one_instance_is_evaluated_by_another_within_the_bound,
);

fn configure(config: &mut shopkeep::config::Config) {
    config.admin.token = Some(shopkeep::config::Secret::new(TOKEN));
    config.flags.refresh_interval_ms = 200;
}

fn admin(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.http.request(method, app.admin_url(path)).bearer_auth(TOKEN)
}

async fn put_flag(app: &TestApp, name: &str, definition: Value) -> Value {
    let response = admin(app, Method::PUT, &format!("/admin/v1/flags/{name}")).json(&definition).send().await.unwrap();
    assert!(response.status().is_success(), "{name}: {}", response.text().await.unwrap());
    response.json().await.unwrap()
}

fn switch(enabled: bool) -> Value {
    json!({ "kind": "boolean", "enabled": enabled, "default": true })
}

async fn flags_are_created_changed_rolled_out_and_deleted_with_audit(app: &TestApp) {
    let created = admin(app, Method::PUT, "/admin/v1/flags/new_checkout")
        .header("x-shopkeep-actor", "cli:ada")
        .header("x-request-id", "req-create-1")
        .json(&json!({ "kind": "boolean", "enabled": true, "default": false, "description": "the new checkout" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["etag"], "\"1\"");
    let flag: Value = created.json().await.unwrap();
    assert_eq!(
        (flag["name"].as_str(), flag["version"].as_i64(), flag["default"].as_bool()),
        (Some("new_checkout"), Some(1), Some(false))
    );

    // A conditional replace with the ETag read; the old ETag no longer matches.
    let replaced = admin(app, Method::PUT, "/admin/v1/flags/new_checkout")
        .header("if-match", "\"1\"")
        .json(&json!({
            "kind": "boolean", "enabled": true, "default": false,
            "rules": [{ "when": [{ "type": "roles", "roles": ["staff", "admin"] }], "then": true }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    assert_eq!(replaced.headers()["etag"], "\"2\"");
    let stale =
        admin(app, Method::PUT, "/admin/v1/flags/new_checkout").header("if-match", "\"1\"").json(&switch(false));
    problem(stale.send().await.unwrap(), StatusCode::PRECONDITION_FAILED).await;

    // Rolled out to 40%: the roles rule stays first, the rollout follows it.
    let rolled = admin(app, Method::PUT, "/admin/v1/flags/new_checkout/rollout").json(&json!({ "percentage": 40 }));
    let rolled: Value = rolled.send().await.unwrap().json().await.unwrap();
    assert_eq!(rolled["version"], 3);
    assert_eq!(rolled["rules"][1], json!({ "when": [{ "type": "rollout", "percentage": 40 }], "then": true }));
    let raised = admin(app, Method::PUT, "/admin/v1/flags/new_checkout/rollout").json(&json!({ "percentage": 60 }));
    let raised: Value = raised.send().await.unwrap().json().await.unwrap();
    assert_eq!(raised["rules"].as_array().unwrap().len(), 2, "the same rollout rule, raised");

    // The instance evaluates what was stored: staff by rule, others by their bucket.
    let evaluate = |query: &str| {
        let path = format!("/admin/v1/flags/new_checkout/evaluate?{query}");
        async move { admin(app, Method::GET, &path).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(evaluate(&format!("userId={}&role=staff", uuid::Uuid::nil())).await["value"], true);
    let buckets: Vec<bool> = futures::future::join_all(
        (0..200)
            .map(|n| async move { evaluate(&format!("anonymousId=visitor-{n}")).await["value"].as_bool().unwrap() }),
    )
    .await;
    let inside = buckets.iter().filter(|on| **on).count();
    assert!((90..=150).contains(&inside), "60% of 200 visitors, got {inside}");
    assert!(evaluate("").await["value"] == false, "nobody to bucket: the default");
    let unknown = admin(app, Method::GET, "/admin/v1/flags/nothing_here/evaluate").send().await.unwrap();
    assert_eq!(unknown.json::<Value>().await.unwrap()["value"], Value::Null);

    let listed: Value = admin(app, Method::GET, "/admin/v1/flags").send().await.unwrap().json().await.unwrap();
    assert_eq!((listed["total"].as_u64(), listed["snapshotLoaded"].as_bool()), (Some(1), Some(true)));
    let deleted = admin(app, Method::DELETE, "/admin/v1/flags/new_checkout").send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(admin(app, Method::GET, "/admin/v1/flags/new_checkout").send().await.unwrap(), StatusCode::NOT_FOUND).await;

    // Every change is audited, newest first, with its actor and request id.
    let audit: Value =
        admin(app, Method::GET, "/admin/v1/audit?target=flag:new_checkout").send().await.unwrap().json().await.unwrap();
    let actions: Vec<&str> =
        audit["data"].as_array().unwrap().iter().map(|entry| entry["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["flag.delete", "flag.update", "flag.update", "flag.update", "flag.create"]);
    let first = &audit["data"][4];
    assert_eq!(
        (first["actor"].as_str(), first["requestId"].as_str()),
        (Some("admin-token (cli:ada)"), Some("req-create-1"))
    );
    assert_eq!(first["before"], Value::Null);
    assert_eq!(first["after"]["description"], "the new checkout");
    assert_eq!(audit["data"][3]["before"]["version"], 1);
    let paged: Value = admin(app, Method::GET, "/admin/v1/audit?action=flag.update&limit=2&page=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((paged["total"].as_u64(), paged["data"].as_array().unwrap().len()), (Some(3), 1));
}

async fn flag_routes_failure_paths(app: &TestApp) {
    // Without the admin token: 401, reads and writes alike.
    let anonymous = app.http.get(app.admin_url("/admin/v1/flags")).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let wrong =
        app.http.put(app.admin_url("/admin/v1/flags/x")).bearer_auth("the-wrong-admin-token").json(&switch(true));
    problem(wrong.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let audit = app.http.get(app.admin_url("/admin/v1/audit")).send().await.unwrap();
    problem(audit, StatusCode::UNAUTHORIZED).await;
    // The public listener has no flag routes.
    assert_eq!(app.http.get(app.url("/admin/v1/flags")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let bad_name = admin(app, Method::PUT, "/admin/v1/flags/Not%20A%20Name").json(&switch(true)).send().await.unwrap();
    assert_eq!(error_fields(&problem(bad_name, StatusCode::BAD_REQUEST).await), ["name"]);
    let invalid = admin(app, Method::PUT, "/admin/v1/flags/checkout")
        .json(&json!({
            "kind": "boolean", "enabled": true, "default": "blue",
            "rules": [{ "when": [{ "type": "rollout", "percentage": 120 }], "then": true },
                      { "when": [{ "type": "users", "ids": [] }], "then": false }]
        }))
        .send()
        .await
        .unwrap();
    let fields = error_fields(&problem(invalid, StatusCode::BAD_REQUEST).await);
    assert_eq!(fields, ["default", "rules[0].when[0].percentage", "rules[1].when[0].ids"]);
    let unknown_field = admin(app, Method::PUT, "/admin/v1/flags/checkout")
        .json(&json!({ "kind": "boolean", "enabled": true, "default": true, "colour": "red" }))
        .send()
        .await
        .unwrap();
    problem(unknown_field, StatusCode::BAD_REQUEST).await;
    let not_json = admin(app, Method::PUT, "/admin/v1/flags/checkout").body("enabled").send().await.unwrap();
    problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let missing_if_match =
        admin(app, Method::PUT, "/admin/v1/flags/checkout").header("if-match", "\"3\"").json(&switch(true));
    problem(missing_if_match.send().await.unwrap(), StatusCode::PRECONDITION_FAILED).await;
    let garbled_if_match =
        admin(app, Method::PUT, "/admin/v1/flags/checkout").header("if-match", "W/\"1\"").json(&switch(true));
    problem(garbled_if_match.send().await.unwrap(), StatusCode::PRECONDITION_FAILED).await;

    for (method, path) in [
        (Method::GET, "/admin/v1/flags/absent"),
        (Method::DELETE, "/admin/v1/flags/absent"),
        (Method::PUT, "/admin/v1/flags/absent/rollout"),
    ] {
        let response = admin(app, method.clone(), path).json(&json!({ "percentage": 5 })).send().await.unwrap();
        problem(response, StatusCode::NOT_FOUND).await;
    }
    put_flag(
        app,
        "colour",
        json!({ "kind": "variant", "variants": ["red", "blue"], "enabled": true, "default": "blue" }),
    )
    .await;
    let not_boolean = admin(app, Method::PUT, "/admin/v1/flags/colour/rollout").json(&json!({ "percentage": 5 }));
    problem(not_boolean.send().await.unwrap(), StatusCode::CONFLICT).await;
    let too_much = admin(app, Method::PUT, "/admin/v1/flags/colour/rollout").json(&json!({ "percentage": 101 }));
    assert_eq!(error_fields(&problem(too_much.send().await.unwrap(), StatusCode::BAD_REQUEST).await), ["percentage"]);
    let stale_delete =
        admin(app, Method::DELETE, "/admin/v1/flags/colour").header("if-match", "\"9\"").send().await.unwrap();
    problem(stale_delete, StatusCode::PRECONDITION_FAILED).await;
    let bad_context =
        admin(app, Method::GET, "/admin/v1/flags/colour/evaluate?userId=me&role=king").send().await.unwrap();
    assert_eq!(error_fields(&problem(bad_context, StatusCode::BAD_REQUEST).await), ["userId", "role"]);
    let bad_audit =
        admin(app, Method::GET, "/admin/v1/audit?since=yesterday&limit=1000&colour=1").send().await.unwrap();
    problem(bad_audit, StatusCode::BAD_REQUEST).await;
    let bad_since = admin(app, Method::GET, "/admin/v1/audit?since=yesterday&limit=1000").send().await.unwrap();
    assert_eq!(error_fields(&problem(bad_since, StatusCode::BAD_REQUEST).await), ["limit", "since"]);
    // `If-Match: *` needs the flag to exist; a list matches any of its versions.
    let colour = json!({ "kind": "variant", "variants": ["red", "blue"], "enabled": false, "default": "red" });
    let any =
        admin(app, Method::PUT, "/admin/v1/flags/colour").header("if-match", "*").json(&colour).send().await.unwrap();
    assert_eq!(any.headers()["etag"], "\"2\"");
    let absent = admin(app, Method::PUT, "/admin/v1/flags/absent").header("if-match", "*").json(&switch(true));
    problem(absent.send().await.unwrap(), StatusCode::PRECONDITION_FAILED).await;
    let listed = admin(app, Method::PUT, "/admin/v1/flags/colour").header("if-match", "\"9\", \"2\"").json(&colour);
    assert_eq!(listed.send().await.unwrap().headers()["etag"], "\"3\"");
    // Nothing refused was recorded.
    let audit: Value = admin(app, Method::GET, "/admin/v1/audit").send().await.unwrap().json().await.unwrap();
    assert_eq!(audit["total"], 3, "{audit}");
}

async fn maintenance_refuses_writes_but_not_reads_and_rules_can_exempt_staff(app: &TestApp) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let customer = app.signed_in("cat@example.com", Role::Customer).await;
    let category = app.add_category(&staff, "things").await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), "lamp", "10.00", 5).await;
    put_flag(
        app,
        "maintenance",
        json!({ "kind": "boolean", "enabled": true, "default": true,
                "rules": [{ "when": [{ "type": "attribute", "name": "staff", "in": ["true"] }], "then": false }] }),
    )
    .await;
    let add_to_cart = customer
        .put(app.url(&format!("/api/v1/carts/current/items/{}", product["id"].as_str().unwrap())))
        .json(&json!({ "quantity": 1 }));
    let refused = add_to_cart.send().await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "60");
    let body = problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["detail"].as_str().unwrap().contains("maintenance"), "{body}");
    let signup = app.api(Method::POST, "/users").json(&json!({ "email": "new@example.com", "password": PASSWORD }));
    problem(signup.send().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
    // Signing in keeps working (so exempted staff can get in), and so does signing out.
    let sign_in = app.new_client().post(app.url("/api/v1/sessions"));
    let sign_in = sign_in.json(&json!({ "email": "cat@example.com", "password": PASSWORD })).send().await.unwrap();
    assert_eq!(sign_in.status(), StatusCode::CREATED);
    // Reads go on, for everyone; staff are exempt by the rule and keep working.
    assert_eq!(app.api(Method::GET, "/products").send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(customer.get(app.url("/api/v1/carts/current")).send().await.unwrap().status(), StatusCode::OK);
    let patch = staff
        .patch(app.url(&format!("/api/v1/products/{}", product["id"].as_str().unwrap())))
        .json(&json!({ "stock": 7 }));
    assert_eq!(patch.send().await.unwrap().status(), StatusCode::OK);
    // Switched off: customers write again.
    put_flag(app, "maintenance", switch(false)).await;
    assert_eq!(add_to_cart_again(app, &customer, &product).await, StatusCode::OK);
}

async fn add_to_cart_again(app: &TestApp, customer: &Client, product: &Value) -> StatusCode {
    let path = format!("/api/v1/carts/current/items/{}", product["id"].as_str().unwrap());
    customer.put(app.url(&path)).json(&json!({ "quantity": 1 })).send().await.unwrap().status()
}

async fn signups_and_guest_checkout_can_be_closed(app: &TestApp) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "things").await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), "lamp", "10.00", 5).await;
    let guest = app.new_client();
    assert_eq!(guest.post(app.url("/api/v1/guests")).send().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(add_to_cart_again(app, &guest, &product).await, StatusCode::OK);

    put_flag(app, "signups", switch(false)).await;
    let signup = app.api(Method::POST, "/users").json(&json!({ "email": "new@example.com", "password": PASSWORD }));
    let closed = problem(signup.send().await.unwrap(), StatusCode::FORBIDDEN).await;
    assert!(closed["detail"].as_str().unwrap().contains("sign-ups are closed"), "{closed}");
    let upgrade = guest
        .post(app.url("/api/v1/users/me/upgrade"))
        .json(&json!({ "email": "g@example.com", "password": PASSWORD }));
    problem(upgrade.send().await.unwrap(), StatusCode::FORBIDDEN).await;
    put_flag(app, "signups", switch(true)).await;

    // Guest checkout closed for shipments outside Germany only: by the shipping country.
    put_flag(
        app,
        "guest_checkout",
        json!({ "kind": "boolean", "enabled": true, "default": false,
                "rules": [{ "when": [{ "type": "attribute", "name": "country", "in": ["DE"] }], "then": true }] }),
    )
    .await;
    problem(app.api(Method::POST, "/guests").send().await.unwrap(), StatusCode::FORBIDDEN).await;
    let address = |country: &str| json!({ "shippingAddress": { "name": "Gus Guest", "line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": country } });
    let checkout = |key: &'static str, body: Value| {
        guest.post(app.url("/api/v1/orders")).header("idempotency-key", key).json(&body).send()
    };
    let refused = problem(checkout("k-1", address("FR")).await.unwrap(), StatusCode::FORBIDDEN).await;
    assert!(refused["detail"].as_str().unwrap().contains("guest checkout is off"), "{refused}");
    assert_eq!(checkout("k-2", address("de")).await.unwrap().status(), StatusCode::CREATED);
    // Signed-up customers are not guests: the flag does not apply to them.
    let customer = app.signed_in("cat@example.com", Role::Customer).await;
    assert_eq!(add_to_cart_again(app, &customer, &product).await, StatusCode::OK);
    let order = customer.post(app.url("/api/v1/orders")).header("idempotency-key", "k-3").json(&address("FR"));
    assert_eq!(order.send().await.unwrap().status(), StatusCode::CREATED);
}

async fn fuzzy_search_can_be_switched_off(app: &TestApp) {
    let staff = app.signed_in("clerk@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "laptops").await;
    let add = staff.post(app.url("/api/v1/products")).json(&json!({
        "name": "Gaming Laptop", "price": "1200.00", "currency": "EUR", "stock": 3, "categoryId": category["id"]
    }));
    assert_eq!(add.send().await.unwrap().status(), StatusCode::CREATED);
    let search = |query: &'static str| async move {
        let response = app.api(Method::GET, &format!("/products?q={query}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()
    };
    let suggestions = |query: &'static str| async move {
        let path = format!("/products/suggestions?q={query}");
        let body: Value = app.api(Method::GET, &path).send().await.unwrap().json().await.unwrap();
        body["products"].as_array().unwrap().len()
    };
    assert_eq!(search("labtop").await["total"], 1, "typos are corrected by default");
    // A complete word (the text ends after it) is typo-tolerant in suggestions.
    assert_eq!(suggestions("gamng%20").await, 1);
    put_flag(app, "fuzzy_search", switch(false)).await;
    let exact = search("labtop").await;
    assert_eq!((exact["total"].as_u64(), exact["search"]["typoTolerant"].as_bool()), (Some(0), Some(false)));
    assert_eq!(search("laptop").await["total"], 1, "exact words still match");
    assert_eq!(suggestions("gamng%20").await, 0, "no typo tolerance in suggestions either");
    assert_eq!(suggestions("gam").await, 1, "prefixes still complete");
    put_flag(app, "fuzzy_search", switch(true)).await;
    assert_eq!(search("labtop").await["total"], 1);
    let cache_control = |path: &'static str| async move {
        let response = app.api(Method::GET, path).send().await.unwrap();
        response.headers()["cache-control"].to_str().unwrap().to_owned()
    };
    assert!(cache_control("/products?q=laptop").await.starts_with("public"));
    // Rolled out to some callers only: answers differ by caller, so shared caches keep none.
    let rollout = json!({ "kind": "boolean", "enabled": true, "default": false,
                          "rules": [{ "when": [{ "type": "rollout", "percentage": 50 }], "then": true }] });
    put_flag(app, "fuzzy_search", rollout).await;
    assert_eq!(cache_control("/products?q=laptop").await, "private, no-cache");
    assert_eq!(cache_control("/products/suggestions?q=lap").await, "private, no-cache");
    assert!(cache_control("/products").await.starts_with("public"), "the plain list does not search");
}

async fn a_flag_changed_on_one_instance_is_evaluated_by_another_within_the_bound(app: &TestApp) {
    let peer = app.spawn_peer(|_| {}).await;
    // An anonymous checkout: 401 normally, 503 once the peer is in maintenance.
    let write_on_peer = || peer.api(Method::POST, "/orders").json(&json!({}));
    assert_eq!(write_on_peer().send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "not in maintenance");
    let changed = Instant::now();
    put_flag(app, "maintenance", switch(true)).await;
    loop {
        if write_on_peer().send().await.unwrap().status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(changed.elapsed() < Duration::from_secs(3), "the peer never saw the change");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peer_status: Value =
        peer.http.get(peer.admin_url("/admin/v1/flags")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(peer_status["items"][0]["name"], "maintenance");
    peer.stop().await;
}

/// The new-device challenge for staff is on by default and the `login_challenges` flag turns it
/// off (a kill switch for a broken mail path); customers are never challenged.
/// Flag writes are state-changing admin actions: refused (403) while no admin token is set, even
/// on loopback; reading them stays open there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_flags_are_readable_but_not_writable() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let put = app.http.put(app.admin_url("/admin/v1/flags/maintenance")).json(&switch(true)).send().await.unwrap();
    let refused = problem(put, StatusCode::FORBIDDEN).await;
    assert!(refused["detail"].as_str().unwrap().contains("admin.token"), "{refused}");
    let listed = app.http.get(app.admin_url("/admin/v1/flags")).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_challenges_can_be_switched_off_by_their_flag() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app_with(backend, |config| {
            configure(config);
            config.accounts.login_challenge_roles = vec!["staff".into()];
        })
        .await;
        app.create_user("sam@example.com", Role::Staff).await;
        let log_in = || {
            app.new_client()
                .post(app.url("/api/v1/sessions"))
                .json(&json!({ "email": "sam@example.com", "password": PASSWORD }))
                .send()
        };
        assert_eq!(log_in().await.unwrap().status(), StatusCode::ACCEPTED, "{backend:?}: challenged");
        put_flag(&app, "login_challenges", switch(false)).await;
        assert_eq!(log_in().await.unwrap().status(), StatusCode::CREATED, "{backend:?}: signed in directly");
        app.stop().await;
    }
}
