//! The sandbox's HTTP face: the Stripe-like `/v1` API behind a bearer secret and the current
//! [`PaymentMode`], and the `/sandbox` control endpoints, which no mode touches. What the ledger
//! creates is handed to the webhooks under the ledger lock, so events keep creation order.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ledger::Reply;
use super::{PaymentMode, SandboxState};

type Sandbox = State<Arc<SandboxState>>;

/// What `garbage` answers: the start of a payment intent, cut off, under a JSON content type.
const GARBAGE_BODY: &str = "{\"id\":\"pi_3Mtw\",\"object\":\"payment_int\u{0}<html><body>502 Bad Gateway</body></html>";

/// Requests read before answering a mode that ignores them, so the client is never stuck sending.
const MAX_IGNORED_BODY: usize = 1024 * 1024;

pub(super) fn router(state: Arc<SandboxState>) -> Router {
    let api = Router::new()
        .route("/v1/payment_intents", post(create_intent).get(list_intents))
        .route("/v1/payment_intents/{id}", get(get_intent))
        .route("/v1/refunds", post(create_refund))
        // The mode wraps authentication: a provider that is down answers no one, authenticated
        // or not.
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), play_mode));
    let control = Router::new()
        .route("/sandbox/mode", get(get_mode).put(put_mode))
        .route("/sandbox/charges", get(charges))
        .route("/sandbox/refunds", get(refunds))
        .route("/sandbox/reset", post(reset))
        .route("/sandbox/webhooks", put(put_webhooks).delete(delete_webhooks))
        .route("/sandbox/events", get(events));
    api.merge(control).fallback(no_such_route).with_state(state)
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

// === the /v1 API ===

/// Plays the current mode around the request; the handler sees the mode as an extension.
async fn play_mode(State(sandbox): Sandbox, mut request: Request, next: Next) -> Response {
    let mode = sandbox.mode();
    tracing::info!(method = %request.method(), uri = %request.uri(), %mode, "payment sandbox answering");
    request.extensions_mut().insert(mode.clone());
    match mode {
        PaymentMode::Approve | PaymentMode::Decline => next.run(request).await,
        PaymentMode::Slow { delay } => {
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
        PaymentMode::Hang => {
            read_and_ignore(request).await;
            sandbox.stopped().await;
            stopped_reply()
        }
        PaymentMode::Status(status) => {
            read_and_ignore(request).await;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Reply::error(status, "api_error", format!("the payment sandbox answers {status} (mode {mode})"))
                .into_response()
        }
        PaymentMode::Garbage => {
            read_and_ignore(request).await;
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], GARBAGE_BODY).into_response()
        }
        PaymentMode::ChargeThenFail => {
            let done = next.run(request).await;
            tracing::info!(status = %done.status(), "charge-then-fail: the work is done, answering 500");
            Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "an internal error occurred").into_response()
        }
        PaymentMode::ChargeThenHang => {
            let done = next.run(request).await;
            tracing::info!(status = %done.status(), "charge-then-hang: the work is done, never answering");
            sandbox.stopped().await;
            stopped_reply()
        }
    }
}

async fn authenticate(State(sandbox): Sandbox, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(secret) if secret == sandbox.secret => next.run(request).await,
        Some(_) => Reply::error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid API key").into_response(),
        None => Reply::error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "no API key: send Authorization: Bearer SECRET",
        )
        .into_response(),
    }
}

async fn create_intent(
    State(sandbox): Sandbox,
    Extension(mode): Extension<PaymentMode>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let (key, request) = match keyed_json(&headers, &body) {
        Ok(keyed) => keyed,
        Err(reply) => return reply,
    };
    let mut ledger = sandbox.ledger();
    let (reply, created) = ledger.create_intent(key, request, mode == PaymentMode::Decline);
    if let Some(created) = created {
        sandbox.webhooks.emit(&created);
    }
    reply
}

#[derive(Debug, Deserialize)]
struct IntentFilter {
    order_id: Option<String>,
}

async fn list_intents(State(sandbox): Sandbox, Query(filter): Query<IntentFilter>) -> Reply {
    sandbox.ledger().list_intents(filter.order_id.as_deref())
}

