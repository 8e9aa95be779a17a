//! The port of merchant webhook endpoints and their delivery log.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;
use crate::jobs::NewJob;
use crate::pagination::Page;
use crate::webhooks::{DeliveryAttempt, DeliveryQuery, WebhookDelivery, WebhookEndpoint, WebhookEndpointChanges};

/// Merchant webhook endpoints and the delivery log.
#[async_trait]
pub trait WebhookRepository: Send + Sync {
    /// Inserts an endpoint unless `max_endpoints` exist already (`Conflict { webhook_endpoints_limit }`);
    /// the count and the insert are one transaction.
    async fn insert_webhook_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
        max_endpoints: u32,
    ) -> Result<WebhookEndpoint, StoreError>;
    async fn find_webhook_endpoint(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// Every endpoint, oldest first (there are at most `max_endpoints`).
    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;
    /// Applies the changes; enabling clears `disabled_at`/`disabled_reason` and resets
    /// `consecutive_failures`. `NotFound` when there is no such endpoint.
    async fn update_webhook_endpoint(
        &self,
        id: Uuid,
        changes: &WebhookEndpointChanges,
        now: OffsetDateTime,
    ) -> Result<WebhookEndpoint, StoreError>;
    /// Disables an enabled endpoint with a reason and abandons its pending and failed
    /// deliveries, in one transaction. `None` when it does not exist or is already disabled.
    async fn disable_webhook_endpoint(
        &self,
        id: Uuid,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// Deletes an endpoint and its delivery log. `NotFound` when there is no such endpoint.
    async fn delete_webhook_endpoint(&self, id: Uuid) -> Result<(), StoreError>;
    /// Inserts a delivery and enqueues `job` (its `webhooks.deliver`) in one transaction;
    /// `false` (and nothing written) when the endpoint already has a delivery of this event.
    async fn insert_webhook_delivery(&self, delivery: &WebhookDelivery, job: &NewJob) -> Result<bool, StoreError>;
    async fn find_webhook_delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError>;
    /// One endpoint's deliveries, newest first.
    async fn list_webhook_deliveries(&self, query: &DeliveryQuery) -> Result<Page<WebhookDelivery>, StoreError>;
    /// Records an attempt of a live (`pending` or `failed`) delivery: its state, attempts + 1,
    /// status, error and time; the endpoint's `consecutive_failures` reset on success, else
    /// incremented. Not `attempted`: only the state changes, and the error is kept when the
    /// delivery already has one. One transaction; the endpoint as it is afterwards, `None`
    /// (and nothing written) when the delivery is gone or no longer live, or the endpoint gone.
    async fn record_webhook_attempt(&self, attempt: &DeliveryAttempt) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// An admin's retry: a `failed` or `abandoned` delivery of the endpoint becomes `pending`
    /// and `job` is enqueued, in one transaction. `NotFound`; `Conflict { webhook_deliveries_state }`
    /// in any other state; `Conflict { jobs_unique_key }` when its retry is already queued.
    async fn requeue_webhook_delivery(
        &self,
        endpoint_id: Uuid,
        delivery_id: Uuid,
        job: &NewJob,
        now: OffsetDateTime,
    ) -> Result<WebhookDelivery, StoreError>;
    /// Abandons the live (`pending` or `failed`) deliveries last changed before `before`, with
    /// `reason` as their error: their job died without recording (a database error, a lost
    /// lease). Returns how many.
    async fn abandon_stale_webhook_deliveries(
        &self,
        before: OffsetDateTime,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;
    /// Deletes at most `limit` finished (succeeded or abandoned) deliveries created before `before`.
    async fn purge_webhook_deliveries(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
}
