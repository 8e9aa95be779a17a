//! The integration-point HTTP client (Release It! ch. 4–5): every outbound call goes through
//! connect, per-attempt and total timeouts, a bulkhead, a circuit breaker and — for idempotent
//! calls only — retries with jittered backoff and a budget. Each call carries a W3C
//! `traceparent`; latency and outcomes are exported per dependency
//! (`integration_requests_total{dependency,outcome}`, `integration_request_duration_seconds`),
//! and breaker state by the breaker itself.
//!
//! It speaks HTTP and HTTPS. TLS is rustls with the ring provider, configured here rather than by
//! reqwest and handed to reqwest whole: it trusts the webpki roots plus the dependency's
//! `extra_root_certificates` (a private CA, a sandbox's self-signed certificate), and nothing
//! else. Redirects are never followed. Because Cargo unifies features, turning on reqwest's
//! rustls support here changes every other reqwest client in the same binary: see
//! [`install_crypto_provider`].

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use resilience::{
    Bulkhead, BulkheadConfig, BulkheadFull, CallOutcome, CircuitBreaker, CircuitBreakerConfig, Clock, Idempotency,
    Rejected, Retry, RetryConfig, Verdict,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Settings of one dependency.
#[derive(Debug, Clone)]
pub struct IntegrationConfig {
    /// The dependency's name in logs and metrics (`payments`, `oidc`).
    pub name: String,
    /// `https://api.provider.example` (paths are appended).
    pub base_url: String,
    pub connect_timeout: Duration,
    /// One attempt, from sending the request to the last byte of the body.
    pub attempt_timeout: Duration,
    /// The whole call, retries and waits included.
    pub total_timeout: Duration,
    pub max_concurrent: usize,
    /// How long a call may wait for a bulkhead slot.
    pub max_wait: Duration,
    pub breaker: CircuitBreakerConfig,
    pub retry: RetryConfig,
    /// PEM certificates trusted as roots in addition to the webpki roots; each entry holds at
    /// least one `CERTIFICATE` block. Empty by default.
    pub extra_root_certificates: Vec<String>,
}

impl IntegrationConfig {
    pub fn new(name: &str, base_url: &str) -> Self {
        Self {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            max_concurrent: 32,
            max_wait: Duration::from_millis(100),
            breaker: CircuitBreakerConfig::new(name),
            retry: RetryConfig::new(name),
            extra_root_certificates: Vec::new(),
        }
    }
}

/// One outbound request.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: Method,
    /// Appended to the dependency's `base_url`; an absolute `http(s)://` URL is used as it is
    /// (a provider's endpoints named in its discovery document).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Retried only when idempotent (GET, PUT, or a POST with an idempotency key).
    pub idempotency: Idempotency,
    /// The caller's trace, if any: the call becomes a child span of it.
    pub trace_id: Option<String>,
}

impl OutboundRequest {
    pub fn get(path: &str) -> Self {
        Self {
            method: Method::GET,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: None,
            idempotency: Idempotency::Idempotent,
            trace_id: None,
        }
    }

    pub fn post_json(path: &str, body: &serde_json::Value, idempotency: Idempotency) -> Self {
        Self::post_json_bytes(path, body.to_string(), idempotency)
    }

    /// A POST of JSON already serialised, sent byte for byte as given (a signed body must be
    /// sent exactly as it was signed).
    pub fn post_json_bytes(path: &str, body: impl Into<Bytes>, idempotency: Idempotency) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Self {
            method: Method::POST,
            path: path.to_owned(),
            headers,
            body: Some(body.into()),
            idempotency,
            trace_id: None,
        }
    }
}

/// A complete response (the body is read within the attempt's timeout).
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl OutboundResponse {
    /// The body as JSON; HTML or garbage where JSON was promised is an error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, IntegrationError> {
        serde_json::from_slice(&self.body).map_err(|error| IntegrationError::InvalidBody(error.to_string()))
    }
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntegrationError {
    #[error(transparent)]
    BreakerOpen(#[from] Rejected),
    #[error(transparent)]
    BulkheadFull(#[from] BulkheadFull),
    #[error("{dependency} did not answer within {after:?}")]
    Timeout { dependency: String, after: Duration },
    /// Refused, unreachable, or the TLS handshake failed (an untrusted certificate, a name
    /// mismatch); `detail` carries the cause.
    #[error("could not connect to {dependency}: {detail}")]
    Connect { dependency: String, detail: String },
    #[error("{dependency} broke the protocol: {detail}")]
    Protocol { dependency: String, detail: String },
    #[error("{dependency} answered {status}")]
    Status { dependency: String, status: StatusCode, retry_after: Option<Duration> },
    #[error("the response body is not what was promised: {0}")]
    InvalidBody(String),
    /// From `IntegrationClient::new` only: the configuration cannot make a client (an extra
    /// root certificate that is not a PEM certificate).
    #[error("{dependency} is misconfigured: {detail}")]
    Config { dependency: String, detail: String },
}

impl IntegrationError {
    fn outcome_label(&self) -> &'static str {
        match self {
            Self::BreakerOpen(_) => "breaker_open",
            Self::BulkheadFull(_) => "bulkhead_full",
            Self::Timeout { .. } => "timeout",
            Self::Connect { .. } => "connect_error",
            Self::Protocol { .. } => "protocol_error",
            Self::Status { .. } => "error_status",
            Self::InvalidBody(_) => "invalid_body",
            Self::Config { .. } => "config_error",
        }
    }
}

/// How many of a call's attempts may have reached the dependency. A caller whose write must not
/// happen twice needs this: with retries, the last attempt's error (an open breaker, a refused
/// connection) says nothing of an earlier attempt that was sent and failed after the
/// dependency acted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivery {
    /// Attempts sent (or under way when the total timeout struck); attempts refused by the
    /// breaker or the bulkhead, or that could not connect, are not counted.
    pub attempts_sent: u32,
}

