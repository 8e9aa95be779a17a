//! Security headers on every response of an API that serves no HTML, each set unless the
//! handler set its own; HSTS only when the shop is served over HTTPS.

use axum::http::{HeaderName, HeaderValue, header};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::set_header::SetResponseHeaderLayer;

/// Nothing here should ever load or frame anything.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// A header set unless present; `None` sets nothing (HSTS over plain HTTP).
type HeaderLayer = SetResponseHeaderLayer<Option<HeaderValue>>;
type Headers = Stack<
    HeaderLayer,
    Stack<HeaderLayer, Stack<HeaderLayer, Stack<HeaderLayer, Stack<HeaderLayer, Stack<HeaderLayer, Identity>>>>>,
>;

/// The headers as plain tower layers (no boxed future per request, unlike a `from_fn`).
pub fn layer(https: bool) -> ServiceBuilder<Headers> {
    let set = |name: HeaderName, value: Option<&'static str>| {
        SetResponseHeaderLayer::if_not_present(name, value.map(HeaderValue::from_static))
    };
    ServiceBuilder::new()
        .layer(set(header::CONTENT_SECURITY_POLICY, Some(CONTENT_SECURITY_POLICY)))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, Some("nosniff")))
        .layer(set(header::X_FRAME_OPTIONS, Some("DENY")))
        .layer(set(header::REFERRER_POLICY, Some("no-referrer")))
        .layer(set(HeaderName::from_static("cross-origin-opener-policy"), Some("same-origin")))
        .layer(set(header::STRICT_TRANSPORT_SECURITY, https.then_some(HSTS)))
}
