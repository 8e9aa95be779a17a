//! Shopkeep's HTTP surface: axum routers, the middleware stack, authentication and authorization,
//! problem+json errors and the generated OpenAPI document.
//!
//! Only this crate knows HTTP. Handlers turn requests into domain values, call a service from
//! `shop`, and turn the result (or the error, in one place: [`error`]) into a response.

#![forbid(unsafe_code)]

pub mod admin;
mod auth;
pub mod error;
mod extract;
mod flags;
mod middleware;
pub mod rate_limits;
mod routes;
mod state;
mod wire;

pub use admin::{AdminSettings, LogFilter, LogFilterControl, MetricsRenderer, admin_router};
pub use middleware::observe::RequestContext;
pub use rate_limits::{PerScope, RateLimitScope, RateLimitSettings, RateLimiters, SharedLimits};
pub use state::{AppParts, AppState, HttpSettings, IdentityProviders, Readiness};

use axum::Router;

/// The public API router with its whole middleware stack, ready to serve. Fails when a route's
/// access declaration is malformed.
pub fn public_router(state: AppState) -> Result<Router, String> {
    let (routes, document) = routes::api_routes(state.clone())?;
    middleware::stack(routes, &document, state)
}
