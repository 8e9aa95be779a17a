//! The payment sandbox's signed webhooks seen from a real receiver: one event per creation and
//! none for a replay, signatures that verify, events sent whatever the mode answers, retries with
//! backoff, redelivery, and the control endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use harness::{DeliveryAttempt, Harness, PaymentMode, PaymentSandbox, SandboxEvent, webhook_signature};
use hmac::{Hmac, Mac as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "sk_test_harness";
const WEBHOOK_SECRET: &str = "whsec_test_harness";
const WEBHOOK_PATH: &str = "/api/v1/payment-webhooks/sandbox";
const ORDER: &str = "0190f3a2-7c4e-7b1a-9d2e-5f6a7b8c9d0e";
const OTHER_ORDER: &str = "0190f3a2-7c4e-7b1a-9d2e-000000000002";
const SENTINEL_ORDER: &str = "0190f3a2-7c4e-7b1a-9d2e-00000000ffff";

/// One webhook request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    content_type: Option<String>,
    signature: Option<String>,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Statuses to answer, in order; 200 once it is empty.
    script: VecDeque<u16>,
}

/// A webhook receiver on 127.0.0.1:0 that records every request.
#[derive(Debug, Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

async fn spawn_receiver(script: &[u16]) -> Receiver {
    let state = Arc::new(Mutex::new(ReceiverState { received: Vec::new(), script: script.iter().copied().collect() }));
    let router = Router::new().route(WEBHOOK_PATH, post(receive)).with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}{WEBHOOK_PATH}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Receiver { url, state }
}

async fn receive(State(state): State<Arc<Mutex<ReceiverState>>>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let header = |name: &str| headers.get(name).map(|value| value.to_str().unwrap().to_owned());
    let mut state = state.lock().unwrap();
    state.received.push(Received {
        content_type: header("content-type"),
        signature: header("webhook-signature"),
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    AxumStatus::from_u16(state.script.pop_front().unwrap_or(200)).unwrap()
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until `count` requests arrived, and returns them.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        eventually(|| async { self.received().len() >= count }).await;
        self.received()
    }
}

/// Polls `condition` every 10 ms for up to 5 s.
async fn eventually<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition().await {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh sandbox sending webhooks to a fresh receiver, and a client for the sandbox.
struct TestApp {
    sandbox: PaymentSandbox,
    receiver: Receiver,
    client: reqwest::Client,
}

async fn spawn_app(script: &[u16]) -> TestApp {
    spawn_app_with_client_timeout(script, Duration::from_secs(5)).await
}

async fn spawn_app_with_client_timeout(script: &[u16], timeout: Duration) -> TestApp {
    // reqwest is built with rustls here (feature unification): it needs a process-wide provider.
    integration::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
    let sandbox = PaymentSandbox::start(SECRET).await.unwrap();
    let receiver = spawn_receiver(script).await;
    sandbox.set_webhooks(receiver.url.clone(), WEBHOOK_SECRET);
    TestApp { sandbox, receiver, client }
}

fn intent_body(order_id: &str, amount: i64) -> Value {
    json!({"amount": amount, "currency": "eur", "order_id": order_id})
}

impl TestApp {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.url())
    }

    async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
        self.client.post(self.url(path)).bearer_auth(SECRET).header("Idempotency-Key", key).json(body).send().await
    }

    async fn pay(&self, key: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.post("/v1/payment_intents", key, body).await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn refund(&self, key: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.post("/v1/refunds", key, body).await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Charges a throwaway order in `Approve` and waits for its event: as delivery keeps creation
    /// order, everything emitted before it has arrived by then, so a test can count what did.
    async fn flush(&self) -> Vec<Received> {
        let mode = self.sandbox.mode();
        self.sandbox.set_mode(PaymentMode::Approve);
        let (status, _) =
            self.pay(&format!("sentinel-{}", self.receiver.received().len()), &intent_body(SENTINEL_ORDER, 1)).await;
        self.sandbox.set_mode(mode);
        assert_eq!(status, StatusCode::OK);
        eventually(|| async {
            self.receiver
                .received()
                .last()
                .is_some_and(|last| last.json()["data"]["object"]["order_id"] == SENTINEL_ORDER)
        })
        .await;
        let mut received = self.receiver.received();
        received.pop();
        received
    }
}

/// Checks the `Webhook-Signature` header against an HMAC recomputed here, and returns its `t`.
fn verify_signature(received: &Received) -> i64 {
    let header = received.signature.as_deref().expect("a Webhook-Signature header");
    let (timestamp, hex_mac) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("not t=…,v1=…: {header:?}"));
    let timestamp: i64 = timestamp.parse().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", received.body).as_bytes());
    mac.verify_slice(&hex::decode(hex_mac).unwrap()).expect("the signature verifies");
    assert_eq!(hex_mac, hex_mac.to_ascii_lowercase(), "lowercase hex");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - timestamp).abs() <= 60, "t is the time of sending: {timestamp} vs {now}");
    assert_eq!(webhook_signature(WEBHOOK_SECRET, timestamp, received.body.as_bytes()), header);
    timestamp
}

