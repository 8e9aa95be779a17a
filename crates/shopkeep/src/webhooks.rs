//! The jobs of merchant webhooks: `webhooks.dispatch`, `webhooks.deliver` (through the
//! `webhooks` crate's sender) and `webhooks.purge_deliveries`.

use std::sync::Arc;
use std::time::Instant;

use shop::Store;
use shop::jobs::Job;
use shop::webhooks::{
    DeliverWebhookJob, DeliveryPlan, DispatchWebhooksJob, NotDelivered, WebhookEndpoint, WebhookSender, WebhookService,
};
use uuid::Uuid;
use worker::{HandlerError, JobHandler, PayloadHandler};

fn transient(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(error.to_string())
}

/// `webhooks.dispatch`: an order event becomes one delivery (and `webhooks.deliver` job) per
/// enabled endpoint subscribed to it. Without subscribers it stops after one query.
/// Idempotent: an endpoint has at most one delivery of an event.
pub struct DispatchWebhooks {
    pub store: Arc<dyn Store>,
    pub webhooks: WebhookService,
}

#[async_trait::async_trait]
impl PayloadHandler for DispatchWebhooks {
    type Payload = DispatchWebhooksJob;

    async fn run(&self, _job: &Job, payload: DispatchWebhooksJob) -> Result<(), HandlerError> {
        let event = payload.event().map_err(HandlerError::Permanent)?;
        let endpoints = self.webhooks.subscribers(event.event_type).await.map_err(transient)?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let Some(order) = self.store.find_order(event.order_id).await.map_err(transient)? else {
            return Err(HandlerError::Permanent(format!("order {} does not exist", event.order_id)));
        };
        let created = self.webhooks.create_deliveries(&event, &endpoints, &order).await.map_err(transient)?;
        tracing::debug!(eventId = %event.id, event = event.event_type.as_str(), created, "webhook deliveries created");
        Ok(())
    }
}

/// `webhooks.deliver`: one signed POST of a delivery to its endpoint. A 2xx succeeds; anything
/// else is a failed attempt, recorded in the delivery log, and the job runs again after the
/// queue's backoff. An open breaker or a full bulkhead sends nothing: that is no attempt (the
/// delivery's attempts, the endpoint's failure count and the job's attempts stay as they are)
/// and the job is deferred until the breaker lets a probe through. After the last attempt the
/// delivery is abandoned and, when the endpoint has failed persistently, it is disabled (under
/// the governor).
/// At least once: a crash after the POST and before the record sends it again, with the same
/// `Shopkeep-Event-Id`.
pub struct DeliverWebhook {
    pub webhooks: WebhookService,
    pub sender: Arc<dyn WebhookSender>,
    pub governor: resilience::ActionGovernor,
}

#[async_trait::async_trait]
impl PayloadHandler for DeliverWebhook {
    type Payload = DeliverWebhookJob;

    async fn run(&self, job: &Job, payload: DeliverWebhookJob) -> Result<(), HandlerError> {
        let delivery_id = payload.delivery_id;
        let DeliveryPlan::Send { endpoint, delivery } =
            self.webhooks.plan_delivery(delivery_id).await.map_err(transient)?
        else {
            return Ok(());
        };
        let last = job.attempts >= job.max_attempts;
        let started = Instant::now();
        let outcome = self.sender.send(&endpoint, &delivery, self.webhooks.now()).await;
        metrics::histogram!("webhook_delivery_duration_seconds").record(started.elapsed().as_secs_f64());
        let (status, error) = match &outcome {
            Ok(status) => (Some(*status), None),
            Err(NotDelivered::Failed { status, error }) => (*status, Some(error.as_str())),
            Err(NotDelivered::Refused { reason, retry_after }) => {
                metrics::counter!("webhook_deliveries_total", "outcome" => "deferred").increment(1);
                self.webhooks.record_not_sent(&delivery, reason).await.map_err(transient)?;
                tracing::info!(deliveryId = %delivery.id, endpointId = %endpoint.id, reason, "webhook delivery deferred");
                return Err(HandlerError::Deferred { reason: reason.clone(), retry_after: *retry_after });
            }
        };
        let label = match (error, last) {
            (None, _) => "succeeded",
            (Some(_), false) => "failed",
            (Some(_), true) => "abandoned",
        };
        metrics::counter!("webhook_deliveries_total", "outcome" => label).increment(1);
        let (_, disable) = self.webhooks.record_attempt(&delivery, status, error, last).await.map_err(transient)?;
        if disable {
            self.disable(&endpoint).await;
        }
        match error {
            None => Ok(()),
            // The abandonment is recorded: a dead job would only say so again, and retrying it
            // would do nothing (an admin retries the delivery instead).
            Some(error) if last => {
                tracing::warn!(deliveryId = %delivery.id, endpointId = %endpoint.id, attempt = job.attempts, error, "webhook delivery abandoned after its last attempt");
                Ok(())
            }
            Some(error) => {
                tracing::info!(deliveryId = %delivery.id, endpointId = %endpoint.id, attempt = job.attempts, error, "webhook attempt failed");
                Err(HandlerError::Transient(error.to_owned()))
            }
        }
    }
}

impl DeliverWebhook {
    async fn disable(&self, endpoint: &WebhookEndpoint) {
        let grant = self.governor.request(1);
        if grant.granted == 0 {
            // The governor logged it: a bug (or an outage of our own) must not switch off every
            // merchant's endpoint at once. The next exhausted delivery asks again.
            return;
        }
        let reason = format!(
            "disabled automatically: a delivery used all {} attempts and the last {} attempts failed",
            self.webhooks.settings().max_attempts,
            self.webhooks.settings().disable_after_failures
        );
        match self.webhooks.disable_failing_endpoint(endpoint.id, &reason).await {
            Ok(Some(_)) => metrics::counter!("webhook_endpoints_disabled_total").increment(1),
            Ok(None) => self.governor.release(1),
            Err(error) => {
                self.governor.release(1);
                tracing::error!(endpointId = %endpoint.id, %error, "could not disable a failing webhook endpoint");
            }
        }
    }
}

/// `webhooks.purge_deliveries`: abandons live deliveries whose job died without recording
/// (unchanged for longer than any retry span), deletes finished deliveries past their retention
/// (steady state), and forgets the clients of deleted endpoints. Idempotent.
pub struct PurgeWebhookDeliveries {
    pub webhooks: WebhookService,
    pub sender: Arc<dyn WebhookSender>,
    /// Paces the deletes, as every purge's governor does.
    pub governor: resilience::ActionGovernor,
}

#[async_trait::async_trait]
impl JobHandler for PurgeWebhookDeliveries {
    async fn run(&self, _job: &Job) -> Result<(), HandlerError> {
        let abandoned = self.webhooks.abandon_stale_deliveries().await.map_err(transient)?;
        if abandoned > 0 {
            tracing::warn!(abandoned, "webhook deliveries whose job ended without recording were abandoned");
        }
        let purge = crate::jobs::governed_purge(&self.governor, crate::jobs::SESSION_PURGE_BATCH, |limit| {
            self.webhooks.purge_deliveries(limit)
        });
        let outcome = purge.await.map_err(transient)?;
        metrics::counter!("webhook_deliveries_purged_total").increment(outcome.purged);
        let existing: Vec<Uuid> =
            self.webhooks.list_endpoints().await.map_err(transient)?.iter().map(|endpoint| endpoint.id).collect();
        self.sender.retain_endpoints(&existing);
        Ok(())
    }
}
