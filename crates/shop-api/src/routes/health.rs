//! Liveness and readiness of the public listener.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::CommonErrors;
use crate::routes::caching::private_json;
use crate::state::AppState;
use crate::wire::HealthBody;

/// How long the readiness check waits for the database.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the process is alive (answers as long as it can serve HTTP at all).
#[utoipa::path(get, path = "/health/live", tag = "operations", security(()),
    responses((status = 200, description = "The process is alive", body = HealthBody), CommonErrors))]
pub async fn live() -> Response {
    private_json(StatusCode::OK, &HealthBody { status: "ok".into(), database: None, rate_limits: None, cache: None })
}

/// Whether this instance should receive traffic: not draining, and the database answers.
#[utoipa::path(get, path = "/health/ready", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready for traffic", body = HealthBody),
        (status = 503, description = "Draining for shutdown, or the database is unreachable", body = HealthBody),
        (status = 500, description = "Unexpected failure", body = crate::error::Problem, content_type = "application/problem+json")
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    readiness(&state).await
}

/// [`live`] at the root, where orchestrators look by default.
#[utoipa::path(get, path = "/health/live", tag = "operations", security(()),
    responses((status = 200, description = "The process is alive", body = HealthBody), CommonErrors))]
pub async fn live_root() -> Response {
    live().await
}

/// [`ready`] at the root, where orchestrators look by default.
#[utoipa::path(get, path = "/health/ready", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready for traffic", body = HealthBody),
        (status = 503, description = "Draining for shutdown, or the database is unreachable", body = HealthBody),
        (status = 500, description = "Unexpected failure", body = crate::error::Problem, content_type = "application/problem+json")
    ))]
pub async fn ready_root(State(state): State<AppState>) -> Response {
    readiness(&state).await
}

/// The outcome of one database round trip, as both listeners' readiness checks report it.
pub(crate) enum DatabaseCheck {
    Ok { latency: Duration },
    Unreachable(String),
    TimedOut,
}

/// Pings the database, bounded by [`DATABASE_CHECK_TIMEOUT`]; failures are logged.
pub(crate) async fn check_database(store: &dyn shop::Store) -> DatabaseCheck {
    let started = std::time::Instant::now();
    match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => DatabaseCheck::Ok { latency: started.elapsed() },
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database check failed");
            DatabaseCheck::Unreachable(error.to_string())
        }
        Err(_) => {
            tracing::warn!("readiness: database check timed out");
            DatabaseCheck::TimedOut
        }
    }
}

async fn readiness(state: &AppState) -> Response {
    if state.inner.readiness.is_draining() {
        let body = HealthBody { status: "draining".into(), database: None, rate_limits: None, cache: None };
        return with_retry_after(private_json(StatusCode::SERVICE_UNAVAILABLE, &body));
    }
    let (database_ok, database) = match check_database(state.inner.store.as_ref()).await {
        DatabaseCheck::Ok { .. } => (true, "ok"),
        DatabaseCheck::Unreachable(_) => (false, "unreachable"),
        DatabaseCheck::TimedOut => (false, "timed out"),
    };
    // A shared limiter that is down makes the instance unready only when it fails closed
    // (then every request would be refused); failing open, it serves and says so.
    let (limits_ok, rate_limits) = match state.inner.rate_limits.shared_status().await {
        None => (true, None),
        Some(status) if status.healthy => (true, Some("ok".to_owned())),
        Some(status) => match status.on_failure {
            resilience::FailureMode::Open => (true, Some(format!("{} unreachable; failing open", status.backend))),
            resilience::FailureMode::Closed => (false, Some(format!("{} unreachable; failing closed", status.backend))),
        },
    };
    let ready = database_ok && limits_ok;
    // Without the shared cache tier reads come from the local tier and the database: slower,
    // still correct, so the instance stays in rotation and says it is degraded.
    let cache = match &state.inner.shared_cache {
        None => None,
        Some(tier) => Some(match tier.check().await {
            Ok(()) => "ok".to_owned(),
            Err(error) => {
                tracing::debug!(%error, "readiness: shared cache check failed");
                format!("{} unreachable; reads served by the local cache and the database", tier.backend())
            }
        }),
    };
    let degraded = cache.as_deref().is_some_and(|cache| cache != "ok")
        || rate_limits.as_deref().is_some_and(|limits| limits != "ok");
    let body = HealthBody {
        status: match (ready, degraded) {
            (false, _) => "unavailable",
            (true, true) => "degraded",
            (true, false) => "ok",
        }
        .into(),
        database: Some(database.into()),
        rate_limits,
        cache,
    };
    if ready {
        private_json(StatusCode::OK, &body)
    } else {
        with_retry_after(private_json(StatusCode::SERVICE_UNAVAILABLE, &body))
    }
}

fn with_retry_after(mut response: Response) -> Response {
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
    response.into_response()
}
