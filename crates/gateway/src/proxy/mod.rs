//! Forwarding one request: admission at the edge (load shedding, per-IP rate limit, body
//! size), a backend from the pool, the rewritten request over a keep-alive connection with
//! connect and first-byte timeouts, retries to another backend within a budget (idempotent
//! requests, a small body kept for the purpose, and refused connections), each outcome fed to
//! outlier detection and peak-EWMA (fast failures charged a penalty), and the response streamed
//! back under the total and idle timeouts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use resilience::{Clock, ConcurrencyLimit, Decision, KeyedLimiter, LoadShedder, Quota, Retry, RetryConfig};
use tokio::time::Instant;

use crate::backend::Backend;
use crate::balance::HashKey;
use crate::body::{self, Holds, LimitedBody, ProxyBody};
use crate::config::{GatewayConfig, millis};
use crate::forwarded::{self, X_REQUEST_ID};
use crate::pool::{Outcome, Pool};

mod client;
mod upgrade;

pub use client::{UpstreamClient, upstream_client, upstream_tls};

/// The forwarding half of the gateway, shared by every connection.
pub struct Proxy {
    pool: Arc<Pool>,
    hash_key: HashKey,
    first_byte_timeout: Duration,
    total_timeout: Duration,
    idle_timeout: Duration,
    max_request_body: u64,
    max_response_body: u64,
    failure_penalty: Duration,
    max_retries: u32,
    max_replay_body: u64,
    retry_budget: Retry,
    shedder: LoadShedder,
    per_ip: Option<KeyedLimiter<IpAddr>>,
    /// Cancelled when the gateway stops: ends upgraded (tunnelled) connections.
    stop: tokio_util::sync::CancellationToken,
    metrics: ProxyMetrics,
}

struct ProxyMetrics {
    no_backend: metrics::Counter,
    shed: metrics::Counter,
    rate_limited: metrics::Counter,
    too_large: metrics::Counter,
    retried: metrics::Counter,
    retry_refused: metrics::Counter,
    duration: metrics::Histogram,
}

/// How one attempt went.
enum Attempt {
    /// An answer worth passing on (or the last one there is).
    Answered(Response<Incoming>, Holds, Arc<Backend>),
    /// No answer: why, and the permit back.
    Failed(Failure, Option<resilience::ShedPermit>),
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The connection could not be made: the request never left.
    Refused,
    /// The connection broke or the backend sent no valid answer.
    Broken,
    /// No response headers within the first-byte timeout.
    TimedOut,
    /// The client's streamed body went past the size limit.
    TooLarge,
}

impl Failure {
    fn status(self) -> StatusCode {
        match self {
            Failure::Refused | Failure::Broken => StatusCode::BAD_GATEWAY,
            Failure::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Failure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Failure::Refused => "the backend refused the connection",
            Failure::Broken => "the backend failed to answer",
            Failure::TimedOut => "the backend did not answer in time",
            Failure::TooLarge => "the request body is larger than the limit",
        }
    }
}

/// Whether repeating a method is safe (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

