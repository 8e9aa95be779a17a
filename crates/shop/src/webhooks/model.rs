//! Endpoints, events and deliveries, as the webhook service and its repository exchange them.

use time::OffsetDateTime;
use uuid::Uuid;

use super::signing::WebhookSecret;
use crate::orders::OrderStatus;
use crate::pagination::PageRequest;

/// The longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2_048;
/// The longest endpoint description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// The longest error (or response excerpt) kept in the delivery log, in characters.
pub const MAX_ERROR_CHARS: usize = 500;

/// The events a merchant can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookEventType {
    OrderPaid,
    OrderCancelled,
    OrderFulfilled,
    OrderRefunded,
}

impl WebhookEventType {
    pub const ALL: [Self; 4] = [Self::OrderPaid, Self::OrderCancelled, Self::OrderFulfilled, Self::OrderRefunded];

    /// The name on the wire and in the database (`order.paid`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderPaid => "order.paid",
            Self::OrderCancelled => "order.cancelled",
            Self::OrderFulfilled => "order.fulfilled",
            Self::OrderRefunded => "order.refunded",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == raw)
    }

    /// The event an order's move into `status` causes, if any.
    pub fn for_status(status: OrderStatus) -> Option<Self> {
        match status {
            OrderStatus::Paid => Some(Self::OrderPaid),
            OrderStatus::Cancelled => Some(Self::OrderCancelled),
            OrderStatus::Fulfilled => Some(Self::OrderFulfilled),
            OrderStatus::Refunded => Some(Self::OrderRefunded),
            OrderStatus::PendingPayment => None,
        }
    }

    /// Stored as a comma-separated list (`order.paid,order.refunded`).
    pub fn join(events: &[Self]) -> String {
        events.iter().map(|event| event.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The inverse of [`WebhookEventType::join`]; `None` if any name is unknown.
    pub fn split(raw: &str) -> Option<Vec<Self>> {
        raw.split(',').filter(|name| !name.is_empty()).map(Self::parse).collect()
    }
}

/// Where a merchant wants events delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Distinct, sorted, at least one.
    pub events: Vec<WebhookEventType>,
    pub secret: WebhookSecret,
    /// Set when the endpoint was disabled (by an admin, or automatically after persistent failure).
    pub disabled_at: Option<OffsetDateTime>,
    pub disabled_reason: Option<String>,
    /// Failed attempts since the last successful one, across deliveries.
    pub consecutive_failures: u32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl WebhookEndpoint {
    pub fn enabled(&self) -> bool {
        self.disabled_at.is_none()
    }

    pub fn subscribes_to(&self, event: WebhookEventType) -> bool {
        self.events.contains(&event)
    }
}

/// An admin's change of an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookEndpointChanges {
    pub url: Option<String>,
    pub events: Option<Vec<WebhookEventType>>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    pub secret: Option<WebhookSecret>,
    /// `true` enables it and resets its failure count; disabling is not a change made here (it
    /// abandons deliveries: `WebhookRepository::disable_webhook_endpoint`).
    pub enable: bool,
}

/// Something that happened to an order, to be told to subscribed endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// Receivers deduplicate on it (`Shopkeep-Event-Id`).
    pub id: Uuid,
    pub event_type: WebhookEventType,
    pub order_id: Uuid,
    pub occurred_at: OffsetDateTime,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its first attempt (or for an admin's retry).
    Pending,
    Succeeded,
    /// An attempt failed; another follows after the backoff.
    Failed,
    /// No more attempts: they ran out, or the endpoint was disabled or removed.
    Abandoned,
}

impl DeliveryState {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Succeeded, Self::Failed, Self::Abandoned];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == raw)
    }

    /// Whether an attempt may still be made (pending or failed).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Failed)
    }
}

/// One event for one endpoint, with its attempts so far: the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: WebhookEventType,
    /// The JSON body sent, exactly as signed.
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_status: Option<u16>,
    /// Why the last attempt failed (or a short excerpt of the answer), at most `MAX_ERROR_CHARS`.
    pub last_error: Option<String>,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The outcome of one attempt, recorded with the delivery and its endpoint's failure count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    /// `Succeeded`, `Failed` (a retry follows) or `Abandoned` (that was the last attempt).
    pub state: DeliveryState,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: OffsetDateTime,
    /// `false` when nothing was sent (abandoned unsent): attempts and the endpoint's failure
    /// count stay as they are.
    pub attempted: bool,
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub endpoint_id: Uuid,
    pub state: Option<DeliveryState>,
    /// Newest first.
    pub page: PageRequest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for event in WebhookEventType::ALL {
            assert_eq!(WebhookEventType::parse(event.as_str()), Some(event));
        }
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
        }
        let events = [WebhookEventType::OrderPaid, WebhookEventType::OrderRefunded];
        assert_eq!(WebhookEventType::join(&events), "order.paid,order.refunded");
        assert_eq!(WebhookEventType::split("order.paid,order.refunded"), Some(events.to_vec()));
        assert_eq!(WebhookEventType::split("order.paid,order.lost"), None);
        assert_eq!(WebhookEventType::for_status(OrderStatus::PendingPayment), None);
    }
}
