//! Startup and shutdown: `Application::build` connects, migrates and binds; `run_until_stopped`
//! serves until the shutdown token fires, then drains and releases resources in reverse order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shop::accounts::AccountService;
use shop::catalog::CatalogService;
use shop::jobs::JobService;
use shop::{Clock, Store, SystemClock};
use shop_api::{
    AdminSettings, AppParts, AppState, HttpSettings, MetricsRenderer, RateLimiters, Readiness, SharedLimits,
};
use store_sqlx::SqlStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::telemetry;

mod tls;
mod wiring;

pub use wiring::{account_service, open_store, order_service, payment_provider, webhook_clients, webhook_service};
use wiring::{identity_providers, redis_breaker_config, shared_cache_tier, with_replicas};

/// How long closing the database pool may wait for connections still in use.
const DATABASE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A built, bound, not yet serving instance.
pub struct Application {
    config: Config,
    public: TcpListener,
    admin: TcpListener,
    public_router: axum::Router,
    state: AppState,
    accounts: AccountService,
    rate_limits: Arc<RateLimiters>,
    store: Arc<dyn Store>,
    readiness: Arc<Readiness>,
    /// The in-process job worker, unless `serve --no-worker` or `jobs.run_worker_in_serve = false`.
    worker: Option<worker::Worker>,
    /// Every read cache, for the generation poll.
    caches: Vec<Arc<dyn shop::cache::CacheHandle>>,
    /// The shared cache tier, when Redis is configured and `cache.shared` is on.
    shared_cache: Option<Arc<redis_cache::RedisCache>>,
    /// The store as itself, for the replica checks.
    replicated: Arc<SqlStore>,
    /// Feature flags, reloaded in the background when their stored generation moves.
    flags: shop::flags::FlagService,
    /// The public listener's certificate, when it serves TLS itself.
    certificates: Option<Arc<server_tls::Certificates>>,
    started: Instant,
}