impl Proxy {
    pub fn new(
        config: &GatewayConfig,
        pool: Arc<Pool>,
        clock: Arc<dyn Clock>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let retries = &config.retries;
        let retry_budget = Retry::new(
            RetryConfig {
                name: "gateway".into(),
                max_attempts: retries.max_retries + 1,
                initial_backoff: Duration::ZERO,
                max_backoff: Duration::ZERO,
                max_total: millis(config.timeouts.total_ms),
                budget_ratio: retries.budget_ratio,
                budget_minimum: retries.budget_minimum,
                budget_window: millis(retries.budget_window_ms),
            },
            Arc::clone(&clock),
        );
        let per_ip = (config.limits.per_ip_per_second > 0).then(|| {
            KeyedLimiter::new(Quota::new(config.limits.per_ip_per_second, Duration::from_secs(1)), Arc::clone(&clock))
        });
        Self {
            pool,
            hash_key: HashKey::parse(&config.hash_key).unwrap_or(HashKey::ClientIp),
            first_byte_timeout: millis(config.timeouts.first_byte_ms),
            total_timeout: millis(config.timeouts.total_ms),
            idle_timeout: millis(config.timeouts.idle_ms),
            max_request_body: config.limits.max_request_body_bytes,
            max_response_body: config.limits.max_response_body_bytes,
            failure_penalty: millis(config.failure_penalty_ms),
            max_retries: retries.max_retries,
            max_replay_body: retries.max_replay_body_bytes,
            retry_budget,
            shedder: LoadShedder::new(ConcurrencyLimit::Fixed(config.limits.max_in_flight), clock),
            per_ip,
            stop,
            metrics: ProxyMetrics {
                no_backend: metrics::counter!("gateway_refused_total", "reason" => "no_backend"),
                shed: metrics::counter!("gateway_refused_total", "reason" => "overloaded"),
                rate_limited: metrics::counter!("gateway_refused_total", "reason" => "rate_limited"),
                too_large: metrics::counter!("gateway_refused_total", "reason" => "too_large"),
                retried: metrics::counter!("gateway_retries_total", "outcome" => "retried"),
                retry_refused: metrics::counter!("gateway_retries_total", "outcome" => "budget_exhausted"),
                duration: metrics::histogram!("gateway_request_duration_seconds"),
            },
        }
    }

