//! Runtime controls of the admin listener: drain and undrain (readiness 503 while requests go
//! on being served, so a load balancer moves traffic away), a flush of the in-process caches
//! and the log filter, read and changed live. Each change is audited before it is taken.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AdminState;
use super::flags::admin_actor;
use crate::error::ApiError;
use crate::extract::Json;
use crate::middleware::observe::RequestContext;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DrainBody {
    /// Readiness answers 503 (drained by an operator, or shutting down).
    draining: bool,
    drained_by_operator: bool,
    shutting_down: bool,
}

fn drain_body(state: &AdminState) -> Response {
    let readiness = &state.app.inner.readiness;
    axum::Json(DrainBody {
        draining: readiness.is_draining(),
        drained_by_operator: readiness.drained_by_operator(),
        shutting_down: readiness.shutting_down(),
    })
    .into_response()
}

async fn audit(
    state: &AdminState,
    headers: &HeaderMap,
    request: Option<&Arc<RequestContext>>,
    action: &str,
    before: serde_json::Value,
    after: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    let context = admin_actor(headers, request, time::OffsetDateTime::now_utc());
    let target = format!("instance:{}", state.settings.instance);
    shop::audit::AuditLog::new(Arc::clone(&state.app.inner.store) as _)
        .record_action(&context, action, &target, Some(before), after)
        .await?;
    Ok(())
}

/// `POST /admin/v1/drain`: readiness answers 503 from now on, on both listeners; requests are
/// still served (in flight and new), the admin listener too. Idempotent.
pub(super) async fn drain(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Option<axum::Extension<Arc<RequestContext>>>,
) -> Result<Response, ApiError> {
    let before = serde_json::json!({ "drained": state.app.inner.readiness.drained_by_operator() });
    audit(&state, &headers, request.as_deref(), "instance.drain", before, Some(serde_json::json!({ "drained": true })))
        .await?;
    if !state.app.inner.readiness.drain() {
        tracing::warn!("drained by an operator: readiness answers 503, requests are still served");
    }
    Ok(drain_body(&state))
}

/// `POST /admin/v1/undrain`: ends an operator's drain (a shutdown's stays).
pub(super) async fn undrain(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Option<axum::Extension<Arc<RequestContext>>>,
) -> Result<Response, ApiError> {
    let before = serde_json::json!({ "drained": state.app.inner.readiness.drained_by_operator() });
    let after = Some(serde_json::json!({ "drained": false }));
    audit(&state, &headers, request.as_deref(), "instance.undrain", before, after).await?;
    if state.app.inner.readiness.undrain() {
        tracing::warn!("undrained by an operator: readiness follows the instance's health again");
    }
    Ok(drain_body(&state))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FlushedCache {
    name: &'static str,
    entries_dropped: u64,
}

/// `POST /admin/v1/caches/flush`: drops every entry of this instance's in-process caches (the
/// next reads go to the shared tier or the database); answers what each held.
pub(super) async fn flush_caches(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Option<axum::Extension<Arc<RequestContext>>>,
) -> Result<Response, ApiError> {
    let caches = &state.app.inner.caches;
    let names: Vec<&str> = caches.iter().map(|cache| cache.name()).collect();
    let before = serde_json::json!({ "caches": names });
    // Recorded before the flush, so what each cache held is not known yet: no `after`.
    audit(&state, &headers, request.as_deref(), "caches.flush", before, None).await?;
    let mut flushed = Vec::with_capacity(caches.len());
    for cache in caches {
        flushed.push(FlushedCache { name: cache.name(), entries_dropped: cache.flush().await });
    }
    let dropped: u64 = flushed.iter().map(|cache| cache.entries_dropped).sum();
    tracing::warn!(entries = dropped, "in-process caches flushed by an operator");
    Ok(axum::Json(serde_json::json!({ "caches": flushed })).into_response())
}

fn log_filter(state: &AdminState) -> Result<&super::LogFilterControl, ApiError> {
    state.settings.log_filter.as_ref().ok_or(ApiError::Conflict("this process's log filter cannot be changed".into()))
}

/// `GET /admin/v1/log-level`: the filter in force (`info`, `shopkeep=debug,info`, …).
pub(super) async fn log_level(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let current = log_filter(&state)?.current().map_err(|error| ApiError::Internal(error.into()))?;
    Ok(axum::Json(serde_json::json!({ "filter": current })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct LogLevelRequest {
    filter: String,
}

/// `PUT /admin/v1/log-level` `{"filter": "debug,sqlx=warn"}`: replaces the whole filter of this
/// process at once (until the next change or a restart; `log.level` is the start value).
/// A filter that does not parse is 400 and changes nothing.
pub(super) async fn set_log_level(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Option<axum::Extension<Arc<RequestContext>>>,
    Json(body): Json<LogLevelRequest>,
) -> Result<Response, ApiError> {
    let control = log_filter(&state)?;
    let directives = body.filter.trim();
    if directives.is_empty() || directives.len() > 1_000 {
        return Err(ApiError::invalid("filter", "must be 1 to 1000 characters"));
    }
    control
        .check(directives)
        .map_err(|problem| ApiError::invalid("filter", format!("is not a valid filter: {problem}")))?;
    let before = control.current().map_err(|error| ApiError::Internal(error.into()))?;
    let after = Some(serde_json::json!({ "filter": directives }));
    audit(&state, &headers, request.as_deref(), "log.level", serde_json::json!({ "filter": before }), after).await?;
    let current = control.replace(directives).map_err(|error| ApiError::Internal(error.into()))?;
    tracing::warn!(before = before.as_str(), filter = current.as_str(), "log filter changed by an operator");
    Ok(axum::Json(serde_json::json!({ "filter": current, "before": before })).into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionBody {
    id: uuid::Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: time::OffsetDateTime,
}

/// `GET /admin/v1/users/{id}/sessions`: the user's sessions, most recently seen first (at most
/// 100; never their secrets).
pub(super) async fn user_sessions(
    State(state): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let sessions = state.app.accounts().user_sessions(crate::routes::path_id(&id)?).await?;
    let data: Vec<SessionBody> = sessions
        .into_iter()
        .map(|session| SessionBody {
            id: session.id,
            created_at: session.created_at,
            last_seen_at: session.last_seen_at,
            expires_at: session.expires_at,
        })
        .collect();
    let mut response = axum::Json(serde_json::json!({ "total": data.len(), "data": data })).into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /admin/v1/users/{id}/sessions`: signs the user out everywhere (audited with the
/// change); their API tokens are not touched.
pub(super) async fn end_user_sessions(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Option<axum::Extension<Arc<RequestContext>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let user_id = crate::routes::path_id(&id)?;
    let context = admin_actor(&headers, request.as_deref(), time::OffsetDateTime::now_utc());
    let ended = state.app.accounts().end_user_sessions(user_id, &context).await?;
    Ok(axum::Json(serde_json::json!({ "ended": ended })).into_response())
}
