//! The HTTP payment provider adapter: [`HttpPayments`] speaks a Stripe-like API (payment
//! intents confirmed at once, looked up by order, refunds) through an
//! [`integration::IntegrationClient`] — connect/attempt/total timeouts, a bulkhead, the
//! `payments` circuit breaker, retries only because every write carries an `Idempotency-Key`
//! — and maps every answer to what the checkout needs to know: charged, declined, certainly
//! not sent (`Unavailable`), or sent with an unknown outcome (`Unknown`).
//!
//! Charges are keyed by the order id (`order-{id}`) and refunds by `refund-{id}`, so however
//! often a charge is retried — by the client's retries, a resumed checkout, a settlement job —
//! the provider charges the order at most once.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use integration::{IntegrationClient, IntegrationConfig, IntegrationError, OutboundRequest};
use resilience::{BreakerState, CircuitBreaker, Clock, Idempotency};
use serde::Deserialize;
use shop::catalog::Money;
use shop::orders::{ChargeOutcome, ChargeRequest, PaymentError, PaymentProvider};
use uuid::Uuid;

/// The provider's answer about one payment intent.
#[derive(Debug, Deserialize)]
struct Intent {
    id: String,
    status: String,
    #[serde(default)]
    decline_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IntentList {
    data: Vec<Intent>,
}

#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
}

/// A provider reached over HTTP with a secret key.
pub struct HttpPayments {
    name: String,
    secret: String,
    http: IntegrationClient,
}

impl std::fmt::Debug for HttpPayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPayments").field("name", &self.name).finish_non_exhaustive()
    }
}

impl HttpPayments {
    /// `config.name` names the breaker (`payments`); `secret` goes in `Authorization: Bearer`.
    pub fn new(config: IntegrationConfig, secret: String, clock: Arc<dyn Clock>) -> Result<Self, IntegrationError> {
        let name = config.name.clone();
        Ok(Self { name, secret, http: IntegrationClient::new(config, clock)? })
    }

    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        self.http.breaker()
    }

    fn authorised(&self, mut request: OutboundRequest) -> OutboundRequest {
        if let Ok(value) = format!("Bearer {}", self.secret).parse() {
            request.headers.insert(http::header::AUTHORIZATION, value);
        }
        request
    }

    fn post(&self, path: &str, body: &serde_json::Value, key: &str) -> OutboundRequest {
        // Every write carries an idempotency key, so retrying it is safe.
        let mut request = OutboundRequest::post_json(path, body, Idempotency::Idempotent);
        if let Ok(value) = key.parse() {
            request.headers.insert("idempotency-key", value);
        }
        self.authorised(request)
    }

    /// Sends a request and reads a 2xx JSON answer; every failure becomes a [`PaymentError`].
    /// A failure is `Unavailable` (nothing happened) only when no attempt reached the provider,
    /// and a 4xx refusal is final only when it answered the one attempt sent: after a retry,
    /// an earlier attempt may have been acted on (charged, then failed) whatever the last says.
    async fn call<T: serde::de::DeserializeOwned>(&self, request: OutboundRequest) -> Result<Answer<T>, PaymentError> {
        let (result, delivery) = self.http.send_reporting(request).await;
        let response = result.map_err(|error| match classify(&error) {
            PaymentError::Unavailable { .. } if !delivery.nothing_sent() => PaymentError::Unknown(format!(
                "{error}, after {} attempt(s) that may have reached the provider",
                delivery.attempts_sent
            )),
            classified => classified,
        })?;
        if response.status.is_success() {
            return response.json::<T>().map(Answer::Ok).map_err(|error| PaymentError::Unknown(error.to_string()));
        }
        let detail = String::from_utf8_lossy(&response.body).chars().take(300).collect::<String>();
        if delivery.attempts_sent > 1 {
            return Err(PaymentError::Unknown(format!(
                "the provider answered {} to a retry; an earlier attempt may have been acted on: {detail}",
                response.status.as_u16()
            )));
        }
        match response.status.as_u16() {
            401 | 403 => {
                tracing::error!(
                    provider = self.name.as_str(),
                    status = response.status.as_u16(),
                    "the payment provider refused our credentials"
                );
                Err(PaymentError::Unavailable { retry_after: Duration::from_secs(60) })
            }
            409 => Err(PaymentError::Unknown(format!("the provider reported a conflict: {detail}"))),
            _ => Ok(Answer::Refused(detail)),
        }
    }
}

