//! Global in-flight limit: beyond it, requests are refused at once with 503 + `Retry-After`
//! instead of queueing until everything times out (Release It!: shed load).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// The permits of the in-flight limit.
#[derive(Clone, Debug)]
pub struct LoadShed {
    permits: Arc<Semaphore>,
}

impl LoadShed {
    pub fn new(max_in_flight: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_in_flight.max(1))) }
    }
}

/// Health checks are never shed: an orchestrator that saw an overloaded instance fail its
/// liveness check would restart it, turning overload into an outage.
pub async fn shed_load(State(shed): State<LoadShed>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/health/") || path.starts_with("/api/v1/health/") {
        return next.run(request).await;
    }
    let Ok(_permit) = Arc::clone(&shed.permits).try_acquire_owned() else {
        metrics::counter!("http_requests_shed_total").increment(1);
        return ApiError::Unavailable { detail: "the server is overloaded; try again shortly", retry_after_seconds: 1 }
            .into_response();
    };
    next.run(request).await
}
