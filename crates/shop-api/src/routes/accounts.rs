//! Identity routes: sign-up, login/logout, the current user, admin user management, API tokens.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shop::ValidationErrors;
use shop::accounts::{
    ChallengeRequired, Email, LoginOutcome, PasswordPlain, PersonName, Role, SignedIn, UserQuery, UserSort,
};
use shop::flags::known;
use shop::secrets::SecretToken;
use shop::{PageRequest, SortOrder};

use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::{Authenticated, PresentedSession, SECURE_SESSION_COOKIE, SESSION_COOKIE};
use crate::error::{ApiError, CommonErrors, Problem};
use crate::extract::{Json, Query};
use crate::rate_limits::{ClientIp, UNKNOWN_CLIENT};
use crate::routes::caching::private_json;
use crate::routes::with_location;
use crate::state::AppState;
use crate::wire::{
    AdminUpdateUserRequest, ApiTokenBody, CreateApiTokenRequest, CreatedApiTokenBody, EmailVerificationConfirmation,
    LogInRequest, LoginChallengeBody, LoginChallengeConfirmation, Paged, PasswordResetConfirmation,
    PasswordResetRequest, SignUpRequest, UpdateMeRequest, UserBody,
};

/// Creates a customer account and signs it in (sets the session cookie).
#[utoipa::path(post, path = "/users", tag = "accounts", security(()), request_body = SignUpRequest,
    responses(
        (status = 201, description = "Account created and signed in; `Set-Cookie` carries the session", body = UserBody),
        (status = 409, description = "An account with this email exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn sign_up(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    Json(body): Json<SignUpRequest>,
) -> Result<Response, ApiError> {
    let client = client_ip(client);
    let refusal = "sign-ups are closed for now";
    crate::flags::ensure_enabled(&state, known::SIGNUPS, None, &headers, client, None, refusal)?;
    state.inner.rate_limits.before_signup(client).await?;
    let (email, password, name) = new_account_fields(&body)?;
    let signed_in = state.accounts().sign_up(email, password, name).await?;
    metrics::counter!("accounts_signups_total").increment(1);
    let location = format!("/api/v1/users/{}", signed_in.user.id);
    Ok(with_location(session_response(&state, StatusCode::CREATED, signed_in), &location))
}

/// Creates an ephemeral guest account and signs it in (anonymous checkout). Idle guests are
/// deleted; `POST /users/me/upgrade` keeps one for good.
#[utoipa::path(post, path = "/guests", tag = "accounts", security(()),
    responses(
        (status = 201, description = "Guest created and signed in; `Set-Cookie` carries the session", body = UserBody),
        CommonErrors
    ))]
pub async fn create_guest(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let client = client_ip(client);
    let refusal = "guest checkout is off: sign up to shop";
    crate::flags::ensure_enabled(&state, known::GUEST_CHECKOUT, None, &headers, client, None, refusal)?;
    state.inner.rate_limits.before_signup(client).await?;
    let signed_in = state.accounts().create_guest().await?;
    metrics::counter!("accounts_guests_total").increment(1);
    let location = format!("/api/v1/users/{}", signed_in.user.id);
    Ok(with_location(session_response(&state, StatusCode::CREATED, signed_in), &location))
}

