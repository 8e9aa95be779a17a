//! Global in-flight limit: beyond it, requests are refused at once with 503 + `Retry-After`
//! instead of queueing until everything times out (Release It!: shed load). The limit itself,
//! fixed or adaptive, is `resilience::LoadShedder`.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use resilience::LoadShedder;

use crate::error::ApiError;

/// Sheds every request beyond the limit, health checks excepted.
pub async fn shed_load(State(shedder): State<LoadShedder>, request: Request, next: Next) -> Response {
    if super::is_health_check(request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = shedder.try_acquire() else {
        metrics::counter!("http_requests_shed_total").increment(1);
        return ApiError::Unavailable { detail: "the server is overloaded; try again shortly", retry_after_seconds: 1 }
            .into_response();
    };
    next.run(request).await
}
