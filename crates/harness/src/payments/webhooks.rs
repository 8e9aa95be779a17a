//! Signed webhooks, as a real provider sends them: every intent and refund the ledger creates
//! becomes an event, recorded at once and POSTed by one background task per sandbox, in creation
//! order, signed with HMAC-SHA256 over `"{t}.{body}"`, and retried with backoff on a transport
//! error or a non-2xx answer.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

use super::ChargeStatus;
use super::ledger::{Created, intent_json, refund_json};

/// One event the sandbox emitted, and what became of its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxEvent {
    /// `evt_` and 24 lowercase hex digits.
    pub id: String,
    /// `payment_intent.succeeded`, `payment_intent.payment_failed` or `charge.refunded`.
    pub event_type: String,
    /// The order of the intent, or of the refunded intent.
    pub order_id: String,
    /// The exact JSON bytes sent (and signed), the same on every attempt.
    pub body: String,
    /// Every delivery attempt, oldest first, those of [`PaymentSandbox::redeliver`] included.
    ///
    /// [`PaymentSandbox::redeliver`]: super::PaymentSandbox::redeliver
    pub attempts: Vec<DeliveryAttempt>,
    /// Whether some attempt was answered with a 2xx status.
    pub delivered: bool,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryAttempt {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: refused, timed out, reset, a bad URL…
    Error(String),
}

/// The `Webhook-Signature` header value for `body` sent at `timestamp` (unix seconds):
/// `t={timestamp},v1={hex}`, where `hex` is the lowercase HMAC-SHA256 of `"{timestamp}.{body}"`
/// keyed with the bytes of `secret`.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC pads or hashes a key of any length, so there is no key it refuses.
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Attempts after the first before giving up.
const RETRIES: u32 = 5;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where events go and the secret they are signed with.
#[derive(Debug, Clone)]
struct WebhookTarget {
    url: String,
    secret: String,
}

/// The events and the webhook target, shared by the API handlers (which emit), the delivery task
/// and the [`PaymentSandbox`](super::PaymentSandbox) handle.
#[derive(Debug)]
pub(super) struct Webhooks {
    target: RwLock<Option<WebhookTarget>>,
    events: Mutex<Vec<SandboxEvent>>,
    /// The ids of events to deliver, in creation order, for the delivery task.
    queue: mpsc::UnboundedSender<String>,
    client: reqwest::Client,
}

// === impl Webhooks ===

impl Webhooks {
    /// No target yet; the receiver is for [`deliver_queued`].
    pub(super) fn new() -> std::io::Result<(Self, mpsc::UnboundedReceiver<String>)> {
        // Cargo unifies features across a build: when another crate in it turns on reqwest's
        // rustls without a provider (as `integration` does), building any client panics unless a
        // process-wide provider is installed. Ring, as the rest of the workspace; an error only
        // says that a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let (queue, queued) = mpsc::unbounded_channel();
        Ok((Self { target: RwLock::new(None), events: Mutex::new(Vec::new()), queue, client }, queued))
    }

    pub(super) fn set_target(&self, url: String, secret: String) {
        tracing::info!(%url, "payment sandbox webhooks on");
        *self.target.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(WebhookTarget { url, secret });
    }

