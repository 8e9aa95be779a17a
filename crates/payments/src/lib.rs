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
use hmac::{Hmac, Mac as _};
use integration::{IntegrationClient, IntegrationConfig, IntegrationError, OutboundRequest};
use resilience::{BreakerState, CircuitBreaker, Clock, Idempotency};
use serde::Deserialize;
use sha2::Sha256;
use shop::catalog::Money;
use shop::orders::{
    ChargeOutcome, ChargeRequest, PaymentError, PaymentEvent, PaymentEventKind, PaymentProvider, WebhookRejection,
};
use time::OffsetDateTime;
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
    webhooks: Option<WebhookVerifier>,
}

/// How the provider signs its webhooks: `Webhook-Signature: t=<unix seconds>,v1=<hex>` where
/// the hex is HMAC-SHA256, keyed with the signing secret, of `"{t}.{raw body}"`. Several `v1`
/// entries may be present (the provider signs with old and new secrets while rotating); one
/// match is enough. `t` must be within `tolerance` of now, so a captured webhook cannot be
/// replayed later.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<String>,
    tolerance: Duration,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl WebhookVerifier {
    /// The shortest signing secret accepted: an empty or short key would let anyone sign.
    pub const MIN_SECRET_LEN: usize = 16;

    /// `secrets`: the signing secret, or while rotating, the new and the old one. Refuses no
    /// secret at all and any secret shorter than [`Self::MIN_SECRET_LEN`].
    pub fn new(secrets: Vec<String>, tolerance: Duration) -> Result<Self, String> {
        if secrets.is_empty() || secrets.iter().any(|secret| secret.trim().len() < Self::MIN_SECRET_LEN) {
            return Err(format!("every webhook signing secret must be at least {} characters", Self::MIN_SECRET_LEN));
        }
        Ok(Self { secrets, tolerance })
    }

    /// Checks the signature header against the raw body and `now`.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now: OffsetDateTime) -> Result<(), WebhookRejection> {
        let header = header.ok_or(WebhookRejection::MissingSignature)?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
                Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(WebhookRejection::MissingSignature)?;
        if signatures.is_empty() {
            return Err(WebhookRejection::MissingSignature);
        }
        let mut signed = Vec::with_capacity(body.len() + 21);
        signed.extend_from_slice(timestamp.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        let matches = self.secrets.iter().any(|secret| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
            mac.update(&signed);
            // `verify_slice` compares in constant time: no hint of how much of a forgery was right.
            signatures.iter().any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        });
        if !matches {
            return Err(WebhookRejection::BadSignature);
        }
        // Checked after the signature, so an unsigned request learns nothing about our clock.
        let age = now.unix_timestamp().abs_diff(timestamp);
        if age > self.tolerance.as_secs() {
            return Err(WebhookRejection::Stale { tolerance_secs: self.tolerance.as_secs() });
        }
        Ok(())
    }
}

/// A webhook event as the provider sends it.
#[derive(Debug, Deserialize)]
struct WebhookEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: WebhookData,
}

#[derive(Debug, Deserialize)]
struct WebhookData {
    object: WebhookObject,
}

/// The intent or refund an event is about; only what the shop needs.
#[derive(Debug, Deserialize)]
struct WebhookObject {
    id: String,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    decline_reason: Option<String>,
    /// Of a refund: how much was refunded, in minor units.
    #[serde(default)]
    amount: Option<i64>,
}

