//! Request ids, the request span, one access-log line per request, and the HTTP metrics.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use uuid::Uuid;

/// The `X-Request-ID` header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Facts about a request that inner layers learn and the access log reports.
#[derive(Debug)]
pub struct RequestContext {
    request_id: String,
    route: OnceLock<String>,
    user_id: OnceLock<Uuid>,
}

impl RequestContext {
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn set_user_id(&self, user_id: Uuid) {
        let _ = self.user_id.set(user_id);
    }

    /// The matched route template (`/api/v1/products/{id}`), or `unmatched`: never the raw path,
    /// so metric labels stay few and ids never reach them.
    pub fn route(&self) -> &str {
        self.route.get().map(String::as_str).unwrap_or("unmatched")
    }
}

/// Keeps a client's request id when it is short and plain; otherwise makes one.
fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

/// The outermost layer: assigns the request id, opens the span, and on the way out writes the
/// access-log line and the metrics.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&request);
    let header = HeaderValue::from_str(&request_id).ok();
    if let Some(value) = &header {
        request.headers_mut().insert(REQUEST_ID.clone(), value.clone());
    }
    let context = Arc::new(RequestContext { request_id, route: OnceLock::new(), user_id: OnceLock::new() });
    request.extensions_mut().insert(Arc::clone(&context));
    let method = request.method().clone();
    let span = tracing::info_span!("request", requestId = %context.request_id);
    let in_flight = InFlight::enter();
    let mut response = next.run(request).instrument(span).await;
    drop(in_flight);
    if let Some(value) = header {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    let latency = started.elapsed();
    let route = context.route().to_owned();
    let status = response.status().as_u16();
    metrics::counter!("http_requests_total", "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method.to_string(), "route" => route.clone())
        .record(latency.as_secs_f64());
    let user_id = context.user_id.get().map(Uuid::to_string);
    // Outside the request span: the line names the request itself, and the JSON formatter would
    // otherwise parse the span's fields back from text to repeat them (profiled: a third of
    // the line's cost).
    tracing::info!(
        target: "access",
        requestId = context.request_id.as_str(),
        method = method.as_str(),
        route = route.as_str(),
        status,
        latencyMs = latency.as_secs_f64() * 1000.0,
        userId = user_id.as_deref().unwrap_or("-"),
        "request completed"
    );
    response
}

/// Counts a request in `http_requests_in_flight` while it lives, including when the client
/// goes away and the request's future is dropped half-way.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter() -> Self {
        let gauge = metrics::gauge!("http_requests_in_flight");
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Runs after routing (as a route layer) to note the matched route template.
pub async fn record_route(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    if let (Some(matched), Some(context)) = (matched, request.extensions().get::<Arc<RequestContext>>()) {
        let _ = context.route.set(matched.as_str().to_owned());
    }
    next.run(request).await
}