/// Turns the signed-in guest into a full account (same account, so its cart and orders stay);
/// a new session replaces the guest's and a verification mail is queued.
#[utoipa::path(post, path = "/users/me/upgrade", tag = "accounts",
    security(("session" = ["customer"])), request_body = SignUpRequest,
    responses(
        (status = 200, description = "Now a full account; `Set-Cookie` carries a new session", body = UserBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a guest, or the email is taken", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn upgrade_guest(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    client: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    Json(body): Json<SignUpRequest>,
) -> Result<Response, ApiError> {
    let client = client_ip(client);
    let refusal = "sign-ups are closed for now";
    crate::flags::ensure_enabled(&state, known::SIGNUPS, Some(&caller), &headers, client, None, refusal)?;
    state.inner.rate_limits.before_signup(client).await?;
    let (email, password, name) = new_account_fields(&body)?;
    let signed_in = state.accounts().upgrade_guest(&caller, email, password, name).await?;
    Ok(session_response(&state, StatusCode::OK, signed_in))
}

/// Asks for a password reset link by mail. The answer is 202 whether or not the address has an
/// account (no enumeration); the mail is sent by a job.
#[utoipa::path(post, path = "/password-resets", tag = "accounts", security(()), request_body = PasswordResetRequest,
    responses(
        (status = 202, description = "If the address has an account, a reset link is on its way"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientIp>>,
    Json(body): Json<PasswordResetRequest>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let email = errors.check("email", Email::parse(body.email.as_deref().unwrap_or_default()));
    let Some(email) = email else { return Err(ApiError::Invalid(errors)) };
    state.inner.rate_limits.before_mail(client_ip(client), email.as_str()).await?;
    state.accounts().request_password_reset(&email).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Sets a new password with the token from a reset link; every session of the account ends.
#[utoipa::path(post, path = "/password-resets/confirm", tag = "accounts", security(()),
    request_body = PasswordResetConfirmation,
    responses(
        (status = 204, description = "Password changed; sign in with it"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientIp>>,
    Json(body): Json<PasswordResetConfirmation>,
) -> Result<Response, ApiError> {
    state.inner.rate_limits.before_token_use(client_ip(client)).await?;
    let mut errors = ValidationErrors::new();
    let token = body.token.as_deref().unwrap_or_default();
    if token.is_empty() {
        errors.add("token", "is required");
    }
    let password =
        errors.check("newPassword", PasswordPlain::parse_new(body.new_password.as_deref().unwrap_or_default()));
    let Some(password) = password.filter(|_| errors.is_empty()) else { return Err(ApiError::Invalid(errors)) };
    state.accounts().reset_password(token, password).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Confirms the account's email address with the token from the verification link.
#[utoipa::path(post, path = "/email-verifications/confirm", tag = "accounts", security(()),
    request_body = EmailVerificationConfirmation,
    responses(
        (status = 204, description = "Address confirmed"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn confirm_email_verification(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientIp>>,
    Json(body): Json<EmailVerificationConfirmation>,
) -> Result<Response, ApiError> {
    state.inner.rate_limits.before_token_use(client_ip(client)).await?;
    let token = required_token(body.token.as_deref())?;
    state.accounts().verify_email(token).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Signs in with email and password. Every failure gives the same answer.
#[utoipa::path(post, path = "/sessions", tag = "accounts", security(()), request_body = LogInRequest,
    responses(
        (status = 201, description = "Signed in; `Set-Cookie` carries a new session", body = UserBody),
        (status = 202, description = "Password right, but the device is new to this (staff or admin) account: a confirmation link was mailed; no session yet", body = LoginChallengeBody),
        (status = 401, description = "Invalid email or password (the same for every cause)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn log_in(
    State(state): State<AppState>,
    previous: Option<axum::Extension<PresentedSession>>,
    client: Option<axum::Extension<ClientIp>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<LogInRequest>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    if body.email.as_deref().is_none_or(str::is_empty) {
        errors.add("email", "is required");
    }
    if body.password.as_deref().is_none_or(str::is_empty) {
        errors.add("password", "is required");
    }
    errors.into_result()?;
    let email = body.email.as_deref().unwrap_or_default();
    let limits = &state.inner.rate_limits;
    let ip = client_ip(client);
    limits.before_login(ip).await?;
    let previous = previous.map(|axum::Extension(PresentedSession(token))| token);
    // The browser's device id: the cookie it has, or a new one it gets with this answer.
    let (presented_device, device) = device_of(&state, &headers);
    let password = body.password.as_deref().unwrap_or_default();
    let result = state.accounts().log_in(email, password, previous.as_ref(), &device.hash(), &ip.to_string()).await;
    let outcome = match &result {
        Ok(LoginOutcome::SignedIn(_)) => Some("ok"),
        Ok(LoginOutcome::Challenged(_)) => Some("challenged"),
        // Refused before anything was checked (counted as rate limited): not a login attempt.
        Err(shop::Error::AccountLocked(_)) => None,
        Err(_) => Some("failed"),
    };
    if let Some(outcome) = outcome {
        metrics::counter!("accounts_logins_total", "outcome" => outcome).increment(1);
    }
    let mut response = match result? {
        LoginOutcome::SignedIn(signed_in) => session_response(&state, StatusCode::CREATED, signed_in),
        LoginOutcome::Challenged(challenge) => challenge_response(&state, ip, &challenge).await?,
    };
    if presented_device.is_none() {
        append_device_cookie(&state, &mut response, &device);
    }
    Ok(response)
}

/// A held sign-in: the confirmation mail is queued (within the per-client and per-address mail
/// limits) and the answer says to check the mail.
pub(crate) async fn challenge_response(
    state: &AppState,
    ip: std::net::IpAddr,
    challenge: &ChallengeRequired,
) -> Result<Response, ApiError> {
    state.inner.rate_limits.before_mail(ip, challenge.email.as_str()).await?;
    state.accounts().send_login_challenge(challenge).await?;
    Ok(private_json(
        StatusCode::ACCEPTED,
        &LoginChallengeBody {
            status: "confirmationRequired",
            detail: "this device is new to the account: confirm the sign-in with the link we mailed, then sign in again",
        },
    ))
}

/// The browser's device id: the cookie it presented (if any), and the id to use — that one, or
/// a new one to hand out with [`append_device_cookie`].
pub(crate) fn device_of(state: &AppState, headers: &axum::http::HeaderMap) -> (Option<SecretToken>, SecretToken) {
    let presented =
        crate::auth::device_cookie(headers, state.settings().https).and_then(|raw| SecretToken::from_presented(&raw));
    let device = presented.clone().unwrap_or_else(|| SecretToken::generate(""));
    (presented, device)
}

/// Gives the browser its device cookie.
pub(crate) fn append_device_cookie(state: &AppState, response: &mut Response, device: &SecretToken) {
    let names = (crate::auth::DEVICE_COOKIE, crate::auth::SECURE_DEVICE_COOKIE);
    let cookie = cookie(state, names, device.expose(), DEVICE_COOKIE_MAX_AGE);
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// The device cookie lasts a year (a browser that keeps it is a known device).
const DEVICE_COOKIE_MAX_AGE: i64 = 365 * 86_400;

/// Confirms a sign-in from a new device with the token from the mailed link; the device is then
/// known, and signing in from it succeeds.
#[utoipa::path(post, path = "/login-challenges/confirm", tag = "accounts", security(()),
    request_body = LoginChallengeConfirmation,
    responses(
        (status = 204, description = "Device confirmed; sign in again from it"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn confirm_login_challenge(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientIp>>,
    Json(body): Json<LoginChallengeConfirmation>,
) -> Result<Response, ApiError> {
    state.inner.rate_limits.before_token_use(client_ip(client)).await?;
    let token = required_token(body.token.as_deref())?;
    state.accounts().confirm_login_challenge(token).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Signs out: ends the current session and clears the cookie.
#[utoipa::path(delete, path = "/sessions/current", tag = "accounts",
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 400, description = "Authenticated with an API token, which has no session", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn log_out(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    state.accounts().log_out(&caller).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session_cookie(&state, "", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The signed-in user.
#[utoipa::path(get, path = "/users/me", tag = "accounts",
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "The current user", body = UserBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn me(Authenticated(caller): Authenticated) -> Response {
    private_json(StatusCode::OK, &UserBody::from(caller.user))
}

/// Changes one's name and/or password (the latter needs `currentPassword` and ends other sessions).
#[utoipa::path(patch, path = "/users/me", tag = "accounts", request_body = UpdateMeRequest,
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "The updated user", body = UserBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn update_me(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<UpdateMeRequest>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let name = body.name.as_deref().and_then(|name| errors.check("name", PersonName::parse(name)));
    let password_change = match (body.current_password.as_deref(), body.new_password.as_deref()) {
        (None, None) => None,
        (current, new) => {
            let current = errors.check(
                "currentPassword",
                current
                    .ok_or_else(|| "is required to change the password".to_owned())
                    .and_then(PasswordPlain::parse_offered),
            );
            let new = errors
                .check("newPassword", new.ok_or_else(|| "is required".to_owned()).and_then(PasswordPlain::parse_new));
            current.zip(new)
        }
    };
    errors.into_result()?;
    let user = state.accounts().update_me(&caller, name, password_change).await?;
    Ok(private_json(StatusCode::OK, &UserBody::from(user)))
}

/// Query of the admin's user list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// 1-based page number (default 1).
    page: Option<String>,
    /// Page size, 1–100 (default 20).
    limit: Option<String>,
    /// `createdAt` (default) or `email`.
    sort_by: Option<String>,
    /// `asc` or `desc` (default `desc`).
    sort_order: Option<String>,
    /// `customer`, `staff` or `admin`.
    role: Option<String>,
    /// Part of the email address.
    email: Option<String>,
    /// `true` or `false`.
    disabled: Option<String>,
}

/// Lists users (admin).
#[utoipa::path(get, path = "/users", tag = "accounts", params(UserListQuery),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 200, description = "One page of users", body = Paged<UserBody>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    Query(query): Query<UserListQuery>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let page = parse_page(&mut errors, query.page.as_deref(), query.limit.as_deref());
    let sort_by = query.sort_by.as_deref().and_then(|raw| errors.check("sortBy", UserSort::parse(raw)));
    let sort_order = query.sort_order.as_deref().and_then(|raw| errors.check("sortOrder", SortOrder::parse(raw)));
    let role = query.role.as_deref().and_then(|raw| errors.check("role", Role::parse(raw)));
    let disabled = query.disabled.as_deref().and_then(|raw| errors.check("disabled", parse_bool(raw)));
    let email_contains = query.email.filter(|fragment| !fragment.is_empty());
    if email_contains.as_ref().is_some_and(|fragment| fragment.len() > 254) {
        errors.add("email", "must be at most 254 characters");
    }
    errors.into_result()?;
    let query = UserQuery {
        page,
        sort_by: sort_by.unwrap_or_default(),
        role,
        email_contains,
        disabled,
        sort_order: sort_order.unwrap_or_default(),
    };
    let page = state.accounts().list_users(&query).await?;
    Ok(private_json(StatusCode::OK, &Paged::from_page(page, UserBody::from)))
}

/// One user (admin).
#[utoipa::path(get, path = "/users/{id}", tag = "accounts", params(("id" = Uuid, Path, description = "User id")),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 200, description = "The user", body = UserBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn get_user(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let user = state.accounts().get_user(id).await?;
    Ok(private_json(StatusCode::OK, &UserBody::from(user)))
}

/// Changes a user's role or disables the account (admin). Admins cannot demote or disable themselves.
#[utoipa::path(patch, path = "/users/{id}", tag = "accounts", request_body = AdminUpdateUserRequest,
    params(("id" = Uuid, Path, description = "User id")),
    security(("session" = ["admin"]), ("apiToken" = ["admin"])),
    responses(
        (status = 200, description = "The updated user", body = UserBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin tried to demote or disable themselves", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn admin_update_user(
    State(state): State<AppState>,
    Authenticated(admin): Authenticated,
    Path(id): Path<String>,
    Json(body): Json<AdminUpdateUserRequest>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let mut errors = ValidationErrors::new();
    let role = body.role.as_deref().and_then(|raw| errors.check("role", Role::parse(raw)));
    if body.role.is_none() && body.disabled.is_none() {
        errors.add("body", "give role and/or disabled");
    }
    errors.into_result()?;
    let user = state.accounts().admin_update_user(&admin, id, role, body.disabled).await?;
    tracing::info!(target: "audit", adminId = %admin.user.id, userId = %user.id, role = %user.role, disabled = user.disabled, "user changed by admin");
    Ok(private_json(StatusCode::OK, &UserBody::from(user)))
}

/// Creates a personal API token; its secret is in this response only.
#[utoipa::path(post, path = "/api-tokens", tag = "accounts", request_body = CreateApiTokenRequest,
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 201, description = "The token, with its secret", body = CreatedApiTokenBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too many tokens", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn create_api_token(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<CreateApiTokenRequest>,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::new();
    let name = errors.check(
        "name",
        shop::catalog::Text::name(body.name.as_deref().unwrap_or_default()).and_then(|n| {
            if n.as_str().chars().count() > 100 { Err("must be at most 100 characters".to_owned()) } else { Ok(n) }
        }),
    );
    let expires_in = match body.expires_in_days {
        None => None,
        Some(days) if (1..=365).contains(&days) => Some(time::Duration::days(days)),
        Some(_) => {
            errors.add("expiresInDays", "must be between 1 and 365");
            None
        }
    };
    let Some(name) = name else { return Err(ApiError::Invalid(errors)) };
    errors.into_result()?;
    let created = state.accounts().create_api_token(&caller, name.as_str().to_owned(), expires_in).await?;
    let location = format!("/api/v1/api-tokens/{}", created.token.id);
    let body = CreatedApiTokenBody {
        token: ApiTokenBody::from(created.token),
        token_secret: created.secret.expose().to_owned(),
    };
    Ok(with_location(private_json(StatusCode::CREATED, &body), &location))
}

/// The caller's API tokens (without secrets).
#[utoipa::path(get, path = "/api-tokens", tag = "accounts",
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 200, description = "The tokens, newest first", body = Vec<ApiTokenBody>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn list_api_tokens(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    let tokens = state.accounts().list_api_tokens(&caller).await?;
    let body: Vec<ApiTokenBody> = tokens.into_iter().map(ApiTokenBody::from).collect();
    Ok(private_json(StatusCode::OK, &body))
}

/// Revokes one of the caller's API tokens.
#[utoipa::path(delete, path = "/api-tokens/{id}", tag = "accounts", params(("id" = Uuid, Path, description = "Token id")),
    security(("session" = ["customer"]), ("apiToken" = ["customer"])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token of yours", body = Problem, content_type = "application/problem+json"),
        CommonErrors
    ))]
pub async fn revoke_api_token(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    state.accounts().revoke_api_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The response of a successful sign-up or login: the user, and the session cookie.
pub(crate) fn session_response(state: &AppState, status: StatusCode, signed_in: SignedIn) -> Response {
    let cookie = session_cookie(state, signed_in.session_token.expose(), signed_in.lifetime.whole_seconds().max(0));
    let mut response = private_json(status, &UserBody::from(signed_in.user));
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The session's `Set-Cookie` value.
pub(crate) fn session_cookie(state: &AppState, value: &str, max_age_seconds: i64) -> String {
    cookie(state, (SESSION_COOKIE, SECURE_SESSION_COOKIE), value, max_age_seconds)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/; over HTTPS the `__Host-` name of
/// `names` (plain, secure) and Secure.
pub(crate) fn cookie(state: &AppState, names: (&str, &str), value: &str, max_age_seconds: i64) -> String {
    let https = state.settings().https;
    let name = if https { names.1 } else { names.0 };
    let secure = if https { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}")
}

/// The token of a mailed link, which must be given.
fn required_token(token: Option<&str>) -> Result<&str, ApiError> {
    match token {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(ApiError::Invalid(ValidationErrors::single("token", "is required"))),
    }
}

/// Email, password and name of a new account (sign-up, guest upgrade), every problem at once.
fn new_account_fields(body: &SignUpRequest) -> Result<(Email, PasswordPlain, PersonName), ApiError> {
    let mut errors = ValidationErrors::new();
    let email = errors.check("email", Email::parse(body.email.as_deref().unwrap_or_default()));
    let password = errors.check("password", PasswordPlain::parse_new(body.password.as_deref().unwrap_or_default()));
    let name = errors.check("name", PersonName::parse(body.name.as_deref().unwrap_or_default()));
    match (email, password, name) {
        (Some(email), Some(password), Some(name)) => Ok((email, password, name)),
        _ => Err(ApiError::Invalid(errors)),
    }
}

pub(crate) fn client_ip(client: Option<axum::Extension<ClientIp>>) -> std::net::IpAddr {
    client.map_or(UNKNOWN_CLIENT, |axum::Extension(ClientIp(ip))| ip)
}

/// Parses the `page` and `limit` query parameters, recording problems under their names.
pub fn parse_page(errors: &mut ValidationErrors, page: Option<&str>, limit: Option<&str>) -> PageRequest {
    let page = page.and_then(|raw| {
        errors.check("page", raw.parse::<u32>().ok().filter(|p| *p >= 1).ok_or("must be a whole number, 1 or more"))
    });
    let limit = limit.and_then(|raw| {
        let parsed = raw.parse::<u32>().ok().filter(|l| (1..=shop::pagination::MAX_PAGE_SIZE).contains(l));
        errors.check(
            "limit",
            parsed.ok_or(format!("must be a whole number from 1 to {}", shop::pagination::MAX_PAGE_SIZE)),
        )
    });
    PageRequest::new(page, limit).unwrap_or_default()
}

/// Parses a `true` / `false` query parameter.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}
