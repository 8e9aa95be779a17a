//! Request extractors whose failures are [`ApiError`]s: JSON bodies with the failing field's
//! name, query strings that refuse unknown parameters.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body. Wrong content type → 415, too large → 413, not JSON or a field of the
/// wrong type → 400 naming the field.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let field = if path == "." || path == "?" || path.is_empty() { "body".to_owned() } else { path };
            let message = if inner.is_syntax() || inner.is_eof() {
                "is not valid JSON".to_owned()
            } else {
                // serde's message without its trailing position ("at line 1 column 9").
                let text = inner.to_string();
                text.split(" at line ").next().unwrap_or(&text).to_owned()
            };
            ApiError::invalid(&field, message)
        })?;
        Ok(Self(value))
    }
}

/// A request body as sent, byte for byte (a signed webhook: the signature covers these exact
/// bytes). Larger than `body_limit_bytes` → 413.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state).await.map(Self).map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::invalid("body", "the request body could not be read")
            }
        })
    }
}

/// A query string parsed into `T` (whose fields are all optional strings, validated afterwards).
/// Unknown or repeated parameters → 400.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                let text = rejection.body_text();
                let message = text.rsplit(": ").next().unwrap_or(&text).to_owned();
                ApiError::invalid("query", message)
            })
    }
}
