//! Payments as the checkout needs them: the [`PaymentProvider`] port's types, and the built-in
//! test-mode provider of the embedded default, which approves every charge and charges nothing.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::catalog::Money;

/// A charge for one order. The order id is the provider-side idempotency key: asking twice
/// (a retry, a crash and resume) charges once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub order_id: Uuid,
    pub amount: Money,
    pub description: String,
}

/// What the provider decided about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged; `reference` is the provider's id of the charge.
    Approved { reference: String },
    /// Refused (card declined, insufficient funds, …); nothing was charged.
    Declined { reason: String },
}

/// Why a call to the provider gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// Nothing was sent (breaker open, no slot free): certainly no effect. Try after `retry_after`.
    #[error("the payment provider is unavailable")]
    Unavailable { retry_after: Duration },
    /// Sent, but the outcome is unknown (timeout, 5xx, garbage): it may or may not have
    /// happened. Ask again later ([`PaymentProvider::find_charge`]).
    #[error("the payment provider's answer is unknown: {0}")]
    Unknown(String),
}

/// An event a provider reported by webhook, once its signature is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The provider's id of the event: a redelivery carries the same id.
    pub id: String,
    pub kind: PaymentEventKind,
}

/// What a webhook event says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEventKind {
    /// The order was charged; `reference` is the charge.
    Charged { order_id: Uuid, reference: String },
    /// The order's charge was declined; nothing was charged.
    Declined { order_id: Uuid, reason: String },
    /// Some or all of the order's charge was refunded (by us, or from the provider's
    /// dashboard); `amount_minor` is how much.
    Refunded { order_id: Uuid, reference: String, amount_minor: i64 },
    /// An event type the shop does not act on; acknowledged and ignored.
    Other { event_type: String },
}

impl PaymentEventKind {
    pub fn order_id(&self) -> Option<Uuid> {
        match self {
            Self::Charged { order_id, .. } | Self::Declined { order_id, .. } | Self::Refunded { order_id, .. } => {
                Some(*order_id)
            }
            Self::Other { .. } => None,
        }
    }

    /// The event's type in logs and the event record.
    pub fn label(&self) -> &str {
        match self {
            Self::Charged { .. } => "charged",
            Self::Declined { .. } => "declined",
            Self::Refunded { .. } => "refunded",
            Self::Other { event_type } => event_type,
        }
    }
}

/// Why a webhook was refused. Nothing in it is acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    /// This provider sends no webhooks here (the test mode, or no signing secret configured).
    #[error("this payment provider sends no webhooks")]
    NotAccepted,
    #[error("the Webhook-Signature header is missing or malformed")]
    MissingSignature,
    #[error("the signature does not match the body")]
    BadSignature,
    /// Signed too long ago (or in the future): a replay, or a badly wrong clock.
    #[error("the signature's timestamp is outside the tolerance of {tolerance_secs} s")]
    Stale { tolerance_secs: u64 },
    #[error("the event cannot be read: {0}")]
    Malformed(String),
}

/// A payment provider (an HTTP API, or the built-in test mode).
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// `test` for the built-in provider; the configured name otherwise.
    fn name(&self) -> &str;
    /// Orders paid through it are marked test-mode everywhere: nothing was really charged.
    fn test_mode(&self) -> bool;
    /// Whether a charge would be attempted now (the breaker is not open); `Err(retry_after)`
    /// lets the checkout fail fast before it reserves anything.
    fn accepting(&self) -> Result<(), Duration>;
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PaymentError>;
    /// The provider's record of the order's charge, `None` when it never received one.
    async fn find_charge(&self, order_id: Uuid) -> Result<Option<ChargeOutcome>, PaymentError>;
    /// Refunds the order's charge in full (idempotent per order); the refund's reference.
    async fn refund(&self, order_id: Uuid, amount: Money) -> Result<String, PaymentError>;
    /// Verifies a webhook's signature (`Webhook-Signature` header value) over its raw body
    /// and its timestamp against `now`, and reads the event. Nothing unverified is returned.
    fn verify_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<PaymentEvent, WebhookRejection>;
}

/// The embedded default: approves every charge at once and charges nothing. Stateless, so
/// every process (`serve`, `shopkeep worker`) gives the same answers: a charge is approved
/// with a reference derived from the order id (asking again is the same charge), any order
/// asked about counts as charged (it would have been approved), and refunds always succeed.
#[derive(Debug, Default)]
pub struct TestModePayments;

impl TestModePayments {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl PaymentProvider for TestModePayments {
    fn name(&self) -> &str {
        "test"
    }

    fn test_mode(&self) -> bool {
        true
    }

    fn accepting(&self) -> Result<(), Duration> {
        Ok(())
    }

    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PaymentError> {
        Ok(ChargeOutcome::Approved { reference: format!("test_ch_{}", request.order_id.simple()) })
    }

    async fn find_charge(&self, order_id: Uuid) -> Result<Option<ChargeOutcome>, PaymentError> {
        Ok(Some(ChargeOutcome::Approved { reference: format!("test_ch_{}", order_id.simple()) }))
    }

    async fn refund(&self, order_id: Uuid, _amount: Money) -> Result<String, PaymentError> {
        Ok(format!("test_re_{}", order_id.simple()))
    }

    fn verify_webhook(
        &self,
        _signature: Option<&str>,
        _body: &[u8],
        _now: time::OffsetDateTime,
    ) -> Result<PaymentEvent, WebhookRejection> {
        // Nothing happens elsewhere in test mode, so there is nothing to hear about.
        Err(WebhookRejection::NotAccepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Currency;

    #[tokio::test]
    async fn test_mode_approves_the_same_charge_in_every_process() {
        let order_id = Uuid::now_v7();
        let amount = Money::from_minor(1_299, Currency::parse("EUR").unwrap()).unwrap();
        let request = ChargeRequest { order_id, amount, description: "order".into() };
        let first = TestModePayments::new().charge(&request).await.unwrap();
        assert!(matches!(&first, ChargeOutcome::Approved { reference } if reference.starts_with("test_ch_")));
        let elsewhere = TestModePayments::new();
        assert_eq!(elsewhere.charge(&request).await.unwrap(), first, "a retry is the same charge");
        assert_eq!(elsewhere.find_charge(order_id).await.unwrap(), Some(first));
        assert_eq!(
            elsewhere.refund(order_id, amount).await.unwrap(),
            TestModePayments::new().refund(order_id, amount).await.unwrap()
        );
        assert!(elsewhere.test_mode() && elsewhere.accepting().is_ok());
    }
}