/// Reads a verified event body.
fn parse_event(body: &[u8]) -> Result<PaymentEvent, WebhookRejection> {
    let event: WebhookEvent =
        serde_json::from_slice(body).map_err(|error| WebhookRejection::Malformed(error.to_string()))?;
    if event.id.is_empty() || event.id.len() > 255 {
        return Err(WebhookRejection::Malformed("the event id must be 1 to 255 characters".into()));
    }
    let order_id = || {
        event
            .data
            .object
            .order_id
            .as_deref()
            .and_then(|raw| Uuid::parse_str(raw).ok())
            .ok_or_else(|| WebhookRejection::Malformed(format!("{} names no order id", event.event_type)))
    };
    let kind = match event.event_type.as_str() {
        "payment_intent.succeeded" => {
            PaymentEventKind::Charged { order_id: order_id()?, reference: event.data.object.id.clone() }
        }
        "payment_intent.payment_failed" => PaymentEventKind::Declined {
            order_id: order_id()?,
            reason: event.data.object.decline_reason.clone().unwrap_or_else(|| "declined".into()),
        },
        "charge.refunded" => PaymentEventKind::Refunded {
            order_id: order_id()?,
            reference: event.data.object.id.clone(),
            amount_minor: event
                .data
                .object
                .amount
                .ok_or_else(|| WebhookRejection::Malformed("charge.refunded names no amount".into()))?,
        },
        "" => return Err(WebhookRejection::Malformed("the event has no type".into())),
        other => PaymentEventKind::Other { event_type: other.chars().take(100).collect() },
    };
    Ok(PaymentEvent { id: event.id, kind })
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
        Ok(Self { name, secret, http: IntegrationClient::new(config, clock)?, webhooks: None })
    }

    /// Accepts the provider's webhooks under `name` (`/payment-webhooks/{name}`), verified
    /// with `verifier`. Without this, webhooks are refused (404) and only polling settles.
    pub fn with_webhooks(mut self, name: impl Into<String>, verifier: WebhookVerifier) -> Self {
        self.name = name.into();
        self.webhooks = Some(verifier);
        self
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
            // The deadline passed while waiting for a slot or between refused connections:
            // nothing reached the provider.
            PaymentError::Unknown(_) if delivery.nothing_sent() => {
                PaymentError::Unavailable { retry_after: Duration::from_secs(5) }
            }
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

    fn verify_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<PaymentEvent, WebhookRejection> {
        let verifier = self.webhooks.as_ref().ok_or(WebhookRejection::NotAccepted)?;
        verifier.verify(signature, body, now)?;
        parse_event(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_signing_secret";

    fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn verifier() -> WebhookVerifier {
        WebhookVerifier::new(vec![SECRET.into()], Duration::from_secs(300)).unwrap()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn a_signature_over_the_body_within_the_tolerance_is_accepted() {
        let body = br#"{"id":"evt_1"}"#;
        let at = now().unix_timestamp();
        assert_eq!(verifier().verify(Some(&sign(SECRET, at, body)), body, now()), Ok(()));
        assert_eq!(verifier().verify(Some(&sign(SECRET, at - 300, body)), body, now()), Ok(()), "at the edge");
        // While rotating, the provider signs with both secrets; either matches.
        let old = sign(SECRET, at, body);
        let both = format!("{},v1={}", sign("whsec_new_secret_value", at, body), old.split_once(",v1=").unwrap().1);
        assert_eq!(verifier().verify(Some(&both), body, now()), Ok(()));
        let rotated =
            WebhookVerifier::new(vec!["whsec_new_secret_value".into(), SECRET.into()], Duration::from_secs(300))
                .unwrap();
        assert_eq!(rotated.verify(Some(&sign(SECRET, at, body)), body, now()), Ok(()));
    }

    #[test]
    fn empty_or_short_signing_secrets_are_refused() {
        let tolerance = Duration::from_secs(300);
        assert!(WebhookVerifier::new(vec![], tolerance).is_err());
        assert!(WebhookVerifier::new(vec![SECRET.into(), String::new()], tolerance).is_err(), "an empty old secret");
        assert!(WebhookVerifier::new(vec!["short".into()], tolerance).is_err());
    }

    #[test]
    fn the_signature_is_checked_before_the_body_is_read() {
        let garbage = b"not json at all";
        let at = now().unix_timestamp();
        assert_eq!(
            verifier().verify(Some(&sign("whsec_someone_elses_secret", at, garbage)), garbage, now()),
            Err(WebhookRejection::BadSignature)
        );
        // Extreme timestamps are refused without overflow.
        for extreme in [i64::MIN, i64::MAX] {
            assert_eq!(
                verifier().verify(Some(&sign(SECRET, extreme, garbage)), garbage, now()),
                Err(WebhookRejection::Stale { tolerance_secs: 300 })
            );
        }
    }

    #[test]
    fn forged_tampered_stale_and_unsigned_webhooks_are_refused() {
        let body = br#"{"id":"evt_1"}"#;
        let at = now().unix_timestamp();
        let verify = |header: Option<&str>, body: &[u8]| verifier().verify(header, body, now());
        assert_eq!(verify(Some(&sign("whsec_other_signing_key", at, body)), body), Err(WebhookRejection::BadSignature));
        assert_eq!(verify(Some(&sign(SECRET, at, body)), br#"{"id":"evt_2"}"#), Err(WebhookRejection::BadSignature));
        // The timestamp is signed too: moving it breaks the signature.
        let moved = sign(SECRET, at - 1_000, body).replace(&format!("t={}", at - 1_000), &format!("t={at}"));
        assert_eq!(verify(Some(&moved), body), Err(WebhookRejection::BadSignature));
        for stale in [at - 301, at + 301] {
            assert_eq!(
                verify(Some(&sign(SECRET, stale, body)), body),
                Err(WebhookRejection::Stale { tolerance_secs: 300 }),
                "a replay of a webhook signed at {stale}"
            );
        }
        for header in [None, Some(""), Some("t=1"), Some("v1=abcd"), Some("t=x,v1=00"), Some("t=1,v1=not-hex")] {
            assert_eq!(verify(header, body), Err(WebhookRejection::MissingSignature), "{header:?}");
        }
    }

    #[test]
    fn events_are_read_into_what_the_shop_acts_on() {
        let order = Uuid::now_v7();
        let event = |kind: &str, object: serde_json::Value| {
            serde_json::to_vec(&serde_json::json!({"id": "evt_9", "type": kind, "data": {"object": object}})).unwrap()
        };
        let charged = parse_event(&event(
            "payment_intent.succeeded",
            serde_json::json!({"id": "pi_1", "order_id": order.to_string()}),
        ));
        assert_eq!(
            charged,
            Ok(PaymentEvent {
                id: "evt_9".into(),
                kind: PaymentEventKind::Charged { order_id: order, reference: "pi_1".into() }
            })
        );
        let declined = parse_event(&event(
            "payment_intent.payment_failed",
            serde_json::json!({"id": "pi_2", "order_id": order.to_string(), "decline_reason": "card_declined"}),
        ))
        .unwrap();
        assert_eq!(declined.kind, PaymentEventKind::Declined { order_id: order, reason: "card_declined".into() });
        let refunded = parse_event(&event(
            "charge.refunded",
            serde_json::json!({"id": "re_1", "order_id": order.to_string(), "amount": 500}),
        ))
        .unwrap();
        assert_eq!(
            refunded.kind,
            PaymentEventKind::Refunded { order_id: order, reference: "re_1".into(), amount_minor: 500 }
        );
        assert!(matches!(
            parse_event(&event("charge.refunded", serde_json::json!({"id": "re_1", "order_id": order.to_string()}))),
            Err(WebhookRejection::Malformed(_))
        ));
        assert!(matches!(parse_event(&event("", serde_json::json!({"id": "x"}))), Err(WebhookRejection::Malformed(_))));
        let other = parse_event(&event("customer.created", serde_json::json!({"id": "cus_1"}))).unwrap();
        assert_eq!(other.kind, PaymentEventKind::Other { event_type: "customer.created".into() });
        assert!(matches!(
            parse_event(&event("payment_intent.succeeded", serde_json::json!({"id": "pi_1", "order_id": "nope"}))),
            Err(WebhookRejection::Malformed(_))
        ));
        assert!(matches!(parse_event(b"not json"), Err(WebhookRejection::Malformed(_))));
    }
}
