//! Merchant webhooks in the binary: the HTTP side of a delivery (one integration client, so
//! one circuit breaker `webhook-{endpoint id}` and one bulkhead, per endpoint; signed headers;
//! the host resolved and checked before each attempt) and the jobs `webhooks.dispatch`,
//! `webhooks.deliver` and `webhooks.purge_deliveries`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration::{IntegrationClient, IntegrationConfig, IntegrationError, OutboundRequest};
use shop::Store;
use shop::jobs::Job;
use shop::webhooks::{
    DeliverWebhookJob, DeliveryPlan, DispatchWebhooksJob, WebhookDelivery, WebhookEndpoint, WebhookService,
    is_public_address, signature_header,
};
use uuid::Uuid;
use worker::{HandlerError, JobHandler, PayloadHandler};

/// The longest excerpt of a receiver's answer kept in the delivery log.
const RESPONSE_EXCERPT_CHARS: usize = 200;

/// When a refused delivery runs again if the refusal says nothing: a forced-open breaker (no
/// probe time) or a full bulkhead.
const REFUSED_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why one try at sending a delivery did not deliver it.
enum NotDelivered {
    /// An attempt that failed: the status when the receiver answered, and why.
    Failed(Option<u16>, String),
    /// Nothing was sent: the endpoint's breaker is open or its bulkhead full. Not an attempt.
    Refused { reason: String, retry_after: Duration },
}

/// One integration client per endpoint (and URL: a changed URL gets a fresh client and
/// breaker), made when first needed; their breakers are on the admin status page.
pub struct WebhookClients {
    clients: Mutex<HashMap<Uuid, (String, IntegrationClient)>>,
    breakers: resilience::BreakerRegistry,
    clock: Arc<dyn resilience::Clock>,
    timeout: Duration,
    max_concurrent: usize,
    allow_private_networks: bool,
}

impl WebhookClients {
    pub fn new(
        breakers: resilience::BreakerRegistry,
        clock: Arc<dyn resilience::Clock>,
        timeout: Duration,
        max_concurrent: usize,
        allow_private_networks: bool,
    ) -> Self {
        Self { clients: Mutex::default(), breakers, clock, timeout, max_concurrent, allow_private_networks }
    }

    fn client_for(&self, endpoint: &WebhookEndpoint) -> Result<IntegrationClient, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((url, client)) = clients.get(&endpoint.id)
            && *url == endpoint.url
        {
            return Ok(client.clone());
        }
        let mut config = IntegrationConfig::new(&breaker_name(endpoint.id), &endpoint.url);
        config.connect_timeout = config.connect_timeout.min(self.timeout);
        config.attempt_timeout = self.timeout;
        config.total_timeout = self.timeout;
        config.max_concurrent = self.max_concurrent;
        // A receiver that answers within the timeout is not slow: otherwise a 10 s timeout and
        // the default 5 s threshold would open the breaker on receivers answering 2xx in 6–9 s.
        config.breaker.slow_call_duration = config.breaker.slow_call_duration.max(self.timeout);
        let client = IntegrationClient::new(config, Arc::clone(&self.clock)).map_err(|error| error.to_string())?;
        self.breakers.replace(Arc::clone(client.breaker()));
        clients.insert(endpoint.id, (endpoint.url.clone(), client.clone()));
        Ok(client)
    }

    /// Drops the clients (and breakers) of endpoints that no longer exist.
    fn retain(&self, existing: &[Uuid]) {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        clients.retain(|id, _| {
            let keep = existing.contains(id);
            if !keep {
                self.breakers.remove(&breaker_name(*id));
            }
            keep
        });
    }

    /// Refuses a host that is, or resolves to, a non-public address (unless private networks
    /// are allowed). The connection resolves the name again: a DNS answer that changes in
    /// between (rebinding) is not caught here — see the README.
    async fn check_destination(&self, url: &str) -> Result<(), String> {
        if self.allow_private_networks {
            return Ok(());
        }
        let parsed = url::Url::parse(url).map_err(|error| format!("invalid URL: {error}"))?;
        let host = parsed.host_str().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses: Vec<_> = tokio::time::timeout(self.timeout, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| format!("resolving {host} timed out"))?
            .map_err(|error| format!("could not resolve {host}: {error}"))?
            .collect();
        if addresses.is_empty() {
            return Err(format!("{host} has no address"));
        }
        if let Some(address) = addresses.iter().find(|address| !is_public_address(address.ip())) {
            // The address is for operators only: the delivery log is shown to admins through
            // the API and must not map the internal network.
            tracing::warn!(host = host.as_str(), address = %address.ip(), "webhook host resolves to a non-public address");
            return Err(format!("{host} resolves to a non-public address; refused"));
        }
        Ok(())
    }

    /// One try: the answer's status when 2xx, else a failed attempt or a refusal (nothing sent).
    /// The stored payload is signed (with `signed_at` as the signature's timestamp) and sent
    /// byte for byte.
    async fn send(
        &self,
        endpoint: &WebhookEndpoint,
        delivery: &WebhookDelivery,
        signed_at: time::OffsetDateTime,
    ) -> Result<u16, NotDelivered> {
        let failed = |error: String| NotDelivered::Failed(None, error);
        let client = self.client_for(endpoint).map_err(failed)?;
        self.check_destination(&endpoint.url).await.map_err(failed)?;
        let signature = signature_header(&endpoint.secret, signed_at.unix_timestamp(), delivery.payload.as_bytes());
        let mut request = OutboundRequest::post_json_bytes(
            &endpoint.url,
            delivery.payload.clone(),
            resilience::Idempotency::NotIdempotent,
        );
        let header = |value: String| value.parse().map_err(|_| failed("invalid header value".to_owned()));
        request.headers.insert("user-agent", header("Shopkeep-Webhooks/1".into())?);
        request.headers.insert("shopkeep-event", header(delivery.event_type.as_str().into())?);
        request.headers.insert("shopkeep-event-id", header(delivery.event_id.to_string())?);
        request.headers.insert("shopkeep-delivery-id", header(delivery.id.to_string())?);
        request.headers.insert("shopkeep-signature", header(signature)?);
        match client.send(request).await {
            Ok(response) if response.status.is_success() => Ok(response.status.as_u16()),
            Ok(response) => {
                let excerpt: String = String::from_utf8_lossy(&response.body)
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(RESPONSE_EXCERPT_CHARS)
                    .collect();
                let status = response.status.as_u16();
                Err(NotDelivered::Failed(Some(status), format!("answered {status}: {excerpt}")))
            }
            Err(IntegrationError::BreakerOpen(rejected)) => Err(NotDelivered::Refused {
                reason: "not sent: the endpoint's circuit breaker is open".into(),
                retry_after: rejected.retry_after.unwrap_or(REFUSED_RETRY_AFTER),
            }),
            Err(IntegrationError::BulkheadFull(_)) => Err(NotDelivered::Refused {
                reason: "not sent: too many deliveries to this endpoint are under way".into(),
                retry_after: REFUSED_RETRY_AFTER,
            }),
            Err(error @ IntegrationError::Status { status, .. }) => {
                Err(NotDelivered::Failed(Some(status.as_u16()), error.to_string()))
            }
            Err(error) => Err(failed(error.to_string())),
        }
    }
}

