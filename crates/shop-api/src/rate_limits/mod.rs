//! Rate limits on every interface (seed 001 "Rate Limiting", seed 004 §3): per client IP on
//! every public route, per principal (user or API token, by tier) after authentication, and
//! layered login protection: per IP, per account (failures lock it for a while), and a global
//! failed-login rate exported for alerting. Sign-up is limited per IP.
//!
//! With a shared store (Redis) every limit and the account lockout are shared by all instances;
//! calls to the store go through a circuit breaker (`redis`), so an outage costs one timeout per
//! call only until the breaker opens. While the store cannot answer, rate limits fail open or
//! closed as configured, and the lockout falls back to this instance's own counters.
//!
//! Each limit is a [`RateLimitScope`]; `scope.rs` is their one table (names, default quotas),
//! `settings.rs` the configuration section they are read from.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;
use resilience::{
    CallOutcome, CircuitBreaker, Clock, Decision, FailureMode, KeyedLimiter, Quota, SharedLimitError, SharedLimiter,
    SlidingWindowCounter,
};
use sha2::Digest as _;
use shop::accounts::{AuthMethod, Caller, Role};
use uuid::Uuid;

use crate::error::ApiError;
use crate::middleware::is_health_check;
use crate::state::AppState;

mod lockout;
mod scope;
mod settings;

pub use scope::{PerScope, RateLimitScope};
pub use settings::RateLimitSettings;

/// Who a principal limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Principal {
    User(Uuid),
    Token(Uuid),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::Token(id) => write!(f, "token:{id}"),
        }
    }
}

/// What a limiter counts by: a client address, a principal, or a hashed mailed address. Its
/// text is the key in the shared store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LimitKey {
    Ip(IpAddr),
    Principal(Principal),
    /// The SHA-256 of the normalised address, like the shared lockout's key.
    Account(String),
}

impl std::fmt::Display for LimitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Principal(principal) => principal.fmt(f),
            Self::Account(hash) => f.write_str(hash),
        }
    }
}

/// The shared limiter store's health, for readiness.
#[derive(Debug, Clone)]
pub struct SharedStatus {
    pub backend: &'static str,
    pub healthy: bool,
    pub error: Option<String>,
    pub on_failure: FailureMode,
}

/// A limiter store shared by every instance, the breaker guarding calls to it, and what to do
/// when it cannot answer.
#[derive(Clone)]
pub struct SharedLimits {
    pub limiter: Arc<dyn SharedLimiter>,
    pub breaker: Arc<CircuitBreaker>,
    pub on_failure: FailureMode,
}

impl SharedLimits {
    /// One call to the store through the breaker: refused at once while it is open.
    async fn call<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, SharedLimitError>>,
    ) -> Result<T, SharedLimitError> {
        let permit = self.breaker.try_acquire().map_err(|rejected| SharedLimitError(rejected.to_string()))?;
        let result = operation.await;
        permit.record(if result.is_ok() { CallOutcome::Success } else { CallOutcome::Failure });
        result
    }
}

/// The limiters of one instance. GCRA limits and the account lockout go to the shared store
/// when there is one (the local ones then serve as the lockout's fallback); the failed-login
/// gauge is per instance (Prometheus sums instances).
pub struct RateLimiters {
    settings: RateLimitSettings,
    /// `settings.trusted_proxies`, parsed.
    trusted_proxies: Vec<IpNet>,
    clock: Arc<dyn Clock>,
    shared: Option<SharedLimits>,
    started: std::time::Instant,
    /// When a shared-store failure was last logged (seconds since start), to log at most every 10 s.
    last_failure_logged: std::sync::atomic::AtomicU64,
    /// The local GCRA limiter of each scope.
    limiters: PerScope<KeyedLimiter<LimitKey>>,
    login_failures: SlidingWindowCounter<String>,
    /// Accounts locked until the given instant, keyed by normalised email.
    locked: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    failed_logins: SlidingWindowCounter<()>,
}

