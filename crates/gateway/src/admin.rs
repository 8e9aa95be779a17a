//! The gateway's admin listener: liveness and readiness, Prometheus metrics, and the pool's
//! run-time control — list, add, remove, weigh (gradually), drain and undrain backends — for
//! blue/green and canary deploys. Everything but health answers only to the admin token when
//! one is set; errors are RFC 9457 problems.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use crate::Shared;
use crate::backend::{Backend, Health};
use crate::config::{BackendConfig, MAX_WEIGHT, parse_backend_address};
use crate::pool::PoolError;

/// Serves the admin listener until the gateway stops.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let stop = shared.stop.clone();
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/v1/backends", get(list_backends).post(add_backend))
        .route("/admin/v1/backends/{name}", get(show_backend).delete(remove_backend))
        .route("/admin/v1/backends/{name}/weight", put(set_weight))
        .route("/admin/v1/backends/{name}/drain", post(drain_backend))
        .route("/admin/v1/backends/{name}/undrain", post(undrain_backend))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), require_token));
    let router = Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .merge(protected)
        .with_state(shared);
    if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!(%error, "the gateway's admin listener failed");
    }
}

/// An admin failure as a problem.
#[derive(Debug)]
enum AdminError {
    Unauthorized,
    NotFound(String),
    Conflict(String),
    Invalid(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "a valid admin token is required".to_owned()),
            AdminError::NotFound(detail) => (StatusCode::NOT_FOUND, detail),
            AdminError::Conflict(detail) => (StatusCode::CONFLICT, detail),
            AdminError::Invalid(detail) => (StatusCode::BAD_REQUEST, detail),
        };
        let body = json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut response = (status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<PoolError> for AdminError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Exists(_) => AdminError::Conflict(error.to_string()),
            PoolError::NotFound(_) => AdminError::NotFound(error.to_string()),
        }
    }
}

async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &shared.admin_token {
        let given = bearer(request.headers()).unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            return AdminError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Ready while at least one backend could take a request and the gateway is not shutting down.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let now = shared.pool.now();
    let routable = shared.pool.backends().iter().any(|backend| {
        !backend.is_draining()
            && backend.effective_weight(now) > 0.0
            && backend.health() == Health::Healthy
            && !backend.is_ejected(now)
    });
    if routable && !shared.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no backend is ready").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match &shared.metrics {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder is installed in this process").into_response(),
    }
}

fn describe(shared: &Shared, backend: &Backend) -> Value {
    let now = shared.pool.now();
    let decay = shared.pool.policy().ewma_decay;
    let ejected_for_ms = backend
        .ejected_until()
        .filter(|until| *until > now)
        .map(|until| until.saturating_duration_since(now).as_millis() as u64);
    json!({
        "name": backend.name(),
        "address": backend.authority().as_str(),
        "tls": backend.scheme() == "https",
        "weight": backend.target_weight(),
        "effective_weight": (backend.effective_weight(now) * 100.0).round() / 100.0,
        "health": backend.health().as_str(),
        "draining": backend.is_draining(),
        "ejected": ejected_for_ms.is_some(),
        "ejected_for_ms": ejected_for_ms,
        "times_ejected": backend.times_ejected(),
        "in_flight": backend.in_flight(),
        "latency_ms": (backend.latency(now, decay) / 1e4).round() / 100.0,
    })
}

async fn list_backends(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let backends: Vec<Value> = shared.pool.backends().iter().map(|backend| describe(&shared, backend)).collect();
    Json(json!({ "backends": backends }))
}

fn find(shared: &Shared, name: &str) -> Result<Arc<Backend>, AdminError> {
    shared.pool.find(name).ok_or_else(|| AdminError::NotFound(format!("no backend named {name:?}")))
}

async fn show_backend(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Result<Json<Value>, AdminError> {
    let backend = find(&shared, &name)?;
    Ok(Json(describe(&shared, &backend)))
}

/// A JSON body, refused with a problem (not axum's plain-text rejection) when malformed.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|error| AdminError::Invalid(format!("invalid JSON body: {error}")))
}