fn breaker_name(endpoint_id: Uuid) -> String {
    format!("webhook-{endpoint_id}")
}

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
        let order = shop_api::order_json(order).map_err(transient)?;
        let created = self
            .webhooks
            .create_deliveries(&event, &endpoints, serde_json::json!({ "order": order }))
            .await
            .map_err(transient)?;
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
    pub clients: Arc<WebhookClients>,
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
        let outcome = self.clients.send(&endpoint, &delivery, self.webhooks.now()).await;
        metrics::histogram!("webhook_delivery_duration_seconds").record(started.elapsed().as_secs_f64());
        let (status, error) = match &outcome {
            Ok(status) => (Some(*status), None),
            Err(NotDelivered::Failed(status, error)) => (*status, Some(error.as_str())),
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
    pub clients: Arc<WebhookClients>,
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
        self.clients.retain(&existing);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(allow_private_networks: bool) -> WebhookClients {
        WebhookClients::new(
            resilience::BreakerRegistry::new(),
            Arc::new(resilience::ManualClock::default()),
            Duration::from_secs(2),
            4,
            allow_private_networks,
        )
    }

    #[tokio::test]
    async fn hosts_resolving_to_private_addresses_are_refused_before_sending() {
        let strict = clients(false);
        for url in ["http://localhost:9/hook", "https://127.0.0.1/hook", "https://[::1]:8443/", "https://10.0.0.7/"] {
            let refused = strict.check_destination(url).await.unwrap_err();
            assert!(refused.contains("non-public"), "{url}: {refused}");
        }
        assert!(clients(true).check_destination("http://localhost:9/hook").await.is_ok());
    }

    #[test]
    fn each_endpoint_gets_its_own_breaker_replaced_when_its_url_changes_and_dropped_when_it_goes() {
        let clients = clients(true);
        let mut endpoint = WebhookEndpoint {
            id: Uuid::now_v7(),
            url: "http://127.0.0.1:9/a".into(),
            description: None,
            events: vec![shop::webhooks::WebhookEventType::OrderPaid],
            secret: shop::webhooks::WebhookSecret::generate(),
            disabled_at: None,
            disabled_reason: None,
            consecutive_failures: 0,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let name = breaker_name(endpoint.id);
        let first = clients.client_for(&endpoint).unwrap();
        assert_eq!(first.name(), name);
        assert!(Arc::ptr_eq(clients.client_for(&endpoint).unwrap().breaker(), first.breaker()), "cached");
        endpoint.url = "http://127.0.0.1:9/b".into();
        let second = clients.client_for(&endpoint).unwrap();
        assert!(!Arc::ptr_eq(second.breaker(), first.breaker()), "a new URL, a new client");
        assert!(Arc::ptr_eq(&clients.breakers.get(&name).unwrap(), second.breaker()));
        clients.retain(&[]);
        assert!(clients.breakers.get(&name).is_none());
    }
}
