//! The webhook use cases: endpoints managed by admins, events turned into deliveries (one per
//! subscribed endpoint, at most once per event), attempts recorded in the delivery log, and the
//! automatic disabling of an endpoint that keeps failing.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::event_body::event_body;
use super::jobs::{DeliverWebhookJob, DispatchWebhooksJob};
use super::model::{
    DeliveryAttempt, DeliveryQuery, DeliveryState, MAX_DESCRIPTION_CHARS, MAX_ERROR_CHARS, WebhookDelivery,
    WebhookEndpoint, WebhookEndpointChanges, WebhookEvent, WebhookEventType,
};
use super::signing::WebhookSecret;
use super::url_rules::{UrlPolicy, parse_endpoint_url};
use crate::clock::Clock;
use crate::error::{Conflict, Error, StoreError};
use crate::jobs::{JobPayload as _, NewJob};
use crate::orders::{Order, OrderStatus};
use crate::pagination::{Page, PageRequest};
use crate::ports::Store;
use crate::validation::ValidationErrors;

/// The kind of the recurring delivery-log purge, and the queue deliveries run on (its own
/// bulkhead: slow receivers cannot hold up mail or payments).
pub const PURGE_WEBHOOK_DELIVERIES: &str = "webhooks.purge_deliveries";
pub const WEBHOOKS_QUEUE: &str = "webhooks";

/// Limits and rules of webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url_policy: UrlPolicy,
    /// Endpoints that may exist at once.
    pub max_endpoints: u32,
    /// Attempts of one delivery (the job queue's exponential backoff runs between them).
    pub max_attempts: u32,
    /// An endpoint whose delivery used its last attempt is disabled when at least this many
    /// attempts in a row, across its deliveries, have failed (no success in between).
    pub disable_after_failures: u32,
    /// Finished deliveries are deleted from the log this long after they were created.
    pub retention: Duration,
    /// A live delivery unchanged for this long lost its job (it died without recording) and is
    /// abandoned by the purge. Longer than any wait between two attempts of a live job.
    pub stale_after: Duration,
}

/// What a `webhooks.deliver` job should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryPlan {
    /// Send the delivery's payload to the endpoint.
    Send { endpoint: Box<WebhookEndpoint>, delivery: Box<WebhookDelivery> },
    /// Nothing: the delivery is gone, finished, or was just abandoned (endpoint disabled).
    Nothing,
}

/// The `webhooks.dispatch` job an order's move into `to` causes (none for `pendingPayment`):
/// it goes into the transition's own transaction, so the event exists if and only if the
/// change committed.
pub fn order_event_job(to: OrderStatus, order_id: Uuid, at: OffsetDateTime) -> Option<NewJob> {
    let event_type = WebhookEventType::for_status(to)?;
    let event = WebhookEvent { id: crate::new_id(), event_type, order_id, occurred_at: at };
    Some(NewJob::of(&DispatchWebhooksJob::new(&event), at).max_attempts(10).unique_key(format!(
        "{}:{}",
        DispatchWebhooksJob::KIND,
        event.id
    )))
}

/// Webhook endpoints, events and deliveries; cheap to clone.
#[derive(Clone)]
pub struct WebhookService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: WebhookSettings,
}

impl std::fmt::Debug for WebhookService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl WebhookService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: WebhookSettings) -> Self {
        Self { store, clock, settings }
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// The time by the service's clock (a delivery's signature timestamp).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    // ----- endpoints (admin) -----

    /// Registers an endpoint with a fresh signing secret (in the returned endpoint: show it once).
    pub async fn create_endpoint(
        &self,
        url: Option<&str>,
        events: Option<&[String]>,
        description: Option<&str>,
    ) -> Result<WebhookEndpoint, Error> {
        let mut errors = ValidationErrors::new();
        let url = errors.check("url", parse_endpoint_url(url.unwrap_or_default(), self.settings.url_policy));
        let events = errors.check("events", parse_events(events.unwrap_or_default()));
        let description = errors.check("description", parse_description(description));
        errors.into_result()?;
        let (Some(url), Some(events), Some(description)) = (url, events, description) else {
            return Err(Error::Invalid(ValidationErrors::single("body", "is invalid")));
        };
        let now = self.clock.now();
        let endpoint = WebhookEndpoint {
            id: crate::new_id(),
            url,
            description,
            events,
            secret: WebhookSecret::generate(),
            disabled_at: None,
            disabled_reason: None,
            consecutive_failures: 0,
            created_at: now,
            updated_at: now,
        };
        match self.store.insert_webhook_endpoint(&endpoint, self.settings.max_endpoints).await {
            Ok(created) => {
                // The host only: the path or query of a receiver's URL may hold a token.
                let host = url::Url::parse(&created.url).ok().and_then(|url| url.host_str().map(str::to_owned));
                tracing::info!(target: "audit", endpointId = %created.id, host = host.as_deref().unwrap_or(""), "webhook endpoint registered");
                Ok(created)
            }
            Err(StoreError::Conflict(Conflict::WebhookEndpointLimit)) => Err(Error::Conflict(format!(
                "at most {} webhook endpoints may exist; delete one first",
                self.settings.max_endpoints
            ))),
            Err(other) => Err(other.into()),
        }
    }

