//! Renders every error response as RFC 9457 problem+json with the request's id and path.

use std::any::Any;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response as HttpResponse, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::observe::RequestContext;
use crate::error::{ApiError, Problem};

/// Turns the [`Problem`] a handler attached into the body; gives bare error responses from
/// other layers (no route, wrong method, body too large, timeout) a problem body too.
pub async fn render_problems(request: Request, next: Next) -> Response {
    let request_id =
        request.extensions().get::<Arc<RequestContext>>().map(|c| c.request_id().to_owned()).unwrap_or_default();
    let instance = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let status = response.status();
    let problem = match response.extensions_mut().remove::<Problem>() {
        Some(problem) => problem,
        None if status.is_client_error() || status.is_server_error() => {
            if is_json(&response) {
                return response;
            }
            if status == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(header::RETRY_AFTER) {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Problem::new(status, default_detail(status))
        }
        None => return response,
    };
    let problem = Problem { instance, request_id, ..problem };
    let body = match serde_json::to_vec(&problem) {
        Ok(body) => body,
        Err(_) => return response,
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    parts.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Response::from_parts(parts, Body::from(body))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json") || value.starts_with("application/problem+json"))
}

fn default_detail(status: StatusCode) -> &'static str {
    match status.as_u16() {
        404 => "no route matches this path",
        405 => "this path does not support this method; see the Allow header",
        413 => "the request body is too large",
        503 => "the request took too long or the server is overloaded; try again shortly",
        _ => "the request failed",
    }
}

/// The response for a handler that panicked: a generic 500 problem; the panic is logged.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> HttpResponse<String> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "handler panicked");
    let response = ApiError::Internal("handler panicked".into()).into_response();
    // Keep the status and the attached problem; the body is rendered by `render_problems`.
    let (parts, _) = response.into_parts();
    HttpResponse::from_parts(parts, String::new())
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    use tower_http::catch_panic::CatchPanicLayer;

    use super::*;

    async fn explode() -> &'static str {
        panic!("the handler broke")
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_generic_500_problem() {
        let router = Router::new()
            .route("/explode", get(explode))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(axum::middleware::from_fn(render_problems))
            .layer(axum::middleware::from_fn(super::super::observe::observe));
        let response = router
            .oneshot(Request::builder().uri("/explode").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        let request_id = response.headers()["x-request-id"].to_str().expect("id").to_owned();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(problem["status"], 500);
        assert_eq!(problem["requestId"], request_id.as_str());
        assert_eq!(problem["instance"], "/explode");
        assert!(!problem.to_string().contains("the handler broke"), "panic details stay in the log");
    }
}