    /// Sweeps idle per-IP limiter state (steady state: bounded memory).
    pub fn purge_idle_limits(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.purge_idle();
        }
    }

    /// Answers one client request, reaching backends with `client` (the worker's own, so that
    /// a request and its upstream connection live on one thread); `scheme` is how the client
    /// reached the gateway (`http` or `https`).
    pub async fn handle(
        &self,
        client: &UpstreamClient,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let mut request = request;
        let client_upgrade = (request.version() == Version::HTTP_11 && upgrade::is_upgrade(request.headers()))
            .then(|| upgrade::take_client_upgrade(&mut request));
        let (mut parts, incoming) = request.into_parts();
        let request_id = forwarded::ensure_request_id(&mut parts.headers);
        let response = match client_upgrade {
            Some(client_upgrade) => {
                self.forward_upgrade(client, parts, client_upgrade, (peer, scheme), &request_id).await
            }
            None => self.forward(client, parts, incoming, (peer, scheme), &request_id, started).await,
        };
        self.metrics.duration.record(started.elapsed().as_secs_f64());
        response
    }

    async fn forward(
        &self,
        client: &UpstreamClient,
        parts: http::request::Parts,
        incoming: Incoming,
        (peer, scheme): (SocketAddr, &'static str),
        request_id: &HeaderValue,
        started: Instant,
    ) -> Response<ProxyBody> {
        let permit = match self.shedder.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics.shed.increment(1);
                return problem(StatusCode::SERVICE_UNAVAILABLE, "the gateway is overloaded", request_id, Some(1));
            }
        };
        if let Some(refused) = self.limit_client(peer, request_id) {
            return refused;
        }
        let declared_length =
            parts.headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > self.max_request_body) {
            self.metrics.too_large.increment(1);
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the limit",
                request_id,
                None,
            );
        }
        let key = self.pool.balancer().wants_key().then(|| hash_key(&self.hash_key, &parts.headers, peer.ip()));
        let mut headers = upstream_headers(&parts, peer.ip(), scheme);
        let path = parts.uri.path_and_query().map_or("/", |path| path.as_str()).to_owned();
        let bodiless = incoming.is_end_stream();
        let idempotent = is_idempotent(&parts.method);
        let deadline = started + self.total_timeout;
        // A small body of an idempotent request is read now and kept, so a retry can send it
        // again; anything else streams through once.
        let replayable = !bodiless
            && idempotent
            && self.max_retries > 0
            && declared_length.is_some_and(|length| length <= self.max_replay_body);
        let mut kept: Option<Bytes> = None;
        let mut body = Some(incoming);
        if replayable && let Some(incoming) = body.take() {
            let limited = http_body_util::Limited::new(incoming, clamp_usize(self.max_replay_body));
            match tokio::time::timeout_at(deadline, limited.collect()).await {
                Ok(Ok(collected)) => kept = Some(collected.to_bytes()),
                Ok(Err(_)) => {
                    return problem(StatusCode::BAD_REQUEST, "the request body could not be read", request_id, None);
                }
                Err(_) => {
                    return problem(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body did not arrive in time",
                        request_id,
                        None,
                    );
                }
            }
        }
        let mut permit = Some(permit);
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        self.retry_budget.record_call();
        let Some(mut backend) = self.pool.pick(key.as_deref(), &tried) else {
            self.metrics.no_backend.increment(1);
            return problem(StatusCode::SERVICE_UNAVAILABLE, "no backend can take the request", request_id, Some(1));
        };
        // A body streamed through cannot be sent again, and its failures may be the client's.
        let streamed = !bodiless && kept.is_none();
        loop {
            tried.push(Arc::clone(&backend));
            let request_body = match (&kept, body.take()) {
                (Some(bytes), _) => body::full(bytes.clone()),
                (None, Some(incoming)) if !bodiless => {
                    http_body_util::Limited::new(incoming, clamp_usize(self.max_request_body)).boxed_unsync()
                }
                _ => body::empty(),
            };
            // Only a request that may be retried needs its headers again.
            let retriable_method = idempotent && !streamed;
            let attempt_headers =
                if retriable_method || bodiless { headers.clone() } else { std::mem::take(&mut headers) };
            let upstream = match upstream_request(&parts.method, &backend, &path, attempt_headers, request_body) {
                Ok(upstream) => upstream,
                Err(detail) => return problem(StatusCode::BAD_REQUEST, detail, request_id, None),
            };
            let attempt = self.attempt(client, &backend, upstream, deadline, permit.take(), streamed).await;
            let attempts_left = tried.len() <= self.max_retries as usize && Instant::now() < deadline;
            // Another backend to retry on, if there is one and the budget allows; otherwise the
            // answer (or failure) at hand is the client's, the backend's `Retry-After` included.
            let retry_on = |retriable: bool| {
                if !(retriable && attempts_left) {
                    return None;
                }
                let other = self.pool.pick(key.as_deref(), &tried)?;
                self.may_retry().then_some(other)
            };
            match attempt {
                Attempt::Answered(response, holds, answered_by) => {
                    let retry_status = matches!(response.status().as_u16(), 502..=504);
                    if let Some(other) = retry_on(retry_status && retriable_method) {
                        permit = holds.permit;
                        backend = other;
                        continue;
                    }
                    return self.stream_back(response, holds, &answered_by, request_id, deadline);
                }
                Attempt::Failed(failure, returned) => {
                    permit = returned;
                    // A refused connection never reached the backend: safe to retry for any
                    // method whose body is still here to send.
                    let retriable = retriable_method || (bodiless && failure == Failure::Refused);
                    if let Some(other) = retry_on(retriable && failure != Failure::TooLarge) {
                        backend = other;
                        continue;
                    }
                    return problem(failure.status(), failure.detail(), request_id, None);
                }
            }
        }
    }

    /// The per-IP limit's refusal, if this client is over it.
    fn limit_client(&self, peer: SocketAddr, request_id: &HeaderValue) -> Option<Response<ProxyBody>> {
        let limiter = self.per_ip.as_ref()?;
        let Decision::Limited { retry_after, .. } = limiter.check(&peer.ip()) else { return None };
        self.metrics.rate_limited.increment(1);
        let seconds = (retry_after.as_secs_f64().ceil() as u64).max(1);
        Some(problem(StatusCode::TOO_MANY_REQUESTS, "too many requests from this address", request_id, Some(seconds)))
    }

    fn may_retry(&self) -> bool {
        if self.retry_budget.allow_retry() {
            self.metrics.retried.increment(1);
            true
        } else {
            self.metrics.retry_refused.increment(1);
            false
        }
    }

    /// Sends one request to one backend and reports how it went to the pool.
    async fn attempt(
        &self,
        client: &UpstreamClient,
        backend: &Arc<Backend>,
        upstream: Request<ProxyBody>,
        deadline: Instant,
        permit: Option<resilience::ShedPermit>,
        streamed: bool,
    ) -> Attempt {
        let in_flight = backend.start_request();
        let sent = Instant::now();
        let first_byte = (sent + self.first_byte_timeout).min(deadline);
        let result = tokio::time::timeout_at(first_byte, client.request(upstream)).await;
        let elapsed = sent.elapsed();
        let decay = self.pool.policy().ewma_decay;
        let now = self.pool.now();
        match result {
            Ok(Ok(response)) => {
                let status = response.status();
                backend.metrics.duration.record(elapsed.as_secs_f64());
                backend.count_response(status);
                let outcome = match status.as_u16() {
                    502..=504 => Outcome::GatewayFailure,
                    500..=599 => Outcome::ServerError,
                    _ => Outcome::Success,
                };
                let penalised = outcome != Outcome::Success || status == StatusCode::TOO_MANY_REQUESTS;
                let sample = if penalised {
                    let retry_after = retry_after(response.headers()).unwrap_or_default();
                    elapsed.max(self.failure_penalty).max(retry_after)
                } else {
                    elapsed
                };
                backend.observe_latency(sample, now, decay);
                // A 5xx is judged now; anything else only when its body has been streamed, so a
                // backend that breaks its bodies off does not look fine by its headers.
                let report = if outcome == Outcome::Success {
                    let (pool, judged) = (Arc::clone(&self.pool), Arc::clone(backend));
                    let report: Box<dyn FnOnce(bool) + Send> = Box::new(move |completed| {
                        if !completed {
                            judged.metrics.failures.increment(1);
                        }
                        pool.record(&judged, if completed { Outcome::Success } else { Outcome::GatewayFailure });
                    });
                    Some(report)
                } else {
                    self.pool.record(backend, outcome);
                    None
                };
                Attempt::Answered(response, Holds { in_flight, permit, report }, Arc::clone(backend))
            }
            Ok(Err(error)) => {
                if body_too_large(&error) {
                    self.metrics.too_large.increment(1);
                    return Attempt::Failed(Failure::TooLarge, permit);
                }
                let failure = if error.is_connect() { Failure::Refused } else { Failure::Broken };
                tracing::warn!(backend = backend.name(), error = %error_chain(&error), "upstream request failed");
                self.charge_failure(backend, failure, streamed, elapsed, now, decay);
                Attempt::Failed(failure, permit)
            }
            Err(_elapsed) => {
                tracing::warn!(backend = backend.name(), "upstream request timed out before its first byte");
                self.charge_failure(backend, Failure::TimedOut, streamed, elapsed, now, decay);
                Attempt::Failed(Failure::TimedOut, permit)
            }
        }
    }

    /// Counts a failure against the backend (ejection, penalty latency) — unless the request
    /// streamed a body and the connection was made: a slow or broken upload is the client's
    /// doing as likely as the backend's, and a client must not be able to eject backends.
    fn charge_failure(
        &self,
        backend: &Backend,
        failure: Failure,
        streamed: bool,
        elapsed: Duration,
        now: std::time::Instant,
        decay: Duration,
    ) {
        backend.metrics.failures.increment(1);
        if streamed && failure != Failure::Refused {
            return;
        }
        backend.observe_latency(elapsed.max(self.failure_penalty), now, decay);
        self.pool.record(backend, Outcome::GatewayFailure);
    }

    /// The backend's answer for the client: hop-by-hop headers out, the request id in, the
    /// body streamed under the limits.
    fn stream_back(
        &self,
        response: Response<Incoming>,
        holds: Holds,
        backend: &Backend,
        request_id: &HeaderValue,
        deadline: Instant,
    ) -> Response<ProxyBody> {
        let (mut parts, incoming) = response.into_parts();
        forwarded::strip_hop_by_hop(&mut parts.headers);
        if !parts.headers.contains_key(&X_REQUEST_ID) {
            parts.headers.insert(&X_REQUEST_ID, request_id.clone());
        }
        tracing::debug!(backend = backend.name(), status = parts.status.as_u16(), "forwarded");
        let limited = LimitedBody::new(incoming, deadline, self.idle_timeout, self.max_response_body, holds);
        Response::from_parts(parts, limited.boxed_unsync())
    }
}

