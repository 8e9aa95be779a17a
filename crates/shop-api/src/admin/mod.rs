//! The admin listener (127.0.0.1:9090 by default): health with details, Prometheus metrics, the
//! stability status page (breakers, limits, load shedding), breaker controls, and the job queue
//! (list, inspect, retry dead jobs), feature flags and the audit log (`flags`).
//! Everything but health needs `Authorization: Bearer <admin token>` when a token is configured;
//! actions that change state (breaker resets) need a configured token, always.

pub mod controls;
pub mod flags;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::middleware::{observe, problems};
use crate::routes::health::{DatabaseCheck, check_database};
use crate::state::AppState;

/// Renders the Prometheus text exposition of every metric.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The process's log filter, read and replaced while running (the binary implements it over
/// its subscriber). Errors are messages for the operator.
pub trait LogFilter: Send + Sync {
    /// The filter in force (`info`, `shopkeep=debug,info`).
    fn current(&self) -> Result<String, String>;
    /// Whether `directives` parse, changing nothing.
    fn check(&self, directives: &str) -> Result<(), String>;
    /// Replaces the whole filter; answers the one now in force.
    fn replace(&self, directives: &str) -> Result<String, String>;
}

pub type LogFilterControl = Arc<dyn LogFilter>;

/// Settings of the admin listener.
#[derive(Clone)]
pub struct AdminSettings {
    /// The bearer token for `/metrics` and `/admin/*`; `None` leaves them open (only allowed
    /// when the admin listener is bound to loopback, which the configuration enforces).
    pub token: Option<String>,
    pub metrics: MetricsRenderer,
    /// This instance in the audit log's targets (its public listen address).
    pub instance: String,
    /// The live log filter; `None` when no subscriber of ours is installed.
    pub log_filter: Option<LogFilterControl>,
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
    let actions = Router::new()
        .route("/admin/v1/breakers/{name}/{action}", post(breaker_action))
        .route("/admin/v1/jobs/{id}/retry", post(retry_job))
        .route("/admin/v1/flags/{name}", put(flags::put_flag).delete(flags::delete_flag))
        .route("/admin/v1/flags/{name}/rollout", put(flags::put_rollout))
        .route("/admin/v1/drain", post(controls::drain))
        .route("/admin/v1/undrain", post(controls::undrain))
        .route("/admin/v1/caches/flush", post(controls::flush_caches))
        .route("/admin/v1/log-level", put(controls::set_log_level))
        .route("/admin/v1/users/{id}/sessions", axum::routing::delete(controls::end_user_sessions))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_configured_token));
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/v1/status", get(status))
        .route("/admin/v1/jobs", get(list_jobs))
        .route("/admin/v1/jobs/{id}", get(get_job))
        .route("/admin/v1/flags", get(flags::list_flags))
        .route("/admin/v1/flags/{name}", get(flags::get_flag))
        .route("/admin/v1/flags/{name}/evaluate", get(flags::evaluate_flag))
        .route("/admin/v1/audit", get(flags::list_audit))
        .route("/admin/v1/log-level", get(controls::log_level))
        .route("/admin/v1/users/{id}/sessions", get(controls::user_sessions))
        .merge(actions)
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

