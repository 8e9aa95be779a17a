//! Carts and orders: the current cart, checkout (`POST /orders`, idempotent by
//! `Idempotency-Key`), and the order routes of buyers and staff.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shop::orders::{Checkout, CheckoutOutcome, OrderQuery, OrderStatus, ShippingAddress, WebhookRejection};
use shop::{SortOrder, ValidationErrors};
use utoipa::IntoParams;
use uuid::Uuid;

use super::accounts::parse_page;
use super::path_id;
use crate::auth::Authenticated;
use crate::error::{ApiError, CommonErrors, Problem};
use crate::extract::{Json, Query, RawBody};
use crate::routes::caching::private_json;
use crate::state::AppState;
use crate::wire::{CartBody, CheckoutRequest, OrderBody, Paged, SetQuantityRequest};

fn product_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid("productId", "is not a product id"))
}

fn order_location(id: Uuid) -> String {
    format!("/api/v1/orders/{id}")
}

/// The current cart.
#[utoipa::path(get, path = "/carts/current", tag = "orders",
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "The caller's cart (empty when there is none)", body = CartBody),
        (status = 401, description = "Not signed in (guests: `POST /guests` first)", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn current_cart(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    let lines = state.orders().cart(&caller).await?;
    Ok(private_json(StatusCode::OK, &CartBody::from_lines(lines)))
}

/// Sets how many of a product are in the cart (0 removes it).
#[utoipa::path(put, path = "/carts/current/items/{productId}", tag = "orders", request_body = SetQuantityRequest,
    params(("productId" = Uuid, Path, description = "Product id")),
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "The updated cart", body = CartBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The cart already holds the most products it may (50)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn set_cart_quantity(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(raw_id): Path<String>,
    Json(body): Json<SetQuantityRequest>,
) -> Result<Response, ApiError> {
    let id = product_id(&raw_id)?;
    let quantity = body.quantity.ok_or_else(|| ApiError::invalid("quantity", "is required"))?;
    let lines = state.orders().set_cart_quantity(&caller, id, quantity).await?;
    Ok(private_json(StatusCode::OK, &CartBody::from_lines(lines)))
}

/// Removes a product from the cart.
#[utoipa::path(delete, path = "/carts/current/items/{productId}", tag = "orders",
    params(("productId" = Uuid, Path, description = "Product id")),
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 204, description = "Not in the cart (any more)"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn remove_cart_item(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(raw_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.orders().remove_cart_item(&caller, product_id(&raw_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks out the current cart. Stock for every line is reserved atomically (all or none,
/// never oversold), then the order is charged once through the payment provider.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "Required. One key per checkout attempt (a UUID); a retry with the same key and body gets the same answer and never a second order or charge")),
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 201, description = "Paid; the order is at `Location`", body = OrderBody),
        (status = 202, description = "Ordered, stock reserved, payment outcome not known yet: the order stays `pendingPayment` and is settled shortly", body = OrderBody),
        (status = 402, description = "Payment declined: the order is cancelled and its stock released (`Location`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock, a price changed, a product is no longer sold (nothing reserved or charged) — or the same key's request is still running (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The key was used with a different body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Payments are unavailable (breaker open): nothing reserved or charged; `Retry-After`", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn checkout(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    client: Option<axum::Extension<crate::rate_limits::ClientIp>>,
    headers: HeaderMap,
    Json(body): Json<CheckoutRequest>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let key = headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::trim);
    if key.is_none_or(str::is_empty) {
        errors.add("Idempotency-Key", "is required: send a new unique key (a UUID) with each checkout attempt");
    }
    let address = ShippingAddress::parse(&body.shipping_address.clone().unwrap_or_default().into());
    if let Err(problems) = &address {
        for problem in problems.errors() {
            errors.add(&problem.field, problem.message.clone());
        }
    }
    errors.into_result()?;
    let (Some(key), Ok(address)) = (key, address) else {
        return Err(ApiError::invalid("body", "is invalid"));
    };
    if caller.user.guest {
        let client = super::accounts::client_ip(client);
        let refusal = "guest checkout is off: sign up to check out";
        let flag = shop::flags::known::GUEST_CHECKOUT;
        crate::flags::ensure_enabled(&state, flag, Some(&caller), &headers, client, Some(&address.country), refusal)?;
    }
    let canonical = serde_json::to_vec(&body).map_err(|error| ApiError::Internal(error.into()))?;
    let checkout = state.orders().checkout(&caller, key, shop::orders::request_hash(&canonical), address).await;
    if let Some(label) = checkout_metric_label(&checkout) {
        metrics::counter!("checkouts_total", "outcome" => label).increment(1);
    }
    render(checkout?.outcome)
}

/// The `checkouts_total` label of a checkout's end; `None` for a request its key refused
/// (still in progress, or reused), which did not check out at all.
fn checkout_metric_label(checkout: &Result<Checkout, shop::Error>) -> Option<&'static str> {
    Some(match checkout {
        Ok(Checkout { replayed: true, .. }) => "replayed",
        Ok(Checkout { outcome: CheckoutOutcome::Paid(_), .. }) => "paid",
        Ok(Checkout { outcome: CheckoutOutcome::Pending(_), .. }) => "pending",
        Ok(Checkout { outcome: CheckoutOutcome::Declined(_), .. }) => "declined",
        Err(shop::Error::RequestInProgress { .. } | shop::Error::IdempotencyKeyReused) => return None,
        Err(shop::Error::Unavailable { .. }) => "unavailable",
        Err(shop::Error::Conflict(_)) => "conflict",
        Err(shop::Error::Invalid(_)) => "invalid",
        Err(_) => "error",
    })
}

/// A checkout's answer, the same for its first request and every replay: 201 paid or 202
/// pending with the order, 402 declined; the order at `Location`.
fn render(outcome: CheckoutOutcome) -> Result<Response, ApiError> {
    let location = order_location(outcome.order().id);
    let (status, order) = match outcome {
        CheckoutOutcome::Paid(order) => (StatusCode::CREATED, order),
        CheckoutOutcome::Pending(order) => (StatusCode::ACCEPTED, order),
        CheckoutOutcome::Declined(order) => {
            return Err(ApiError::PaymentDeclined { detail: CheckoutOutcome::decline_detail(&order), location });
        }
    };
    let body = serde_json::to_string(&OrderBody::from(order)).map_err(|error| ApiError::Internal(error.into()))?;
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Query of the order list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderListQuery {
    /// 1-based page number (default 1).
    page: Option<String>,
    /// Page size, 1–100 (default 20).
    limit: Option<String>,
    /// By creation time: `desc` (default, newest first) or `asc`.
    sort_order: Option<String>,
    /// `pendingPayment`, `paid`, `fulfilled`, `cancelled` or `refunded`.
    status: Option<String>,
}

/// Lists orders: one's own, or — for staff — everyone's.
#[utoipa::path(get, path = "/orders", tag = "orders", params(OrderListQuery),
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "One page of orders, newest first", body = Paged<OrderBody>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn list_orders(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<OrderListQuery>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let page = parse_page(&mut errors, query.page.as_deref(), query.limit.as_deref());
    let sort_order = query.sort_order.as_deref().and_then(|raw| errors.check("sortOrder", SortOrder::parse(raw)));
    let status = query.status.as_deref().and_then(|raw| {
        errors.check(
            "status",
            OrderStatus::parse_api(raw).ok_or("must be pendingPayment, paid, fulfilled, cancelled or refunded"),
        )
    });
    errors.into_result()?;
    let query = OrderQuery { page, user_id: None, status, sort_order: sort_order.unwrap_or(SortOrder::Desc) };
    let page = state.orders().list_orders(&caller, query).await?;
    Ok(private_json(StatusCode::OK, &Paged::from_page(page, OrderBody::from)))
}

/// One order (the owner's, or any for staff; anyone else's is "not found").
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", params(("id" = Uuid, Path, description = "Order id")),
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not yours", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let order = state.orders().get_order(&caller, path_id(&raw_id)?).await?;
    Ok(private_json(StatusCode::OK, &OrderBody::from(order)))
}

/// Cancels an order before fulfilment (its owner, or staff): stock released; a payment is
/// refunded by a job.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", params(("id" = Uuid, Path, description = "Order id")),
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "The cancelled order", body = OrderBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already fulfilled, cancelled or refunded", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn cancel_order(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let order = state.orders().cancel_order(&caller, path_id(&raw_id)?).await?;
    Ok(private_json(StatusCode::OK, &OrderBody::from(order)))
}

/// Marks a paid order as fulfilled (staff).
#[utoipa::path(post, path = "/orders/{id}/fulfil", tag = "orders", params(("id" = Uuid, Path, description = "Order id")),
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 200, description = "The fulfilled order", body = OrderBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not paid (or already fulfilled)", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn fulfil_order(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let order = state.orders().fulfil_order(&caller, path_id(&raw_id)?).await?;
    Ok(private_json(StatusCode::OK, &OrderBody::from(order)))
}

/// Refunds a paid or fulfilled order (staff), through a job: the order becomes `refunded`
/// once the provider confirms.
#[utoipa::path(post, path = "/orders/{id}/refund", tag = "orders", params(("id" = Uuid, Path, description = "Order id")),
    security(("session" = ["staff"]), ("apiToken" = ["staff"])),
    responses(
        (status = 202, description = "Refund under way; the order as it is now", body = OrderBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not paid or fulfilled", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn refund_order(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    let order = state.orders().refund_order(&caller, path_id(&raw_id)?).await?;
    Ok(private_json(StatusCode::ACCEPTED, &OrderBody::from(order)))
}

/// What a payment webhook did, for the provider's delivery log.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentWebhookReceipt {
    pub received: bool,
    /// The event had been applied before: nothing changed.
    pub duplicate: bool,
    /// What the shop did, e.g. `order paid`, `no change: the order is paid`.
    pub outcome: String,
}

/// A payment provider reports a charge, decline or refund. Verified by its HMAC signature
/// (`Webhook-Signature: t=…,v1=…` over the raw body, within the replay window), applied once
/// through the order state machine; a redelivered event is acknowledged and changes nothing.
#[utoipa::path(post, path = "/payment-webhooks/{provider}", tag = "orders", security(()),
    params(("provider" = String, Path, description = "The provider's configured name (`payments.name`)")),
    responses(
        (status = 200, description = "Applied (or already applied)", body = PaymentWebhookReceipt),
        (status = 400, description = "Missing, forged or stale signature, or an unreadable event: nothing applied", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider, or it sends no webhooks here", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than `http.body_limit_bytes`", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn payment_webhook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    if provider != state.orders().payments().name() {
        return Err(ApiError::NotFound);
    }
    let signature = headers.get("webhook-signature").and_then(|value| value.to_str().ok());
    let event = state.orders().verify_payment_webhook(signature, &body).map_err(|rejection| {
        tracing::warn!(provider = provider.as_str(), %rejection, "payment webhook refused");
        match rejection {
            WebhookRejection::NotAccepted => ApiError::NotFound,
            WebhookRejection::Malformed(_) => ApiError::invalid("body", rejection.to_string()),
            _ => ApiError::invalid("Webhook-Signature", rejection.to_string()),
        }
    })?;
    let applied = state.orders().apply_payment_event(&provider, event).await?;
    let receipt = PaymentWebhookReceipt { received: true, duplicate: applied.duplicate, outcome: applied.outcome };
    Ok((StatusCode::OK, axum::Json(receipt)).into_response())
}
