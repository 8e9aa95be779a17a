//! The payment sandbox seen from a real HTTP client: authentication, idempotency, one charge per
//! order, refunds, every failure mode, and the records that prove what was charged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use harness::{ChargeStatus, PaymentMode, PaymentSandbox};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "sk_test_harness";
const ORDER: &str = "0190f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e";
const OTHER_ORDER: &str = "0190f3a2-7c4e-7b1a-9d2e-000000000002";

/// A fresh sandbox and a client for it.
struct TestSandbox {
    sandbox: PaymentSandbox,
    client: reqwest::Client,
}

async fn spawn_sandbox() -> TestSandbox {
    spawn_sandbox_with_timeout(Duration::from_secs(5)).await
}

async fn spawn_sandbox_with_timeout(timeout: Duration) -> TestSandbox {
    // reqwest is built with rustls here (feature unification): it needs a process-wide provider.
    integration::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
    TestSandbox { sandbox: PaymentSandbox::start(SECRET).await.unwrap(), client }
}

fn intent_body(order_id: &str, amount: i64) -> Value {
    json!({"amount": amount, "currency": "eur", "order_id": order_id, "description": "Order #1"})
}

impl TestSandbox {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.url())
    }

    async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
        self.client.post(self.url(path)).bearer_auth(SECRET).header("Idempotency-Key", key).json(body).send().await
    }

    /// `POST /v1/payment_intents`, answered as status and JSON.
    async fn pay(&self, key: &str, body: &Value) -> (StatusCode, Value) {
        read(self.post("/v1/payment_intents", key, body).await.unwrap()).await
    }

    async fn refund(&self, key: &str, body: &Value) -> (StatusCode, Value) {
        read(self.post("/v1/refunds", key, body).await.unwrap()).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        read(self.client.get(self.url(path)).bearer_auth(SECRET).send().await.unwrap()).await
    }

    /// A control endpoint, which wants no secret.
    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn error_type(body: &Value) -> &str {
    body["error"]["type"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test]
async fn every_api_call_needs_the_secret() {
    let app = spawn_sandbox().await;
    let unauthenticated = app
        .client
        .post(app.url("/v1/payment_intents"))
        .header("Idempotency-Key", "k-1")
        .json(&intent_body(ORDER, 1299))
        .send()
        .await
        .unwrap();
    let (status, body) = read(unauthenticated).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&body), "authentication_error");
    assert!(body["error"]["message"].is_string());

    let wrong = app.client.get(app.url("/v1/payment_intents?order_id=x")).bearer_auth("sk_test_other").send().await;
    let (status, body) = read(wrong.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&body), "authentication_error");
    let basic = app.client.get(app.url("/v1/payment_intents/pi_1")).basic_auth(SECRET, None::<&str>).send().await;
    assert_eq!(basic.unwrap().status(), StatusCode::UNAUTHORIZED, "only a bearer secret is accepted");
    assert!(app.sandbox.charges().is_empty());
}

#[tokio::test]
async fn an_approved_charge_is_answered_and_recorded() {
    let app = spawn_sandbox().await;
    let (status, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(intent["id"].as_str().unwrap().starts_with("pi_"), "{intent}");
    assert_eq!(intent["object"], "payment_intent");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 1299);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["order_id"], ORDER);
    assert_eq!(intent["description"], "Order #1");
    assert_eq!(intent["decline_reason"], Value::Null);
    assert!(intent["created"].as_u64().unwrap() > 1_700_000_000);

    let charges = app.sandbox.charges();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].id, intent["id"].as_str().unwrap());
    assert_eq!((charges[0].amount, charges[0].status), (1299, ChargeStatus::Succeeded));
    assert_eq!(charges[0].idempotency_key, "k-1");
    assert_eq!(app.sandbox.succeeded_charges_for(ORDER), charges);
    assert!(app.sandbox.succeeded_charges_for(OTHER_ORDER).is_empty());

    let (status, report) = app.control(reqwest::Method::GET, "/sandbox/charges", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((report["succeeded"].as_u64(), report["declined"].as_u64()), (Some(1), Some(0)));
    assert_eq!(report["charges"][0]["id"], intent["id"]);
    assert_eq!(report["charges"][0]["order_id"], ORDER);
    assert_eq!(report["charges"][0]["status"], "succeeded");
    assert_eq!(report["charges"][0]["idempotency_key"], "k-1");
}

