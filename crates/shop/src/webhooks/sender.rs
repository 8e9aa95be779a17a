//! The port through which a delivery goes out: one signed POST of its stored body to its
//! endpoint (the adapter is the `webhooks` crate).

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{WebhookDelivery, WebhookEndpoint};

/// Why one try at sending a delivery did not deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDelivered {
    /// An attempt that failed: the status when the receiver answered, and why.
    Failed { status: Option<u16>, error: String },
    /// Nothing was sent (the endpoint's breaker is open, its bulkhead full): not an attempt.
    Refused { reason: String, retry_after: std::time::Duration },
}

/// Sends webhook deliveries.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// One try: the receiver's status when it answered 2xx, else why not. The stored payload
    /// is sent byte for byte, signed with `signed_at` as the signature's timestamp.
    async fn send(
        &self,
        endpoint: &WebhookEndpoint,
        delivery: &WebhookDelivery,
        signed_at: OffsetDateTime,
    ) -> Result<u16, NotDelivered>;

    /// Drops what the sender keeps per endpoint (clients, breakers) for endpoints not in
    /// `existing`.
    fn retain_endpoints(&self, existing: &[Uuid]);
}
