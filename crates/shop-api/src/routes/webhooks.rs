//! Merchant webhooks (admin only): endpoints registered for order events, their signing
//! secrets (shown on creation and rotation only), and the delivery log with retries.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize};
use shop::ValidationErrors;
use shop::webhooks::{DeliveryState, WebhookDelivery, WebhookEndpoint};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::accounts::parse_page;
use super::path_id;
use super::with_location;
use crate::error::{ApiError, CommonErrors, Problem};
use crate::extract::{Json, Query};
use crate::routes::caching::private_json;
use crate::state::AppState;
use crate::wire::Paged;

// === wire types ===

/// A webhook endpoint (without its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointBody {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Subscribed events: `order.paid`, `order.cancelled`, `order.fulfilled`, `order.refunded`.
    pub events: Vec<String>,
    /// `false` once disabled by an admin or automatically after persistent failure.
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<OffsetDateTime>,
    /// Failed attempts since the last successful one.
    pub consecutive_failures: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<WebhookEndpoint> for WebhookEndpointBody {
    fn from(endpoint: WebhookEndpoint) -> Self {
        Self {
            id: endpoint.id,
            enabled: endpoint.enabled(),
            url: endpoint.url,
            description: endpoint.description,
            events: endpoint.events.iter().map(|event| event.as_str().to_owned()).collect(),
            disabled_reason: endpoint.disabled_reason,
            disabled_at: endpoint.disabled_at,
            consecutive_failures: endpoint.consecutive_failures,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

/// An endpoint with its signing secret, shown only when created or rotated.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointWithSecretBody {
    #[serde(flatten)]
    pub endpoint: WebhookEndpointBody,
    /// `whsec_…`: verifies `Shopkeep-Signature`. Store it now: it cannot be shown again.
    pub secret: String,
}

impl From<WebhookEndpoint> for WebhookEndpointWithSecretBody {
    fn from(endpoint: WebhookEndpoint) -> Self {
        let secret = endpoint.secret.expose().to_owned();
        Self { endpoint: endpoint.into(), secret }
    }
}

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhookEndpointRequest {
    /// `https://…` (no credentials; not a private address).
    pub url: Option<String>,
    /// At least one of `order.paid`, `order.cancelled`, `order.fulfilled`, `order.refunded`.
    pub events: Option<Vec<String>>,
    /// Up to 200 characters.
    pub description: Option<String>,
}

/// Changes to an endpoint; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWebhookEndpointRequest {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `null` or `""` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// `true` re-enables the endpoint (its failure count starts over); `false` disables it and
    /// abandons its pending deliveries.
    pub enabled: Option<bool>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// One delivery in the log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveryBody {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The `Shopkeep-Event-Id` (receivers deduplicate on it).
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending`, `succeeded`, `failed` (a retry follows) or `abandoned` (no more attempts).
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    /// Why the last attempt failed, or an excerpt of the answer (truncated).
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The JSON body sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<WebhookDelivery> for WebhookDeliveryBody {
    fn from(delivery: WebhookDelivery) -> Self {
        let payload = serde_json::from_str(&delivery.payload).unwrap_or(serde_json::Value::String(delivery.payload));
        Self {
            id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            event_id: delivery.event_id,
            event_type: delivery.event_type.as_str().to_owned(),
            state: delivery.state.as_str().to_owned(),
            attempts: delivery.attempts,
            last_status: delivery.last_status,
            last_error: delivery.last_error,
            last_attempt_at: delivery.last_attempt_at,
            payload,
            created_at: delivery.created_at,
            updated_at: delivery.updated_at,
        }
    }
}

/// Query of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListQuery {
    /// 1-based page number (default 1).
    page: Option<String>,
    /// Page size, 1–100 (default 20).
    limit: Option<String>,
    /// `pending`, `succeeded`, `failed` or `abandoned`.
    state: Option<String>,
}

// === handlers ===

fn location(id: Uuid) -> String {
    format!("/api/v1/webhook-endpoints/{id}")
}

/// Registers a webhook endpoint (admin). The response holds its signing secret, once.
#[utoipa::path(post, path = "/webhook-endpoints", tag = "webhooks", request_body = CreateWebhookEndpointRequest,
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 201, description = "Registered; `Location` names it; `secret` is shown only here", body = WebhookEndpointWithSecretBody),
        (status = 400, description = "Invalid url, events or description", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The most endpoints that may exist already do", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    Json(body): Json<CreateWebhookEndpointRequest>,
) -> Result<Response, ApiError> {
    let endpoint = state
        .webhooks()
        .create_endpoint(body.url.as_deref(), body.events.as_deref(), body.description.as_deref())
        .await?;
    let location = location(endpoint.id);
    Ok(with_location(private_json(StatusCode::CREATED, &WebhookEndpointWithSecretBody::from(endpoint)), &location))
}

/// Lists the webhook endpoints (admin), oldest first; there are at most `webhooks.max_endpoints`.
#[utoipa::path(get, path = "/webhook-endpoints", tag = "webhooks",
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 200, description = "Every endpoint (without secrets)", body = Vec<WebhookEndpointBody>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn list_endpoints(State(state): State<AppState>) -> Result<Response, ApiError> {
    let endpoints = state.webhooks().list_endpoints().await?;
    let body: Vec<WebhookEndpointBody> = endpoints.into_iter().map(WebhookEndpointBody::from).collect();
    Ok(private_json(StatusCode::OK, &body))
}

/// One webhook endpoint (admin), without its secret.
#[utoipa::path(get, path = "/webhook-endpoints/{id}", tag = "webhooks", params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 200, description = "The endpoint", body = WebhookEndpointBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn get_endpoint(State(state): State<AppState>, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let endpoint = state.webhooks().get_endpoint(path_id(&raw_id)?).await?;
    Ok(private_json(StatusCode::OK, &WebhookEndpointBody::from(endpoint)))
}

/// Changes a webhook endpoint (admin): url, events, description, enabled.
#[utoipa::path(patch, path = "/webhook-endpoints/{id}", tag = "webhooks", request_body = UpdateWebhookEndpointRequest,
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 200, description = "The changed endpoint", body = WebhookEndpointBody),
        (status = 400, description = "Invalid fields, or none given", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    Json(body): Json<UpdateWebhookEndpointRequest>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw_id)?;
    let description = body.description.as_ref().map(|description| description.as_deref());
    let endpoint = state
        .webhooks()
        .update_endpoint(id, body.url.as_deref(), body.events.as_deref(), description, body.enabled)
        .await?;
    Ok(private_json(StatusCode::OK, &WebhookEndpointBody::from(endpoint)))
}

/// Deletes a webhook endpoint and its delivery log (admin); its queued deliveries are dropped.
#[utoipa::path(delete, path = "/webhook-endpoints/{id}", tag = "webhooks", params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.webhooks().delete_endpoint(path_id(&raw_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces an endpoint's signing secret (admin); the new one is in this response only and
/// signs every attempt from now on.
#[utoipa::path(post, path = "/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = WebhookEndpointWithSecretBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn rotate_secret(State(state): State<AppState>, Path(raw_id): Path<String>) -> Result<Response, ApiError> {
    let endpoint = state.webhooks().rotate_secret(path_id(&raw_id)?).await?;
    Ok(private_json(StatusCode::OK, &WebhookEndpointWithSecretBody::from(endpoint)))
}

/// An endpoint's delivery log (admin), newest first.
#[utoipa::path(get, path = "/webhook-endpoints/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path, description = "Endpoint id"), DeliveryListQuery),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 200, description = "One page of deliveries", body = Paged<WebhookDeliveryBody>),
        (status = 400, description = "Invalid page, limit or state", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    Query(query): Query<DeliveryListQuery>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let page = parse_page(&mut errors, query.page.as_deref(), query.limit.as_deref());
    let delivery_state = query.state.as_deref().and_then(|raw| {
        errors.check("state", DeliveryState::parse(raw).ok_or("must be pending, succeeded, failed or abandoned"))
    });
    errors.into_result()?;
    let page = state.webhooks().list_deliveries(path_id(&raw_id)?, delivery_state, page).await?;
    Ok(private_json(StatusCode::OK, &Paged::from_page(page, WebhookDeliveryBody::from)))
}

/// Queues a failed or abandoned delivery again (admin); its attempts start over.
#[utoipa::path(post, path = "/webhook-endpoints/{id}/deliveries/{deliveryId}/retry", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id"), ("deliveryId" = Uuid, Path, description = "Delivery id")),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 202, description = "Queued; the delivery is pending", body = WebhookDeliveryBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint or delivery", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not failed or abandoned, its next attempt already scheduled, or the endpoint disabled", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    Path((raw_id, raw_delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let delivery = state.webhooks().retry_delivery(path_id(&raw_id)?, path_id(&raw_delivery)?).await?;
    Ok(private_json(StatusCode::ACCEPTED, &WebhookDeliveryBody::from(delivery)))
}