async fn add_backend(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Result<Response, AdminError> {
    let wanted: BackendConfig = parse_body(&body)?;
    wanted.check().map_err(AdminError::Invalid)?;
    let authority = parse_backend_address(&wanted.address).map_err(AdminError::Invalid)?;
    let backend = Arc::new(Backend::with_scheme(&wanted.name, authority, wanted.weight, wanted.tls, shared.pool.now()));
    shared.pool.add(Arc::clone(&backend))?;
    shared.watch(Arc::clone(&backend));
    tracing::info!(backend = backend.name(), address = %backend.authority(), weight = wanted.weight, "backend added");
    Ok((StatusCode::CREATED, Json(describe(&shared, &backend))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightChange {
    weight: u32,
    /// Spread the change over this long (blue/green and canary shifts); at once when absent.
    #[serde(default)]
    over_ms: u64,
}

async fn set_weight(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let change: WeightChange = parse_body(&body)?;
    if change.weight > MAX_WEIGHT {
        return Err(AdminError::Invalid(format!("weight: must be between 0 and {MAX_WEIGHT}")));
    }
    if change.over_ms > 86_400_000 {
        return Err(AdminError::Invalid("over_ms: must be at most 86400000 (a day)".into()));
    }
    let backend = find(&shared, &name)?;
    backend.shift_weight(change.weight, Duration::from_millis(change.over_ms), shared.pool.now());
    tracing::info!(
        backend = backend.name(),
        weight = change.weight,
        over_ms = change.over_ms,
        "backend weight changed"
    );
    Ok(Json(describe(&shared, &backend)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainQuery {
    /// How long to wait for requests in flight to finish (default 30 s, at most an hour).
    timeout_ms: Option<u64>,
}

const DEFAULT_DRAIN_WAIT: Duration = Duration::from_secs(30);
const MAX_DRAIN_WAIT_MS: u64 = 3_600_000;

/// Stops new requests to the backend and waits for those in flight; says whether they finished.
async fn drain(shared: &Shared, backend: &Backend, wait: Duration) -> bool {
    backend.set_draining(true);
    tracing::info!(backend = backend.name(), in_flight = backend.in_flight(), "backend draining");
    backend.wait_until_idle(wait, &shared.stop, || true).await
}

fn drain_wait(query: &DrainQuery) -> Result<Duration, AdminError> {
    match query.timeout_ms {
        None => Ok(DEFAULT_DRAIN_WAIT),
        Some(ms) if ms <= MAX_DRAIN_WAIT_MS => Ok(Duration::from_millis(ms)),
        Some(_) => Err(AdminError::Invalid(format!("timeout_ms: must be at most {MAX_DRAIN_WAIT_MS}"))),
    }
}

/// The drain query, refused with a problem (not axum's plain-text rejection) when malformed.
fn drain_query(query: Result<Query<DrainQuery>, QueryRejection>) -> Result<Duration, AdminError> {
    let Query(query) =
        query.map_err(|rejection| AdminError::Invalid(format!("invalid query: {}", rejection.body_text())))?;
    drain_wait(&query)
}

async fn drain_backend(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    query: Result<Query<DrainQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let wait = drain_query(query)?;
    let backend = find(&shared, &name)?;
    let drained = drain(&shared, &backend, wait).await;
    let mut answer = describe(&shared, &backend);
    answer["drained"] = json!(drained);
    Ok(Json(answer))
}

async fn undrain_backend(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let backend = find(&shared, &name)?;
    backend.set_draining(false);
    tracing::info!(backend = backend.name(), "backend undrained");
    Ok(Json(describe(&shared, &backend)))
}

/// Drains the backend, then takes it out of the pool (its remaining requests, if the wait ran
/// out, still finish on their open connections).
async fn remove_backend(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    query: Result<Query<DrainQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let wait = drain_query(query)?;
    let backend = find(&shared, &name)?;
    let drained = drain(&shared, &backend, wait).await;
    let mut answer = describe(&shared, &backend);
    // Exactly the backend drained: one re-added under the same name meanwhile stays.
    if !shared.pool.remove_exact(&backend) {
        return Err(AdminError::Conflict(format!("{name:?} was replaced or removed while it drained")));
    }
    tracing::info!(backend = backend.name(), drained, "backend removed");
    answer["drained"] = json!(drained);
    answer["removed"] = json!(true);
    Ok(Json(answer))
}