    pub(super) fn clear_target(&self) {
        tracing::info!("payment sandbox webhooks off");
        *self.target.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    fn target(&self) -> Option<WebhookTarget> {
        self.target.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn events_mut(&self) -> MutexGuard<'_, Vec<SandboxEvent>> {
        self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn events(&self) -> Vec<SandboxEvent> {
        self.events_mut().clone()
    }

    /// Forgets every event; one still being retried is dropped at its next attempt.
    pub(super) fn forget_events(&self) {
        self.events_mut().clear();
    }

    /// Records the event for what was just created and, when there is a target, queues it for
    /// the delivery task. Never waits: the caller holds the ledger lock, which keeps events in
    /// creation order.
    pub(super) fn emit(&self, created: &Created) {
        let event = new_event(created);
        let queued = self.target().is_some();
        tracing::info!(id = %event.id, event_type = %event.event_type, order_id = %event.order_id, queued, "payment sandbox event");
        let id = event.id.clone();
        self.events_mut().push(event);
        if queued && self.queue.send(id).is_err() {
            tracing::debug!("payment sandbox stopped: event recorded, not delivered");
        }
    }

    /// Sends the event once more, now, with a fresh signature; the attempt is recorded.
    pub(super) async fn redeliver(&self, event_id: &str) -> Result<u16, String> {
        let body = self.body_of(event_id).ok_or_else(|| format!("no such event: {event_id:?}"))?;
        let target = self.target().ok_or_else(|| "no webhook target: call set_webhooks first".to_owned())?;
        match self.attempt(event_id, &body, &target).await {
            DeliveryAttempt::Status(status) => Ok(status),
            DeliveryAttempt::Error(error) => Err(error),
        }
    }

    /// `{"webhook_url":…,"events":[…]}` for `GET /sandbox/events`; the secret stays out.
    pub(super) fn events_report(&self) -> Value {
        let url = self.target().map(|target| target.url);
        let events: Vec<Value> = self
            .events()
            .into_iter()
            .map(|event| {
                let attempts: Vec<Value> = event
                    .attempts
                    .iter()
                    .map(|attempt| match attempt {
                        DeliveryAttempt::Status(status) => json!({"status": status}),
                        DeliveryAttempt::Error(error) => json!({"error": error}),
                    })
                    .collect();
                json!({
                    "id": event.id,
                    "type": event.event_type,
                    "order_id": event.order_id,
                    "delivered": event.delivered,
                    "attempts": attempts,
                    "body": event.body,
                })
            })
            .collect();
        json!({"webhook_url": url, "events": events})
    }

    fn body_of(&self, event_id: &str) -> Option<String> {
        self.events_mut().iter().find(|event| event.id == event_id).map(|event| event.body.clone())
    }

    /// Delivers one queued event: the first attempt and up to [`RETRIES`] more, with backoff.
    /// Stops early when the target is cleared or the event forgotten by a reset.
    async fn deliver(&self, event_id: &str) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            let Some(target) = self.target() else {
                tracing::info!(id = event_id, "no webhook target any more: not delivering");
                return;
            };
            let Some(body) = self.body_of(event_id) else {
                tracing::info!(id = event_id, "event forgotten by a reset: not delivering");
                return;
            };
            if let DeliveryAttempt::Status(200..=299) = self.attempt(event_id, &body, &target).await {
                return;
            }
        }
        tracing::warn!(id = event_id, attempts = RETRIES + 1, "webhook not delivered: giving up");
    }

    /// One signed POST, recorded in the event's attempts.
    async fn attempt(&self, event_id: &str, body: &str, target: &WebhookTarget) -> DeliveryAttempt {
        let signature = webhook_signature(&target.secret, unix_now(), body.as_bytes());
        let sent = self
            .client
            .post(&target.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("Webhook-Signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        let attempt = match sent {
            Ok(response) => DeliveryAttempt::Status(response.status().as_u16()),
            Err(error) => DeliveryAttempt::Error(error_chain(&error)),
        };
        tracing::info!(id = event_id, url = %target.url, ?attempt, "webhook delivery attempt");
        if let Some(event) = self.events_mut().iter_mut().find(|event| event.id == event_id) {
            event.delivered |= matches!(attempt, DeliveryAttempt::Status(200..=299));
            event.attempts.push(attempt.clone());
        }
        attempt
    }
}

/// The delivery task: one per sandbox, delivering queued events one after the other until the
/// sandbox stops.
pub(super) async fn deliver_queued(
    webhooks: Arc<Webhooks>,
    mut queued: mpsc::UnboundedReceiver<String>,
    stopped: watch::Receiver<bool>,
) {
    let work = async {
        while let Some(event_id) = queued.recv().await {
            webhooks.deliver(&event_id).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = super::wait_until_stopped(stopped) => {}
    }
}

/// The event for what the ledger created, with its body serialised once for every attempt.
fn new_event(created: &Created) -> SandboxEvent {
    let (event_type, order_id, object) = match created {
        Created::Intent(charge) => {
            let event_type = match charge.status {
                ChargeStatus::Succeeded => "payment_intent.succeeded",
                ChargeStatus::Declined => "payment_intent.payment_failed",
            };
            (event_type, charge.order_id.clone(), intent_json(charge))
        }
        Created::Refund { refund, order_id } => {
            let mut object = refund_json(refund);
            if let Value::Object(fields) = &mut object {
                fields.insert("order_id".to_owned(), Value::String(order_id.clone()));
            }
            ("charge.refunded", order_id.clone(), object)
        }
    };
    let mut random = [0u8; 12];
    rand::rng().fill_bytes(&mut random);
    let id = format!("evt_{}", hex::encode(random));
    let body = json!({
        "id": id,
        "object": "event",
        "type": event_type,
        "created": unix_now(),
        "data": {"object": object},
    })
    .to_string();
    SandboxEvent { id, event_type: event_type.to_owned(), order_id, body, attempts: Vec::new(), delivered: false }
}

/// The error and its causes: reqwest's own message rarely says what went wrong.
fn error_chain(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0).try_into().unwrap_or(0)
}