fn clamp_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// The request headers a backend gets: hop-by-hop out, forwarding in, `Host` kept.
fn upstream_headers(parts: &http::request::Parts, client: IpAddr, scheme: &'static str) -> HeaderMap {
    let mut headers = parts.headers.clone();
    forwarded::strip_hop_by_hop(&mut headers);
    let host = match headers.get(header::HOST) {
        Some(host) => Some(host.clone()),
        // HTTP/2 clients name the host in the `:authority` pseudo-header only.
        None => parts.uri.authority().and_then(|authority| HeaderValue::try_from(authority.as_str()).ok()),
    };
    if let Some(host) = &host {
        headers.insert(header::HOST, host.clone());
    }
    forwarded::add_forwarding(&mut headers, client, scheme, host.as_ref());
    headers
}

fn upstream_request(
    method: &Method,
    backend: &Backend,
    path: &str,
    headers: HeaderMap,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, &'static str> {
    let uri = Uri::builder()
        .scheme(backend.scheme())
        .authority(backend.authority().clone())
        .path_and_query(path)
        .build()
        .map_err(|_| "the request target cannot be forwarded")?;
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The bytes consistent hashing hashes for this request.
fn hash_key(key: &HashKey, headers: &HeaderMap, client: IpAddr) -> Vec<u8> {
    let found = match key {
        HashKey::ClientIp => None,
        HashKey::Header(name) => headers.get(name).map(|value| value.as_bytes().to_vec()),
        HashKey::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(cookie, _)| cookie == name)
            .map(|(_, value)| value.as_bytes().to_vec()),
    };
    found.unwrap_or_else(|| client.to_string().into_bytes())
}

