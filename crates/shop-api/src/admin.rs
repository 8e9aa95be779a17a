//! The admin listener (127.0.0.1:9090 by default): health with details, and Prometheus metrics.
//! Everything but health needs `Authorization: Bearer <admin token>` when a token is configured.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::middleware::{observe, problems};
use crate::routes::health::{DatabaseCheck, check_database};
use crate::state::AppState;

/// Renders the Prometheus text exposition of every metric.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Settings of the admin listener.
#[derive(Clone)]
pub struct AdminSettings {
    /// The bearer token for `/metrics` and `/admin/*`; `None` leaves them open (only allowed
    /// when the admin listener is bound to loopback, which the configuration enforces).
    pub token: Option<String>,
    pub metrics: MetricsRenderer,
}

#[derive(Clone)]
struct AdminState {
    app: AppState,
    settings: AdminSettings,
    started: Instant,
}

/// The admin router.
pub fn admin_router(app: AppState, settings: AdminSettings) -> Router {
    let state = AdminState { app, settings, started: Instant::now() };
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_admin_token));
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(protected)
        .with_state(state)
        .route_layer(axum::middleware::from_fn(observe::record_route))
        .layer(axum::middleware::from_fn(problems::render_problems))
        .layer(axum::middleware::from_fn(observe::observe))
}

async fn require_admin_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = &state.settings.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ApiError::Unauthenticated("the admin token is missing or wrong"));
        }
    }
    Ok(next.run(request).await)
}

async fn live() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReadyBody {
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    database: DatabaseHealth,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limits: Option<RateLimitHealth>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitHealth {
    backend: &'static str,
    status: String,
    /// `open` (requests allowed while the store is down) or `closed` (refused).
    on_failure: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DatabaseHealth {
    backend: &'static str,
    status: String,
    latency_ms: Option<f64>,
    pool_size: u32,
    pool_idle: u32,
    pool_waiting: u32,
    pool_max: u32,
}

/// Readiness with details: database round-trip latency, pool figures, version, uptime.
async fn ready(State(state): State<AdminState>) -> Response {
    let store = &state.app.inner.store;
    let (database_status, latency_ms) = match check_database(store.as_ref()).await {
        DatabaseCheck::Ok { latency } => ("ok".to_owned(), Some(latency.as_secs_f64() * 1000.0)),
        DatabaseCheck::Unreachable(error) => (format!("unreachable: {error}"), None),
        DatabaseCheck::TimedOut => ("timed out".to_owned(), None),
    };
    let shared = state.app.inner.rate_limits.shared_status().await;
    let limits_block = shared.as_ref().is_some_and(|s| !s.healthy && s.on_failure == resilience::FailureMode::Closed);
    let rate_limits = shared.map(|status| RateLimitHealth {
        backend: status.backend,
        status: status.error.map_or_else(|| "ok".to_owned(), |error| format!("unreachable: {error}")),
        on_failure: match status.on_failure {
            resilience::FailureMode::Open => "open",
            resilience::FailureMode::Closed => "closed",
        },
    });
    let draining = state.app.inner.readiness.is_draining();
    let healthy = latency_ms.is_some() && !draining && !limits_block;
    let pool = store.pool_stats();
    let body = ReadyBody {
        status: if draining {
            "draining"
        } else if healthy {
            "ok"
        } else {
            "unavailable"
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        database: DatabaseHealth {
            backend: store.backend(),
            status: database_status,
            latency_ms,
            pool_size: pool.size,
            pool_idle: pool.idle,
            pool_waiting: pool.waiting,
            pool_max: pool.max_size,
        },
        rate_limits,
    };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Prometheus metrics; the pool gauges are read at scrape time.
async fn metrics(State(state): State<AdminState>) -> Response {
    let pool = state.app.inner.store.pool_stats();
    metrics::gauge!("db_pool_connections", "state" => "open").set(f64::from(pool.size));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("db_pool_connections", "state" => "waiting").set(f64::from(pool.waiting));
    metrics::gauge!("db_pool_max_connections").set(f64::from(pool.max_size));
    let body = (state.settings.metrics)();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