/// A 2xx answer, or a 4xx refusal of the request itself (nothing happened).
enum Answer<T> {
    Ok(T),
    Refused(String),
}

/// What an integration failure says about whether the provider acted.
fn classify(error: &IntegrationError) -> PaymentError {
    match error {
        // Refused before sending: certainly no effect.
        IntegrationError::BreakerOpen(rejected) => {
            PaymentError::Unavailable { retry_after: rejected.retry_after.unwrap_or(Duration::from_secs(30)) }
        }
        IntegrationError::BulkheadFull(_) => PaymentError::Unavailable { retry_after: Duration::from_secs(1) },
        IntegrationError::Connect { .. } | IntegrationError::Config { .. } => {
            PaymentError::Unavailable { retry_after: Duration::from_secs(5) }
        }
        // Sent: it may have happened.
        IntegrationError::Timeout { .. }
        | IntegrationError::Protocol { .. }
        | IntegrationError::Status { .. }
        | IntegrationError::InvalidBody(_) => PaymentError::Unknown(error.to_string()),
    }
}

fn outcome(intent: Intent) -> Result<ChargeOutcome, PaymentError> {
    match intent.status.as_str() {
        "succeeded" => Ok(ChargeOutcome::Approved { reference: intent.id }),
        "declined" => {
            Ok(ChargeOutcome::Declined { reason: intent.decline_reason.unwrap_or_else(|| "declined".into()) })
        }
        other => Err(PaymentError::Unknown(format!("payment intent {} is {other:?}", intent.id))),
    }
}

#[async_trait]
impl PaymentProvider for HttpPayments {
    fn name(&self) -> &str {
        &self.name
    }

    fn test_mode(&self) -> bool {
        false
    }

    fn accepting(&self) -> Result<(), Duration> {
        let snapshot = self.http.breaker().snapshot();
        match snapshot.state {
            BreakerState::ForcedOpen => Err(Duration::from_secs(30)),
            BreakerState::Open => match snapshot.retry_after {
                Some(wait) if !wait.is_zero() => Err(wait),
                // The wait is over: the next call is a probe.
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PaymentError> {
        let body = serde_json::json!({
            "amount": request.amount.minor(),
            "currency": request.amount.currency().as_str().to_ascii_lowercase(),
            "order_id": request.order_id.to_string(),
            "description": request.description,
        });
        let key = format!("order-{}", request.order_id);
        match self.call::<Intent>(self.post("/v1/payment_intents", &body, &key)).await? {
            Answer::Ok(intent) => outcome(intent),
            Answer::Refused(detail) => {
                Ok(ChargeOutcome::Declined { reason: format!("refused by the provider: {detail}") })
            }
        }
    }

    async fn find_charge(&self, order_id: Uuid) -> Result<Option<ChargeOutcome>, PaymentError> {
        let request = self.authorised(OutboundRequest::get(&format!("/v1/payment_intents?order_id={order_id}")));
        let list = match self.call::<IntentList>(request).await? {
            Answer::Ok(list) => list,
            Answer::Refused(detail) => return Err(PaymentError::Unknown(format!("lookup refused: {detail}"))),
        };
        // A succeeded charge wins over any declined attempt before it.
        let mut intents = list.data;
        if let Some(position) = intents.iter().position(|intent| intent.status == "succeeded") {
            return outcome(intents.swap_remove(position)).map(Some);
        }
        intents.pop().map(outcome).transpose()
    }

    async fn refund(&self, order_id: Uuid, amount: Money) -> Result<String, PaymentError> {
        let Some(ChargeOutcome::Approved { reference }) = self.find_charge(order_id).await? else {
            return Err(PaymentError::Unknown(format!("no succeeded charge of order {order_id} to refund")));
        };
        let body = serde_json::json!({ "payment_intent": reference, "amount": amount.minor() });
        match self.call::<Refund>(self.post("/v1/refunds", &body, &format!("refund-{order_id}"))).await? {
            Answer::Ok(refund) => Ok(refund.id),
            Answer::Refused(detail) => Err(PaymentError::Unknown(format!("refund refused: {detail}"))),
        }
    }
}
