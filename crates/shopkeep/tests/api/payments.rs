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

macro_rules! with_sandbox {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::run(super::$name, crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::run(super::$name, crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

with_sandbox!(
    an_approved_charge_pays_the_order_once,
    a_declined_charge_cancels_the_order_and_releases_its_stock,
    charged_but_never_heard_back_is_settled_later_without_a_second_charge,
    a_breaker_opening_between_retries_of_a_charge_never_cancels_a_charged_order,
    a_provider_that_hangs_or_talks_garbage_cannot_hold_checkout,
    an_open_breaker_fails_checkout_fast_and_reserves_nothing
);

struct Shop {
    app: TestApp,
    sandbox: PaymentSandbox,
    product: Value,
}

async fn run<F: AsyncFnOnce(&Shop)>(test: F, backend: Backend) {
    let sandbox = PaymentSandbox::start(SECRET).await.expect("the payment sandbox starts");
    let url = sandbox.url();
    let app = spawn_app_with(backend, |config| {
        config.payments.url = Some(url);
        config.payments.secret = Some(Secret::new(SECRET));
        config.payments.timeout_secs = 2;
        config.payments.attempt_timeout_secs = 1;
        config.orders.settle_after_secs = 1;
        config.admin.token = Some(Secret::new("an-admin-token-for-tests"));
    })
    .await;
    let staff = app.signed_in("staff@example.com", Role::Staff).await;
    let category = app.add_category(&staff, "things").await;
    let product = app.add_product(&staff, category["id"].as_str().unwrap(), "thing", "20.00", 10).await;
    let shop = Shop { app, sandbox, product };
    test(&shop).await;
    shop.app.stop().await;
}

impl Shop {
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
    let status: Value = shop
        .app
        .http
        .get(shop.app.admin_url("/admin/v1/status"))
        .bearer_auth("an-admin-token-for-tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let breaker = status["breakers"].as_array().unwrap().iter().find(|b| b["name"] == "payments").cloned();
    assert_eq!(breaker.map(|b| b["state"].clone()), Some(json!("open")), "{status}");
    // The provider heals; after the open wait a probe goes through and checkout works again,
    // with the same key the refused request used (it had no effect).
    shop.sandbox.set_mode(PaymentMode::Approve);
    shop.app.limiter_clock.advance(Duration::from_secs(6));
    let healed = shop.checkout(&buyer, "while-open").await;
    assert_eq!(healed.status(), StatusCode::CREATED);
}