#[tokio::test]
async fn a_replayed_key_answers_the_same_intent_without_charging_again() {
    let app = spawn_sandbox().await;
    let (_, first) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let (status, again) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first, "the identical stored response");
    assert_eq!(app.sandbox.charges().len(), 1);
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let app = spawn_sandbox().await;
    app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let (status, body) = app.pay("k-1", &intent_body(ORDER, 1300)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type(&body), "idempotency_error");
    let (status, body) = app.refund("k-1", &json!({"payment_intent": "pi_x", "amount": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a key belongs to one endpoint too");
    assert_eq!(error_type(&body), "idempotency_error");
    assert_eq!(app.sandbox.charges().len(), 1);
}

#[tokio::test]
async fn requests_without_a_key_or_with_a_bad_body_are_refused_and_charge_nothing() {
    let app = spawn_sandbox().await;
    let keyless =
        app.client.post(app.url("/v1/payment_intents")).bearer_auth(SECRET).json(&intent_body(ORDER, 1299)).send();
    let (status, body) = read(keyless.await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type(&body), "invalid_request_error");
    for bad in [
        json!({"amount": 0, "currency": "eur", "order_id": ORDER}),
        json!({"amount": -5, "currency": "eur", "order_id": ORDER}),
        json!({"amount": 12.5, "currency": "eur", "order_id": ORDER}),
        json!({"amount": 100, "currency": "euro", "order_id": ORDER}),
        json!({"amount": 100, "currency": "eur", "order_id": ""}),
        json!({"amount": 100, "currency": "eur"}),
    ] {
        let (status, body) = app.pay("k-bad", &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_type(&body), "invalid_request_error", "{bad}");
    }
    let not_json = app.client.post(app.url("/v1/payment_intents")).bearer_auth(SECRET).header("Idempotency-Key", "k-2");
    let (status, _) = read(not_json.body("amount=100").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(app.sandbox.charges().is_empty());

    let (status, _) = app.pay("k-bad", &intent_body(ORDER, 100)).await;
    assert_eq!(status, StatusCode::OK, "a refused request does not use up its key");
}

#[tokio::test]
async fn an_order_is_charged_once_whatever_the_key() {
    let app = spawn_sandbox().await;
    let (_, first) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let (status, second) = app.pay("k-2", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["id"], first["id"], "the existing succeeded intent");
    assert_eq!(second["status"], "succeeded");
    let (_, third) = app.pay("k-2", &intent_body(ORDER, 1299)).await;
    assert_eq!(third, second, "and the new key replays it");
    assert_eq!(app.sandbox.succeeded_charges_for(ORDER).len(), 1);
    assert_eq!(app.sandbox.charges().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_attempts_for_one_order_charge_it_once() {
    let app = spawn_sandbox().await;
    let mut attempts = tokio::task::JoinSet::new();
    for index in 0..16 {
        let (client, url) = (app.client.clone(), app.url("/v1/payment_intents"));
        attempts.spawn(async move {
            let request = client.post(url).bearer_auth(SECRET).header("Idempotency-Key", format!("k-{index}"));
            read(request.json(&intent_body(ORDER, 1299)).send().await.unwrap()).await
        });
    }
    let answers = attempts.join_all().await;
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK), "{answers:?}");
    let first_id = &answers[0].1["id"];
    assert!(answers.iter().all(|(_, intent)| intent["id"] == *first_id), "every attempt sees the one intent");
    assert_eq!(app.sandbox.succeeded_charges_for(ORDER).len(), 1);
    assert_eq!(app.sandbox.charges().len(), 1);
}

#[tokio::test]
async fn decline_mode_declines_and_records_without_charging() {
    let app = spawn_sandbox().await;
    app.sandbox.set_mode(PaymentMode::Decline);
    let (status, declined) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(declined["status"], "declined");
    assert_eq!(declined["decline_reason"], "card_declined");
    assert!(app.sandbox.succeeded_charges_for(ORDER).is_empty());
    assert_eq!(app.sandbox.charges()[0].status, ChargeStatus::Declined);

    let (_, replayed) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(replayed, declined, "a declined answer is replayed too");
    app.sandbox.set_mode(PaymentMode::Approve);
    let (_, replayed) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(replayed["status"], "declined", "a key keeps its answer when the mode changes");
    let (_, approved) = app.pay("k-2", &intent_body(ORDER, 1299)).await;
    assert_eq!(approved["status"], "succeeded", "a new attempt with a new key may succeed");

    let (_, report) = app.control(reqwest::Method::GET, "/sandbox/charges", None).await;
    assert_eq!((report["succeeded"].as_u64(), report["declined"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test]
async fn status_modes_answer_errors_and_do_nothing() {
    let app = spawn_sandbox().await;
    for code in [500, 503, 429] {
        app.sandbox.set_mode(PaymentMode::Status(code));
        let (status, body) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
        assert_eq!(status.as_u16(), code);
        assert!(error_type(&body).ends_with("_error"), "{body}");
    }
    assert!(app.sandbox.charges().is_empty());
    app.sandbox.set_mode(PaymentMode::Approve);
    let (status, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!((status, intent["status"].as_str()), (StatusCode::OK, Some("succeeded")), "the key was not used up");
    assert_eq!(app.sandbox.charges().len(), 1);
}

#[tokio::test]
async fn garbage_is_not_json_and_does_nothing() {
    let app = spawn_sandbox().await;
    app.sandbox.set_mode(PaymentMode::Garbage);
    let response = app.post("/v1/payment_intents", "k-1", &intent_body(ORDER, 1299)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json", "it claims JSON");
    assert!(response.json::<Value>().await.is_err());
    assert!(app.sandbox.charges().is_empty());
}

#[tokio::test]
async fn slow_mode_answers_correctly_after_the_delay() {
    let app = spawn_sandbox().await;
    app.sandbox.set_mode(PaymentMode::Slow { delay: Duration::from_millis(300) });
    let started = Instant::now();
    let (status, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "answered after {:?}", started.elapsed());
    assert_eq!((status, intent["status"].as_str()), (StatusCode::OK, Some("succeeded")));
    assert_eq!(app.sandbox.charges().len(), 1);
}

#[tokio::test]
async fn a_slow_answer_the_client_gives_up_on_has_still_charged() {
    let app = spawn_sandbox_with_timeout(Duration::from_millis(200)).await;
    app.sandbox.set_mode(PaymentMode::Slow { delay: Duration::from_secs(5) });
    let error = app.post("/v1/payment_intents", "k-1", &intent_body(ORDER, 1299)).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(app.sandbox.succeeded_charges_for(ORDER).len(), 1);
}

#[tokio::test]
async fn hang_runs_into_the_client_timeout_and_charges_nothing() {
    let app = spawn_sandbox_with_timeout(Duration::from_millis(400)).await;
    app.sandbox.set_mode(PaymentMode::Hang);
    let started = Instant::now();
    let error = app.post("/v1/payment_intents", "k-1", &intent_body(ORDER, 1299)).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(app.sandbox.charges().is_empty());
}

#[tokio::test]
async fn charge_then_fail_charges_while_the_client_sees_a_500() {
    let app = spawn_sandbox().await;
    app.sandbox.set_mode(PaymentMode::ChargeThenFail);
    let (status, body) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_type(&body), "api_error");
    let charged = app.sandbox.succeeded_charges_for(ORDER);
    assert_eq!(charged.len(), 1, "charged, though the client never heard");

    // The recovery a client must make: retry with the same key once the provider is well.
    app.sandbox.set_mode(PaymentMode::Approve);
    let (status, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(intent["id"].as_str(), Some(charged[0].id.as_str()));
    assert_eq!(app.sandbox.charges().len(), 1);
}

#[tokio::test]
async fn charge_then_hang_charges_and_never_answers() {
    let app = spawn_sandbox_with_timeout(Duration::from_millis(400)).await;
    app.sandbox.set_mode(PaymentMode::ChargeThenHang);
    let error = app.post("/v1/payment_intents", "k-1", &intent_body(ORDER, 1299)).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    let charged = app.sandbox.succeeded_charges_for(ORDER);
    assert_eq!(charged.len(), 1);

    // Asking by order id is the other way to learn what happened.
    app.sandbox.set_mode(PaymentMode::Approve);
    let (status, list) = app.get(&format!("/v1/payment_intents?order_id={ORDER}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"].as_str(), Some(charged[0].id.as_str()));
}

#[tokio::test]
async fn intents_are_found_by_order_and_by_id() {
    let app = spawn_sandbox().await;
    let (status, empty) = app.get(&format!("/v1/payment_intents?order_id={ORDER}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!({"object": "list", "data": []}));

    app.sandbox.set_mode(PaymentMode::Decline);
    let (_, declined) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    app.sandbox.set_mode(PaymentMode::Approve);
    let (_, succeeded) = app.pay("k-2", &intent_body(ORDER, 1299)).await;
    app.pay("k-3", &intent_body(OTHER_ORDER, 500)).await;

    let (_, list) = app.get(&format!("/v1/payment_intents?order_id={ORDER}")).await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"], json!([declined, succeeded]), "oldest first, this order only");

    let id = succeeded["id"].as_str().unwrap();
    let (status, found) = app.get(&format!("/v1/payment_intents/{id}")).await;
    assert_eq!((status, &found), (StatusCode::OK, &succeeded));
    let (status, body) = app.get("/v1/payment_intents/pi_doesnotexist").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&body), "invalid_request_error");
}

#[tokio::test]
async fn refunds_are_bounded_and_made_once_per_intent() {
    let app = spawn_sandbox().await;
    let (_, intent) = app.pay("k-pay", &intent_body(ORDER, 1299)).await;
    let intent_id = intent["id"].as_str().unwrap();

    let (status, body) = app.refund("r-1", &json!({"payment_intent": intent_id, "amount": 1300})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "more than was charged");
    assert_eq!(error_type(&body), "invalid_request_error");
    let (status, _) = app.refund("r-1", &json!({"payment_intent": intent_id, "amount": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = app.refund("r-1", &json!({"payment_intent": "pi_unknown", "amount": 1})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&body), "invalid_request_error");
    let keyless =
        app.client.post(app.url("/v1/refunds")).bearer_auth(SECRET).json(&json!({"payment_intent": intent_id}));
    assert_eq!(keyless.send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert!(app.sandbox.refunds().is_empty());

    let (status, refund) = app.refund("r-1", &json!({"payment_intent": intent_id, "amount": 1299})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(refund["id"].as_str().unwrap().starts_with("re_"), "{refund}");
    assert_eq!(refund["object"], "refund");
    assert_eq!(refund["payment_intent"], intent_id);
    assert_eq!(refund["amount"], 1299);
    assert_eq!(refund["status"], "succeeded");

    let (_, replayed) = app.refund("r-1", &json!({"payment_intent": intent_id, "amount": 1299})).await;
    assert_eq!(replayed, refund, "the same key replays");
    let (_, other_key) = app.refund("r-2", &json!({"payment_intent": intent_id, "amount": 500})).await;
    assert_eq!(other_key, refund, "another key gets the existing refund");
    let (status, body) = app.refund("r-1", &json!({"payment_intent": intent_id, "amount": 100})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type(&body), "idempotency_error");

    let refunds = app.sandbox.refunds();
    assert_eq!(refunds.len(), 1);
    assert_eq!((refunds[0].payment_intent.as_str(), refunds[0].amount), (intent_id, 1299));
    assert_eq!(refunds[0].idempotency_key, "r-1");
    let (_, report) = app.control(reqwest::Method::GET, "/sandbox/refunds", None).await;
    assert_eq!(report["succeeded"], 1);
    assert_eq!(report["refunds"][0]["id"], refund["id"]);
    assert_eq!(report["refunds"][0]["idempotency_key"], "r-1");
}

#[tokio::test]
async fn declined_intents_cannot_be_refunded_and_a_partial_refund_is_kept() {
    let app = spawn_sandbox().await;
    app.sandbox.set_mode(PaymentMode::Decline);
    let (_, declined) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let (status, body) = app.refund("r-1", &json!({"payment_intent": declined["id"], "amount": 1299})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type(&body), "invalid_request_error");

    app.sandbox.set_mode(PaymentMode::ChargeThenFail);
    let (status, body) = app.get(&format!("/v1/payment_intents/{}", declined["id"].as_str().unwrap())).await;
    assert_eq!((status, error_type(&body)), (StatusCode::INTERNAL_SERVER_ERROR, "api_error"), "reads fail too");
    app.sandbox.set_mode(PaymentMode::Approve);
    let (_, paid) = app.pay("k-2", &intent_body(OTHER_ORDER, 1000)).await;
    app.sandbox.set_mode(PaymentMode::ChargeThenFail);
    let (status, _) = app.refund("r-2", &json!({"payment_intent": paid["id"], "amount": 400})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(app.sandbox.refunds()[0].amount, 400, "refunded, though the client never heard");
}

#[tokio::test]
async fn the_mode_changes_at_run_time_over_http() {
    let app = spawn_sandbox().await;
    let (_, mode) = app.control(reqwest::Method::GET, "/sandbox/mode", None).await;
    assert_eq!(mode["mode"], "approve");

    let (status, changed) =
        app.control(reqwest::Method::PUT, "/sandbox/mode", Some(json!({"mode": "status:503"}))).await;
    assert_eq!((status, changed["mode"].as_str()), (StatusCode::OK, Some("status:503")));
    assert_eq!(app.sandbox.mode(), PaymentMode::Status(503));
    let (status, _) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app.control(reqwest::Method::GET, "/sandbox/charges", None).await;
    assert_eq!(status, StatusCode::OK, "control endpoints ignore the mode");

    app.control(reqwest::Method::PUT, "/sandbox/mode", Some(json!({"mode": "decline"}))).await;
    let (_, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(intent["status"], "declined");
    app.control(reqwest::Method::PUT, "/sandbox/mode", Some(json!({"mode": "approve"}))).await;
    let (_, intent) = app.pay("k-2", &intent_body(ORDER, 1299)).await;
    assert_eq!(intent["status"], "succeeded", "a provider that recovers");

    let (status, body) = app.control(reqwest::Method::PUT, "/sandbox/mode", Some(json!({"mode": "teleport"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type(&body), "invalid_request_error");
    assert_eq!(app.sandbox.mode(), PaymentMode::Approve);
}

#[tokio::test]
async fn reset_forgets_everything() {
    let app = spawn_sandbox().await;
    let (_, first) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    app.refund("r-1", &json!({"payment_intent": first["id"]})).await;
    app.sandbox.set_mode(PaymentMode::Decline);

    let (status, body) = app.control(reqwest::Method::POST, "/sandbox/reset", None).await;
    assert_eq!((status, body["mode"].as_str()), (StatusCode::OK, Some("approve")), "back to the start mode");
    let (_, report) = app.control(reqwest::Method::GET, "/sandbox/charges", None).await;
    assert_eq!(report, json!({"charges": [], "succeeded": 0, "declined": 0}));
    assert!(app.sandbox.refunds().is_empty());
    let (_, again) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_ne!(again["id"], first["id"], "keys and orders are forgotten too");
    assert_eq!(again["status"], "succeeded");

    app.sandbox.reset();
    assert!(app.sandbox.charges().is_empty());
}

#[tokio::test]
async fn a_sandbox_started_in_a_mode_answers_in_it_and_unknown_routes_are_404() {
    let sandbox = PaymentSandbox::start_on("127.0.0.1:0".parse().unwrap(), SECRET, PaymentMode::Decline).await.unwrap();
    assert!(sandbox.url().starts_with("http://127.0.0.1:"), "{}", sandbox.url());
    assert_ne!(sandbox.address().port(), 0);
    integration::install_crypto_provider();
    let app = TestSandbox { sandbox, client: reqwest::Client::new() };
    let (_, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(intent["status"], "declined");
    let (status, body) = app.get("/v1/charges").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_type(&body), "invalid_request_error");
}

#[test]
fn payment_modes_parse_and_print_the_same_names() {
    for name in [
        "approve",
        "decline",
        "slow:300ms",
        "slow:2s",
        "hang",
        "status:503",
        "garbage",
        "charge-then-fail",
        "charge-then-hang",
    ] {
        assert_eq!(PaymentMode::parse(name).unwrap().to_string(), name);
    }
    assert_eq!(PaymentMode::parse("slow"), Ok(PaymentMode::Slow { delay: Duration::from_secs(2) }));
    assert_eq!(PaymentMode::parse("slow:250ms"), Ok(PaymentMode::Slow { delay: Duration::from_millis(250) }));
    assert_eq!(PaymentMode::default(), PaymentMode::Approve);
    for bad in ["teleport", "status:abc", "status:200", "slow:soon"] {
        assert!(PaymentMode::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn dropping_the_sandbox_releases_a_hung_request() {
    let app = spawn_sandbox().await;
    app.sandbox.set_mode(PaymentMode::ChargeThenHang);
    let request = app.client.post(app.url("/v1/payment_intents")).bearer_auth(SECRET).header("Idempotency-Key", "k-1");
    let hung = tokio::spawn(request.json(&intent_body(ORDER, 1299)).send());
    // The charge is recorded just before the hang: once it shows, the request is held.
    let deadline = Instant::now() + Duration::from_secs(2);
    while app.sandbox.charges().is_empty() {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::task::yield_now().await;
    }
    drop(app.sandbox);
    let response = tokio::time::timeout(Duration::from_secs(2), hung).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
