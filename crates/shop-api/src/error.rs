//! The one place where errors become HTTP responses: [`ApiError`] → RFC 9457 problem+json.
//!
//! Handlers return `ApiError`; its `IntoResponse` sets the status and attaches a [`Problem`] to
//! the response. The problem middleware then renders it with the request's id and path, and
//! gives bare error responses from lower layers (body limit, timeout, 404, 405) the same shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shop::ValidationErrors;
use utoipa::ToSchema;

/// An RFC 9457 problem document, as every error response carries it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The path of the request that failed.
    pub instance: String,
    /// The id of the request, also in the `X-Request-ID` header and in the server's log.
    pub request_id: String,
    /// Every invalid field, for 400 responses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemFieldError>,
}

/// One invalid input field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemFieldError {
    /// The field's name in the request (camelCase), or a query parameter's name.
    pub field: String,
    pub message: String,
}

impl Problem {
    /// A problem for `status` with the given detail; `instance` and `requestId` are filled in
    /// by the problem middleware.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let (kind, title) = kind_and_title(status);
        Self {
            problem_type: format!("urn:shopkeep:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: String::new(),
            request_id: String::new(),
            errors: Vec::new(),
        }
    }
}

fn kind_and_title(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("invalid-request", "Invalid request"),
        402 => ("payment-declined", "Payment declined"),
        401 => ("unauthenticated", "Not authenticated"),
        403 => ("forbidden", "Forbidden"),
        404 => ("not-found", "Not found"),
        405 => ("method-not-allowed", "Method not allowed"),
        409 => ("conflict", "Conflict"),
        412 => ("precondition-failed", "Precondition failed"),
        413 => ("payload-too-large", "Request body too large"),
        415 => ("unsupported-media-type", "Unsupported media type"),
        422 => ("unprocessable", "Unprocessable request"),
        429 => ("rate-limited", "Too many requests"),
        503 => ("unavailable", "Service unavailable"),
        500..=599 => ("internal", "Internal server error"),
        _ => ("error", "Error"),
    }
}

