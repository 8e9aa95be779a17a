//! The sandbox's books: every payment intent and refund it made, and the saved answer for every
//! idempotency key. Each operation decides and records in one step under the sandbox's lock.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ChargeStatus, SandboxCharge, SandboxRefund};

/// An answer for the client: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

/// What an operation newly made, for the webhooks. A replay, an order found already paid or an
/// intent found already refunded makes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Created {
    Intent(SandboxCharge),
    /// A refund and the order of the intent it refunds.
    Refund {
        refund: SandboxRefund,
        order_id: String,
    },
}

/// The endpoint an idempotency key was first used on: a key belongs to one request only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    PaymentIntents,
    Refunds,
}

#[derive(Debug, Default)]
pub(super) struct Ledger {
    charges: Vec<SandboxCharge>,
    refunds: Vec<SandboxRefund>,
    answers: HashMap<String, SavedAnswer>,
}

/// What a key was first used for and what was answered, to replay it.
#[derive(Debug)]
struct SavedAnswer {
    endpoint: Endpoint,
    request: Value,
    reply: Reply,
}

#[derive(Debug, Deserialize)]
struct NewIntent {
    amount: i64,
    currency: String,
    order_id: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NewRefund {
    payment_intent: String,
    /// The whole charge when absent.
    #[serde(default)]
    amount: Option<i64>,
}

// === impl Reply ===

impl Reply {
    pub(super) fn ok(body: Value) -> Self {
        Self { status: StatusCode::OK, body }
    }

    /// `{"error":{"type":kind,"message":message}}`, as Stripe shapes its errors.
    pub(super) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self { status, body: json!({"error": {"type": kind, "message": message.into()}}) }
    }

    fn invalid_request(message: impl Into<String>) -> Self {
        Self::error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }
}

// === impl Ledger ===

impl Ledger {
    pub(super) fn charges(&self) -> &[SandboxCharge] {
        &self.charges
    }

    pub(super) fn refunds(&self) -> &[SandboxRefund] {
        &self.refunds
    }

    /// Charges at once, declining when `decline`. A key seen before replays its answer; an order
    /// already paid gets its succeeded intent back instead of a second charge.
    pub(super) fn create_intent(&mut self, key: &str, request: Value, decline: bool) -> (Reply, Option<Created>) {
        if let Some(reply) = self.replay(key, Endpoint::PaymentIntents, &request) {
            return (reply, None);
        }
        let new = match serde_json::from_value::<NewIntent>(request.clone()) {
            Ok(new) => new,
            Err(error) => return (Reply::invalid_request(format!("invalid payment intent: {error}")), None),
        };
        if new.amount <= 0 {
            return (Reply::invalid_request("amount must be a positive integer in minor units"), None);
        }
        if new.currency.len() != 3 || !new.currency.chars().all(|letter| letter.is_ascii_alphabetic()) {
            return (Reply::invalid_request("currency must be a three-letter ISO 4217 code"), None);
        }
        if new.order_id.trim().is_empty() {
            return (Reply::invalid_request("order_id must not be empty"), None);
        }
        let already_paid = self
            .charges
            .iter()
            .find(|charge| charge.order_id == new.order_id && charge.status == ChargeStatus::Succeeded);
        let (reply, created) = match already_paid {
            Some(charge) => {
                tracing::info!(id = %charge.id, order_id = %new.order_id, key, "order already paid: no new charge");
                (Reply::ok(intent_json(charge)), None)
            }
            None => {
                let charge = SandboxCharge {
                    id: new_id("pi"),
                    order_id: new.order_id,
                    amount: new.amount,
                    currency: new.currency.to_ascii_lowercase(),
                    description: new.description,
                    status: if decline { ChargeStatus::Declined } else { ChargeStatus::Succeeded },
                    idempotency_key: key.to_owned(),
                    created: unix_now(),
                };
                tracing::info!(
                    id = %charge.id, order_id = %charge.order_id, amount = charge.amount,
                    status = charge.status.as_str(), key, "payment sandbox charge"
                );
                let reply = Reply::ok(intent_json(&charge));
                self.charges.push(charge.clone());
                (reply, Some(Created::Intent(charge)))
            }
        };
        self.save(key, Endpoint::PaymentIntents, request, &reply);
        (reply, created)
    }

