//! Active health checks: every backend's readiness path asked on an interval with a timeout;
//! `rise` passes bring a backend back, `fall` failures take it out. A `serve` instance that
//! drains answers 503 there, so the gateway stops sending it new requests (handshaking). Every
//! change of verdict is logged and counted.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri, header};
use http_body_util::BodyExt as _;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::body;
use crate::config::{HealthConfig, millis};
use crate::pool::Pool;
use crate::proxy::UpstreamClient;

/// The health-check settings in the form the loop uses.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl HealthPolicy {
    pub fn from_config(config: &HealthConfig) -> Self {
        Self {
            path: config.path.clone(),
            interval: millis(config.interval_ms),
            timeout: millis(config.timeout_ms),
            rise: config.rise,
            fall: config.fall,
        }
    }
}

/// Asks the backend once; a 2xx within the timeout passes.
pub async fn probe(client: &UpstreamClient, backend: &Backend, policy: &HealthPolicy) -> bool {
    let uri = Uri::builder()
        .scheme(backend.scheme())
        .authority(backend.authority().clone())
        .path_and_query(policy.path.as_str())
        .build();
    let Ok(uri) = uri else { return false };
    let request = Request::get(uri)
        .header(header::USER_AGENT, "shopkeep-gateway-health")
        .header(header::HOST, backend.authority().as_str())
        .body(body::empty());
    let Ok(request) = request else { return false };
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let passed = response.status().is_success();
        // Read the (small) body so the connection goes back to the pool.
        http_body_util::Limited::new(response.into_body(), 64 * 1024).collect().await.ok()?;
        Some(passed)
    };
    matches!(tokio::time::timeout(policy.timeout, exchange).await, Ok(Some(true)))
}

/// Probes once and applies the result, logging and counting a change of verdict.
pub async fn check(pool: &Pool, client: &UpstreamClient, backend: &Backend, policy: &HealthPolicy) {
    let passed = probe(client, backend, policy).await;
    let slow_start = pool.policy().slow_start;
    if let Some(health) = backend.record_check(passed, policy.rise, policy.fall, slow_start, pool.now()) {
        metrics::counter!(
            "gateway_health_transitions_total",
            "backend" => backend.name().to_owned(),
            "to" => health.as_str()
        )
        .increment(1);
        tracing::info!(backend = backend.name(), health = health.as_str(), "backend health changed");
    }
}

/// Checks `backend` every interval until the gateway stops or the backend leaves the pool.
pub fn spawn_checker(
    pool: Arc<Pool>,
    client: UpstreamClient,
    backend: Arc<Backend>,
    policy: HealthPolicy,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(policy.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = stop.cancelled() => return,
                () = backend.retired.cancelled() => return,
            }
            check(&pool, &client, &backend, &policy).await;
            pool.refresh_ejections();
        }
    })
}