async fn get_intent(State(sandbox): Sandbox, Path(id): Path<String>) -> Reply {
    sandbox.ledger().intent(&id)
}

async fn create_refund(State(sandbox): Sandbox, headers: HeaderMap, body: Bytes) -> Reply {
    let (key, request) = match keyed_json(&headers, &body) {
        Ok(keyed) => keyed,
        Err(reply) => return reply,
    };
    let mut ledger = sandbox.ledger();
    let (reply, created) = ledger.create_refund(key, request);
    if let Some(created) = created {
        sandbox.webhooks.emit(&created);
    }
    reply
}

/// The `Idempotency-Key` every POST must carry and its JSON body.
fn keyed_json<'a>(headers: &'a HeaderMap, body: &[u8]) -> Result<(&'a str, Value), Reply> {
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| invalid_request("an Idempotency-Key header is required"))?;
    let request =
        serde_json::from_slice(body).map_err(|error| invalid_request(format!("body is not JSON: {error}")))?;
    Ok((key, request))
}

async fn read_and_ignore(request: Request) {
    let _ = axum::body::to_bytes(request.into_body(), MAX_IGNORED_BODY).await;
}

/// What a hung request finally gets when the sandbox stops, as its connection closes.
fn stopped_reply() -> Response {
    Reply::error(StatusCode::SERVICE_UNAVAILABLE, "api_error", "the payment sandbox stopped").into_response()
}

// === the /sandbox control endpoints ===

async fn get_mode(State(sandbox): Sandbox) -> Json<Value> {
    Json(json!({"mode": sandbox.mode().to_string()}))
}

async fn put_mode(State(sandbox): Sandbox, body: Bytes) -> Reply {
    #[derive(Debug, Deserialize)]
    struct ModeChange {
        mode: String,
    }
    let change = match serde_json::from_slice::<ModeChange>(&body) {
        Ok(change) => change,
        Err(error) => return invalid_request(format!("want {{\"mode\": \"...\"}}: {error}")),
    };
    match PaymentMode::parse(&change.mode) {
        Ok(mode) => {
            sandbox.set_mode(mode.clone());
            Reply::ok(json!({"mode": mode.to_string()}))
        }
        Err(message) => invalid_request(message),
    }
}

async fn charges(State(sandbox): Sandbox) -> Json<Value> {
    Json(sandbox.ledger().charges_report())
}

async fn refunds(State(sandbox): Sandbox) -> Json<Value> {
    Json(sandbox.ledger().refunds_report())
}

async fn reset(State(sandbox): Sandbox) -> Json<Value> {
    sandbox.reset();
    Json(json!({"reset": true, "mode": sandbox.mode().to_string()}))
}

async fn put_webhooks(State(sandbox): Sandbox, body: Bytes) -> Reply {
    #[derive(Debug, Deserialize)]
    struct WebhookTarget {
        url: String,
        secret: String,
    }
    let target = match serde_json::from_slice::<WebhookTarget>(&body) {
        Ok(target) => target,
        Err(error) => return invalid_request(format!("want {{\"url\": \"...\", \"secret\": \"...\"}}: {error}")),
    };
    match reqwest::Url::parse(&target.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => return invalid_request(format!("url must be an absolute http(s) URL, got {:?}", target.url)),
    }
    if target.secret.is_empty() {
        return invalid_request("secret must not be empty");
    }
    sandbox.webhooks.set_target(target.url.clone(), target.secret);
    Reply::ok(json!({"webhook_url": target.url}))
}

async fn delete_webhooks(State(sandbox): Sandbox) -> Json<Value> {
    sandbox.webhooks.clear_target();
    Json(json!({"webhook_url": null}))
}

async fn events(State(sandbox): Sandbox) -> Json<Value> {
    Json(sandbox.webhooks.events_report())
}

async fn no_such_route() -> Reply {
    Reply::error(StatusCode::NOT_FOUND, "invalid_request_error", "no such route")
}

fn invalid_request(message: impl Into<String>) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}
