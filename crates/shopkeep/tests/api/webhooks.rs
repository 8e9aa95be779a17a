//! Merchant webhooks end to end: a real receiver (axum on 127.0.0.1:0) checks every signature;
//! order events arrive once per subscribed endpoint, failed attempts are retried until they
//! succeed, an endpoint that keeps failing is disabled (its deliveries abandoned) and can be
//! re-enabled, an open breaker sends nothing and counts no attempt, a transition that does not
//! happen enqueues no event, the default URL rules refuse non-public and insecure URLs, and the
//! admin API's failure paths — on both backends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, Mac as _};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::accounts::Role;

use crate::helpers::{Backend, TestApp, error_fields, problem, spawn_app_with};

/// One test per backend for each function, on an app configured for webhooks to 127.0.0.1.
macro_rules! with_webhooks {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::run(super::$name, super::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::run(super::$name, super::Backend::Postgres).await;
                }
            }
        )*
    };
}

with_webhooks!(
    order_events_arrive_signed_once_per_subscribed_endpoint,
    failed_attempts_are_retried_until_the_receiver_recovers,
    persistently_failing_endpoints_are_disabled_and_can_be_re_enabled,
    transitions_that_do_not_happen_enqueue_no_event,
    webhook_endpoint_failure_paths,
    an_open_breaker_sends_nothing_and_counts_no_attempt
);

/// With the default webhook configuration (https only, no private networks).
mod default_url_rules {
    #[tokio::test]
    async fn sqlite() {
        super::urls_must_be_public_https_by_default(super::Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres() {
        super::urls_must_be_public_https_by_default(super::Backend::Postgres).await;
    }
}

const TOKEN: &str = "an-admin-token-of-length";

async fn run<F: AsyncFnOnce(&TestApp)>(test: F, backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.admin.token = Some(shopkeep::config::Secret::new(TOKEN));
        config.webhooks.allow_insecure_urls = true;
        config.webhooks.allow_private_networks = true;
        config.webhooks.max_endpoints = 3;
        // Three attempts, about 0.5–1 s and 1–2 s apart (jobs.retry_base_secs = 1 in tests).
        config.webhooks.max_attempts = 3;
        config.webhooks.disable_after_failures = 3;
    })
    .await;
    test(&app).await;
    app.stop().await;
}

// === the receiver ===

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    event_id: String,
    delivery_id: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP receiver on 127.0.0.1:0 that records requests and answers with the scripted
/// statuses, then with `fallback`.
#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    fallback: Arc<Mutex<u16>>,
}

