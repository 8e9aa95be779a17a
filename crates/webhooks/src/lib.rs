//! Merchant webhook delivery, the adapter behind shop's `WebhookSender` port: one integration
//! client per endpoint (so one circuit breaker `webhook-{endpoint id}` and one bulkhead each,
//! joining the process's breaker registry), the signed headers, and the host resolved and
//! checked before each attempt.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use integration::{IntegrationClient, IntegrationConfig, IntegrationError, OutboundRequest};
use shop::webhooks::{
    NotDelivered, WebhookDelivery, WebhookEndpoint, WebhookSender, is_public_address, signature_header,
};
use uuid::Uuid;

/// The longest excerpt of a receiver's answer kept in the delivery log.
const RESPONSE_EXCERPT_CHARS: usize = 200;

/// When a refused delivery runs again if the refusal says nothing: a forced-open breaker (no
/// probe time) or a full bulkhead.
const REFUSED_RETRY_AFTER: Duration = Duration::from_secs(30);

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

    async fn send_one(
        &self,
        endpoint: &WebhookEndpoint,
        delivery: &WebhookDelivery,
        signed_at: time::OffsetDateTime,
    ) -> Result<u16, NotDelivered> {
        let failed = |error: String| NotDelivered::Failed { status: None, error };
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
                Err(NotDelivered::Failed { status: Some(status), error: format!("answered {status}: {excerpt}") })
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
                Err(NotDelivered::Failed { status: Some(status.as_u16()), error: error.to_string() })
            }
            Err(error) => Err(failed(error.to_string())),
        }
    }
}

fn breaker_name(endpoint_id: Uuid) -> String {
    format!("webhook-{endpoint_id}")
}

#[async_trait]
impl WebhookSender for WebhookClients {
    async fn send(
        &self,
        endpoint: &WebhookEndpoint,
        delivery: &WebhookDelivery,
        signed_at: time::OffsetDateTime,
    ) -> Result<u16, NotDelivered> {
        self.send_one(endpoint, delivery, signed_at).await
    }

    fn retain_endpoints(&self, existing: &[Uuid]) {
        self.retain(existing);
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
        clients.retain_endpoints(&[]);
        assert!(clients.breakers.get(&name).is_none());
    }
}