impl Application {
    /// Connects to the database (migrating when configured) and binds both listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(resilience::MonotonicClock)).await
    }

    /// [`Application::build`] with the clock the rate limiters read (tests pass a manual one).
    pub async fn build_with_clock(config: Config, limiter_clock: Arc<dyn resilience::Clock>) -> anyhow::Result<Self> {
        let started = Instant::now();
        let sql_store = with_replicas(&config, open_store(&config, config.migrate_on_start()).await?)?;
        if config.database.pgbouncer {
            // Read the way every statement runs behind PgBouncer: proves the per-transaction
            // timeout works with this PgBouncer before the first request depends on it.
            let timeout = sql_store.statement_timeout_in_effect().await?;
            tracing::info!(statementTimeout = timeout.as_deref().unwrap_or("-"), "behind PgBouncer (transaction mode)");
        }
        if !config.migrate_on_start() {
            // Without migrations at start (PostgreSQL's default) nothing here rebuilds the
            // index: an index analysed another way would silently miss searches.
            let (built, wanted) = sql_store.search_index_signatures().await?;
            if built != wanted {
                anyhow::bail!(
                    "the search index was built with analysis {built:?} but search.language asks for {wanted:?}: \
                     run `shopkeep migrate up` (or `shopkeep admin search reindex`) first"
                );
            }
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let breakers = resilience::BreakerRegistry::new();
        // One Redis, one breaker: the shared limits and the shared cache tier both go through it.
        let redis_breaker = match &config.redis.url {
            None => None,
            Some(_) => {
                let breaker = Arc::new(resilience::CircuitBreaker::new(
                    redis_breaker_config(Duration::from_millis(config.redis.timeout_ms)),
                    Arc::clone(&limiter_clock),
                ));
                breakers.register(Arc::clone(&breaker))?;
                Some(breaker)
            }
        };
        let shared_cache = shared_cache_tier(&config, redis_breaker.as_ref())?;
        let cache = config.cache.settings();
        let generations = shop::ports::CacheVersions::generations(sql_store.as_ref());
        let mut search = shop::search::SearchService::new(Arc::clone(&sql_store) as _, config.search.settings())
            .with_cache(&generations, &clock, &cache);
        let replicated = Arc::clone(&sql_store);
        let store: Arc<dyn Store> = sql_store;
        let flags = shop::flags::FlagService::new(Arc::clone(&store) as _);
        // Loaded before serving, so a shop in maintenance stays in maintenance across a restart.
        if let Err(error) = flags.refresh().await {
            tracing::warn!(%error, "cannot load the feature flags at start; evaluating defaults until they load");
        }
        let accounts = account_service(&config, Arc::clone(&store), Arc::clone(&clock))
            .with_cache(&cache)
            .with_flags(flags.clone());
        let mut catalog = CatalogService::new(Arc::clone(&store), Arc::clone(&clock)).with_cache(&cache);
        if let Some(tier) = &shared_cache {
            let tier: Arc<dyn shop::cache::SharedTier> = Arc::clone(tier) as _;
            catalog = catalog.with_shared_tier(&tier);
            search = search.with_shared_tier(&tier);
        }
        let caches: Vec<Arc<dyn shop::cache::CacheHandle>> =
            [catalog.caches().handles(), search.caches().handles(), accounts.caches().handles()].concat();
        let jobs = JobService::new(Arc::clone(&store), Arc::clone(&clock), crate::jobs::job_settings(&config));
        let readiness = Arc::new(Readiness::default());
        let http = &config.http;
        let settings = HttpSettings {
            allowed_origins: http.allowed_origins.clone(),
            cors_max_age: Duration::from_secs(http.cors_max_age_secs),
            body_limit_bytes: http.body_limit_bytes,
            request_timeout: Duration::from_secs(http.request_timeout_secs),
            concurrency: if http.adaptive_concurrency {
                resilience::ConcurrencyLimit::Adaptive {
                    initial: (http.max_in_flight / 2).max(http.min_in_flight),
                    min: http.min_in_flight,
                    max: http.max_in_flight,
                }
            } else {
                resilience::ConcurrencyLimit::Fixed(http.max_in_flight)
            },
            https: http.https,
            catalog_max_age: Duration::from_secs(http.catalog_max_age_secs),
            // Validated by the configuration.
            country_header: config
                .flags
                .country_header
                .as_deref()
                .and_then(|name| axum::http::HeaderName::try_from(name).ok()),
        };
        let payments = payment_provider(&config, &breakers, Arc::clone(&limiter_clock))?;
        let orders = order_service(&config, Arc::clone(&store), Arc::clone(&clock), payments);
        let webhooks = webhook_service(&config, Arc::clone(&store), Arc::clone(&clock));
        let webhook_clients = webhook_clients(&config, &breakers, Arc::clone(&limiter_clock));
        let shared_limits = match (&config.redis.url, redis_breaker) {
            (Some(url), Some(breaker)) => {
                let limiter = redis_limits::RedisRateLimiter::new(&redis_limits::RedisSettings {
                    url: url.expose().to_owned(),
                    timeout: Duration::from_millis(config.redis.timeout_ms),
                    key_prefix: config.redis.key_prefix.clone(),
                })
                .map_err(|error| anyhow::anyhow!("redis.url: {error}"))?;
                let on_failure = config.rate_limits.shared_failure_mode();
                if let Err(error) = resilience::SharedLimiter::ping(&limiter).await {
                    tracing::warn!(%error, onFailure = %config.rate_limits.on_redis_failure, "Redis is unreachable at startup; rate limits fail {} until it answers", config.rate_limits.on_redis_failure);
                }
                Some(SharedLimits { limiter: Arc::new(limiter), breaker, on_failure })
            }
            _ => None,
        };
        let rate_limits = RateLimiters::new(config.rate_limits.clone(), Arc::clone(&limiter_clock), shared_limits)
            .map_err(|problem| anyhow::anyhow!("rate_limits.trusted_proxies: {problem}"))?;
        let rate_limits = Arc::new(rate_limits);
        // Sign-ins count their failures (and lock accounts) in the same limiters, shared
        // across instances through Redis when it is configured.
        let accounts = accounts.with_login_throttle(Arc::clone(&rate_limits) as Arc<dyn shop::accounts::LoginThrottle>);
        if !config.rate_limits.enabled {
            tracing::warn!("rate limits are OFF (rate_limits.enabled = false): only for load tests");
        }
        // Only the worker sends mail; a process without one needs no mailer (nor its breaker).
        let mailer = match config.jobs.run_worker_in_serve {
            true => {
                let clock = Arc::clone(&limiter_clock);
                Some(crate::jobs::build_mailer(&config, Arc::clone(&store), &breakers, clock)?)
            }
            false => None,
        };
        let identity_providers = identity_providers(&config, &breakers, Arc::clone(&limiter_clock))?;
        let state = AppState::new(AppParts {
            accounts: accounts.clone(),
            catalog,
            search,
            caches,
            shared_cache: shared_cache.clone().map(|tier| tier as Arc<dyn shop::cache::SharedTier>),
            store: Arc::clone(&store),
            readiness: Arc::clone(&readiness),
            settings,
            rate_limits: Arc::clone(&rate_limits),
            breakers,
            jobs: jobs.clone(),
            identity_providers,
            orders: orders.clone(),
            webhooks: webhooks.clone(),
            flags: flags.clone(),
        });
        // The state adds the caches of rendered bodies to the services' own.
        let caches = state.caches();
        let public_router = shop_api::public_router(state.clone()).map_err(|problem| anyhow::anyhow!(problem))?;
        let certificates = match config.server.tls() {
            Some((certificate, key)) => Some(Arc::new(
                server_tls::Certificates::load(certificate.as_ref(), key.as_ref())
                    .context("server.tls_certificate_file: cannot use the certificate")?,
            )),
            None => None,
        };
        let public = TcpListener::bind(config.listen())
            .await
            .with_context(|| format!("failed to listen on {}", config.listen()))?;
        let admin = TcpListener::bind(config.admin_listen())
            .await
            .with_context(|| format!("failed to listen on {} (admin)", config.admin_listen()))?;
        let worker = mailer.map(|mailer| {
            crate::jobs::build_worker(
                &config,
                Arc::clone(&store),
                jobs.clone(),
                accounts.clone(),
                orders.clone(),
                mailer,
                crate::jobs::WebhookParts { service: webhooks.clone(), sender: Arc::clone(&webhook_clients) },
            )
        });
        Ok(Self {
            config,
            public,
            admin,
            public_router,
            state,
            accounts,
            rate_limits,
            store,
            readiness,
            worker,
            caches,
            shared_cache,
            replicated,
            flags,
            certificates,
            started,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.public.local_addr().unwrap_or(self.config.listen())
    }

    pub fn port(&self) -> u16 {
        self.address().port()
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin_listen())
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_address().port()
    }

    /// Serves until `shutdown` is cancelled, then: readiness off → (drain delay) → stop
    /// accepting → in-flight requests finish (up to the shutdown timeout) → background tasks
    /// stop → database pool closed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            public,
            admin,
            public_router,
            state,
            accounts,
            rate_limits,
            store,
            readiness,
            worker,
            caches,
            shared_cache,
            replicated,
            flags,
            certificates,
            started,
        } = self;
        let public_address = public.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let admin_address = admin.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let background = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();

        let metrics: MetricsRenderer = match telemetry::prometheus() {
            Some(handle) => {
                tasks.spawn(telemetry::run_metrics_upkeep(handle.clone(), background.clone()));
                Arc::new(move || {
                    telemetry::publish_log_drops();
                    handle.render()
                })
            }
            None => Arc::new(|| "# metrics recorder unavailable\n".to_owned()),
        };
        // The worker stops with the listeners (it drains on its own timeout), before the pool.
        let stop_worker = CancellationToken::new();
        let worker = worker.map(|worker| {
            tasks.spawn(crate::jobs::wake_on_new_jobs(&config, store.as_ref(), worker.wakers(), background.clone()));
            tokio::spawn(worker.run(stop_worker.clone()))
        });
        let stop = background.clone().cancelled_owned();
        tasks.spawn(async move { replicated.follow_replicas(stop).await });
        tasks.spawn(purge_rate_limits(rate_limits, config.rate_limits.purge_interval, background.clone()));
        let stop = background.clone().cancelled_owned();
        tasks.spawn(shop::flags::follow_flags(flags, config.flags.refresh_interval(), stop));
        if config.cache.enabled {
            let every = Duration::from_millis(config.cache.max_staleness_ms);
            let stop = background.clone().cancelled_owned();
            if let Some(tier) = shared_cache {
                let events = tier.subscribe(background.clone().cancelled_owned());
                let stop = background.clone().cancelled_owned();
                tasks.spawn(shop::cache::follow_shared_tier(
                    Arc::clone(&store) as _,
                    tier,
                    events,
                    caches.clone(),
                    every,
                    stop,
                ));
            }
            tasks.spawn(shop::cache::follow_stored_generations(Arc::clone(&store) as _, caches, every, stop));
        }
        // Done off the request path, so the first login with an unknown email is not slower.
        let warm_accounts = accounts.clone();
        tasks.spawn(async move {
            if let Err(error) = warm_accounts.warm_up().await {
                tracing::warn!(%error, "password hasher warm-up failed");
            }
        });
        let stop_accepting = CancellationToken::new();
        let admin_router = shop_api::admin_router(
            state,
            AdminSettings {
                token: config.admin.token.as_ref().map(|t| t.expose().to_owned()),
                metrics,
                instance: public_address.clone(),
                log_filter: telemetry::log_filter_control(),
            },
        );
        let public_service = public_router.into_make_service_with_connect_info::<SocketAddr>();
        let mut public_server = match &certificates {
            None => tokio::spawn(
                axum::serve(public, public_service)
                    .with_graceful_shutdown(stop_accepting.clone().cancelled_owned())
                    .into_future(),
            ),
            Some(certificates) => {
                let every = config.server.tls_reload_interval();
                tasks.spawn(Arc::clone(certificates).watch(every, background.clone()));
                let listener = tls::TlsListener::new(public, certificates.acceptor(), stop_accepting.clone())
                    .context("cannot start the TLS listener")?;
                // axum gives `ConnectInfo<SocketAddr>` for its own TCP listener and for tapped
                // listeners; the (empty) tap is what lets a custom listener say the peer.
                let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
                tokio::spawn(
                    axum::serve(listener, public_service)
                        .with_graceful_shutdown(stop_accepting.clone().cancelled_owned())
                        .into_future(),
                )
            }
        };
        let mut admin_server = tokio::spawn(
            axum::serve(admin, admin_router)
                .with_graceful_shutdown(stop_accepting.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!(
            listen = %public_address,
            adminListen = %admin_address,
            backend = store.backend(),
            startupMs = started.elapsed().as_secs_f64() * 1000.0,
            "shopkeep is ready"
        );

        shutdown.cancelled().await;
        tracing::info!("shutdown requested: readiness off, draining");
        readiness.start_draining();
        let drain_delay = Duration::from_secs(config.server.drain_delay_secs);
        if !drain_delay.is_zero() {
            tokio::time::sleep(drain_delay).await;
        }
        stop_accepting.cancel();
        stop_worker.cancel();
        let servers = async {
            let (public, admin) = tokio::join!(&mut public_server, &mut admin_server);
            for (name, result) in [("public", public), ("admin", admin)] {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::error!(%error, listener = name, "server failed"),
                    Err(error) => tracing::error!(%error, listener = name, "server task failed"),
                }
            }
        };
        let drained = tokio::time::timeout(config.shutdown_timeout(), servers).await.is_ok();
        if drained {
            tracing::info!("listeners closed, in-flight requests finished");
        } else {
            // Stop waiting: the requests still running are cut off when the process exits.
            public_server.abort();
            admin_server.abort();
            tracing::warn!(
                timeoutSecs = config.server.shutdown_timeout_secs,
                "in-flight requests did not finish in time; abandoning them"
            );
        }
        if let Some(worker) = worker
            && let Err(error) = worker.await
        {
            tracing::error!(%error, "the job worker task failed");
        }
        // Release in reverse order of acquisition: background tasks, then the database.
        background.cancel();
        while tasks.join_next().await.is_some() {}
        // Closing waits for connections in use; after an abandoned drain some may never return.
        if tokio::time::timeout(DATABASE_CLOSE_TIMEOUT, store.close()).await.is_err() {
            tracing::warn!("database connections still in use; closing without them");
        }
        tracing::info!("database closed; shutdown complete");
        Ok(())
    }
}

/// Forgets idle limiter keys periodically, so memory follows the active clients (steady state).
async fn purge_rate_limits(limits: Arc<RateLimiters>, every: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let keys = limits.purge_idle();
                metrics::gauge!("rate_limiter_keys").set(keys as f64);
            }
            () = stop.cancelled() => return,
        }
    }
}