/// Every error a handler can return, each documented with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the input broke rules; every broken rule is listed.
    #[error("invalid input")]
    Invalid(ValidationErrors),
    /// 401: the route needs a signed-in user (or the bearer token is not valid).
    #[error("authentication required")]
    Unauthenticated(&'static str),
    /// 401: login failed. One message for every cause, so accounts cannot be enumerated.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// 403: signed in, but the role lacks this function (or the Origin check failed).
    #[error("forbidden")]
    Forbidden(&'static str),
    /// 404: missing, or owned by someone else.
    #[error("not found")]
    NotFound,
    /// 409: clashes with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 412: `If-Match` did not match the current representation.
    #[error("precondition failed")]
    PreconditionFailed,
    /// 409: the same idempotent request is still being processed; retry after the seconds given.
    #[error("request in progress")]
    InProgress { retry_after_seconds: u32 },
    /// 422: an `Idempotency-Key` reused with a different request body.
    #[error("idempotency key reused")]
    KeyReused,
    /// 402: the payment was declined; the order (cancelled) is at `Location`.
    #[error("payment declined: {detail}")]
    PaymentDeclined { detail: String, location: String },
    /// 413: the body is larger than allowed.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 429: a rate limit was reached; `Retry-After`, `RateLimit-Policy` and `RateLimit` say more.
    #[error("rate limited: {detail}")]
    RateLimited { detail: &'static str, retry_after: std::time::Duration, limit: u32, policy: String },
    /// 503: a dependency is down or the server is overloaded; try again after `retry_after_seconds`.
    #[error("unavailable: {detail}")]
    Unavailable { detail: &'static str, retry_after_seconds: u32 },
    /// 500: anything unexpected. The client sees a generic message; the cause goes to the log.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 400 with a single field error.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(ValidationErrors::single(field, message))
    }
}

impl From<shop::Error> for ApiError {
    fn from(error: shop::Error) -> Self {
        match error {
            shop::Error::Invalid(errors) => Self::Invalid(errors),
            shop::Error::NotFound => Self::NotFound,
            shop::Error::Conflict(detail) => Self::Conflict(detail),
            shop::Error::PreconditionFailed => Self::PreconditionFailed,
            shop::Error::RequestInProgress { retry_after_seconds } => Self::InProgress { retry_after_seconds },
            shop::Error::IdempotencyKeyReused => Self::KeyReused,
            shop::Error::AccountLocked(lock) => Self::RateLimited {
                detail: "too many failed logins for this account; try again later",
                retry_after: lock.retry_after,
                limit: lock.limit,
                policy: resilience::Quota::new(lock.limit, lock.window).policy_header(),
            },
            shop::Error::InvalidCredentials => Self::InvalidCredentials,
            shop::Error::Forbidden => Self::Forbidden("your role does not allow this"),
            shop::Error::Unavailable { detail, retry_after_seconds } => {
                Self::Unavailable { detail, retry_after_seconds }
            }
            shop::Error::Internal(source) => Self::Internal(source),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::Invalid(errors)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match &self {
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "the request has invalid fields; see errors".to_owned()),
            Self::Unauthenticated(detail) => (StatusCode::UNAUTHORIZED, (*detail).to_owned()),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid email or password".to_owned()),
            Self::Forbidden(detail) => (StatusCode::FORBIDDEN, (*detail).to_owned()),
            Self::NotFound => (StatusCode::NOT_FOUND, "no such resource".to_owned()),
            Self::Conflict(detail) => (StatusCode::CONFLICT, detail.clone()),
            Self::PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "the resource has changed since you read it; fetch it again".to_owned(),
            ),
            Self::InProgress { .. } => (
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still being processed; retry after Retry-After seconds"
                    .to_owned(),
            ),
            Self::KeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used for a different request; use a new key for a new request".to_owned(),
            ),
            Self::PaymentDeclined { detail, .. } => (StatusCode::PAYMENT_REQUIRED, detail.clone()),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large".to_owned()),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "the request body must be application/json".to_owned())
            }
            Self::RateLimited { detail, .. } => (StatusCode::TOO_MANY_REQUESTS, (*detail).to_owned()),
            Self::Unavailable { detail, .. } => (StatusCode::SERVICE_UNAVAILABLE, (*detail).to_owned()),
            Self::Internal(source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "request failed with an internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong; quote the request id if you report it".to_owned(),
                )
            }
        };
        let mut problem = Problem::new(status, detail);
        if let Self::Invalid(errors) = &self {
            problem.errors = errors
                .errors()
                .iter()
                .map(|error| ProblemFieldError { field: error.field.clone(), message: error.message.clone() })
                .collect();
        }
        let mut response = status.into_response();
        match &self {
            Self::Unavailable { retry_after_seconds, .. } | Self::InProgress { retry_after_seconds } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            Self::PaymentDeclined { location, .. } => {
                if let Ok(value) = HeaderValue::from_str(location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
            }
            Self::RateLimited { retry_after, limit, policy, .. } => {
                // Whole seconds, rounded up: a client that waits this long will be admitted.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let seconds = seconds.max(1);
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                if let Ok(value) = HeaderValue::from_str(policy) {
                    headers.insert("ratelimit-policy", value);
                }
                if let Ok(value) = HeaderValue::from_str(&format!("limit={limit}, remaining=0, reset={seconds}")) {
                    headers.insert("ratelimit", value);
                }
            }
            Self::Unauthenticated(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response.extensions_mut().insert(problem);
        response
    }
}

/// `error: cause: cause…` on one line, for the log.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The error responses every route may produce, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum CommonErrors {
    /// Invalid input: every invalid field is listed in `errors`.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// A rate limit was reached; see `Retry-After`, `RateLimit-Policy` and `RateLimit`.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// Too many requests in flight, a request that ran past its deadline, or a dependency down.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
    /// Unexpected failure; the detail is generic and the cause is in the server's log.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
}
