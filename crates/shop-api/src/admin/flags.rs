//! The control plane's flag and audit routes: `GET|PUT|DELETE /admin/v1/flags/{name}`,
//! `PUT /admin/v1/flags/{name}/rollout`, `GET /admin/v1/flags/{name}/evaluate` and
//! `GET /admin/v1/audit`. Every change is audited with the admin actor and the request id.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shop::audit::{AuditContext, AuditEntry, AuditQuery};
use shop::flags::{Flag, FlagContext, FlagDefinition, FlagName, FlagValue, FlagWrite};

use super::AdminState;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::middleware::observe::RequestContext;

/// The header the `shopkeep` CLI names its operator with (`cli:alice`); recorded after the
/// admin token in the audit log, never trusted for anything else.
pub const ACTOR_HEADER: &str = "x-shopkeep-actor";

/// Who acts on the admin listener: the admin token, with the CLI's operator when it says.
pub(super) fn admin_actor(
    headers: &HeaderMap,
    request: Option<&Arc<RequestContext>>,
    at: time::OffsetDateTime,
) -> AuditContext {
    let operator = headers
        .get(ACTOR_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.chars().filter(|c| c.is_ascii_graphic()).take(64).collect::<String>())
        .filter(|value| !value.is_empty());
    let actor = match operator {
        Some(operator) => format!("admin-token ({operator})"),
        None => "admin-token".to_owned(),
    };
    AuditContext::new(actor, request.map(|context| context.request_id().to_owned()), at)
}

/// A flag as the admin API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FlagBody {
    #[serde(flatten)]
    flag: Flag,
}

fn flag_response(status: StatusCode, flag: Flag) -> Response {
    let etag = HeaderValue::try_from(format!("\"{}\"", flag.version)).ok();
    let mut response = (status, axum::Json(FlagBody { flag })).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn flag_name(raw: &str) -> Result<FlagName, ApiError> {
    FlagName::parse(raw).map_err(|problem| ApiError::Invalid(shop::ValidationErrors::single("name", problem)))
}

/// What an `If-Match` header asks of the flag's current version: `*` that it exists, a list of
/// ETags (`"3"`, `"2", "3"`) that it is one of them. `None`: no header, no condition.
enum Precondition {
    Exists,
    OneOf(Vec<i64>),
}

fn precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ApiError::PreconditionFailed)?;
    let mut versions = Vec::new();
    for candidate in value.split(',').map(str::trim) {
        if candidate == "*" {
            return Ok(Some(Precondition::Exists));
        }
        // A weak ETag never matches (RFC 9110 §13.1.1), nor anything that is not ours.
        if let Some(version) =
            candidate.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')).and_then(|v| v.parse::<i64>().ok())
        {
            versions.push(version);
        }
    }
    Ok(Some(Precondition::OneOf(versions)))
}

/// The version a conditional write must apply to: the current one when the precondition holds
/// (the store then refuses the write if it changed meanwhile); 412 when it does not.
async fn expected_version(state: &AdminState, name: &FlagName, headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(precondition) = precondition(headers)? else { return Ok(None) };
    let current = match state.app.flags().get(name).await {
        Ok(flag) => flag.version,
        Err(shop::Error::NotFound) => return Err(ApiError::PreconditionFailed),
        Err(error) => return Err(error.into()),
    };
    match precondition {
        Precondition::Exists => Ok(Some(current)),
        Precondition::OneOf(versions) if versions.contains(&current) => Ok(Some(current)),
        Precondition::OneOf(_) => Err(ApiError::PreconditionFailed),
    }
}