    pub async fn list_endpoints(&self) -> Result<Vec<WebhookEndpoint>, Error> {
        Ok(self.store.list_webhook_endpoints().await?)
    }

    pub async fn get_endpoint(&self, id: Uuid) -> Result<WebhookEndpoint, Error> {
        self.store.find_webhook_endpoint(id).await?.ok_or(Error::NotFound)
    }

    /// Changes an endpoint; `enabled: true` re-enables it (failure count reset), `false`
    /// disables it and abandons its pending deliveries.
    pub async fn update_endpoint(
        &self,
        id: Uuid,
        url: Option<&str>,
        events: Option<&[String]>,
        description: Option<Option<&str>>,
        enabled: Option<bool>,
    ) -> Result<WebhookEndpoint, Error> {
        let mut errors = ValidationErrors::new();
        let url = url.and_then(|raw| errors.check("url", parse_endpoint_url(raw, self.settings.url_policy)));
        let events = events.and_then(|raw| errors.check("events", parse_events(raw)));
        let description = description.and_then(|raw| errors.check("description", parse_description(raw)));
        if url.is_none() && events.is_none() && description.is_none() && enabled.is_none() && errors.is_empty() {
            errors.add("body", "give url, events, description and/or enabled");
        }
        errors.into_result()?;
        let now = self.clock.now();
        let changes = WebhookEndpointChanges { url, events, description, secret: None, enable: enabled == Some(true) };
        let mut endpoint = self.store.update_webhook_endpoint(id, &changes, now).await?;
        if enabled == Some(false)
            && let Some(disabled) = self.store.disable_webhook_endpoint(id, "disabled by an admin", now).await?
        {
            endpoint = disabled;
        }
        tracing::info!(target: "audit", endpointId = %id, enabled = endpoint.enabled(), "webhook endpoint changed");
        Ok(endpoint)
    }

    /// A new signing secret (in the returned endpoint: show it once); the old one stops at once.
    pub async fn rotate_secret(&self, id: Uuid) -> Result<WebhookEndpoint, Error> {
        let changes = WebhookEndpointChanges { secret: Some(WebhookSecret::generate()), ..Default::default() };
        let endpoint = self.store.update_webhook_endpoint(id, &changes, self.clock.now()).await?;
        tracing::info!(target: "audit", endpointId = %id, "webhook signing secret rotated");
        Ok(endpoint)
    }

    pub async fn delete_endpoint(&self, id: Uuid) -> Result<(), Error> {
        self.store.delete_webhook_endpoint(id).await?;
        tracing::info!(target: "audit", endpointId = %id, "webhook endpoint deleted");
        Ok(())
    }