/// State-changing admin actions refuse to run without a configured token, even on loopback.
async fn require_configured_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.settings.token.is_none() {
        return Err(ApiError::Forbidden(
            "admin actions need an admin token: set admin.token (or SHOPKEEP_ADMIN__TOKEN)",
        ));
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
    /// Read replicas (PostgreSQL), when configured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replicas: Vec<ReplicaBody>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplicaBody {
    name: String,
    fresh: bool,
    serving: bool,
    lag_seconds: Option<f64>,
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
        on_failure: status.on_failure.as_str(),
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
            replicas: store
                .replicas()
                .into_iter()
                .map(|replica| ReplicaBody {
                    name: replica.name,
                    fresh: replica.fresh,
                    serving: replica.serving,
                    lag_seconds: replica.lag_seconds,
                })
                .collect(),
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
    shop::cache::publish(&state.app.inner.caches);
    let body = (state.settings.metrics)();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BreakerStatus {
    name: String,
    /// `closed`, `open`, `half_open`, `forced_open` or `disabled` (as in the metrics).
    state: &'static str,
    calls_in_window: u32,
    /// Percentages over the current window; absent below the minimum number of calls.
    failure_rate: Option<f64>,
    slow_call_rate: Option<f64>,
    /// While open: seconds until the next probe is let through.
    retry_after_seconds: Option<f64>,
}

impl From<resilience::BreakerSnapshot> for BreakerStatus {
    fn from(snapshot: resilience::BreakerSnapshot) -> Self {
        Self {
            name: snapshot.name,
            state: snapshot.state.as_str(),
            calls_in_window: snapshot.calls_in_window,
            failure_rate: snapshot.failure_rate,
            slow_call_rate: snapshot.slow_call_rate,
            retry_after_seconds: snapshot.retry_after.map(|wait| wait.as_secs_f64()),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QuotaStatus {
    count: u32,
    period_seconds: u64,
}

impl From<resilience::Quota> for QuotaStatus {
    fn from(quota: resilience::Quota) -> Self {
        Self { count: quota.count, period_seconds: quota.period.as_secs() }
    }
}

/// Each scope's quota under its status key (`perIp`, `loginPerIp`, …).
struct QuotaStatuses(crate::PerScope<resilience::Quota>);

impl Serialize for QuotaStatuses {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(crate::RateLimitScope::COUNT))?;
        for (scope, quota) in self.0.iter() {
            map.serialize_entry(scope.status_key(), &QuotaStatus::from(*quota))?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LimitsStatus {
    enabled: bool,
    /// `memory` (this instance) or the shared store's name (`redis`).
    store: &'static str,
    /// With a shared store: `open` or `closed` while it cannot answer.
    on_store_failure: Option<&'static str>,
    /// `perIp`, `anonymous`, …: one quota per scope.
    #[serde(flatten)]
    quotas: QuotaStatuses,
    lockout: LockoutStatus,
    trusted_proxies: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LockoutStatus {
    failures: u32,
    window_seconds: u64,
    lock_seconds: u64,
    failed_login_alert_per_minute: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SheddingStatus {
    /// `fixed` or `adaptive`.
    mode: &'static str,
    limit: usize,
    in_flight: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    version: &'static str,
    uptime_seconds: u64,
    draining: bool,
    breakers: Vec<BreakerStatus>,
    rate_limits: LimitsStatus,
    load_shedding: SheddingStatus,
    caches: Vec<CacheStatus>,
    /// The shared tier behind the local caches, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_cache: Option<SharedCacheStatus>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SharedCacheStatus {
    backend: &'static str,
    /// Commands succeed and the write announcements are subscribed.
    healthy: bool,
}

/// One read cache's figures since start.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CacheStatus {
    name: &'static str,
    family: &'static str,
    tier: &'static str,
    hits: u64,
    misses: u64,
    /// Hits over lookups; absent before the first lookup.
    hit_ratio: Option<f64>,
    fills: u64,
    fill_errors: u64,
    /// Local tier only (the shared tier's memory is Redis's).
    #[serde(skip_serializing_if = "Option::is_none")]
    evictions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weighted_bytes: Option<u64>,
}

/// The stability status page: every breaker, the limits in force, and load shedding.
async fn status(State(state): State<AdminState>) -> Response {
    let app = &state.app.inner;
    let limits = app.rate_limits.settings();
    let shared = app.rate_limits.shared();
    let body = StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        draining: app.readiness.is_draining(),
        breakers: app.breakers.snapshots().into_iter().map(BreakerStatus::from).collect(),
        rate_limits: LimitsStatus {
            enabled: limits.enabled,
            store: shared.map_or("memory", |shared| shared.limiter.backend()),
            on_store_failure: shared.map(|shared| shared.on_failure.as_str()),
            quotas: QuotaStatuses(limits.quotas.clone()),
            lockout: LockoutStatus {
                failures: limits.lockout_failures,
                window_seconds: limits.lockout_window.as_secs(),
                lock_seconds: limits.lockout_duration.as_secs(),
                failed_login_alert_per_minute: limits.failed_login_alert_per_minute,
            },
            trusted_proxies: app.rate_limits.trusted_proxies().iter().map(ToString::to_string).collect(),
        },
        load_shedding: SheddingStatus {
            mode: match app.settings.concurrency {
                resilience::ConcurrencyLimit::Fixed(_) => "fixed",
                resilience::ConcurrencyLimit::Adaptive { .. } => "adaptive",
            },
            limit: app.shedder.limit(),
            in_flight: app.shedder.in_flight(),
        },
        caches: app
            .caches
            .iter()
            .flat_map(|cache| {
                let stats = cache.stats();
                let local = CacheStatus {
                    name: cache.name(),
                    family: cache.family().as_str(),
                    tier: "local",
                    hits: stats.hits,
                    misses: stats.misses,
                    hit_ratio: stats.hit_ratio(),
                    fills: stats.fills,
                    fill_errors: stats.fill_errors,
                    evictions: Some(stats.evictions),
                    entries: Some(stats.entries),
                    weighted_bytes: Some(stats.weighted_bytes),
                };
                let shared = stats.shared.map(|shared| CacheStatus {
                    name: cache.name(),
                    family: cache.family().as_str(),
                    tier: "shared",
                    hits: shared.hits,
                    misses: shared.misses,
                    hit_ratio: shared.hit_ratio(),
                    fills: shared.fills,
                    fill_errors: shared.errors,
                    evictions: None,
                    entries: None,
                    weighted_bytes: None,
                });
                std::iter::once(local).chain(shared)
            })
            .collect(),
        shared_cache: match &app.shared_cache {
            None => None,
            Some(tier) => Some(SharedCacheStatus { backend: tier.backend(), healthy: tier.check().await.is_ok() }),
        },
    };
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `reset` (closed, empty window), `force-open` (refuse every call) or `disable` (let every call
/// through, record nothing) one breaker; answers with its new status.
/// The action is audited first (`breaker.reset`, …, with the breaker before and the state it
/// is put in): when the audit row cannot be written, the breaker is left as it is.
async fn breaker_action(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
    request: Option<axum::Extension<Arc<observe::RequestContext>>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let breaker = state.app.inner.breakers.get(&name).ok_or(ApiError::NotFound)?;
    let after_state = match action.as_str() {
        "reset" => "closed",
        "force-open" => "forced_open",
        "disable" => "disabled",
        _ => return Err(ApiError::NotFound),
    };
    let audit = flags::admin_actor(&headers, request.as_deref(), time::OffsetDateTime::now_utc());
    let before = serde_json::to_value(BreakerStatus::from(breaker.snapshot())).ok();
    shop::audit::AuditLog::new(Arc::clone(&state.app.inner.store) as _)
        .record_action(
            &audit,
            &format!("breaker.{action}"),
            &format!("breaker:{name}"),
            before,
            Some(serde_json::json!({ "state": after_state })),
        )
        .await?;
    match action.as_str() {
        "reset" => breaker.reset(),
        "force-open" => breaker.force_open(),
        _ => breaker.disable(),
    }
    tracing::warn!(breaker = name.as_str(), action = action.as_str(), "circuit breaker changed by an operator");
    Ok(axum::Json(BreakerStatus::from(breaker.snapshot())).into_response())
}

/// A job as operators see it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct JobBody {
    id: uuid::Uuid,
    kind: String,
    queue: String,
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    priority: i32,
    /// `queued`, `running`, `succeeded`, `failed` (will run again at `runAt`) or `dead`.
    state: &'static str,
    attempts: u32,
    max_attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    run_at: time::OffsetDateTime,
    lease_owner: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    lease_expires_at: Option<time::OffsetDateTime>,
    last_error: Option<String>,
    unique_key: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<time::OffsetDateTime>,
}

impl From<shop::jobs::Job> for JobBody {
    fn from(job: shop::jobs::Job) -> Self {
        Self {
            id: job.id,
            kind: job.kind,
            queue: job.queue,
            payload: job.payload,
            priority: job.priority,
            state: job.state.as_str(),
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            run_at: job.run_at,
            lease_owner: job.lease_owner,
            lease_expires_at: job.lease_expires_at,
            last_error: job.last_error,
            unique_key: job.unique_key,
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobListQuery {
    page: Option<String>,
    limit: Option<String>,
    state: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    /// `updatedAt` (default, newest first) or `runAt` (soonest first).
    sort_by: Option<String>,
}

/// `GET /admin/v1/jobs?state=dead&queue=mail&kind=…&sortBy=runAt&page=&limit=`.
async fn list_jobs(
    State(state): State<AdminState>,
    crate::extract::Query(query): crate::extract::Query<JobListQuery>,
) -> Result<Response, ApiError> {
    let mut errors = shop::ValidationErrors::new();
    let page = crate::routes::accounts::parse_page(&mut errors, query.page.as_deref(), query.limit.as_deref());
    let job_state = query.state.as_deref().and_then(|raw| {
        errors.check(
            "state",
            shop::jobs::JobState::parse(raw).ok_or("must be queued, running, succeeded, failed or dead"),
        )
    });
    let sort = query.sort_by.as_deref().and_then(|raw| {
        errors.check(
            "sortBy",
            match raw {
                "updatedAt" => Ok(shop::jobs::JobSort::UpdatedAt),
                "runAt" => Ok(shop::jobs::JobSort::RunAt),
                _ => Err("must be updatedAt or runAt"),
            },
        )
    });
    for (field, value) in [("queue", &query.queue), ("kind", &query.kind)] {
        if value.as_ref().is_some_and(|value| value.is_empty() || value.len() > 100) {
            errors.add(field, "must be 1 to 100 characters");
        }
    }
    errors.into_result()?;
    let query = shop::jobs::JobQuery {
        state: job_state,
        queue: query.queue,
        kind: query.kind,
        sort: sort.unwrap_or_default(),
        page,
    };
    let page = state.app.inner.jobs.list(&query).await?;
    Ok(axum::Json(crate::wire::Paged::from_page(page, JobBody::from)).into_response())
}

/// `GET /admin/v1/jobs/{id}`.
async fn get_job(State(state): State<AdminState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = state.app.inner.jobs.find(crate::routes::path_id(&id)?).await?;
    Ok(axum::Json(JobBody::from(job)).into_response())
}

/// `POST /admin/v1/jobs/{id}/retry`: a dead or failed job runs again with fresh attempts.
async fn retry_job(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
    request: Option<axum::Extension<Arc<observe::RequestContext>>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let audit = flags::admin_actor(&headers, request.as_deref(), time::OffsetDateTime::now_utc());
    let job = state.app.inner.jobs.retry(crate::routes::path_id(&id)?, &audit).await?;
    Ok(axum::Json(JobBody::from(job)).into_response())
}
