//! HTTP caching of reads: strong ETags over the JSON body, `If-None-Match` → 304, and the
//! `Cache-Control` policies (public catalog reads; private, uncached personal data).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The ETag of a representation: a quoted hash of its bytes.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// The JSON bytes and ETag of a value.
pub fn representation<T: Serialize>(value: &T) -> Result<(Vec<u8>, String), ApiError> {
    let body = serde_json::to_vec(value).map_err(|error| ApiError::Internal(Box::new(error)))?;
    let etag = etag_of(&body);
    Ok((body, etag))
}

/// Whether an `If-None-Match` header value lists `etag` (or is `*`). Weak comparison, as
/// RFC 9110 §13.1.2 says: `W/"x"` matches `"x"`.
pub fn none_match(header_value: Option<&HeaderValue>, etag: &str) -> bool {
    list_matches(header_value, |candidate| candidate.trim_start_matches("W/") == etag)
}

/// Whether an `If-Match` header value lists `etag` (or is `*`). Strong comparison, as RFC 9110
/// §13.1.1 says: a weak validator never matches.
pub fn if_match(header_value: Option<&HeaderValue>, etag: &str) -> bool {
    list_matches(header_value, |candidate| candidate == etag)
}

fn list_matches(header_value: Option<&HeaderValue>, matches: impl Fn(&str) -> bool) -> bool {
    let Some(value) = header_value.and_then(|v| v.to_str().ok()) else { return false };
    value.split(',').map(str::trim).any(|candidate| candidate == "*" || matches(candidate))
}

/// A rendered JSON body and its ETag, shared by every request that reads it (cloning is a
/// reference count, so a cached one is answered without serialising or hashing again).
#[derive(Clone, Debug)]
pub struct Rendered {
    body: Bytes,
    etag: HeaderValue,
}

impl Rendered {
    pub fn of<T: Serialize>(value: &T) -> Result<Self, ApiError> {
        let (body, etag) = representation(value)?;
        let etag = HeaderValue::try_from(etag).map_err(|error| ApiError::Internal(Box::new(error)))?;
        Ok(Self { body: Bytes::from(body), etag })
    }
}

impl shop::cache::Weigh for Rendered {
    fn weight(&self) -> usize {
        self.body.len() + self.etag.len() + 48
    }
}

/// A cacheable public read: 304 when the client's copy is current, else 200 with the body.
pub fn public_json<T: Serialize>(request_headers: &HeaderMap, value: &T, max_age_seconds: u64) -> Response {
    match Rendered::of(value) {
        Ok(rendered) => rendered_response(request_headers, rendered, cache_control_public(max_age_seconds)),
        Err(error) => error.into_response(),
    }
}

/// `public, max-age=N`.
pub fn cache_control_public(max_age_seconds: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={max_age_seconds}")).unwrap_or(HeaderValue::from_static("no-cache"))
}

/// `rendered` with `cache_control`, or 304 when the request's `If-None-Match` lists its ETag.
pub fn rendered_response(request_headers: &HeaderMap, rendered: Rendered, cache_control: HeaderValue) -> Response {
    let not_modified =
        rendered.etag.to_str().is_ok_and(|etag| none_match(request_headers.get(header::IF_NONE_MATCH), etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(rendered.body));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, rendered.etag);
    headers.insert(header::CACHE_CONTROL, cache_control);
    response
}

/// A response with personal data: never stored by caches.
pub fn private_json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let mut response = (status, axum::Json(value)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching() {
        let etag = etag_of(b"{}");
        let exact = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static(""));
        assert!(none_match(Some(&exact), &etag) && if_match(Some(&exact), &etag));
        assert!(none_match(Some(&HeaderValue::from_static("*")), &etag));
        assert!(if_match(Some(&HeaderValue::from_static("*")), &etag));
        let list = HeaderValue::from_str(&format!("\"other\", W/{etag}")).unwrap_or(HeaderValue::from_static(""));
        assert!(none_match(Some(&list), &etag), "weak comparison for If-None-Match");
        assert!(!if_match(Some(&list), &etag), "strong comparison for If-Match");
        assert!(!none_match(Some(&HeaderValue::from_static("\"other\"")), &etag));
        assert!(!none_match(None, &etag) && !if_match(None, &etag));
    }
}
