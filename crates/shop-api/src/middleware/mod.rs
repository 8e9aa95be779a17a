//! The middleware stack of the public listener, outermost first (the order is listed in ARCHITECTURE.md).

pub mod admission;
pub mod observe;
pub mod problems;
pub mod security_headers;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::auth::{self, Policies};

/// Health checks skip load shedding and rate limits: an orchestrator that saw a busy instance
/// fail its probes would restart it, turning overload into an outage.
pub(crate) fn is_health_check(path: &str) -> bool {
    path.starts_with("/health/") || path.starts_with("/api/v1/health/")
}
use crate::state::AppState;

/// Wraps the routes: outermost first, each request passes
/// observe (request id, span, access log, metrics) → problem rendering → catch panic →
/// security headers → CORS → gzip → body limit → timeout → admission (load shed → per-IP rate
/// limit → authentication → per-principal rate limit → maintenance: writes refused while the
/// flag is on) → routing → authorization → handler.
///
/// Fails when a route's access declaration is malformed: better not to start than to guess.
pub fn stack(routes: Router, document: &serde_json::Value, state: AppState) -> Result<Router, String> {
    let settings = state.settings().clone();
    let policies = Arc::new(Policies::from_document(document)?);
    // Only what needs the matched route is a route layer. Everything else wraps the router once,
    // as one unboxed service: `Router::layer` would box each layer around every route and clone
    // the whole boxed chain on every request (a profile of `/health/live` showed those clones,
    // and their allocations, as a large part of the request's cost).
    let routes = routes
        .route_layer(axum::middleware::from_fn_with_state(policies, auth::authorize))
        .route_layer(axum::middleware::from_fn(observe::record_route));
    let service = ServiceBuilder::new()
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(axum::middleware::from_fn(problems::render_problems))
        .layer(CatchPanicLayer::custom(problems::panic_response))
        .layer(security_headers::layer(settings.https))
        .layer(cors(&settings.allowed_origins, settings.cors_max_age))
        .layer(CompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(settings.body_limit_bytes))
        // Inner middleware functions take axum's own body type.
        .map_request(|request: axum::http::Request<_>| request.map(axum::body::Body::new))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, settings.request_timeout))
        .layer(axum::middleware::from_fn_with_state(state, admission::admit))
        // The body limit is `RequestBodyLimitLayer`'s alone (it also limits chunked bodies).
        .layer(DefaultBodyLimit::disable())
        .service(routes);
    Ok(Router::new().fallback_service(service))
}

fn cors(allowed_origins: &[String], max_age: std::time::Duration) -> CorsLayer {
    let origins: Vec<HeaderValue> =
        allowed_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([header::ETAG, header::LOCATION, header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
        .allow_credentials(true)
        .max_age(max_age)
}
