//! The jobs of merchant webhooks: their payloads and kinds.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{WebhookEvent, WebhookEventType};
use crate::jobs::JobPayload;

/// `webhooks.dispatch`: turns an order event into one delivery per subscribed endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchWebhooksJob {
    pub event_id: Uuid,
    pub event_type: String,
    pub order_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

impl JobPayload for DispatchWebhooksJob {
    const KIND: &'static str = "webhooks.dispatch";
}

impl DispatchWebhooksJob {
    pub fn new(event: &WebhookEvent) -> Self {
        Self {
            event_id: event.id,
            event_type: event.event_type.as_str().to_owned(),
            order_id: event.order_id,
            occurred_at: event.occurred_at,
        }
    }

    /// The event to dispatch; an error for an event type this shop does not know.
    pub fn event(&self) -> Result<WebhookEvent, String> {
        let event_type = WebhookEventType::parse(&self.event_type)
            .ok_or_else(|| format!("unknown webhook event type {:?}", self.event_type))?;
        Ok(WebhookEvent { id: self.event_id, event_type, order_id: self.order_id, occurred_at: self.occurred_at })
    }
}

/// `webhooks.deliver`: one attempt of one delivery to its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverWebhookJob {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
}

impl JobPayload for DeliverWebhookJob {
    const KIND: &'static str = "webhooks.deliver";
}
