//! Checkout against a real HTTP payment provider: the payment sandbox of `crates/harness`
//! (a Stripe-like API that records every charge) in each of its good and bad modes. Every
//! test checks the money: charges recorded by the sandbox against the orders' states.

use std::time::{Duration, Instant};

use harness::{PaymentMode, PaymentSandbox};
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use shop::accounts::Role;
use shopkeep::config::Secret;

use crate::helpers::{Backend, TestApp, problem, spawn_app_with};

const SECRET: &str = "sk_test_sandbox_secret";

/// One test module per case, each run on both backends by `$runner` (`run`: the sandbox alone;
/// `run_with_webhooks`: the sandbox also sends signed webhooks).
macro_rules! on_both_backends {
    ($runner:ident: $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$runner(super::$name, crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$runner(super::$name, crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

on_both_backends!(
    run:
    an_approved_charge_pays_the_order_once,
    a_declined_charge_cancels_the_order_and_releases_its_stock,
    charged_but_never_heard_back_is_settled_later_without_a_second_charge,
    a_breaker_opening_between_retries_of_a_charge_never_cancels_a_charged_order,
    a_provider_that_hangs_or_talks_garbage_cannot_hold_checkout,
    an_open_breaker_fails_checkout_fast_and_reserves_nothing
);

on_both_backends!(
    run_with_webhooks:
    a_charge_the_checkout_never_heard_back_from_is_paid_by_the_providers_webhook,
    a_charge_reported_after_the_buyer_cancelled_queues_its_refund,
    concurrent_deliveries_of_one_event_apply_it_once,
    only_signed_fresh_webhooks_are_applied_and_each_event_once,
    declines_and_refunds_reported_by_webhook_go_through_the_state_machine
);

const WEBHOOK_SECRET: &str = "whsec_sandbox_signing_secret";

struct Shop {
    app: TestApp,
    sandbox: PaymentSandbox,
    product: Value,
}

async fn run<F: AsyncFnOnce(&Shop)>(test: F, backend: Backend) {
    start(test, backend, false).await;
}

/// The provider sends signed webhooks to the shop, and settlement by polling waits ten
/// minutes: whatever settles an order in these tests is the webhook.
async fn run_with_webhooks<F: AsyncFnOnce(&Shop)>(test: F, backend: Backend) {
    start(test, backend, true).await;
}

async fn start<F: AsyncFnOnce(&Shop)>(test: F, backend: Backend, webhooks: bool) {
    let sandbox = PaymentSandbox::start(SECRET).await.expect("the payment sandbox starts");
    let url = sandbox.url();
    let app = spawn_app_with(backend, |config| {
        config.payments.url = Some(url);
        config.payments.secret = Some(Secret::new(SECRET));
        config.payments.timeout_secs = 2;
        config.payments.attempt_timeout_secs = 1;
        config.orders.settle_after = time::Duration::seconds(1);
        config.admin.token = Some(Secret::new("an-admin-token-for-tests"));
        if webhooks {
            config.payments.name = "sandbox".into();
            config.payments.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
            config.orders.settle_after = time::Duration::seconds(600);
        }
    })
    .await;
    if webhooks {
        sandbox.set_webhooks(app.url("/api/v1/payment-webhooks/sandbox"), WEBHOOK_SECRET);
    }
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "things").await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), "thing", "20.00", 10).await;
    let shop = Shop { app, sandbox, product };
    test(&shop).await;
    shop.app.stop().await;
}

/// Unix seconds now.
fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

impl Shop {
    /// A GET on the admin listener, with the admin token.
    async fn admin(&self, path: &str) -> Value {
        let response =
            self.app.http.get(self.app.admin_url(path)).bearer_auth("an-admin-token-for-tests").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    /// POSTs a webhook to the shop as the provider would, signed with `signature`.
    async fn webhook(&self, provider: &str, body: &str, signature: Option<String>) -> reqwest::Response {
        let mut request = self
            .app
            .http
            .post(self.app.url(&format!("/api/v1/payment-webhooks/{provider}")))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("webhook-signature", signature);
        }
        request.send().await.unwrap()
    }

    /// A provider event about `order_id`, signed now with the right secret.
    fn event(kind: &str, object: Value) -> String {
        json!({ "id": format!("evt_{}", uuid::Uuid::new_v4().simple()), "object": "event", "type": kind,
                "created": unix_now(), "data": { "object": object } })
        .to_string()
    }

    fn signed(body: &str) -> Option<String> {
        Some(harness::webhook_signature(WEBHOOK_SECRET, unix_now(), body.as_bytes()))
    }

    /// A guest with one unit of the product in the cart.
    async fn buyer(&self) -> Client {
        let client = self.app.new_client();
        assert_eq!(client.post(self.app.url("/api/v1/guests")).send().await.unwrap().status(), StatusCode::CREATED);
        let id = self.product["id"].as_str().unwrap();
        let put = client
            .put(self.app.url(&format!("/api/v1/carts/current/items/{id}")))
            .json(&json!({ "quantity": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::OK);
        client
    }

    async fn checkout(&self, client: &Client, key: &str) -> reqwest::Response {
        let address =
            json!({ "name": "Ada", "line1": "1 Road", "city": "Paris", "postalCode": "75001", "country": "FR" });
        client
            .post(self.app.url("/api/v1/orders"))
            .header("idempotency-key", key)
            .json(&json!({ "shippingAddress": address }))
            .send()
            .await
            .unwrap()
    }

    async fn stock(&self) -> i64 {
        let id = self.product["id"].as_str().unwrap();
        let product: Value = self
            .app
            .http
            .get(self.app.url(&format!("/api/v1/products/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        product["stock"].as_i64().unwrap()
    }

    async fn order(&self, client: &Client, id: &str) -> Value {
        client.get(self.app.url(&format!("/api/v1/orders/{id}"))).send().await.unwrap().json().await.unwrap()
    }

    async fn until_status(&self, client: &Client, id: &str, status: &str) -> Value {
        for _ in 0..200 {
            let order = self.order(client, id).await;
            if order["status"] == status {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("order {id} never became {status}: {}", self.order(client, id).await);
    }
}

fn location_id(response: &reqwest::Response) -> String {
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    location.rsplit('/').next().unwrap().to_owned()
}

async fn an_approved_charge_pays_the_order_once(shop: &Shop) {
    let buyer = shop.buyer().await;
    let paid = shop.checkout(&buyer, "k1").await;
    assert_eq!(paid.status(), StatusCode::CREATED);
    let order: Value = paid.json().await.unwrap();
    assert_eq!((order["status"].as_str(), order["testMode"].as_bool()), (Some("paid"), Some(false)));
    let id = order["id"].as_str().unwrap();
    let charges = shop.sandbox.succeeded_charges_for(id);
    assert_eq!(charges.len(), 1);
    assert_eq!((charges[0].amount, charges[0].currency.as_str()), (2_000, "eur"));
    assert_eq!(charges[0].idempotency_key, format!("order-{id}"));
    // A replay answers from the saved response: the provider is not asked again.
    assert_eq!(shop.checkout(&buyer, "k1").await.status(), StatusCode::CREATED);
    assert_eq!(shop.sandbox.charges().len(), 1);
    assert_eq!(shop.stock().await, 9);
    // A refund goes through the provider, once.
    let staff = shop.app.signed_in("boss@example.com", Role::Staff).await;
    let refund = staff.post(shop.app.url(&format!("/api/v1/orders/{id}/refund"))).send().await.unwrap();
    assert_eq!(refund.status(), StatusCode::ACCEPTED);
    shop.until_status(&buyer, id, "refunded").await;
    let refunds = shop.sandbox.refunds();
    assert_eq!(refunds.len(), 1);
    assert_eq!((refunds[0].payment_intent.as_str(), refunds[0].amount), (charges[0].id.as_str(), 2_000));
    assert_eq!(shop.stock().await, 10, "refunded before shipping: back in stock");
}

async fn a_declined_charge_cancels_the_order_and_releases_its_stock(shop: &Shop) {
    shop.sandbox.set_mode(PaymentMode::Decline);
    let buyer = shop.buyer().await;
    let declined = shop.checkout(&buyer, "k1").await;
    assert_eq!(declined.status(), StatusCode::PAYMENT_REQUIRED);
    let id = location_id(&declined);
    let detail = problem(declined, StatusCode::PAYMENT_REQUIRED).await;
    assert!(detail["detail"].as_str().unwrap().contains("card_declined"), "{detail}");
    let order = shop.order(&buyer, &id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(shop.stock().await, 10, "the reservation was released");
    assert!(shop.sandbox.succeeded_charges_for(&id).is_empty());
    // The same key replays the decline; the cart is still there for another try.
    assert_eq!(shop.checkout(&buyer, "k1").await.status(), StatusCode::PAYMENT_REQUIRED);
    shop.sandbox.set_mode(PaymentMode::Approve);
    let retried = shop.checkout(&buyer, "k2").await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(shop.stock().await, 9);
}

async fn charged_but_never_heard_back_is_settled_later_without_a_second_charge(shop: &Shop) {
    // The provider charges, then answers 500 (and again to every retry of the same key).
    shop.sandbox.set_mode(PaymentMode::ChargeThenFail);
    let buyer = shop.buyer().await;
    let pending = shop.checkout(&buyer, "k1").await;
    assert_eq!(pending.status(), StatusCode::ACCEPTED);
    let order: Value = pending.json().await.unwrap();
    assert_eq!(order["status"], "pendingPayment");
    let id = order["id"].as_str().unwrap();
    assert_eq!(shop.stock().await, 9, "still reserved while the payment is unknown");
    // The provider recovers; the settlement job finds the charge and completes the order.
    shop.sandbox.set_mode(PaymentMode::Approve);
    shop.until_status(&buyer, id, "paid").await;
    assert_eq!(shop.sandbox.succeeded_charges_for(id).len(), 1, "charged exactly once");
    // The client retrying its key meanwhile gets the saved 202, never a second charge.
    assert_eq!(shop.checkout(&buyer, "k1").await.status(), StatusCode::ACCEPTED);
    assert_eq!(shop.sandbox.succeeded_charges_for(id).len(), 1);
}

async fn a_breaker_opening_between_retries_of_a_charge_never_cancels_a_charged_order(shop: &Shop) {
    // Every attempt charges (the same intent, by its key) and then answers 500. Ten failed
    // attempts open the breaker, so a retry of the fourth checkout is refused before sending:
    // the charge made by its first attempt stands all the same.
    shop.sandbox.set_mode(PaymentMode::ChargeThenFail);
    let mut outcomes = Vec::new();
    for attempt in 0..5 {
        let buyer = shop.buyer().await;
        outcomes.push(shop.checkout(&buyer, &format!("charge-then-fail-{attempt}")).await.status());
    }
    assert!(outcomes.contains(&StatusCode::SERVICE_UNAVAILABLE), "the breaker opened: {outcomes:?}");
    shop.sandbox.set_mode(PaymentMode::Approve);
    shop.app.limiter_clock.advance(Duration::from_secs(6));
    let staff = shop.app.signed_in("boss@example.com", Role::Staff).await;
    let charged: Vec<String> = shop
        .sandbox
        .charges()
        .iter()
        .filter_map(|charge| charge.idempotency_key.strip_prefix("order-").map(str::to_owned))
        .collect();
    assert!(charged.len() >= 4, "{charged:?}");
    for id in &charged {
        // Settlement finds the charge: paid, never cancelled with its stock back on the shelf.
        shop.until_status(&staff, id, "paid").await;
        assert_eq!(shop.sandbox.succeeded_charges_for(id).len(), 1, "order {id} charged once");
    }
    let paid = i64::try_from(charged.len()).unwrap();
    assert_eq!(shop.stock().await, 10 - paid, "every charged order keeps its stock");
}

async fn a_provider_that_hangs_or_talks_garbage_cannot_hold_checkout(shop: &Shop) {
    for mode in [PaymentMode::Hang, PaymentMode::Garbage, PaymentMode::Status(503)] {
        shop.sandbox.set_mode(mode.clone());
        let buyer = shop.buyer().await;
        let started = Instant::now();
        let pending = shop.checkout(&buyer, &format!("{mode}")).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{mode}: answered within the payment budget");
        assert_eq!(pending.status(), StatusCode::ACCEPTED, "{mode}: the outcome is unknown");
        let order: Value = pending.json().await.unwrap();
        assert_eq!(order["status"], "pendingPayment");
        assert!(shop.sandbox.charges().is_empty(), "{mode}: nothing was charged");
    }
}

async fn an_open_breaker_fails_checkout_fast_and_reserves_nothing(shop: &Shop) {
    shop.sandbox.set_mode(PaymentMode::Status(500));
    // Each failing checkout is up to three failed attempts; ten calls at 100 % open the breaker.
    for attempt in 0..4 {
        let buyer = shop.buyer().await;
        let status = shop.checkout(&buyer, &format!("failing-{attempt}")).await.status();
        assert!(status == StatusCode::ACCEPTED || status == StatusCode::SERVICE_UNAVAILABLE, "{status}");
    }
    let reserved_before = shop.stock().await;
    let buyer = shop.buyer().await;
    let started = Instant::now();
    let refused = shop.checkout(&buyer, "while-open").await;
    assert!(started.elapsed() < Duration::from_millis(500), "fails fast");
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(shop.stock().await, reserved_before, "nothing reserved");
    // Browsing and carts are unaffected.
    assert_eq!(shop.app.http.get(shop.app.url("/api/v1/products")).send().await.unwrap().status(), StatusCode::OK);
    let status = shop.admin("/admin/v1/status").await;
    let breaker = status["breakers"].as_array().unwrap().iter().find(|b| b["name"] == "payments").cloned();
    assert_eq!(breaker.map(|b| b["state"].clone()), Some(json!("open")), "{status}");
    // The provider heals; after the open wait a probe goes through and checkout works again,
    // with the same key the refused request used (it had no effect).
    shop.sandbox.set_mode(PaymentMode::Approve);
    shop.app.limiter_clock.advance(Duration::from_secs(6));
    let healed = shop.checkout(&buyer, "while-open").await;
    assert_eq!(healed.status(), StatusCode::CREATED);
}

async fn a_charge_the_checkout_never_heard_back_from_is_paid_by_the_providers_webhook(shop: &Shop) {
    // The provider charges and never answers; its webhook says what happened.
    shop.sandbox.set_mode(PaymentMode::ChargeThenHang);
    let buyer = shop.buyer().await;
    let answered = shop.checkout(&buyer, "k1").await;
    // The webhook came while the checkout was still waiting for the hung call: the checkout's
    // answer (saved for replays) is the order as it is then, paid, not a stale 202.
    assert_eq!(answered.status(), StatusCode::CREATED);
    let order: Value = answered.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    let paid = shop.until_status(&buyer, id, "paid").await;
    assert!(paid["paidAt"].is_string(), "{paid}");
    assert_eq!(shop.sandbox.succeeded_charges_for(id).len(), 1);
    // The shop answered 200 before the sandbox wrote that down: wait for its record.
    let mut event = None;
    for _ in 0..100 {
        event = shop.sandbox.webhook_events().into_iter().find(|event| event.order_id == id && event.delivered);
        if event.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = event.expect("the sandbox delivered the charge's event");
    assert_eq!(event.event_type, "payment_intent.succeeded");
    // A redelivery (the provider did not see our 200) is acknowledged and changes nothing.
    shop.sandbox.set_mode(PaymentMode::Approve);
    assert_eq!(shop.sandbox.redeliver(&event.id).await, Ok(200));
    let receipt: Value = shop.webhook("sandbox", &event.body, Shop::signed(&event.body)).await.json().await.unwrap();
    assert_eq!((receipt["received"].as_bool(), receipt["duplicate"].as_bool()), (Some(true), Some(true)), "{receipt}");
    assert_eq!(shop.order(&buyer, id).await["status"], "paid");
    assert_eq!(shop.stock().await, 9);
    assert_eq!(shop.sandbox.succeeded_charges_for(id).len(), 1, "charged once");
}

async fn only_signed_fresh_webhooks_are_applied_and_each_event_once(shop: &Shop) {
    // An order whose charge never reached the provider: only a webhook could settle it now.
    shop.sandbox.set_mode(PaymentMode::Hang);
    let buyer = shop.buyer().await;
    let pending: Value = shop.checkout(&buyer, "k1").await.json().await.unwrap();
    let id = pending["id"].as_str().unwrap().to_owned();
    let body =
        Shop::event("payment_intent.succeeded", json!({ "id": "pi_forged", "status": "succeeded", "order_id": id }));
    let now = unix_now();
    let refusals = [
        ("no signature", None),
        ("the wrong secret", Some(harness::webhook_signature("whsec_someone_else_entirely", now, body.as_bytes()))),
        ("a stale timestamp (a replay)", Some(harness::webhook_signature(WEBHOOK_SECRET, now - 600, body.as_bytes()))),
        ("a future timestamp", Some(harness::webhook_signature(WEBHOOK_SECRET, now + 600, body.as_bytes()))),
        ("a garbled header", Some("t=abc,v1=xyz".to_owned())),
        ("a signature of another body", Some(harness::webhook_signature(WEBHOOK_SECRET, now, b"{}"))),
    ];
    for (what, signature) in refusals {
        let refused = shop.webhook("sandbox", &body, signature).await;
        let detail = problem(refused, StatusCode::BAD_REQUEST).await;
        assert!(detail.to_string().contains("Webhook-Signature"), "{what}: {detail}");
    }
    let unreadable = "{\"id\": 1}";
    problem(shop.webhook("sandbox", unreadable, Shop::signed(unreadable)).await, StatusCode::BAD_REQUEST).await;
    problem(shop.webhook("other", &body, Shop::signed(&body)).await, StatusCode::NOT_FOUND).await;
    let huge = "x".repeat(70 * 1024);
    problem(shop.webhook("sandbox", &huge, Shop::signed(&huge)).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(shop.order(&buyer, &id).await["status"], "pendingPayment", "nothing refused was applied");

    let signature = Shop::signed(&body);
    let applied = shop.webhook("sandbox", &body, signature.clone()).await;
    assert_eq!(applied.status(), StatusCode::OK);
    let receipt: Value = applied.json().await.unwrap();
    assert_eq!(
        (receipt["duplicate"].as_bool(), receipt["outcome"].as_str()),
        (Some(false), Some("order paid")),
        "{receipt}"
    );
    let order = shop.order(&buyer, &id).await;
    assert_eq!(order["status"], "paid", "{order}");
    // The very same request again, inside the window: acknowledged, not applied twice.
    let again: Value = shop.webhook("sandbox", &body, signature).await.json().await.unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    // An event about an order the shop does not have, or of a type it ignores: acknowledged.
    let stranger =
        Shop::event("payment_intent.succeeded", json!({ "id": "pi_x", "order_id": uuid::Uuid::now_v7().to_string() }));
    let receipt: Value = shop.webhook("sandbox", &stranger, Shop::signed(&stranger)).await.json().await.unwrap();
    assert_eq!(receipt["outcome"], "ignored: no such order", "{receipt}");
    let other = Shop::event("customer.created", json!({ "id": "cus_1" }));
    let receipt: Value = shop.webhook("sandbox", &other, Shop::signed(&other)).await.json().await.unwrap();
    assert_eq!(receipt["received"], true, "{receipt}");
}

async fn declines_and_refunds_reported_by_webhook_go_through_the_state_machine(shop: &Shop) {
    shop.sandbox.set_mode(PaymentMode::Hang);
    let buyer = shop.buyer().await;
    let pending: Value = shop.checkout(&buyer, "k1").await.json().await.unwrap();
    let id = pending["id"].as_str().unwrap().to_owned();
    assert_eq!(shop.stock().await, 9);
    let declined = Shop::event(
        "payment_intent.payment_failed",
        json!({ "id": "pi_1", "status": "declined", "order_id": id, "decline_reason": "insufficient_funds" }),
    );
    // A decline is confirmed with the provider first (a later charge may have succeeded);
    // while it cannot answer, the event is refused unapplied and the provider sends it again.
    let unconfirmed = shop.webhook("sandbox", &declined, Shop::signed(&declined)).await;
    problem(unconfirmed, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(shop.order(&buyer, &id).await["status"], "pendingPayment");
    shop.sandbox.set_mode(PaymentMode::Approve);
    let receipt: Value = shop.webhook("sandbox", &declined, Shop::signed(&declined)).await.json().await.unwrap();
    assert_eq!(receipt["outcome"], "order cancelled", "{receipt}");
    let order = shop.order(&buyer, &id).await;
    assert_eq!(order["status"], "cancelled");
    assert!(order["cancelReason"].as_str().unwrap().contains("insufficient_funds"), "{order}");
    assert_eq!(shop.stock().await, 10, "the reservation was released");

    // A paid order refunded from the provider's side becomes refunded, its stock back.
    let buyer = shop.buyer().await;
    let paid: Value = shop.checkout(&buyer, "k2").await.json().await.unwrap();
    let id = paid["id"].as_str().unwrap().to_owned();
    assert_eq!((paid["status"].as_str(), shop.stock().await), (Some("paid"), 9));
    let partial = Shop::event(
        "charge.refunded",
        json!({ "id": "re_0", "payment_intent": "pi_2", "order_id": id, "amount": 500 }),
    );
    let receipt: Value = shop.webhook("sandbox", &partial, Shop::signed(&partial)).await.json().await.unwrap();
    assert_eq!(receipt["outcome"], "no change: a partial refund of 500 of 2000", "{receipt}");
    assert_eq!(shop.order(&buyer, &id).await["status"], "paid", "a goodwill refund leaves the sale standing");
    let refunded = Shop::event(
        "charge.refunded",
        json!({ "id": "re_1", "payment_intent": "pi_2", "order_id": id, "amount": 2000 }),
    );
    let receipt: Value = shop.webhook("sandbox", &refunded, Shop::signed(&refunded)).await.json().await.unwrap();
    assert_eq!(receipt["outcome"], "order refunded", "{receipt}");
    assert_eq!(shop.order(&buyer, &id).await["status"], "refunded");
    assert_eq!(shop.stock().await, 10);
    // A refund of an order whose charge the shop never heard of: cancelled, never shipped.
    shop.sandbox.set_mode(PaymentMode::Hang);
    let buyer = shop.buyer().await;
    let pending: Value = shop.checkout(&buyer, "k3").await.json().await.unwrap();
    let unpaid = pending["id"].as_str().unwrap().to_owned();
    let returned = Shop::event(
        "charge.refunded",
        json!({ "id": "re_2", "payment_intent": "pi_3", "order_id": unpaid, "amount": 2000 }),
    );
    let receipt: Value = shop.webhook("sandbox", &returned, Shop::signed(&returned)).await.json().await.unwrap();
    assert_eq!(receipt["outcome"], "order cancelled: its payment was refunded", "{receipt}");
    assert_eq!(shop.order(&buyer, &unpaid).await["status"], "cancelled");
    assert_eq!(shop.stock().await, 10);
    // A late decline of an order already refunded changes nothing.
    let late = Shop::event("payment_intent.payment_failed", json!({ "id": "pi_2", "order_id": id }));
    let receipt: Value = shop.webhook("sandbox", &late, Shop::signed(&late)).await.json().await.unwrap();
    assert_eq!(receipt["outcome"], "no change: the order is refunded", "{receipt}");
}

async fn a_charge_reported_after_the_buyer_cancelled_queues_its_refund(shop: &Shop) {
    // The provider charges but neither the answer nor its webhook arrives in time.
    shop.sandbox.clear_webhooks();
    shop.sandbox.set_mode(PaymentMode::ChargeThenHang);
    let buyer = shop.buyer().await;
    let pending: Value = shop.checkout(&buyer, "k1").await.json().await.unwrap();
    let id = pending["id"].as_str().unwrap().to_owned();
    let cancelled = buyer.post(shop.app.url(&format!("/api/v1/orders/{id}/cancel"))).send().await.unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(shop.stock().await, 10);
    // Now the webhook comes: the order stays cancelled and the charge is to be refunded.
    shop.sandbox.set_webhooks(shop.app.url("/api/v1/payment-webhooks/sandbox"), WEBHOOK_SECRET);
    let event = shop.sandbox.webhook_events().into_iter().find(|event| event.order_id == id).expect("an event");
    let receipt: Value = shop.webhook("sandbox", &event.body, Shop::signed(&event.body)).await.json().await.unwrap();
    assert_eq!(receipt["outcome"], "the order was cancelled: a refund of the charge is queued", "{receipt}");
    assert_eq!(shop.order(&buyer, &id).await["status"], "cancelled");
    assert_eq!(shop.stock().await, 10, "a cancelled order's stock stays released");
    let jobs = shop.admin("/admin/v1/jobs?state=queued&kind=payments.refund").await;
    let refunds = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["kind"] == "payments.refund" && job["payload"]["orderId"] == id.as_str())
        .count();
    assert_eq!(refunds, 1, "one refund job for the order: {jobs}");
}

async fn concurrent_deliveries_of_one_event_apply_it_once(shop: &Shop) {
    shop.sandbox.set_mode(PaymentMode::Hang);
    let buyer = shop.buyer().await;
    let pending: Value = shop.checkout(&buyer, "k1").await.json().await.unwrap();
    let id = pending["id"].as_str().unwrap().to_owned();
    let body = Shop::event("payment_intent.succeeded", json!({ "id": "pi_1", "status": "succeeded", "order_id": id }));
    let signature = Shop::signed(&body);
    let deliveries = (0..8).map(|_| shop.webhook("sandbox", &body, signature.clone()));
    let mut applied = 0;
    for response in futures::future::join_all(deliveries).await {
        assert_eq!(response.status(), StatusCode::OK);
        let receipt: Value = response.json().await.unwrap();
        if receipt["outcome"] == "order paid" {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "one delivery paid the order; the others changed nothing");
    assert_eq!(shop.order(&buyer, &id).await["status"], "paid");
    assert_eq!(shop.stock().await, 9);
}