impl Delivery {
    /// Nothing reached the dependency: it certainly did not act.
    pub fn nothing_sent(self) -> bool {
        self.attempts_sent == 0
    }
}

/// Counts of one call's attempts that passed the breaker, and of those that never connected.
#[derive(Default)]
struct Attempts {
    started: AtomicU32,
    unsent: AtomicU32,
}

impl Attempts {
    fn delivery(&self) -> Delivery {
        let started = self.started.load(Ordering::Relaxed);
        Delivery { attempts_sent: started.saturating_sub(self.unsent.load(Ordering::Relaxed)) }
    }
}

/// The client of one dependency. Clones share the breaker, bulkhead and retry budget.
#[derive(Clone)]
pub struct IntegrationClient {
    config: Arc<IntegrationConfig>,
    http: reqwest::Client,
    breaker: Arc<CircuitBreaker>,
    bulkhead: Arc<Bulkhead>,
    retry: Arc<Retry>,
}

impl IntegrationClient {
    /// Builds the client; fails with [`IntegrationError::Config`] when an extra root certificate
    /// is not a PEM certificate. Needs no process-wide crypto provider.
    pub fn new(config: IntegrationConfig, clock: Arc<dyn Clock>) -> Result<Self, IntegrationError> {
        let tls = tls_config(&config)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.connect_timeout)
            .timeout(config.attempt_timeout)
            // Providers' redirects are never followed: a redirect is an answer to inspect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| IntegrationError::Config { dependency: config.name.clone(), detail: error.to_string() })?;
        let breaker = Arc::new(CircuitBreaker::new(config.breaker.clone(), Arc::clone(&clock)));
        let bulkhead = Arc::new(Bulkhead::new(BulkheadConfig {
            name: config.name.clone(),
            max_concurrent: config.max_concurrent,
            max_wait: config.max_wait,
        }));
        let retry = Arc::new(Retry::new(config.retry.clone(), clock));
        Ok(Self { config: Arc::new(config), http, breaker, bulkhead, retry })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// Sends `request` through every protection; returns a 2xx–4xx response, or why not.
    /// 5xx answers are errors (they count against the breaker); 4xx are returned to the caller
    /// (the fault is in the request) except 429, which is an error carrying `Retry-After`.
    pub async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, IntegrationError> {
        self.send_reporting(request).await.0
    }

    /// [`send`](Self::send), also telling how many attempts may have reached the dependency.
    pub async fn send_reporting(
        &self,
        request: OutboundRequest,
    ) -> (Result<OutboundResponse, IntegrationError>, Delivery) {
        let attempts = Attempts::default();
        let result = self.send_counted(&request, &attempts).await;
        (result, attempts.delivery())
    }

    async fn send_counted(
        &self,
        request: &OutboundRequest,
        attempts: &Attempts,
    ) -> Result<OutboundResponse, IntegrationError> {
        let started = Instant::now();
        let total = self.config.total_timeout;
        let result = match tokio::time::timeout(total, self.protected(request, attempts)).await {
            Ok(result) => result,
            Err(_) => Err(IntegrationError::Timeout { dependency: self.config.name.clone(), after: total }),
        };
        let outcome = match &result {
            Ok(response) => {
                if response.status.is_success() {
                    "success"
                } else {
                    "client_error"
                }
            }
            Err(error) => error.outcome_label(),
        };
        let dependency = self.config.name.clone();
        metrics::counter!("integration_requests_total", "dependency" => dependency.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("integration_request_duration_seconds", "dependency" => dependency)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            tracing::warn!(dependency = self.config.name.as_str(), %error, elapsedMs = started.elapsed().as_millis() as u64, "outbound call failed");
        }
        result
    }

