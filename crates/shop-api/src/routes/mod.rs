//! The routes of the HTTP API, each documented with `#[utoipa::path]` (including who may call it).

pub(crate) mod accounts;
pub(crate) mod caching;
mod catalog;
mod external_logins;
pub(crate) mod health;
mod orders;
mod search;
mod webhooks;

use std::sync::OnceLock;

use axum::body::Bytes;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Shopkeep API", description = "A commerce backend: catalog, accounts, carts, checkout and orders."),
    modifiers(&SecuritySchemes),
    tags(
        (name = "accounts", description = "Sign-up, sessions, users and API tokens"),
        (name = "catalog", description = "Categories and products"),
        (name = "orders", description = "Carts, checkout and orders"),
        (name = "webhooks", description = "Merchant webhooks: endpoints and their delivery log (admin)"),
        (name = "operations", description = "Health and the API description")
    )
)]
struct ApiDoc;

/// Declares the two ways to authenticate; their scopes name the minimum role.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "shopkeep_session",
                "Session cookie set by POST /users and POST /sessions (`__Host-shopkeep_session` over HTTPS)",
            ))),
        );
        components.add_security_scheme(
            "apiToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Personal API token from POST /api-tokens"))
                    .build(),
            ),
        );
    }
}

/// The document served at `/api/v1/openapi.json`, serialised once when the routes are assembled.
static DOCUMENT: OnceLock<Bytes> = OnceLock::new();

/// All routes with their OpenAPI document (as JSON).
pub fn api_routes(state: AppState) -> Result<(Router, serde_json::Value), String> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(accounts::sign_up))
        .routes(routes!(accounts::list_users))
        .routes(routes!(accounts::me, accounts::update_me))
        .routes(routes!(accounts::get_user, accounts::admin_update_user))
        .routes(routes!(accounts::log_in))
        .routes(routes!(accounts::request_password_reset))
        .routes(routes!(accounts::confirm_password_reset))
        .routes(routes!(accounts::confirm_email_verification))
        .routes(routes!(accounts::confirm_login_challenge))
        .routes(routes!(accounts::create_guest))
        .routes(routes!(accounts::upgrade_guest))
        .routes(routes!(accounts::log_out))
        .routes(routes!(external_logins::start))
        .routes(routes!(external_logins::callback))
        .routes(routes!(external_logins::my_identities))
        .routes(routes!(external_logins::unlink_my_identity))
        .routes(routes!(accounts::create_api_token, accounts::list_api_tokens))
        .routes(routes!(accounts::revoke_api_token))
        .routes(routes!(catalog::list_categories, catalog::create_category))
        .routes(routes!(catalog::get_category, catalog::update_category, catalog::delete_category))
        .routes(routes!(catalog::list_products, catalog::create_product))
        .routes(routes!(search::suggestions))
        .routes(routes!(catalog::get_product, catalog::update_product, catalog::delete_product))
        .routes(routes!(catalog::archive_product))
        .routes(routes!(orders::current_cart))
        .routes(routes!(orders::set_cart_quantity, orders::remove_cart_item))
        .routes(routes!(orders::checkout, orders::list_orders))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::cancel_order))
        .routes(routes!(orders::fulfil_order))
        .routes(routes!(orders::refund_order))
        .routes(routes!(orders::payment_webhook))
        .routes(routes!(webhooks::create_endpoint, webhooks::list_endpoints))
        .routes(routes!(webhooks::get_endpoint, webhooks::update_endpoint, webhooks::delete_endpoint))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(openapi_document));
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .routes(routes!(health::live_root))
        .routes(routes!(health::ready_root))
        .with_state(state)
        .split_for_parts();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let document =
        serde_json::to_value(&openapi).map_err(|error| format!("cannot render the OpenAPI document: {error}"))?;
    let bytes =
        serde_json::to_vec(&document).map_err(|error| format!("cannot render the OpenAPI document: {error}"))?;
    let _ = DOCUMENT.set(Bytes::from(bytes));
    Ok((router, document))
}

/// The id in a resource's path; one that is not a UUID cannot exist, so it is simply not found.
pub(crate) fn path_id(raw: &str) -> Result<uuid::Uuid, crate::error::ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| crate::error::ApiError::NotFound)
}

/// Adds a `Location` header (for 201 responses).
pub(crate) fn with_location(mut response: axum::response::Response, location: &str) -> axum::response::Response {
    if let Ok(value) = axum::http::HeaderValue::from_str(location) {
        response.headers_mut().insert(axum::http::header::LOCATION, value);
    }
    response
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json"),
        crate::error::CommonErrors))]
async fn openapi_document(State(_state): State<AppState>) -> impl IntoResponse {
    match DOCUMENT.get() {
        Some(document) => ([(axum::http::header::CONTENT_TYPE, "application/json")], document.clone()).into_response(),
        None => crate::error::ApiError::NotFound.into_response(),
    }
}
