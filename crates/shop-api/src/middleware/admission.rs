//! Admission: what decides, before routing, whether a request is served — load shedding, the
//! per-IP limit, authentication, the per-principal limit and the maintenance switch — run in
//! that order by one layer. Each step was its own `from_fn` layer; a profile of `/health/live`
//! showed the nested middleware futures being allocated and moved (memmove about 8% of the
//! server's CPU), so the steps are plain functions on the request and one future wraps them.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Sheds what is beyond the in-flight limit (health checks excepted) and holds the permit while
/// the request runs; then the steps, the first refusal answering.
pub async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let _permit = match super::is_health_check(request.uri().path()) {
        true => None,
        false => match state.inner.shedder.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => {
                metrics::counter!("http_requests_shed_total").increment(1);
                let detail = "the server is overloaded; try again shortly";
                return ApiError::Unavailable { detail, retry_after_seconds: 1 }.into_response();
            }
        },
    };
    if let Err(refusal) = steps(&state, &mut request).await {
        return refusal.into_response();
    }
    next.run(request).await
}

async fn steps(state: &AppState, request: &mut Request) -> Result<(), ApiError> {
    crate::rate_limits::limit_by_ip(state, request).await?;
    crate::auth::authenticate(state, request).await?;
    crate::rate_limits::limit_by_principal(state, request).await?;
    crate::flags::refuse_writes_in_maintenance(state, request)
}
