//! Outbound webhooks for merchants: endpoints an admin registers for order events, the events
//! (enqueued in the order transition's own transaction), their signed deliveries with retries,
//! the delivery log, and the rules that disable an endpoint that keeps failing.

mod event_body;
mod jobs;
mod model;
mod sender;
mod service;
mod signing;
mod url_rules;

pub use event_body::event_body;
pub use jobs::{DeliverWebhookJob, DispatchWebhooksJob};
pub use model::{
    DeliveryAttempt, DeliveryQuery, DeliveryState, MAX_ERROR_CHARS, WebhookDelivery, WebhookEndpoint,
    WebhookEndpointChanges, WebhookEvent, WebhookEventType,
};
pub use sender::{NotDelivered, WebhookSender};
pub use service::{
    DeliveryPlan, PURGE_WEBHOOK_DELIVERIES, WEBHOOKS_QUEUE, WebhookService, WebhookSettings, order_event_job,
};
pub use signing::{WebhookSecret, signature_header};
pub use url_rules::{UrlPolicy, is_public_address};