    /// An endpoint's delivery log, newest first.
    pub async fn list_deliveries(
        &self,
        endpoint_id: Uuid,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> Result<Page<WebhookDelivery>, Error> {
        self.get_endpoint(endpoint_id).await?;
        Ok(self.store.list_webhook_deliveries(&DeliveryQuery { endpoint_id, state, page }).await?)
    }

    /// Queues a failed or abandoned delivery again (attempts start over), on an enabled endpoint.
    pub async fn retry_delivery(&self, endpoint_id: Uuid, delivery_id: Uuid) -> Result<WebhookDelivery, Error> {
        let endpoint = self.get_endpoint(endpoint_id).await?;
        if !endpoint.enabled() {
            return Err(Error::Conflict("the endpoint is disabled; enable it first".into()));
        }
        let now = self.clock.now();
        let job = self.deliver_job(delivery_id, endpoint_id, now);
        match self.store.requeue_webhook_delivery(endpoint_id, delivery_id, &job, now).await {
            Ok(delivery) => {
                tracing::info!(target: "audit", endpointId = %endpoint_id, deliveryId = %delivery_id, "webhook delivery retried by an admin");
                Ok(delivery)
            }
            Err(StoreError::Conflict(Conflict::DuplicateJob)) => {
                Err(Error::Conflict("this delivery's next attempt is already scheduled".into()))
            }
            Err(StoreError::Conflict(_)) => {
                Err(Error::Conflict("only failed or abandoned deliveries can be retried".into()))
            }
            Err(other) => Err(other.into()),
        }
    }

    // ----- events and deliveries (jobs) -----

    /// The enabled endpoints subscribed to `event_type` (usually none: dispatch stops there).
    pub async fn subscribers(&self, event_type: WebhookEventType) -> Result<Vec<WebhookEndpoint>, Error> {
        let endpoints = self.store.list_webhook_endpoints().await?;
        Ok(endpoints.into_iter().filter(|e| e.enabled() && e.subscribes_to(event_type)).collect())
    }

    /// Creates one delivery (and its job) per endpoint for `event` about `order`; an endpoint
    /// that already has this event's delivery is skipped, so a re-run is a no-op. Returns how
    /// many deliveries were created.
    pub async fn create_deliveries(
        &self,
        event: &WebhookEvent,
        endpoints: &[WebhookEndpoint],
        order: &Order,
    ) -> Result<usize, Error> {
        let payload = event_body(event, order).map_err(|error| Error::Internal(error.into()))?;
        let now = self.clock.now();
        let mut created = 0;
        for endpoint in endpoints {
            let delivery = WebhookDelivery {
                id: crate::new_id(),
                endpoint_id: endpoint.id,
                event_id: event.id,
                event_type: event.event_type,
                payload: payload.clone(),
                state: DeliveryState::Pending,
                attempts: 0,
                last_status: None,
                last_error: None,
                last_attempt_at: None,
                created_at: now,
                updated_at: now,
            };
            let job = self.deliver_job(delivery.id, endpoint.id, now);
            if self.store.insert_webhook_delivery(&delivery, &job).await? {
                created += 1;
            }
        }
        Ok(created)
    }

    /// What the `webhooks.deliver` job of `delivery_id` should do. A live delivery of a
    /// disabled endpoint is abandoned here.
    pub async fn plan_delivery(&self, delivery_id: Uuid) -> Result<DeliveryPlan, Error> {
        let Some(delivery) = self.store.find_webhook_delivery(delivery_id).await? else {
            return Ok(DeliveryPlan::Nothing);
        };
        if !delivery.state.is_live() {
            return Ok(DeliveryPlan::Nothing);
        }
        let Some(endpoint) = self.store.find_webhook_endpoint(delivery.endpoint_id).await? else {
            return Ok(DeliveryPlan::Nothing);
        };
        if !endpoint.enabled() {
            let attempt = DeliveryAttempt {
                delivery_id,
                endpoint_id: endpoint.id,
                state: DeliveryState::Abandoned,
                status: None,
                error: Some("not attempted: the endpoint is disabled".into()),
                at: self.clock.now(),
                attempted: false,
            };
            self.store.record_webhook_attempt(&attempt).await?;
            return Ok(DeliveryPlan::Nothing);
        }
        Ok(DeliveryPlan::Send { endpoint: Box::new(endpoint), delivery: Box::new(delivery) })
    }

    /// Records an attempt's outcome: `status` is the HTTP status when there was an answer,
    /// `error` why it failed (`None`: it succeeded); `last` says it was the delivery's last
    /// attempt. Returns the endpoint afterwards, and whether the rules now call for disabling it.
    pub async fn record_attempt(
        &self,
        delivery: &WebhookDelivery,
        status: Option<u16>,
        error: Option<&str>,
        last: bool,
    ) -> Result<(Option<WebhookEndpoint>, bool), Error> {
        let state = match (error, last) {
            (None, _) => DeliveryState::Succeeded,
            (Some(_), false) => DeliveryState::Failed,
            (Some(_), true) => DeliveryState::Abandoned,
        };
        let attempt = DeliveryAttempt {
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            state,
            status,
            error: error.map(|text| text.chars().take(MAX_ERROR_CHARS).collect()),
            at: self.clock.now(),
            attempted: true,
        };
        let endpoint = self.store.record_webhook_attempt(&attempt).await?;
        let disable = state == DeliveryState::Abandoned
            && endpoint.as_ref().is_some_and(|endpoint| {
                endpoint.enabled() && endpoint.consecutive_failures >= self.settings.disable_after_failures
            });
        Ok((endpoint, disable))
    }

    /// Records that nothing was sent this time (the endpoint's breaker is open, its bulkhead
    /// full): the delivery stays live with `reason` as its error; its attempts and the
    /// endpoint's failure count stay as they are.
    pub async fn record_not_sent(&self, delivery: &WebhookDelivery, reason: &str) -> Result<(), Error> {
        let attempt = DeliveryAttempt {
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            state: delivery.state,
            status: None,
            error: Some(reason.chars().take(MAX_ERROR_CHARS).collect()),
            at: self.clock.now(),
            attempted: false,
        };
        self.store.record_webhook_attempt(&attempt).await?;
        Ok(())
    }

    /// Disables an endpoint that keeps failing (the caller's governor allowed it); its live
    /// deliveries are abandoned. `None` when it was already disabled or is gone.
    pub async fn disable_failing_endpoint(&self, id: Uuid, reason: &str) -> Result<Option<WebhookEndpoint>, Error> {
        let disabled = self.store.disable_webhook_endpoint(id, reason, self.clock.now()).await?;
        if disabled.is_some() {
            tracing::warn!(target: "audit", endpointId = %id, reason, "webhook endpoint disabled automatically");
        }
        Ok(disabled)
    }

    /// Abandons the live deliveries unchanged for longer than `stale_after` (their job died
    /// without recording); returns how many.
    pub async fn abandon_stale_deliveries(&self) -> Result<u64, Error> {
        let now = self.clock.now();
        let reason = format!(
            "abandoned: nothing recorded for {} hours (its delivery job ended without recording)",
            self.settings.stale_after.whole_hours()
        );
        Ok(self.store.abandon_stale_webhook_deliveries(now - self.settings.stale_after, &reason, now).await?)
    }

    /// Deletes at most `limit` finished deliveries past the retention period.
    pub async fn purge_deliveries(&self, limit: u32) -> Result<u64, Error> {
        let before = self.clock.now() - self.settings.retention;
        Ok(self.store.purge_webhook_deliveries(before, limit).await?)
    }

    fn deliver_job(&self, delivery_id: Uuid, endpoint_id: Uuid, now: OffsetDateTime) -> NewJob {
        NewJob::of(&DeliverWebhookJob { delivery_id, endpoint_id }, now)
            .queue(WEBHOOKS_QUEUE)
            .max_attempts(self.settings.max_attempts)
            .unique_key(format!("{}:{delivery_id}", DeliverWebhookJob::KIND))
    }
}

/// At least one known event; duplicates ignored; returned sorted.
fn parse_events(raw: &[String]) -> Result<Vec<WebhookEventType>, String> {
    let known = || WebhookEventType::ALL.map(WebhookEventType::as_str).join(", ");
    if raw.is_empty() {
        return Err(format!("must name at least one event of: {}", known()));
    }
    let mut events = Vec::new();
    for name in raw {
        let event = WebhookEventType::parse(name.trim())
            .ok_or_else(|| format!("{name:?} is not an event; known events: {}", known()))?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    events.sort();
    Ok(events)
}

/// Trimmed; empty is none; bounded; no control characters.
fn parse_description(raw: Option<&str>) -> Result<Option<String>, String> {
    let Some(text) = raw.map(str::trim).filter(|text| !text.is_empty()) else { return Ok(None) };
    if text.chars().count() > MAX_DESCRIPTION_CHARS || text.chars().any(char::is_control) {
        return Err(format!("must be at most {MAX_DESCRIPTION_CHARS} characters, no control characters"));
    }
    Ok(Some(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_must_be_known_and_at_least_one() {
        assert!(parse_events(&[]).is_err());
        assert!(parse_events(&["order.shipped".into()]).is_err());
        let events = parse_events(&["order.refunded".into(), "order.paid".into(), "order.paid".into()]).unwrap();
        assert_eq!(events, [WebhookEventType::OrderPaid, WebhookEventType::OrderRefunded]);
    }

    #[test]
    fn descriptions_are_bounded() {
        assert_eq!(parse_description(Some("  ")), Ok(None));
        assert_eq!(parse_description(Some(" ERP ")), Ok(Some("ERP".into())));
        assert!(parse_description(Some(&"x".repeat(MAX_DESCRIPTION_CHARS + 1))).is_err());
        assert!(parse_description(Some("a\u{7}b")).is_err());
    }

    #[test]
    fn order_events_carry_their_type_and_round_trip() {
        let at = time::macros::datetime!(2026-11-23 10:00:00 UTC);
        let order_id = crate::new_id();
        assert!(order_event_job(OrderStatus::PendingPayment, order_id, at).is_none());
        let job = order_event_job(OrderStatus::Refunded, order_id, at).unwrap();
        assert_eq!(job.kind, DispatchWebhooksJob::KIND);
        let payload: DispatchWebhooksJob = serde_json::from_value(job.payload.clone()).unwrap();
        let event = payload.event().unwrap();
        assert_eq!(
            (event.event_type, event.order_id, event.occurred_at),
            (WebhookEventType::OrderRefunded, order_id, at)
        );
        assert_eq!(job.unique_key, Some(format!("{}:{}", DispatchWebhooksJob::KIND, event.id)));
    }
}