/// A `Retry-After` in seconds (the date form is not used by Shopkeep and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(300)))
}

/// Whether an upstream failure was the client's body going past the limit.
fn body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = current.source();
    }
    false
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An RFC 9457 problem answered by the gateway itself.
pub fn problem(
    status: StatusCode,
    detail: &str,
    request_id: &HeaderValue,
    retry_after_secs: Option<u64>,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "request_id": request_id.to_str().unwrap_or_default(),
    });
    let mut response = Response::new(body::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(&X_REQUEST_ID, request_id.clone());
    if let Some(seconds) = retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_to_repeat_methods_are_idempotent() {
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert!(is_idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&method), "{method}");
        }
    }

    #[test]
    fn the_hash_key_comes_from_the_header_or_cookie_or_falls_back_to_the_client() {
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark; cart=abc123"));
        headers.insert("x-cart", HeaderValue::from_static("zzz"));
        assert_eq!(hash_key(&HashKey::Cookie("cart".into()), &headers, client), b"abc123");
        assert_eq!(hash_key(&HashKey::Header("x-cart".try_into().unwrap()), &headers, client), b"zzz");
        assert_eq!(hash_key(&HashKey::Cookie("missing".into()), &headers, client), b"192.0.2.1");
        assert_eq!(hash_key(&HashKey::ClientIp, &headers, client), b"192.0.2.1");
    }

    #[test]
    fn retry_after_seconds_are_read_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(300)));
    }
}