fn assert_event_envelope(event: &Value, event_type: &str) {
    let id = event["id"].as_str().unwrap();
    let hex_part = id.strip_prefix("evt_").unwrap_or_else(|| panic!("not an evt_ id: {id}"));
    assert_eq!(hex_part.len(), 24, "{id}");
    assert!(hex_part.chars().all(|digit| digit.is_ascii_hexdigit() && !digit.is_ascii_uppercase()), "{id}");
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], event_type);
    assert!(event["created"].as_i64().unwrap() > 1_700_000_000);
    let fields: Vec<&String> = event.as_object().unwrap().keys().collect();
    assert_eq!(fields.len(), 5, "exactly id, object, type, created, data: {event}");
    assert_eq!(event["data"].as_object().unwrap().len(), 1, "data holds the object only");
}

#[tokio::test]
async fn a_new_charge_sends_one_signed_event_and_a_replay_sends_none() {
    let app = spawn_app(&[]).await;
    let (status, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::OK);

    let received = app.receiver.wait_for(1).await;
    assert_eq!(received[0].content_type.as_deref(), Some("application/json"));
    verify_signature(&received[0]);
    let event = received[0].json();
    assert_event_envelope(&event, "payment_intent.succeeded");
    assert_eq!(event["data"]["object"], intent, "the object is the intent the API returned");
    assert_eq!(event["data"]["object"]["order_id"], ORDER);
    assert_eq!(event["data"]["object"]["status"], "succeeded");

    // The same key replayed, and a new key for an order already paid: no creation, no event.
    let (_, replayed) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(replayed, intent);
    let (_, already_paid) = app.pay("k-2", &intent_body(ORDER, 1299)).await;
    assert_eq!(already_paid["id"], intent["id"]);
    assert_eq!(app.flush().await.len(), 1, "one event for one charge");

    let recorded: Vec<SandboxEvent> = app.sandbox.webhook_events();
    assert_eq!(recorded.len(), 2, "the charge and the flush");
    assert_eq!(recorded[0].id, event["id"].as_str().unwrap());
    assert_eq!(recorded[0].event_type, "payment_intent.succeeded");
    assert_eq!(recorded[0].order_id, ORDER);
    assert_eq!(recorded[0].body, received[0].body, "the exact bytes sent");
    assert_eq!(recorded[0].attempts, vec![DeliveryAttempt::Status(200)]);
    assert!(recorded[0].delivered);
}