/// `GET /admin/v1/flags`: every flag, by name, as stored.
pub(super) async fn list_flags(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let flags = state.app.flags().list().await?;
    let snapshot = state.app.flags().snapshot();
    let body = serde_json::json!({
        "items": flags,
        "total": flags.len(),
        // What this instance evaluates: false until the first load from the database succeeded.
        "snapshotLoaded": snapshot.loaded(),
    });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /admin/v1/flags/{name}`.
pub(super) async fn get_flag(State(state): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let flag = state.app.flags().get(&flag_name(&name)?).await?;
    Ok(flag_response(StatusCode::OK, flag))
}

/// `PUT /admin/v1/flags/{name}`: creates (201) or replaces (200) the flag; `If-Match` makes the
/// write conditional — `"<version>"` (or a list) on that version, `*` on its existing — with 412
/// when it does not hold.
pub(super) async fn put_flag(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Option<axum::Extension<Arc<RequestContext>>>,
    Path(name): Path<String>,
    Json(definition): Json<FlagDefinition>,
) -> Result<Response, ApiError> {
    let name = flag_name(&name)?;
    let now = time::OffsetDateTime::now_utc();
    let audit = admin_actor(&headers, request.as_deref(), now);
    let expected_version = expected_version(&state, &name, &headers).await?;
    let write = FlagWrite { name, definition, expected_version, now };
    let (before, after) = state.app.flags().put(write, &audit).await?;
    tracing::warn!(
        flag = after.name.as_str(),
        version = after.version,
        actor = audit.actor.as_str(),
        "feature flag changed"
    );
    let status = if before.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    Ok(flag_response(status, after))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RolloutRequest {
    percentage: u8,
}

/// `PUT /admin/v1/flags/{name}/rollout` `{"percentage": 25}`: a boolean flag's rollout rule.
pub(super) async fn put_rollout(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Option<axum::Extension<Arc<RequestContext>>>,
    Path(name): Path<String>,
    Json(body): Json<RolloutRequest>,
) -> Result<Response, ApiError> {
    if body.percentage > 100 {
        return Err(ApiError::Invalid(shop::ValidationErrors::single("percentage", "must be 0-100")));
    }
    let name = flag_name(&name)?;
    let audit = admin_actor(&headers, request.as_deref(), time::OffsetDateTime::now_utc());
    let expected = expected_version(&state, &name, &headers).await?;
    let (_, after) = state.app.flags().set_rollout(&name, body.percentage, expected, &audit).await?;
    tracing::warn!(
        flag = after.name.as_str(),
        percentage = body.percentage,
        actor = audit.actor.as_str(),
        "feature flag rollout changed"
    );
    Ok(flag_response(StatusCode::OK, after))
}

/// `DELETE /admin/v1/flags/{name}`: 204; the shop's own flags fall back to their defaults.
pub(super) async fn delete_flag(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Option<axum::Extension<Arc<RequestContext>>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = flag_name(&name)?;
    let audit = admin_actor(&headers, request.as_deref(), time::OffsetDateTime::now_utc());
    let expected = expected_version(&state, &name, &headers).await?;
    state.app.flags().delete(&name, expected, &audit).await?;
    tracing::warn!(flag = name.as_str(), actor = audit.actor.as_str(), "feature flag deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct EvaluateQuery {
    user_id: Option<String>,
    role: Option<String>,
    guest: Option<bool>,
    anonymous_id: Option<String>,
    country: Option<String>,
}

/// `GET /admin/v1/flags/{name}/evaluate?userId=&role=&guest=&anonymousId=&country=`: what this
/// instance's snapshot answers such a caller (`value` is null when the flag is not defined).
pub(super) async fn evaluate_flag(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(query): Query<EvaluateQuery>,
) -> Result<Response, ApiError> {
    let name = flag_name(&name)?;
    let mut errors = shop::ValidationErrors::new();
    let user_id = query.user_id.as_deref().and_then(|raw| errors.check("userId", uuid::Uuid::parse_str(raw)));
    let role = query.role.as_deref().and_then(|raw| errors.check("role", shop::accounts::Role::parse(raw)));
    errors.into_result()?;
    let context = FlagContext {
        user_id,
        role,
        guest: query.guest.unwrap_or(user_id.is_none()),
        anonymous_id: query.anonymous_id.as_deref(),
        country: query.country.as_deref(),
    };
    let value: Option<FlagValue> = state.app.flags().evaluate(name.as_str(), &context);
    let snapshot = state.app.flags().snapshot();
    let body = serde_json::json!({ "name": name, "value": value, "snapshotLoaded": snapshot.loaded() });
    Ok(axum::Json(body).into_response())
}

/// One audit entry as the admin API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct AuditEntryBody {
    id: uuid::Uuid,
    #[serde(with = "time::serde::rfc3339")]
    at: time::OffsetDateTime,
    actor: String,
    action: String,
    target: String,
    #[schema(value_type = Option<Object>)]
    before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    after: Option<serde_json::Value>,
    request_id: Option<String>,
}

impl From<AuditEntry> for AuditEntryBody {
    fn from(entry: AuditEntry) -> Self {
        let AuditEntry { id, at, actor, action, target, before, after, request_id } = entry;
        Self { id, at, actor, action, target, before, after, request_id }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AuditListQuery {
    page: Option<String>,
    limit: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    /// RFC 3339.
    since: Option<String>,
}

/// `GET /admin/v1/audit?action=flag.&actor=&target=flag:maintenance&since=&page=&limit=`,
/// newest first.
pub(super) async fn list_audit(
    State(state): State<AdminState>,
    Query(query): Query<AuditListQuery>,
) -> Result<Response, ApiError> {
    let mut errors = shop::ValidationErrors::new();
    let page = crate::routes::accounts::parse_page(&mut errors, query.page.as_deref(), query.limit.as_deref());
    for (field, value) in [("action", &query.action), ("actor", &query.actor), ("target", &query.target)] {
        if value.as_ref().is_some_and(|value| value.is_empty() || value.len() > 200) {
            errors.add(field, "must be 1 to 200 characters");
        }
    }
    let since = query.since.as_deref().and_then(|raw| {
        errors.check(
            "since",
            time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                .map_err(|_| "must be an RFC 3339 time"),
        )
    });
    errors.into_result()?;
    let query = AuditQuery { action: query.action, actor: query.actor, target: query.target, since, page };
    let audit = shop::audit::AuditLog::new(Arc::clone(&state.app.inner.store) as _);
    let page = audit.list(&query).await?;
    let mut response = axum::Json(crate::wire::Paged::from_page(page, AuditEntryBody::from)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