impl RateLimiters {
    /// Fails only when a trusted proxy is neither an address nor a range (which
    /// [`RateLimitSettings::validate`] reports first).
    pub fn new(
        mut settings: RateLimitSettings,
        clock: Arc<dyn Clock>,
        shared: Option<SharedLimits>,
    ) -> Result<Self, String> {
        let trusted_proxies = settings.trusted_proxy_nets()?;
        // Quotas come as written (a 0 stays for validation to refuse); limiters need a count and
        // a period that `Quota::new` keeps positive.
        settings.quotas = PerScope::from_fn(|scope| {
            let quota = settings.quotas[scope];
            Quota::new(quota.count, quota.period)
        });
        Ok(Self {
            started: clock.now(),
            shared,
            last_failure_logged: std::sync::atomic::AtomicU64::new(0),
            limiters: PerScope::from_fn(|scope| KeyedLimiter::new(settings.quotas[scope], Arc::clone(&clock))),
            trusted_proxies,
            login_failures: SlidingWindowCounter::new(
                settings.lockout_failures,
                settings.lockout_window,
                Arc::clone(&clock),
            ),
            locked: std::sync::Mutex::default(),
            failed_logins: SlidingWindowCounter::new(
                settings.failed_login_alert_per_minute,
                Duration::from_secs(60),
                Arc::clone(&clock),
            ),
            clock,
            settings,
        })
    }

    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// The ranges whose `X-Forwarded-For` is believed (a plain address as a one-address range).
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }

    /// The shared store, when limits are shared.
    pub fn shared(&self) -> Option<&SharedLimits> {
        self.shared.as_ref()
    }

    /// Forgets idle keys everywhere (steady state); returns the keys still tracked.
    pub fn purge_idle(&self) -> usize {
        let now = self.clock.now();
        let mut locked = self.locked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        locked.retain(|_, until| *until > now);
        locked.shrink_to_fit();
        locked.len()
            + self.limiters.values().map(KeyedLimiter::purge_idle).sum::<usize>()
            + self.login_failures.purge_idle()
            + self.failed_logins.purge_idle()
    }

    fn verdict(&self, scope: RateLimitScope, limiter_quota: Quota, decision: Decision) -> Result<(), ApiError> {
        match decision {
            Decision::Allowed { .. } => Ok(()),
            Decision::Limited { retry_after, limit } => {
                metrics::counter!("http_requests_rate_limited_total", "scope" => scope.as_str()).increment(1);
                Err(ApiError::RateLimited {
                    detail: "too many requests; slow down",
                    retry_after,
                    limit,
                    policy: limiter_quota.policy_header(),
                })
            }
        }
    }

    /// One GCRA decision: in the shared store when configured (with its failure mode), else here.
    async fn gcra(&self, scope: RateLimitScope, key: LimitKey) -> Result<(), ApiError> {
        let quota = self.settings.quotas[scope];
        let Some(shared) = &self.shared else {
            return self.verdict(scope, quota, self.limiters[scope].check(&key));
        };
        match shared.call(shared.limiter.check(scope.as_str(), &key.to_string(), quota)).await {
            Ok(decision) => self.verdict(scope, quota, decision),
            Err(error) => {
                self.shared_failed(shared, &error);
                match shared.on_failure {
                    FailureMode::Open => Ok(()),
                    FailureMode::Closed => Err(ApiError::Unavailable {
                        detail: "rate limiting is unavailable; try again shortly",
                        retry_after_seconds: 5,
                    }),
                }
            }
        }
    }

    /// Counts and (at most every 10 s) logs a failed call to the shared store.
    fn shared_failed(&self, shared: &SharedLimits, error: &SharedLimitError) {
        metrics::counter!("rate_limiter_backend_errors_total", "backend" => shared.limiter.backend()).increment(1);
        self.log_failure(error, shared.on_failure);
    }

    fn log_failure(&self, error: &SharedLimitError, mode: FailureMode) {
        use std::sync::atomic::Ordering;
        // Seconds since start, shifted by the interval so that the very first failure (with
        // `last_failure_logged` still 0) is logged at once.
        let now = self.clock.now().saturating_duration_since(self.started).as_secs() + 10;
        let last = self.last_failure_logged.load(Ordering::Relaxed);
        if now >= last + 10
            && self.last_failure_logged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let failing =
                if mode == FailureMode::Open { "open (requests allowed)" } else { "closed (requests refused)" };
            tracing::warn!(%error, failing, "the shared rate limiter is unavailable");
        }
    }

    /// The shared store's health for readiness: `None` without one.
    pub async fn shared_status(&self) -> Option<SharedStatus> {
        let shared = self.shared.as_ref()?;
        let health = shared.limiter.ping().await;
        Some(SharedStatus {
            backend: shared.limiter.backend(),
            healthy: health.is_ok(),
            error: health.err().map(|error| error.to_string()),
            on_failure: shared.on_failure,
        })
    }

    async fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.gcra(RateLimitScope::PerIp, LimitKey::Ip(ip)).await
    }

    /// The principal limit by tier; anonymous requests are counted per IP.
    async fn check_principal(&self, caller: Option<&Caller>, ip: IpAddr) -> Result<(), ApiError> {
        let (scope, key) = match caller {
            None => (RateLimitScope::Anonymous, LimitKey::Ip(ip)),
            Some(caller) => {
                let (scope, principal) = match caller.method {
                    AuthMethod::ApiToken { token_id } => (RateLimitScope::ApiToken, Principal::Token(token_id)),
                    AuthMethod::Session { .. } if caller.user.role.includes(Role::Staff) => {
                        (RateLimitScope::Staff, Principal::User(caller.user.id))
                    }
                    AuthMethod::Session { .. } => (RateLimitScope::Customer, Principal::User(caller.user.id)),
                };
                (scope, LimitKey::Principal(principal))
            }
        };
        self.gcra(scope, key).await
    }

    /// Before verifying a login: the per-IP login limit. (The account's own lock is the
    /// domain's: `shop::accounts::LoginThrottle`, implemented in `lockout.rs`.)
    pub async fn before_login(&self, ip: IpAddr) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        self.gcra(RateLimitScope::LoginPerIp, LimitKey::Ip(ip)).await
    }

    /// Before a request that sends mail: per client address, then per address mailed (whether
    /// or not it has an account, so the limit reveals nothing).
    pub async fn before_mail(&self, ip: IpAddr, email: &str) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        self.gcra(RateLimitScope::MailPerIp, LimitKey::Ip(ip)).await?;
        let account = shared_key(&account_key(email));
        self.gcra(RateLimitScope::MailPerAccount, LimitKey::Account(account)).await
    }

    /// Before using a mailed token (reset, verification): per client address.
    pub async fn before_token_use(&self, ip: IpAddr) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        self.gcra(RateLimitScope::TokenPerIp, LimitKey::Ip(ip)).await
    }

    /// Before a search or a type-ahead suggestion: per client address.
    pub async fn before_search(&self, ip: IpAddr) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        self.gcra(RateLimitScope::SearchPerIp, LimitKey::Ip(ip)).await
    }

    /// Before starting or completing a sign-in with an external provider: the per-IP login limit.
    pub async fn before_external_login(&self, ip: IpAddr) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        self.gcra(RateLimitScope::LoginPerIp, LimitKey::Ip(ip)).await
    }

    /// Before creating an account: the per-IP sign-up limit.
    pub async fn before_signup(&self, ip: IpAddr) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        self.gcra(RateLimitScope::SignupPerIp, LimitKey::Ip(ip)).await
    }

    /// The client's address: the peer, or — only when the peer is a trusted proxy — the
    /// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.is_trusted(ip) => continue,
                Ok(ip) => return ip,
                // A malformed hop cannot be trusted further back: stop at the last good address.
                Err(_) => return peer,
            }
        }
        peer
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

