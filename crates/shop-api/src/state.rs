//! Shared state of the HTTP layer: the services, settings, readiness flag, load shedder and the
//! process's circuit breakers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shop::Store;
use shop::accounts::AccountService;
use shop::catalog::CatalogService;

/// Settings of the public listener's HTTP stack.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Browser origins allowed by CORS and by the Origin check (`https://shop.example`).
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a CORS preflight answer.
    pub cors_max_age: Duration,
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: usize,
    /// A request still running after this gets 503.
    pub request_timeout: Duration,
    /// Requests served at once, fixed or adaptive; beyond it, 503 + `Retry-After` at once.
    pub concurrency: resilience::ConcurrencyLimit,
    /// The shop is reached over HTTPS (TLS here or at a proxy): `Secure` + `__Host-` cookies and HSTS.
    pub https: bool,
    /// `Cache-Control: max-age` of public catalog reads.
    pub catalog_max_age: Duration,
    /// The request header naming the caller's country for feature-flag rules, if any.
    pub country_header: Option<axum::http::HeaderName>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            cors_max_age: Duration::from_secs(86_400),
            body_limit_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(15),
            concurrency: resilience::ConcurrencyLimit::Fixed(512),
            https: false,
            country_header: None,
            catalog_max_age: Duration::from_secs(60),
        }
    }
}

/// Whether this instance should receive traffic. Cleared when shutdown begins, so that health
/// checks turn 503 and load balancers stop sending before the listener closes.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Shutting down: for good.
    draining: AtomicBool,
    /// Drained by an operator (`POST /admin/v1/drain`) until undrained.
    drained_by_operator: AtomicBool,
}

impl Readiness {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Readiness 503 while requests go on being served; answers whether it was drained already.
    pub fn drain(&self) -> bool {
        self.drained_by_operator.swap(true, Ordering::SeqCst)
    }

    /// Ends an operator's drain (not a shutdown's); answers whether it was drained.
    pub fn undrain(&self) -> bool {
        self.drained_by_operator.swap(false, Ordering::SeqCst)
    }

    pub fn drained_by_operator(&self) -> bool {
        self.drained_by_operator.load(Ordering::SeqCst)
    }

    pub fn shutting_down(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.shutting_down() || self.drained_by_operator()
    }
}

/// What the HTTP layer is built from.
pub struct AppParts {
    pub accounts: AccountService,
    pub catalog: CatalogService,
    pub search: shop::search::SearchService,
    /// Every read cache, for the admin status.
    pub caches: Vec<Arc<dyn shop::cache::CacheHandle>>,
    /// The shared cache tier (Redis), when configured: readiness and the admin status report it.
    pub shared_cache: Option<Arc<dyn shop::cache::SharedTier>>,
    pub store: Arc<dyn Store>,
    pub readiness: Arc<Readiness>,
    pub settings: HttpSettings,
    pub rate_limits: Arc<crate::rate_limits::RateLimiters>,
    /// Every circuit breaker of the process, for the admin status page and resets.
    pub breakers: resilience::BreakerRegistry,
    pub jobs: shop::jobs::JobService,
    /// The configured OpenID Connect providers by name (none by default).
    pub identity_providers: IdentityProviders,
    pub orders: shop::orders::OrderService,
    pub webhooks: shop::webhooks::WebhookService,
    /// Feature flags, evaluated from the in-memory snapshot.
    pub flags: shop::flags::FlagService,
}

/// OpenID Connect providers by their configured name.
pub type IdentityProviders = Arc<std::collections::BTreeMap<String, Arc<dyn shop::ports::IdentityProvider>>>;

/// Everything handlers and middleware share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub rate_limits: Arc<crate::rate_limits::RateLimiters>,
    pub accounts: AccountService,
    pub catalog: CatalogService,
    pub search: shop::search::SearchService,
    /// Every read cache, for the admin status.
    pub caches: Vec<Arc<dyn shop::cache::CacheHandle>>,
    pub shared_cache: Option<Arc<dyn shop::cache::SharedTier>>,
    pub store: Arc<dyn Store>,
    pub readiness: Arc<Readiness>,
    pub settings: HttpSettings,
    pub breakers: resilience::BreakerRegistry,
    pub jobs: shop::jobs::JobService,
    pub identity_providers: IdentityProviders,
    pub orders: shop::orders::OrderService,
    pub webhooks: shop::webhooks::WebhookService,
    pub flags: shop::flags::FlagService,
    /// The global in-flight limit of the public listener.
    pub shedder: resilience::LoadShedder,
    /// Rendered bodies of the plain product list by its filters, invalidated with the catalog.
    pub list_bodies: shop::cache::ReadCache<String, crate::routes::caching::Rendered>,
}

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        let AppParts {
            accounts,
            catalog,
            search,
            mut caches,
            shared_cache,
            store,
            readiness,
            settings,
            rate_limits,
            breakers,
            jobs,
            identity_providers,
            orders,
            webhooks,
            flags,
        } = parts;
        let shedder = resilience::LoadShedder::new(settings.concurrency, Arc::new(resilience::MonotonicClock));
        let list_bodies = catalog.caches().product_lists.sibling("product_list_bodies");
        caches.push(Arc::new(list_bodies.clone()));
        let inner = Inner {
            rate_limits,
            accounts,
            catalog,
            search,
            caches,
            shared_cache,
            store,
            readiness,
            settings,
            breakers,
            jobs,
            identity_providers,
            orders,
            webhooks,
            flags,
            shedder,
            list_bodies,
        };
        Self { inner: Arc::new(inner) }
    }

    pub(crate) fn accounts(&self) -> &AccountService {
        &self.inner.accounts
    }

    pub(crate) fn orders(&self) -> &shop::orders::OrderService {
        &self.inner.orders
    }

    pub(crate) fn webhooks(&self) -> &shop::webhooks::WebhookService {
        &self.inner.webhooks
    }

    pub(crate) fn flags(&self) -> &shop::flags::FlagService {
        &self.inner.flags
    }

    pub(crate) fn catalog(&self) -> &CatalogService {
        &self.inner.catalog
    }

    pub(crate) fn search(&self) -> &shop::search::SearchService {
        &self.inner.search
    }

    /// Every read cache of the process (the services' and the rendered bodies'): for the
    /// generation poll and the metrics.
    pub fn caches(&self) -> Vec<Arc<dyn shop::cache::CacheHandle>> {
        self.inner.caches.clone()
    }

    pub(crate) fn settings(&self) -> &HttpSettings {
        &self.inner.settings
    }
}