#[tokio::test]
async fn a_declined_charge_sends_payment_failed() {
    let app = spawn_app(&[]).await;
    app.sandbox.set_mode(PaymentMode::Decline);
    let (status, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!((status, intent["status"].as_str()), (StatusCode::OK, Some("declined")));

    let received = app.receiver.wait_for(1).await;
    verify_signature(&received[0]);
    let event = received[0].json();
    assert_event_envelope(&event, "payment_intent.payment_failed");
    assert_eq!(event["data"]["object"], intent);
    assert_eq!(event["data"]["object"]["order_id"], ORDER);
    assert_eq!(event["data"]["object"]["decline_reason"], "card_declined");
    assert_eq!(app.sandbox.webhook_events()[0].event_type, "payment_intent.payment_failed");
}

#[tokio::test]
async fn a_refund_sends_charge_refunded_with_the_order_once() {
    let app = spawn_app(&[]).await;
    let (_, intent) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let refund_request = json!({"payment_intent": intent["id"], "amount": 500});
    let (status, refund) = app.refund("r-1", &refund_request).await;
    assert_eq!(status, StatusCode::OK);

    let received = app.receiver.wait_for(2).await;
    assert_eq!(received[0].json()["type"], "payment_intent.succeeded", "in creation order");
    verify_signature(&received[1]);
    let event = received[1].json();
    assert_event_envelope(&event, "charge.refunded");
    let object = &event["data"]["object"];
    assert!(object["id"].as_str().unwrap().starts_with("re_"), "{object}");
    assert_eq!(object["id"], refund["id"]);
    assert_eq!(object["payment_intent"], intent["id"]);
    assert_eq!((object["amount"].as_i64(), object["currency"].as_str()), (Some(500), Some("eur")));
    assert_eq!(object["order_id"], ORDER);

    // A replayed key and a second refund of the same intent create nothing.
    app.refund("r-1", &refund_request).await;
    let (_, again) = app.refund("r-2", &refund_request).await;
    assert_eq!(again["id"], refund["id"]);
    assert_eq!(app.flush().await.len(), 2);
    assert_eq!(app.sandbox.webhook_events()[1].order_id, ORDER);
}

#[tokio::test]
async fn charge_then_fail_and_charge_then_hang_still_send_the_event() {
    let app = spawn_app_with_client_timeout(&[], Duration::from_millis(500)).await;
    app.sandbox.set_mode(PaymentMode::ChargeThenFail);
    let (status, _) = app.pay("k-1", &intent_body(ORDER, 1299)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let received = app.receiver.wait_for(1).await;
    verify_signature(&received[0]);
    let event = received[0].json();
    assert_event_envelope(&event, "payment_intent.succeeded");
    assert_eq!(event["data"]["object"]["order_id"], ORDER);
    assert_eq!(event["data"]["object"]["id"], app.sandbox.charges()[0].id, "the shop learns of the charge");

    app.sandbox.set_mode(PaymentMode::ChargeThenHang);
    let hung = app.post("/v1/payment_intents", "k-2", &intent_body(OTHER_ORDER, 700)).await;
    assert!(hung.unwrap_err().is_timeout());
    let received = app.receiver.wait_for(2).await;
    assert_eq!(received[1].json()["data"]["object"]["order_id"], OTHER_ORDER);
}

#[tokio::test]
async fn modes_that_do_nothing_send_nothing() {
    let app = spawn_app_with_client_timeout(&[], Duration::from_millis(300)).await;
    for mode in [PaymentMode::Status(503), PaymentMode::Garbage, PaymentMode::Hang] {
        app.sandbox.set_mode(mode);
        let _ = app.post("/v1/payment_intents", "k-1", &intent_body(ORDER, 1299)).await;
    }
    // An invalid request creates nothing either.
    app.sandbox.set_mode(PaymentMode::Approve);
    let (status, _) = app.pay("k-2", &intent_body(ORDER, -1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(app.flush().await.is_empty());
    assert_eq!(app.sandbox.webhook_events().len(), 1, "the flush only");
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_answers_2xx() {
    let app = spawn_app(&[500, 500]).await;
    app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let received = app.receiver.wait_for(3).await;
    assert!(received.iter().all(|request| request.body == received[0].body), "the same bytes every time");
    for request in &received {
        verify_signature(request);
    }
    eventually(|| async { app.sandbox.webhook_events()[0].delivered }).await;
    let event = &app.sandbox.webhook_events()[0];
    assert_eq!(
        event.attempts,
        vec![DeliveryAttempt::Status(500), DeliveryAttempt::Status(500), DeliveryAttempt::Status(200)]
    );
    assert_eq!(app.receiver.received().len(), 3, "nothing after the 200");
}

#[tokio::test]
async fn an_unreachable_receiver_is_tried_six_times_then_given_up() {
    let app = spawn_app(&[]).await;
    let refusing = Harness::refusing_address().await.unwrap();
    app.sandbox.set_webhooks(format!("http://{refusing}{WEBHOOK_PATH}"), WEBHOOK_SECRET);
    let started = Instant::now();
    app.pay("k-1", &intent_body(ORDER, 1299)).await;
    // Backoff 100 + 200 + 400 + 800 + 1600 ms between the six attempts.
    eventually(|| async { app.sandbox.webhook_events()[0].attempts.len() == 6 }).await;
    assert!(started.elapsed() >= Duration::from_millis(3100), "backed off: {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = &app.sandbox.webhook_events()[0];
    assert_eq!(event.attempts.len(), 6, "no seventh attempt");
    assert!(event.attempts.iter().all(|attempt| matches!(attempt, DeliveryAttempt::Error(_))), "{:?}", event.attempts);
    assert!(!event.delivered);
}

#[tokio::test]
async fn redeliver_sends_the_same_event_again_with_a_fresh_signature() {
    let app = spawn_app(&[]).await;
    app.pay("k-1", &intent_body(ORDER, 1299)).await;
    app.receiver.wait_for(1).await;
    eventually(|| async { app.sandbox.webhook_events()[0].delivered }).await;
    let event_id = app.sandbox.webhook_events()[0].id.clone();

    assert_eq!(app.sandbox.redeliver(&event_id).await, Ok(200));
    let received = app.receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].body, received[0].body, "a duplicate: same id, same bytes");
    verify_signature(&received[1]);
    assert_eq!(
        app.sandbox.webhook_events()[0].attempts,
        vec![DeliveryAttempt::Status(200), DeliveryAttempt::Status(200)]
    );

    assert!(app.sandbox.redeliver("evt_000000000000000000000000").await.is_err(), "unknown event");
    app.sandbox.clear_webhooks();
    assert!(app.sandbox.redeliver(&event_id).await.is_err(), "no target");
    let refusing = Harness::refusing_address().await.unwrap();
    app.sandbox.set_webhooks(format!("http://{refusing}/"), WEBHOOK_SECRET);
    assert!(app.sandbox.redeliver(&event_id).await.is_err(), "transport error");
}

#[tokio::test]
async fn cleared_webhooks_record_without_sending_and_reset_keeps_the_target() {
    let app = spawn_app(&[]).await;
    app.sandbox.clear_webhooks();
    app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let events = app.sandbox.webhook_events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].attempts.len(), events[0].delivered), (0, false));

    app.sandbox.set_webhooks(app.receiver.url.clone(), WEBHOOK_SECRET);
    assert!(app.flush().await.is_empty(), "events from before the target are not sent");

    app.sandbox.reset();
    assert!(app.sandbox.webhook_events().is_empty(), "reset forgets events");
    app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let received = app.receiver.wait_for(2).await;
    assert_eq!(received[1].json()["data"]["object"]["order_id"], ORDER, "the target survived the reset");
}

#[tokio::test]
async fn webhooks_are_controlled_and_events_listed_over_http() {
    let app = spawn_app(&[]).await;
    app.sandbox.clear_webhooks();
    let control = |method: reqwest::Method, path: &str| app.client.request(method, app.url(path));

    for bad in [
        json!({"url": app.receiver.url}),
        json!({"url": "not a url", "secret": "s"}),
        json!({"url": app.receiver.url, "secret": ""}),
    ] {
        let response = control(reqwest::Method::PUT, "/sandbox/webhooks").json(&bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let not_json = control(reqwest::Method::PUT, "/sandbox/webhooks").body("url=x").send().await.unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);

    let target = json!({"url": app.receiver.url, "secret": WEBHOOK_SECRET});
    let response = control(reqwest::Method::PUT, "/sandbox/webhooks").json(&target).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.pay("k-1", &intent_body(ORDER, 1299)).await;
    let received = app.receiver.wait_for(1).await;
    verify_signature(&received[0]);
    eventually(|| async { app.sandbox.webhook_events()[0].delivered }).await;

    let listed: Value = control(reqwest::Method::GET, "/sandbox/events").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["webhook_url"], app.receiver.url.as_str());
    assert!(!listed.to_string().contains(WEBHOOK_SECRET), "the secret is not listed");
    let listed_event = &listed["events"][0];
    assert_eq!(listed_event["id"], received[0].json()["id"]);
    assert_eq!(listed_event["type"], "payment_intent.succeeded");
    assert_eq!(listed_event["order_id"], ORDER);
    assert_eq!(listed_event["delivered"], true);
    assert_eq!(listed_event["attempts"], json!([{"status": 200}]));
    assert_eq!(listed_event["body"], received[0].body.as_str());

    let response = control(reqwest::Method::DELETE, "/sandbox/webhooks").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.pay("k-2", &intent_body(OTHER_ORDER, 700)).await;
    let events = app.sandbox.webhook_events();
    assert_eq!((events.len(), events[1].delivered, events[1].attempts.len()), (2, false, 0));
    assert_eq!(app.receiver.received().len(), 1);
}

#[test]
fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
    let body = br#"{"id":"evt_1"}"#;
    let header = webhook_signature("whsec_x", 1_750_000_000, body);
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_x").unwrap();
    mac.update(b"1750000000.{\"id\":\"evt_1\"}");
    assert_eq!(header, format!("t=1750000000,v1={}", hex::encode(mac.finalize().into_bytes())));
    assert_ne!(header, webhook_signature("whsec_y", 1_750_000_000, body), "the secret matters");
    assert_ne!(header, webhook_signature("whsec_x", 1_750_000_001, body), "the timestamp matters");
}
