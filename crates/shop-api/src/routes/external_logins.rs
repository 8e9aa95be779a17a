//! Sign-in with an external OpenID Connect provider: `start` sends the browser to the provider
//! (state, nonce, PKCE) with a cookie naming the pending sign-in; `callback` checks it, has the
//! provider's answer verified and signs in (or holds the sign-in for a mailed confirmation). The
//! signed-in user lists their linked providers and unlinks them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shop::accounts::{ExternalCallback, LoginOutcome};
use shop::ports::IdentityProvider;
use shop::secrets::SecretToken;
use utoipa::IntoParams;

use super::accounts::{append_device_cookie, challenge_response, client_ip, cookie, device_of, session_cookie};
use crate::auth::{Authenticated, EXTERNAL_LOGIN_COOKIE, PresentedSession, SECURE_EXTERNAL_LOGIN_COOKIE};
use crate::error::{ApiError, CommonErrors, Problem};
use crate::extract::Query;
use crate::rate_limits::ClientIp;
use crate::routes::caching::private_json;
use crate::state::AppState;
use crate::wire::ExternalIdentityBody;

/// Where to go after signing in.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct StartParams {
    /// A path on the storefront (starting with one `/`) to return to after signing in; default `/`.
    pub return_to: Option<String>,
}

/// What the provider sends back (OpenID Connect authorization response).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    /// The provider's error code, e.g. `access_denied` when the person declined.
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The issuer (RFC 9207); when present it must be the provider's.
    pub iss: Option<String>,
}

fn provider(state: &AppState, name: &str) -> Result<std::sync::Arc<dyn IdentityProvider>, ApiError> {
    state.inner.identity_providers.get(name).cloned().ok_or(ApiError::NotFound)
}

/// The pending sign-in's cookie: set at start, cleared at the callback.
fn handle_cookie(state: &AppState, value: &str, max_age_seconds: i64) -> String {
    cookie(state, (EXTERNAL_LOGIN_COOKIE, SECURE_EXTERNAL_LOGIN_COOKIE), value, max_age_seconds)
}

/// Starts signing in with an external OpenID Connect provider.
#[utoipa::path(get, path = "/auth/oidc/{provider}/start", tag = "accounts", security(()), params(
        ("provider" = String, Path, description = "A configured provider's name"), StartParams),
    responses(
        (status = 302, description = "To the provider's sign-in page (`Location`), with `state`, `nonce` and a PKCE S256 challenge; `Set-Cookie` names the pending sign-in for 10 minutes"),
        (status = 404, description = "No provider of this name is configured", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider is unavailable (discovery failed, breaker open)", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    client: Option<axum::Extension<ClientIp>>,
    Query(params): Query<StartParams>,
) -> Result<Response, ApiError> {
    let provider = provider(&state, &name)?;
    state.inner.rate_limits.before_external_login(client_ip(client)).await?;
    let started = state.accounts().begin_external_login(provider.as_ref(), params.return_to.as_deref()).await?;
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&started.url).map_err(|error| ApiError::Internal(error.into()))?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    let cookie = handle_cookie(&state, started.handle.expose(), started.lifetime.whole_seconds().max(0));
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The provider's redirect back: completes the sign-in.
#[utoipa::path(get, path = "/auth/oidc/{provider}/callback", tag = "accounts", security(()), params(
        ("provider" = String, Path, description = "A configured provider's name"), CallbackParams),
    responses(
        (status = 302, description = "Signed in: `Set-Cookie` carries a new session; `Location` is the storefront page given as `returnTo`"),
        (status = 202, description = "Verified, but the device is new to this (staff or admin) account: a confirmation link was mailed; no session yet", body = crate::wire::LoginChallengeBody),
        (status = 400, description = "Not started in this browser, expired or used (`state`); declined at the provider (`error`); the provider's answer failed verification (`code`); or no email address shared (`email`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The linked account is disabled", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No provider of this name is configured", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An account with the provider's address exists but cannot be linked (either side has not verified the address)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider is unavailable", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    previous: Option<axum::Extension<PresentedSession>>,
    client: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Result<Response, ApiError> {
    let provider = provider(&state, &name)?;
    // Not rate limited itself: it completes only a sign-in `start` (which is limited) left
    // pending for this browser, and does nothing else.
    let ip = client_ip(client);
    let handle = crate::auth::external_login_cookie(&headers, state.settings().https)
        .and_then(|raw| SecretToken::from_presented(&raw));
    let previous = previous.map(|axum::Extension(PresentedSession(token))| token);
    let (presented_device, device) = device_of(&state, &headers);
    let callback = ExternalCallback {
        state: params.state,
        code: params.code,
        error: params.error,
        error_description: params.error_description,
        issuer: params.iss,
    };
    let result = state
        .accounts()
        .complete_external_login(
            provider.as_ref(),
            handle.as_ref(),
            &callback,
            previous.as_ref(),
            &device.hash(),
            &ip.to_string(),
        )
        .await;
    let outcome = match &result {
        Ok((LoginOutcome::SignedIn(_), _)) => "ok",
        Ok((LoginOutcome::Challenged(_), _)) => "challenged",
        Err(shop::Error::Unavailable { .. }) => "unavailable",
        Err(_) => "failed",
    };
    metrics::counter!("accounts_external_logins_total", "provider" => name.clone(), "outcome" => outcome).increment(1);
    let mut response = match result {
        Ok((LoginOutcome::SignedIn(signed_in), location)) => {
            let mut response = StatusCode::FOUND.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::LOCATION,
                HeaderValue::from_str(&location).map_err(|error| ApiError::Internal(error.into()))?,
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            let session =
                session_cookie(&state, signed_in.session_token.expose(), signed_in.lifetime.whole_seconds().max(0));
            if let Ok(session) = HeaderValue::from_str(&session) {
                headers.append(header::SET_COOKIE, session);
            }
            response
        }
        Ok((LoginOutcome::Challenged(challenge), _)) => challenge_response(&state, ip, &challenge).await?,
        Err(error) => ApiError::from(error).into_response(),
    };
    // The pending sign-in was used (or refused) either way: its cookie goes.
    if let Ok(cleared) = HeaderValue::from_str(&handle_cookie(&state, "", 0)) {
        response.headers_mut().append(header::SET_COOKIE, cleared);
    }
    if presented_device.is_none() {
        append_device_cookie(&state, &mut response, &device);
    }
    Ok(response)
}

/// The external providers the signed-in user's account is linked to.
#[utoipa::path(get, path = "/users/me/identities", tag = "accounts",
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "Linked providers, oldest first", body = Vec<ExternalIdentityBody>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn my_identities(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    let identities = state.accounts().external_identities(&caller).await?;
    let body: Vec<ExternalIdentityBody> = identities.into_iter().map(ExternalIdentityBody::from).collect();
    Ok(private_json(StatusCode::OK, &body))
}

/// Unlinks one of the signed-in user's providers: it no longer signs in to this account (signing
/// in with it again links it again, by verified address, or makes a new account). The owner is
/// mailed about it. An account keeps at least one way to sign in: its last link goes only once
/// it has a password.
#[utoipa::path(delete, path = "/users/me/identities/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The link's `id` from `GET /users/me/identities`")),
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is the account's only way to sign in (no password, no other link): set a password first (`POST /password-resets`)", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn unlink_my_identity(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.accounts().unlink_external_identity(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
