//! Feature flags on the public API: the evaluation context of a request (who is signed in,
//! their address as the anonymous id, the country header) and the `maintenance` switch.

use axum::extract::Request;
use axum::http::{HeaderMap, Method};
use shop::accounts::Caller;
use shop::flags::{FlagContext, known};

use crate::error::ApiError;
use crate::state::AppState;

/// What a request knows about its caller for flag rules, owned so handlers can borrow it.
pub(crate) struct RequestFlags {
    anonymous_id: Option<String>,
    country: Option<String>,
}

impl RequestFlags {
    /// From the request's headers and the client address found by the per-IP limit.
    pub(crate) fn of(state: &AppState, headers: &HeaderMap, client_ip: Option<std::net::IpAddr>) -> Self {
        let country = state
            .settings()
            .country_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|value| value.to_str().ok())
            .filter(|value| value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_owned);
        Self { anonymous_id: client_ip.map(|ip| ip.to_string()), country }
    }

    /// The context for `caller`; `country` overrides the header's (the shipping country).
    pub(crate) fn context<'a>(&'a self, caller: Option<&Caller>, country: Option<&'a str>) -> FlagContext<'a> {
        FlagContext {
            user_id: caller.map(|caller| caller.user.id),
            role: caller.map(|caller| caller.user.role),
            guest: caller.is_none_or(|caller| caller.user.guest),
            anonymous_id: self.anonymous_id.as_deref(),
            country: country.or(self.country.as_deref()),
        }
    }
}

/// The request's flag facts, for handlers that evaluate a flag.
pub(crate) fn request_flags(state: &AppState, request: &Request) -> RequestFlags {
    let ip = request.extensions().get::<crate::rate_limits::ClientIp>().map(|client| client.0);
    RequestFlags::of(state, request.headers(), ip)
}

/// While the `maintenance` flag is on for the caller, every write (any method but GET, HEAD and
/// OPTIONS, on any path: before routing, so an unknown path is 503 too) answers 503 with
/// `Retry-After`, but for the few that keep working (see `keeps_working`); reads go on, and so
/// does the admin listener, where the flag is turned off again. Runs after authentication, so
/// a rule can exempt staff.
pub(crate) fn refuse_writes_in_maintenance(state: &AppState, request: &Request) -> Result<(), ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) || keeps_working(request) {
        return Ok(());
    }
    let facts = request_flags(state, request);
    let caller = request.extensions().get::<crate::auth::CurrentCaller>().and_then(|current| current.0.as_ref());
    if state.flags().is_enabled(known::MAINTENANCE, &facts.context(caller, None), false) {
        return Err(ApiError::Unavailable {
            detail: "the shop is in maintenance: changes are paused for a while; browsing goes on",
            retry_after_seconds: 60,
        });
    }
    Ok(())
}

/// Writes that maintenance never pauses: signing in and out (staff exempted by a rule must be
/// able to sign in to do the maintenance), confirming a new device, and the payment provider's
/// notifications (a paused one would leave paid orders unpaid).
fn keeps_working(request: &Request) -> bool {
    let path = request.uri().path();
    matches!(
        (request.method(), path),
        (&Method::POST, "/api/v1/sessions")
            | (&Method::DELETE, "/api/v1/sessions/current")
            | (&Method::POST, "/api/v1/login-challenges/confirm")
    ) || (request.method() == Method::POST && path.starts_with("/api/v1/payment-webhooks/"))
}

/// A feature the shop can switch off: `Ok` while flag `name` is on for the caller (on when no
/// such flag is defined), else 403 with `refusal`.
pub(crate) fn ensure_enabled(
    state: &AppState,
    name: &str,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    client: std::net::IpAddr,
    country: Option<&str>,
    refusal: &'static str,
) -> Result<(), ApiError> {
    let facts = RequestFlags::of(state, headers, Some(client));
    match state.flags().is_enabled(name, &facts.context(caller, country), true) {
        true => Ok(()),
        false => Err(ApiError::Forbidden(refusal)),
    }
}