fn account_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The scope of account lockouts in the shared store.
const LOCKOUT_SCOPE: &str = "login_account";

/// The account key as stored in the shared store: hashed, so Redis holds no email addresses.
fn shared_key(account_key: &str) -> String {
    hex::encode(sha2::Sha256::digest(account_key.as_bytes()))
}

/// The address used when a request carries no peer address (only in-process test requests).
pub(crate) const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The client address of a request, as established by [`limit_by_ip`].
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Per-IP limit on every route but health checks; records the client address for later layers.
pub(crate) async fn limit_by_ip(state: &AppState, request: &mut Request) -> Result<(), ApiError> {
    let limits = &state.inner.rate_limits;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
        .unwrap_or(UNKNOWN_CLIENT);
    let ip = limits.client_ip(peer, request.headers());
    request.extensions_mut().insert(ClientIp(ip));
    if limits.settings.enabled && !is_health_check(request.uri().path()) {
        limits.check_ip(ip).await?;
    }
    Ok(())
}

/// Per-principal limit, after authentication: users by role tier, API tokens by their tier,
/// anonymous callers per IP.
pub(crate) async fn limit_by_principal(state: &AppState, request: &mut Request) -> Result<(), ApiError> {
    let limits = &state.inner.rate_limits;
    if limits.settings.enabled && !is_health_check(request.uri().path()) {
        let ip = request.extensions().get::<ClientIp>().map_or(UNKNOWN_CLIENT, |client| client.0);
        let caller = request.extensions().get::<crate::auth::CurrentCaller>().and_then(|current| current.0.as_ref());
        limits.check_principal(caller, ip).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn limiters(trusted: &[&str]) -> RateLimiters {
        let settings = RateLimitSettings {
            trusted_proxies: trusted.iter().map(|net| (*net).to_owned()).collect(),
            ..RateLimitSettings::default()
        };
        RateLimiters::new(settings, Arc::new(resilience::ManualClock::default()), None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn forwarded(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        let untrusting = limiters(&[]);
        assert_eq!(untrusting.client_ip(ip("10.0.0.5"), &forwarded("203.0.113.9")), ip("10.0.0.5"));
        let trusting = limiters(&["10.0.0.0/8"]);
        assert_eq!(trusting.client_ip(ip("10.0.0.5"), &forwarded("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(
            trusting.client_ip(ip("10.0.0.5"), &forwarded("198.51.100.1, 203.0.113.9, 10.1.1.1")),
            ip("203.0.113.9"),
            "the right-most untrusted hop; the client cannot spoof past it"
        );
        assert_eq!(trusting.client_ip(ip("10.0.0.5"), &forwarded("not-an-ip")), ip("10.0.0.5"));
        assert_eq!(trusting.client_ip(ip("192.0.2.1"), &forwarded("203.0.113.9")), ip("192.0.2.1"));
    }
}