impl Receiver {
    async fn start() -> Self {
        let receiver = Self {
            url: String::new(),
            received: Arc::default(),
            script: Arc::default(),
            fallback: Arc::new(Mutex::new(200)),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let header =
                        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    state.received.lock().unwrap().push(Received {
                        event: header("shopkeep-event"),
                        event_id: header("shopkeep-event-id"),
                        delivery_id: header("shopkeep-delivery-id"),
                        signature: header("shopkeep-signature"),
                        body: body.to_vec(),
                    });
                    let status = state.script.lock().unwrap().pop_front().unwrap_or(*state.fallback.lock().unwrap());
                    (AxumStatus::from_u16(status).unwrap(), "receiver says hi")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{address}/hooks"), ..receiver }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn answer(&self, statuses: &[u16], then: u16) {
        self.script.lock().unwrap().extend(statuses);
        *self.fallback.lock().unwrap() = then;
    }
}

/// Checks `t=…,v1=…` as a receiver would: HMAC-SHA256 of `"{t}.{body}"` under the secret.
fn signature_is_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = Some(value.to_owned()),
            Some(("v1", value)) => signature = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else { return false };
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - timestamp.parse::<i64>().unwrap_or(0);
    if !(-300..=300).contains(&age) {
        return false;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

// === helpers ===

/// Polls `condition` every 50 ms for up to 20 s.
async fn eventually<T>(what: &str, mut condition: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(value) = condition().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

async fn register(app: &TestApp, admin: &Client, url: &str, events: &[&str]) -> Value {
    let response = admin
        .post(app.url("/api/v1/webhook-endpoints"))
        .json(&json!({ "url": url, "events": events, "description": "ERP" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/webhook-endpoints/{}", body["id"].as_str().unwrap()));
    assert!(body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(body["enabled"], true);
    body
}

async fn deliveries(app: &TestApp, admin: &Client, endpoint: &Value, query: &str) -> Value {
    let id = endpoint["id"].as_str().unwrap();
    let response =
        admin.get(app.url(&format!("/api/v1/webhook-endpoints/{id}/deliveries{query}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn endpoint_now(app: &TestApp, admin: &Client, endpoint: &Value) -> Value {
    let id = endpoint["id"].as_str().unwrap();
    admin.get(app.url(&format!("/api/v1/webhook-endpoints/{id}"))).send().await.unwrap().json().await.unwrap()
}

/// A staff client, and a customer who has just bought one product (test-mode payments
/// approve at once): the paid order.
async fn paid_order(app: &TestApp, buyer_email: &str, staff: Option<&Client>) -> Value {
    let staff = match staff {
        Some(staff) => staff.clone(),
        None => app.signed_in("staff@example.com", Role::Staff).await,
    };
    let slug = format!("p-{}", uuid::Uuid::new_v4().simple());
    let category = app.add_category(&staff, &slug).await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), &slug, "9.99", 10).await;
    let buyer = app.signed_in(buyer_email, Role::Customer).await;
    let product_id = product["id"].as_str().unwrap();
    let put = buyer
        .put(app.url(&format!("/api/v1/carts/current/items/{product_id}")))
        .json(&json!({ "quantity": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let address = json!({ "name": "Ada", "line1": "1 Road", "city": "London", "postalCode": "N1", "country": "GB" });
    let response = buyer
        .post(app.url("/api/v1/orders"))
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({ "shippingAddress": address }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    app.http.get(app.admin_url(path)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap()
}

/// Jobs of `kind` in `state`, through the admin listener.
async fn job_count(app: &TestApp, kind: &str, state: &str) -> u64 {
    admin_get(app, &format!("/admin/v1/jobs?kind={kind}&state={state}")).await["total"].as_u64().unwrap()
}

// === the tests ===

async fn order_events_arrive_signed_once_per_subscribed_endpoint(app: &TestApp) {
    let admin = app.signed_in("admin@example.com", Role::Admin).await;
    let receiver = Receiver::start().await;
    let other = Receiver::start().await;
    let subscribed = register(app, &admin, &receiver.url, &["order.paid", "order.refunded"]).await;
    let secret = subscribed["secret"].as_str().unwrap().to_owned();
    let unsubscribed = register(app, &admin, &other.url, &["order.fulfilled"]).await;
    let shown = endpoint_now(app, &admin, &subscribed).await;
    assert!(shown.get("secret").is_none(), "the secret is shown only once");
    assert_eq!(shown["events"], json!(["order.paid", "order.refunded"]));

    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let order = paid_order(app, "ada@example.com", Some(&staff)).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let paid = eventually("order.paid delivered", async || receiver.received().first().cloned()).await;
    assert_eq!(paid.event, "order.paid");
    assert!(signature_is_valid(&secret, &paid.signature, &paid.body), "valid signature: {}", paid.signature);
    assert!(!signature_is_valid("whsec_wrong", &paid.signature, &paid.body));
    let body = paid.json();
    assert_eq!(body["id"], paid.event_id.as_str(), "the event id header names the body's event");
    assert_eq!(body["type"], "order.paid");
    assert!(body["createdAt"].is_string());
    assert_eq!(body["data"]["order"]["id"], order_id.as_str());
    assert_eq!(body["data"]["order"]["total"], order["total"], "the order as GET /orders/{{id}} shows it");
    let log = eventually("the delivery recorded as succeeded", async || {
        let log = deliveries(app, &admin, &subscribed, "").await;
        (log["data"][0]["state"] == "succeeded").then_some(log)
    })
    .await;
    assert_eq!(log["total"], 1);
    let delivery = &log["data"][0];
    assert_eq!((delivery["attempts"].as_u64(), delivery["lastStatus"].as_u64()), (Some(1), Some(200)));
    assert_eq!(delivery["id"], paid.delivery_id.as_str());
    assert_eq!(delivery["eventId"], paid.event_id.as_str());
    assert_eq!(delivery["payload"], body);

    // The per-endpoint breaker is on the admin status page.
    let status = admin_get(app, "/admin/v1/status").await;
    let breaker = format!("webhook-{}", subscribed["id"].as_str().unwrap());
    assert!(status["breakers"].as_array().unwrap().iter().any(|b| b["name"] == breaker.as_str()), "{status}");

    let refund = staff.post(app.url(&format!("/api/v1/orders/{order_id}/refund"))).send().await.unwrap();
    assert_eq!(refund.status(), StatusCode::ACCEPTED);
    let refunded = eventually("order.refunded delivered", async || receiver.received().get(1).cloned()).await;
    assert_eq!(refunded.event, "order.refunded");
    assert!(signature_is_valid(&secret, &refunded.signature, &refunded.body));
    assert_ne!(refunded.event_id, paid.event_id);
    assert_eq!(refunded.json()["data"]["order"]["status"], "refunded");
    // Each event once; the other endpoint, subscribed to neither, has no delivery at all (both
    // dispatches are done: they created the deliveries above).
    let events: Vec<String> = receiver.received().iter().map(|r| r.event.clone()).collect();
    assert_eq!(events, ["order.paid", "order.refunded"]);
    assert_eq!(deliveries(app, &admin, &unsubscribed, "").await["total"], 0);
    assert!(other.received().is_empty());
    // The refund's dispatch job is acknowledged just after its deliveries are created.
    eventually("both dispatch jobs acknowledged", async || {
        (job_count(app, "webhooks.dispatch", "succeeded").await == 2).then_some(())
    })
    .await;
}

async fn failed_attempts_are_retried_until_the_receiver_recovers(app: &TestApp) {
    let admin = app.signed_in("admin@example.com", Role::Admin).await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 503], 204);
    let endpoint = register(app, &admin, &receiver.url, &["order.paid"]).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    paid_order(app, "ada@example.com", None).await;

    let failed = eventually("a failed attempt in the log", async || {
        let log = deliveries(app, &admin, &endpoint, "?state=failed").await;
        (log["total"] == 1).then(|| log["data"][0].clone())
    })
    .await;
    assert_eq!(failed["lastStatus"], 500);
    assert!(failed["lastError"].as_str().unwrap().contains("500"), "{failed}");
    assert!(failed["lastAttemptAt"].is_string());
    let succeeded = eventually("the delivery succeeds on its third attempt", async || {
        let log = deliveries(app, &admin, &endpoint, "?state=succeeded").await;
        (log["total"] == 1).then(|| log["data"][0].clone())
    })
    .await;
    assert_eq!((succeeded["attempts"].as_u64(), succeeded["lastStatus"].as_u64()), (Some(3), Some(204)));
    let received = receiver.received();
    assert_eq!(received.len(), 3, "two failures, one success");
    for request in &received {
        assert_eq!(request.event_id, received[0].event_id, "one event id across retries");
        assert_eq!(request.delivery_id, received[0].delivery_id);
        assert!(signature_is_valid(&secret, &request.signature, &request.body));
    }
    let after = endpoint_now(app, &admin, &endpoint).await;
    assert_eq!((after["consecutiveFailures"].as_u64(), after["enabled"].as_bool()), (Some(0), Some(true)));
}

async fn persistently_failing_endpoints_are_disabled_and_can_be_re_enabled(app: &TestApp) {
    let admin = app.signed_in("admin@example.com", Role::Admin).await;
    let receiver = Receiver::start().await;
    receiver.answer(&[], 500);
    let endpoint = register(app, &admin, &receiver.url, &["order.paid", "order.cancelled"]).await;
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let first = paid_order(app, "ada@example.com", Some(&staff)).await;
    // A second event while the first is failing: abandoned when the endpoint is disabled, if
    // its own attempts have not run out first.
    let cancel = staff.post(app.url(&format!("/api/v1/orders/{}/cancel", first["id"].as_str().unwrap())));
    assert_eq!(cancel.send().await.unwrap().status(), StatusCode::OK);

    let disabled = eventually("the endpoint disabled", async || {
        let now = endpoint_now(app, &admin, &endpoint).await;
        (now["enabled"] == false).then_some(now)
    })
    .await;
    assert!(disabled["disabledReason"].as_str().unwrap().contains("automatically"), "{disabled}");
    assert!(disabled["disabledAt"].is_string());
    let log = eventually("every delivery abandoned, none left to run", async || {
        let log = deliveries(app, &admin, &endpoint, "").await;
        let live = job_count(app, "webhooks.deliver", "queued").await
            + job_count(app, "webhooks.deliver", "failed").await
            + job_count(app, "webhooks.deliver", "running").await;
        (log["total"] == 2 && log["data"].as_array().unwrap().iter().all(|d| d["state"] == "abandoned") && live == 0)
            .then_some(log)
    })
    .await;
    let attempted: u64 = log["data"].as_array().unwrap().iter().map(|d| d["attempts"].as_u64().unwrap()).sum();
    // An attempt in flight while the endpoint was being disabled is sent but not recorded (its
    // delivery is already abandoned): at most one per delivery. Nothing is sent afterwards.
    let sent = receiver.received().len() as u64;
    assert!((attempted..=attempted + 2).contains(&sent), "sent {sent}, recorded {attempted}");
    assert!(attempted <= 6);

    // Re-enabled: the failure count starts over; an abandoned delivery can be retried.
    receiver.answer(&[], 200);
    let id = endpoint["id"].as_str().unwrap();
    let enabled: Value = admin
        .patch(app.url(&format!("/api/v1/webhook-endpoints/{id}")))
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(enabled["enabled"], true);
    assert_eq!((enabled["consecutiveFailures"].as_u64(), &enabled["disabledReason"]), (Some(0), &Value::Null));
    let delivery_id = log["data"][0]["id"].as_str().unwrap();
    let retry = admin
        .post(app.url(&format!("/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::ACCEPTED);
    let retried: Value = retry.json().await.unwrap();
    assert_eq!(retried["state"], "pending");
    eventually("the retried delivery succeeds", async || {
        let log = deliveries(app, &admin, &endpoint, "?state=succeeded").await;
        (log["total"] == 1 && log["data"][0]["id"] == delivery_id).then_some(())
    })
    .await;
    let again = admin
        .post(app.url(&format!("/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry")))
        .send()
        .await
        .unwrap();
    problem(again, StatusCode::CONFLICT).await;

    // An admin disabling it abandons what is pending at once.
    let disable = admin
        .patch(app.url(&format!("/api/v1/webhook-endpoints/{id}")))
        .json(&json!({ "enabled": false }))
        .send()
        .await
        .unwrap();
    let disabled: Value = disable.json().await.unwrap();
    assert_eq!(
        (disabled["enabled"].as_bool(), disabled["disabledReason"].as_str()),
        (Some(false), Some("disabled by an admin"))
    );
    let other = log["data"][1]["id"].as_str().unwrap();
    let refused =
        admin.post(app.url(&format!("/api/v1/webhook-endpoints/{id}/deliveries/{other}/retry"))).send().await.unwrap();
    assert!(problem(refused, StatusCode::CONFLICT).await["detail"].as_str().unwrap().contains("disabled"));
}

async fn transitions_that_do_not_happen_enqueue_no_event(app: &TestApp) {
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let order = paid_order(app, "ada@example.com", Some(&staff)).await;
    let id = order["id"].as_str().unwrap();
    let dispatches = async || {
        let all = admin_get(app, "/admin/v1/jobs?kind=webhooks.dispatch&limit=100").await;
        all["total"].as_u64().unwrap()
    };
    assert_eq!(dispatches().await, 1, "paid: one event");
    let fulfil = staff.post(app.url(&format!("/api/v1/orders/{id}/fulfil"))).send().await.unwrap();
    assert_eq!(fulfil.status(), StatusCode::OK);
    assert_eq!(dispatches().await, 2, "fulfilled: one more");
    // Illegal transitions are refused and enqueue nothing.
    for action in ["fulfil", "cancel"] {
        let refused = staff.post(app.url(&format!("/api/v1/orders/{id}/{action}"))).send().await.unwrap();
        problem(refused, StatusCode::CONFLICT).await;
    }
    assert_eq!(dispatches().await, 2);
    // Without endpoints, dispatch does nothing (and succeeds).
    eventually("both dispatches ran", async || {
        (job_count(app, "webhooks.dispatch", "succeeded").await == 2).then_some(())
    })
    .await;
    assert_eq!(job_count(app, "webhooks.deliver", "queued").await, 0);
}

async fn an_open_breaker_sends_nothing_and_counts_no_attempt(app: &TestApp) {
    let admin = app.signed_in("admin@example.com", Role::Admin).await;
    let receiver = Receiver::start().await;
    let endpoint = register(app, &admin, &receiver.url, &["order.paid", "order.cancelled"]).await;
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let order = paid_order(app, "ada@example.com", Some(&staff)).await;
    // The first delivery makes the endpoint's client, and so its breaker.
    eventually("order.paid delivered", async || receiver.received().first().cloned()).await;
    let breaker = format!("webhook-{}", endpoint["id"].as_str().unwrap());
    let forced = app
        .http
        .post(app.admin_url(&format!("/admin/v1/breakers/{breaker}/force-open")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), StatusCode::OK);

    let cancel = staff.post(app.url(&format!("/api/v1/orders/{}/cancel", order["id"].as_str().unwrap())));
    assert_eq!(cancel.send().await.unwrap().status(), StatusCode::OK);
    let refused = eventually("the cancellation's delivery refused by the breaker", async || {
        let log = deliveries(app, &admin, &endpoint, "?state=pending").await;
        let delivery = log["data"][0].clone();
        delivery["lastError"].as_str().is_some_and(|error| error.contains("circuit breaker")).then_some(delivery)
    })
    .await;
    assert_eq!(refused["attempts"], 0, "{refused}");
    assert_eq!(refused["lastAttemptAt"], Value::Null);
    // Its job waits for the breaker without using an attempt (a forced-open breaker names no
    // time: it asks again in 30 s).
    let jobs = admin_get(app, "/admin/v1/jobs?kind=webhooks.deliver&state=failed").await;
    assert_eq!(jobs["total"], 1, "{jobs}");
    assert_eq!(jobs["data"][0]["attempts"], 0, "{jobs}");
    let after = endpoint_now(app, &admin, &endpoint).await;
    assert_eq!((after["consecutiveFailures"].as_u64(), after["enabled"].as_bool()), (Some(0), Some(true)));
    assert_eq!(receiver.received().len(), 1, "nothing sent through the open breaker");
}

async fn urls_must_be_public_https_by_default(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let admin = app.signed_in("admin@example.com", Role::Admin).await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://2130706433/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://10.0.0.5/hook",
        "https://user:pass@example.com/hook",
    ] {
        let refused = admin
            .post(app.url("/api/v1/webhook-endpoints"))
            .json(&json!({ "url": url, "events": ["order.paid"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(error_fields(&problem(refused, StatusCode::BAD_REQUEST).await), ["url"], "{url}");
    }
    let public = admin
        .post(app.url("/api/v1/webhook-endpoints"))
        .json(&json!({ "url": "https://hooks.example.com/hook", "events": ["order.paid"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::CREATED);
    app.stop().await;
}

async fn webhook_endpoint_failure_paths(app: &TestApp) {
    let path = "/api/v1/webhook-endpoints";
    let body = json!({ "url": "https://hooks.example.com/x", "events": ["order.paid"] });
    // Anonymous: 401; customers and staff: 403 — on every route.
    let customer = app.signed_in("ada@example.com", Role::Customer).await;
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let some = uuid::Uuid::now_v7();
    let routes = [
        (reqwest::Method::POST, path.to_owned()),
        (reqwest::Method::GET, path.to_owned()),
        (reqwest::Method::GET, format!("{path}/{some}")),
        (reqwest::Method::PATCH, format!("{path}/{some}")),
        (reqwest::Method::DELETE, format!("{path}/{some}")),
        (reqwest::Method::POST, format!("{path}/{some}/rotate-secret")),
        (reqwest::Method::GET, format!("{path}/{some}/deliveries")),
        (reqwest::Method::POST, format!("{path}/{some}/deliveries/{some}/retry")),
    ];
    for (method, route) in &routes {
        let anonymous = app.http.request(method.clone(), app.url(route)).json(&body).send().await.unwrap();
        problem(anonymous, StatusCode::UNAUTHORIZED).await;
        for client in [&customer, &staff] {
            let refused = client.request(method.clone(), app.url(route)).json(&body).send().await.unwrap();
            problem(refused, StatusCode::FORBIDDEN).await;
        }
    }

    let admin = app.signed_in("admin@example.com", Role::Admin).await;
    // Every invalid field at once.
    let invalid = admin
        .post(app.url(path))
        .json(&json!({ "url": "ftp://u:p@hooks.example.com", "events": [], "description": "x".repeat(201) }))
        .send()
        .await
        .unwrap();
    let mut fields = error_fields(&problem(invalid, StatusCode::BAD_REQUEST).await);
    fields.sort();
    assert_eq!(fields, ["description", "events", "url"]);
    for (body, field) in [
        (json!({ "events": ["order.paid"] }), "url"),
        (json!({ "url": "https://u:p@hooks.example.com/", "events": ["order.paid"] }), "url"),
        (json!({ "url": "/relative", "events": ["order.paid"] }), "url"),
        (json!({ "url": "https://hooks.example.com/" }), "events"),
        (json!({ "url": "https://hooks.example.com/", "events": ["order.shipped"] }), "events"),
        (json!({ "url": "https://hooks.example.com/", "events": "order.paid" }), "events"),
        (json!({ "url": "https://hooks.example.com/", "events": ["order.paid"], "secret": "mine" }), "secret"),
    ] {
        let refused = admin.post(app.url(path)).json(&body).send().await.unwrap();
        let problem = problem(refused, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_fields(&problem), [field], "{body}");
    }
    let not_json = admin.post(app.url(path)).body("url=x").send().await.unwrap();
    problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // Up to the limit (3 in this test), then 409.
    let mut created = Vec::new();
    for n in 0..3 {
        let url = format!("https://hooks{n}.example.com/");
        let response =
            admin.post(app.url(path)).json(&json!({ "url": url, "events": ["order.paid"] })).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let endpoint: Value = response.json().await.unwrap();
        assert_eq!(location, format!("{path}/{}", endpoint["id"].as_str().unwrap()));
        created.push(endpoint);
    }
    let over = admin.post(app.url(path)).json(&body).send().await.unwrap();
    problem(over, StatusCode::CONFLICT).await;
    let listed: Value = admin.get(app.url(path)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(listed.as_array().unwrap().iter().all(|e| e.get("secret").is_none()));

    // Not found: unknown and malformed ids, on every route that takes one.
    for id in [some.to_string(), "not-a-uuid".to_owned()] {
        for (method, route) in [
            (reqwest::Method::GET, format!("{path}/{id}")),
            (reqwest::Method::DELETE, format!("{path}/{id}")),
            (reqwest::Method::POST, format!("{path}/{id}/rotate-secret")),
            (reqwest::Method::GET, format!("{path}/{id}/deliveries")),
            (reqwest::Method::POST, format!("{path}/{id}/deliveries/{some}/retry")),
        ] {
            let missing = admin.request(method, app.url(&route)).send().await.unwrap();
            problem(missing, StatusCode::NOT_FOUND).await;
        }
        let patch =
            admin.patch(app.url(&format!("{path}/{id}"))).json(&json!({ "enabled": true })).send().await.unwrap();
        problem(patch, StatusCode::NOT_FOUND).await;
    }
    let id = created[0]["id"].as_str().unwrap();
    let no_delivery = admin.post(app.url(&format!("{path}/{id}/deliveries/{some}/retry"))).send().await.unwrap();
    problem(no_delivery, StatusCode::NOT_FOUND).await;

    // PATCH: nothing given, invalid fields; valid changes; description cleared by null.
    let empty = admin.patch(app.url(&format!("{path}/{id}"))).json(&json!({})).send().await.unwrap();
    assert_eq!(error_fields(&problem(empty, StatusCode::BAD_REQUEST).await), ["body"]);
    let bad = admin
        .patch(app.url(&format!("{path}/{id}")))
        .json(&json!({ "url": "mailto:a@b.c", "events": ["nope"] }))
        .send()
        .await
        .unwrap();
    let mut fields = error_fields(&problem(bad, StatusCode::BAD_REQUEST).await);
    fields.sort();
    assert_eq!(fields, ["events", "url"]);
    let changed: Value = admin
        .patch(app.url(&format!("{path}/{id}")))
        .json(&json!({ "url": "https://changed.example.com/h", "events": ["order.refunded", "order.paid"], "description": null }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changed["url"], "https://changed.example.com/h");
    assert_eq!(changed["events"], json!(["order.paid", "order.refunded"]));
    assert_eq!(changed["description"], Value::Null);

    // Rotation: a new secret, shown once.
    let rotated: Value =
        admin.post(app.url(&format!("{path}/{id}/rotate-secret"))).send().await.unwrap().json().await.unwrap();
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_ne!(rotated["secret"], created[0]["secret"]);

    // The delivery log's query is validated.
    for query in ["?state=lost", "?limit=1000", "?page=0", "?colour=red"] {
        let refused = admin.get(app.url(&format!("{path}/{id}/deliveries{query}"))).send().await.unwrap();
        problem(refused, StatusCode::BAD_REQUEST).await;
    }
    let empty: Value = admin
        .get(app.url(&format!("{path}/{id}/deliveries?state=failed&limit=5")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((empty["total"].as_u64(), empty["limit"].as_u64()), (Some(0), Some(5)));

    // Deleted: 204, then gone (404), and room for another.
    let deleted = admin.delete(app.url(&format!("{path}/{id}"))).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(admin.get(app.url(&format!("{path}/{id}"))).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    problem(admin.delete(app.url(&format!("{path}/{id}"))).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    assert_eq!(admin.post(app.url(path)).json(&body).send().await.unwrap().status(), StatusCode::CREATED);
}