    /// Refunds a succeeded intent, once: a second refund of it answers the first.
    pub(super) fn create_refund(&mut self, key: &str, request: Value) -> (Reply, Option<Created>) {
        if let Some(reply) = self.replay(key, Endpoint::Refunds, &request) {
            return (reply, None);
        }
        let new = match serde_json::from_value::<NewRefund>(request.clone()) {
            Ok(new) => new,
            Err(error) => return (Reply::invalid_request(format!("invalid refund: {error}")), None),
        };
        let Some(charge) = self.charges.iter().find(|charge| charge.id == new.payment_intent) else {
            return (no_such_intent(&new.payment_intent), None);
        };
        if charge.status != ChargeStatus::Succeeded {
            let message = format!("payment_intent {} was {}: nothing to refund", charge.id, charge.status.as_str());
            return (Reply::invalid_request(message), None);
        }
        let (reply, created) = match self.refunds.iter().find(|refund| refund.payment_intent == charge.id) {
            Some(refund) => (Reply::ok(refund_json(refund)), None),
            None => {
                let amount = new.amount.unwrap_or(charge.amount);
                if amount <= 0 || amount > charge.amount {
                    let message =
                        format!("refund amount must be between 1 and the charged {}, got {amount}", charge.amount);
                    return (Reply::invalid_request(message), None);
                }
                let refund = SandboxRefund {
                    id: new_id("re"),
                    payment_intent: charge.id.clone(),
                    amount,
                    currency: charge.currency.clone(),
                    idempotency_key: key.to_owned(),
                    created: unix_now(),
                };
                tracing::info!(id = %refund.id, payment_intent = %refund.payment_intent, amount, key, "payment sandbox refund");
                let reply = Reply::ok(refund_json(&refund));
                let created = Created::Refund { refund: refund.clone(), order_id: charge.order_id.clone() };
                self.refunds.push(refund);
                (reply, Some(created))
            }
        };
        self.save(key, Endpoint::Refunds, request, &reply);
        (reply, created)
    }

    pub(super) fn intent(&self, id: &str) -> Reply {
        match self.charges.iter().find(|charge| charge.id == id) {
            Some(charge) => Reply::ok(intent_json(charge)),
            None => no_such_intent(id),
        }
    }

    /// The intents for `order_id` (every intent without one), oldest first.
    pub(super) fn list_intents(&self, order_id: Option<&str>) -> Reply {
        let data: Vec<Value> = self
            .charges
            .iter()
            .filter(|charge| order_id.is_none_or(|order_id| charge.order_id == order_id))
            .map(intent_json)
            .collect();
        Reply::ok(json!({"object": "list", "data": data}))
    }

    /// `{"charges":[…],"succeeded":n,"declined":n}` for `GET /sandbox/charges`.
    pub(super) fn charges_report(&self) -> Value {
        let count = |status| self.charges.iter().filter(|charge| charge.status == status).count();
        let charges: Vec<Value> = self
            .charges
            .iter()
            .map(|charge| {
                json!({
                    "id": charge.id,
                    "order_id": charge.order_id,
                    "amount": charge.amount,
                    "currency": charge.currency,
                    "status": charge.status.as_str(),
                    "idempotency_key": charge.idempotency_key,
                    "created": charge.created,
                })
            })
            .collect();
        json!({
            "charges": charges,
            "succeeded": count(ChargeStatus::Succeeded),
            "declined": count(ChargeStatus::Declined),
        })
    }

    /// `{"refunds":[…],"succeeded":n}` for `GET /sandbox/refunds`.
    pub(super) fn refunds_report(&self) -> Value {
        let refunds: Vec<Value> = self
            .refunds
            .iter()
            .map(|refund| {
                json!({
                    "id": refund.id,
                    "payment_intent": refund.payment_intent,
                    "amount": refund.amount,
                    "currency": refund.currency,
                    "status": "succeeded",
                    "idempotency_key": refund.idempotency_key,
                    "created": refund.created,
                })
            })
            .collect();
        json!({"succeeded": refunds.len(), "refunds": refunds})
    }

    /// The saved answer when `key` was used before for this very request; an idempotency error
    /// when it was used for another; `None` for a new key.
    fn replay(&self, key: &str, endpoint: Endpoint, request: &Value) -> Option<Reply> {
        let saved = self.answers.get(key)?;
        if saved.endpoint == endpoint && saved.request == *request {
            tracing::info!(key, "idempotent replay");
            return Some(saved.reply.clone());
        }
        Some(Reply::error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            format!("Idempotency-Key {key:?} was already used for a different request"),
        ))
    }

    /// Only answers that did something (or found it done) are saved: a request refused as
    /// invalid may be corrected and sent again with the same key.
    fn save(&mut self, key: &str, endpoint: Endpoint, request: Value, reply: &Reply) {
        self.answers.insert(key.to_owned(), SavedAnswer { endpoint, request, reply: reply.clone() });
    }
}

/// The intent as the API answers it; a webhook event carries the same object.
pub(super) fn intent_json(charge: &SandboxCharge) -> Value {
    json!({
        "id": charge.id,
        "object": "payment_intent",
        "status": charge.status.as_str(),
        "amount": charge.amount,
        "currency": charge.currency,
        "order_id": charge.order_id,
        "description": charge.description,
        "decline_reason": match charge.status {
            ChargeStatus::Succeeded => None,
            ChargeStatus::Declined => Some("card_declined"),
        },
        "created": charge.created,
    })
}

/// The refund as the API answers it; a webhook event carries it with the order id added.
pub(super) fn refund_json(refund: &SandboxRefund) -> Value {
    json!({
        "id": refund.id,
        "object": "refund",
        "payment_intent": refund.payment_intent,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": "succeeded",
        "created": refund.created,
    })
}

fn no_such_intent(id: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, "invalid_request_error", format!("no such payment_intent: {id:?}"))
}

/// `pi_` or `re_` and 24 random letters and digits, as Stripe's ids look.
fn new_id(prefix: &str) -> String {
    let suffix: String = rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect();
    format!("{prefix}_{suffix}")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}