    async fn protected(
        &self,
        request: &OutboundRequest,
        attempts: &Attempts,
    ) -> Result<OutboundResponse, IntegrationError> {
        let _slot = self.bulkhead.acquire().await?;
        let trace_id = request.trace_id.clone().unwrap_or_else(|| random_hex(16));
        self.retry
            .run(
                request.idempotency,
                |attempt| self.attempt(request, &trace_id, attempt, attempts),
                |result| match result {
                    Ok(_) | Err(IntegrationError::BreakerOpen(_) | IntegrationError::InvalidBody(_)) => Verdict::Done,
                    Err(IntegrationError::Status { status, retry_after, .. })
                        if *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
                    {
                        Verdict::Retry { after: *retry_after }
                    }
                    Err(
                        IntegrationError::Status { .. }
                        | IntegrationError::BulkheadFull(_)
                        | IntegrationError::Config { .. },
                    ) => Verdict::Done,
                    Err(
                        IntegrationError::Timeout { .. }
                        | IntegrationError::Connect { .. }
                        | IntegrationError::Protocol { .. },
                    ) => Verdict::Retry { after: None },
                },
            )
            .await
    }

    async fn attempt(
        &self,
        request: &OutboundRequest,
        trace_id: &str,
        attempt: u32,
        attempts: &Attempts,
    ) -> Result<OutboundResponse, IntegrationError> {
        let permit = self.breaker.try_acquire()?;
        attempts.started.fetch_add(1, Ordering::Relaxed);
        let result = self.exchange(request, trace_id).await;
        if matches!(result, Err(IntegrationError::Connect { .. })) {
            // No connection, so no request: this attempt certainly did not reach it.
            attempts.unsent.fetch_add(1, Ordering::Relaxed);
        }
        permit.record(match &result {
            Ok(_) => CallOutcome::Success,
            // A 429 says the provider is pacing us, not that it is broken.
            Err(IntegrationError::Status { status, .. }) if *status == StatusCode::TOO_MANY_REQUESTS => {
                CallOutcome::Ignored
            }
            Err(_) => CallOutcome::Failure,
        });
        tracing::debug!(dependency = self.config.name.as_str(), attempt, ok = result.is_ok(), "outbound attempt");
        result
    }

    async fn exchange(&self, request: &OutboundRequest, trace_id: &str) -> Result<OutboundResponse, IntegrationError> {
        let dependency = || self.config.name.clone();
        let url = if request.path.starts_with("https://") || request.path.starts_with("http://") {
            request.path.clone()
        } else {
            format!("{}{}", self.config.base_url, request.path)
        };
        let mut headers = request.headers.clone();
        let traceparent = format!("00-{trace_id}-{}-01", random_hex(8));
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            headers.insert(HeaderName::from_static("traceparent"), value);
        }
        let mut builder = self.http.request(request.method.clone(), &url).headers(headers);
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let response =
            builder.send().await.map_err(|error| classify(error, dependency(), self.config.attempt_timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body =
            response.bytes().await.map_err(|error| classify(error, dependency(), self.config.attempt_timeout))?;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(IntegrationError::Status { dependency: dependency(), status, retry_after });
        }
        Ok(OutboundResponse { status, headers, body })
    }
}

/// Installs ring as the process-wide rustls crypto provider. Idempotent: a provider already
/// installed is kept.
///
/// `IntegrationClient` does not need it: it hands reqwest a complete ring-backed TLS
/// configuration. It exists because this crate turns on reqwest's `rustls-no-provider` feature,
/// and Cargo unifies features across a build: every other `reqwest::Client` in the same binary or
/// test binary (`Client::new()`, `Client::builder().build()`) then sets up rustls itself, and
/// reqwest panics while building it unless a process-wide provider is installed. Call this once
/// at startup, and in every test that builds a plain reqwest client, before building it. Ring,
/// because aws-lc is kept out of the build.
pub fn install_crypto_provider() {
    // An error only says that a provider is already installed, which is all this promises.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls configuration of one dependency: ring, safe default protocol versions, the webpki
/// roots plus the configured extra roots.
fn tls_config(config: &IntegrationConfig) -> Result<rustls::ClientConfig, IntegrationError> {
    let invalid = |detail: String| IntegrationError::Config { dependency: config.name.clone(), detail };
    let mut roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for (index, pem) in config.extra_root_certificates.iter().enumerate() {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let certificate = certificate
                .map_err(|error| invalid(format!("extra root certificate {index} is not valid PEM: {error}")))?;
            roots
                .add(certificate)
                .map_err(|error| invalid(format!("extra root certificate {index} was refused: {error}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid(format!("extra root certificate {index} holds no CERTIFICATE block")));
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(format!("no usable TLS protocol version: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest uses a preconfigured configuration as it is, so offer what its own would.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The error without its URL: a URL may carry a token in its query (a webhook endpoint's), and
/// this text reaches logs and delivery logs.
fn classify(error: reqwest::Error, dependency: String, attempt_timeout: Duration) -> IntegrationError {
    let error = error.without_url();
    if error.is_timeout() {
        IntegrationError::Timeout { dependency, after: attempt_timeout }
    } else if error.is_connect() {
        // The chain, because the top error only says "error sending request": the cause (refused, unknown
        // certificate issuer, name mismatch) is underneath.
        IntegrationError::Connect { dependency, detail: error_chain(&error) }
    } else {
        IntegrationError::Protocol { dependency, detail: error_chain(&error) }
    }
}

fn error_chain(error: &reqwest::Error) -> String {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl std::fmt::Debug for IntegrationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationClient").field("name", &self.config.name).finish_non_exhaustive()
    }
}
