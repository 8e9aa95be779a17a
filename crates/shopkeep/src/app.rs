//! Startup and shutdown: `Application::build` connects, migrates and binds; `run_until_stopped`
//! serves until the shutdown token fires, then drains and releases resources in reverse order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shop::accounts::{AccountService, AccountSettings, PasswordHasher};
use shop::catalog::CatalogService;
use shop::jobs::JobService;
use shop::{Clock, Store, SystemClock};
use shop_api::{
    AdminSettings, AppParts, AppState, HttpSettings, MetricsRenderer, RateLimiters, Readiness, SharedLimits,
};
use store_sqlx::{PostgresSettings, SqlStore, SqliteSettings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, Config};
use crate::telemetry;

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
    started: Instant,
}

/// Opens the configured database (and migrates it when `migrate` is true).
pub async fn open_store(config: &Config, migrate: bool) -> anyhow::Result<Arc<SqlStore>> {
    let database = &config.database;
    let backend = config.backend().map_err(|problem| anyhow::anyhow!(problem))?;
    let store = match backend {
        Backend::Sqlite => {
            SqlStore::sqlite(&SqliteSettings {
                url: database.url.expose().to_owned(),
                max_connections: database.max_connections,
                acquire_timeout: Duration::from_secs(database.acquire_timeout_secs),
                busy_timeout: Duration::from_secs(database.busy_timeout_secs),
            })
            .await?
        }
        Backend::Postgres => SqlStore::postgres(&postgres_settings(config)).await?,
    };
    let store = store.with_search_analyzer(shop::search::Analyzer::new(config.search.settings().language));
    if migrate {
        // Behind PgBouncer, on a session of its own (see `migrations_store`).
        let direct =
            if database.pgbouncer { Some(crate::commands::migrations_store(config, false).await?) } else { None };
        let target = direct.as_ref().unwrap_or(&store);
        target.migrate_up().await?;
        // Products written before the index existed, or analysed another way, are indexed now.
        if let Some(indexed) = target.ensure_search_index().await? {
            tracing::info!(products = indexed, "search index rebuilt");
        }
        if let Some(direct) = direct {
            shop::ports::StoreHealth::close(&direct).await;
        }
    }
    Ok(Arc::new(store))
}

/// How `serve` connects to PostgreSQL (the replicas are connected to the same way).
fn postgres_settings(config: &Config) -> PostgresSettings {
    let database = &config.database;
    PostgresSettings {
        url: database.url.expose().to_owned(),
        max_connections: database.max_connections,
        min_connections: database.min_connections,
        acquire_timeout: Duration::from_secs(database.acquire_timeout_secs),
        statement_timeout: Duration::from_secs(database.statement_timeout_secs),
        pgbouncer: database.pgbouncer,
    }
}

/// The store with the configured read replicas attached (itself when there are none).
fn with_replicas(config: &Config, store: Arc<SqlStore>) -> anyhow::Result<Arc<SqlStore>> {
    let database = &config.database;
    let urls = database.replica_urls();
    if urls.is_empty() {
        return Ok(store);
    }
    let settings = store_sqlx::ReplicaSettings {
        urls,
        max_lag: Duration::from_millis(database.replica_max_lag_ms),
        check_every: Duration::from_millis(database.replica_check_interval_ms),
        max_connections: database.max_connections,
        acquire_timeout: Duration::from_secs(database.acquire_timeout_secs).min(Duration::from_secs(1)),
    };
    let store = SqlStore::clone(&store).with_replicas(&postgres_settings(config), &settings)?;
    let names: Vec<String> = store.replica_statuses().into_iter().map(|status| status.name).collect();
    tracing::info!(replicas = ?names, maxLagMs = database.replica_max_lag_ms, "catalog and search reads use read replicas while they are proven fresh");
    Ok(Arc::new(store))
}

/// The account service as configured (also used by `shopkeep admin create-user`).
pub fn account_service(config: &Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> AccountService {
    let concurrency = match config.accounts.password_hash_concurrency {
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(2),
        n => n,
    };
    let accounts = &config.accounts;
    // Not one to one: the durations come straight, the roles were checked as text, and the shop
    // name and the external login TTL are other sections' keys.
    let settings = AccountSettings {
        session_absolute_ttl: accounts.session_absolute_ttl,
        session_idle_ttl: accounts.session_idle_ttl,
        shop_name: config.mail.shop_name.clone(),
        link_base_url: accounts.link_base_url.clone(),
        verification_ttl: accounts.verification_ttl,
        password_reset_ttl: accounts.password_reset_ttl,
        login_challenge_roles: accounts
            .login_challenge_roles
            .iter()
            .filter_map(|role| shop::accounts::Role::parse(role).ok())
            .collect(),
        login_challenge_ttl: accounts.login_challenge_ttl,
        guest_idle_ttl: accounts.guest_idle_ttl,
        external_login_ttl: time::Duration::minutes(config.oidc.login_ttl_minutes as i64),
    };
    AccountService::new(store, PasswordHasher::new(concurrency), clock, settings)
}

/// The payment provider as configured: the HTTP provider (its breaker registered as
/// `payments`) when `payments.url` is set, else the built-in test mode.
pub fn payment_provider(
    config: &Config,
    breakers: &resilience::BreakerRegistry,
    clock: Arc<dyn resilience::Clock>,
) -> anyhow::Result<Arc<dyn shop::orders::PaymentProvider>> {
    let (Some(url), Some(secret)) = (&config.payments.url, &config.payments.secret) else {
        tracing::warn!("no payments.url: the built-in TEST MODE provider approves every order and charges nothing");
        return Ok(Arc::new(shop::orders::TestModePayments::new()));
    };
    let mut http = integration::IntegrationConfig::new("payments", url);
    http.total_timeout = Duration::from_secs(config.payments.timeout_secs);
    http.attempt_timeout = Duration::from_secs(config.payments.attempt_timeout_secs);
    http.max_concurrent = config.payments.max_concurrent;
    let mut provider = payments::HttpPayments::new(http, secret.expose().to_owned(), clock)
        .map_err(|error| anyhow::anyhow!("payments: {error}"))?;
    if let Some(signing) = &config.payments.webhook_secret {
        let secrets = std::iter::once(signing)
            .chain(&config.payments.webhook_previous_secret)
            .map(|secret| secret.expose().to_owned())
            .collect();
        let tolerance = Duration::from_secs(config.payments.webhook_tolerance_secs);
        let verifier = payments::WebhookVerifier::new(secrets, tolerance)
            .map_err(|problem| anyhow::anyhow!("payments.webhook_secret: {problem}"))?;
        provider = provider.with_webhooks(&config.payments.name, verifier);
        tracing::info!(
            path = format!("/api/v1/payment-webhooks/{}", config.payments.name),
            "payment webhooks accepted"
        );
    } else {
        tracing::warn!("no payments.webhook_secret: payment webhooks are refused; unknown outcomes settle by polling");
    }
    breakers.register(Arc::clone(provider.breaker()))?;
    tracing::info!(url = url.as_str(), "payments through the HTTP provider");
    Ok(Arc::new(provider))
}

/// The order service as configured.
pub fn order_service(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    payments: Arc<dyn shop::orders::PaymentProvider>,
) -> shop::orders::OrderService {
    let settings = shop::orders::OrderSettings { shop_name: config.mail.shop_name.clone(), ..config.orders.clone() };
    shop::orders::OrderService::new(store, payments, clock, settings)
}

/// The webhook service as configured.
pub fn webhook_service(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> shop::webhooks::WebhookService {
    let webhooks = &config.webhooks;
    let settings = shop::webhooks::WebhookSettings {
        url_policy: shop::webhooks::UrlPolicy {
            allow_insecure: webhooks.allow_insecure_urls,
            allow_private_networks: webhooks.allow_private_networks,
        },
        max_endpoints: webhooks.max_endpoints,
        max_attempts: webhooks.max_attempts,
        disable_after_failures: webhooks.disable_after_failures,
        retention: time::Duration::days(webhooks.retention_days as i64),
        stale_after: stale_delivery_bound(webhooks.max_attempts, config.jobs.retry_max_secs),
    };
    shop::webhooks::WebhookService::new(store, clock, settings)
}

/// How long a live delivery may go unchanged before the purge abandons it: every wait of its
/// job (at most `retry_max_secs` each, jitter included, one per attempt) plus a day for queue
/// backlogs and attempts themselves. An attempt, a deferral or an admin's retry changes it.
fn stale_delivery_bound(max_attempts: u32, retry_max_secs: u64) -> time::Duration {
    let waits = u64::from(max_attempts).saturating_mul(retry_max_secs);
    time::Duration::seconds(i64::try_from(waits).unwrap_or(i64::MAX / 2)) + time::Duration::days(1)
}

/// The per-endpoint HTTP clients of webhook deliveries; their breakers (`webhook-{id}`) join
/// `breakers` as endpoints are first delivered to.
pub fn webhook_clients(
    config: &Config,
    breakers: &resilience::BreakerRegistry,
    clock: Arc<dyn resilience::Clock>,
) -> Arc<dyn shop::webhooks::WebhookSender> {
    Arc::new(webhooks::WebhookClients::new(
        breakers.clone(),
        clock,
        Duration::from_secs(config.webhooks.timeout_secs),
        config.webhooks.max_concurrent,
        config.webhooks.allow_private_networks,
    ))
}

/// The configured OpenID Connect providers, their breakers registered (`oidc-{name}`). Nothing
/// is fetched yet: a provider down at startup only fails its own sign-ins.
fn identity_providers(
    config: &Config,
    breakers: &resilience::BreakerRegistry,
    clock: Arc<dyn resilience::Clock>,
) -> anyhow::Result<shop_api::IdentityProviders> {
    let mut providers: std::collections::BTreeMap<String, Arc<dyn shop::ports::IdentityProvider>> =
        std::collections::BTreeMap::new();
    for (name, provider) in &config.oidc.providers {
        let mut http = integration::IntegrationConfig::new(&format!("oidc-{name}"), &provider.issuer);
        http.total_timeout = Duration::from_secs(config.oidc.timeout_secs);
        http.attempt_timeout = http.attempt_timeout.min(http.total_timeout);
        let settings = oidc::OidcConfig {
            name: name.clone(),
            issuer: provider.issuer.clone(),
            client_id: provider.client_id.clone(),
            client_secret: provider.client_secret.as_ref().map(|secret| secret.expose().to_owned()),
            redirect_url: provider.redirect_url.clone(),
            scopes: provider.scopes.clone().unwrap_or_else(|| vec!["email".into(), "profile".into()]),
            metadata_ttl: Duration::from_secs(config.oidc.metadata_ttl_secs),
            http,
        };
        let client = oidc::OidcProvider::new(settings, Arc::clone(&clock))
            .map_err(|error| anyhow::anyhow!("oidc.providers.{name}: {error}"))?;
        breakers.register(Arc::clone(client.breaker()))?;
        tracing::info!(
            provider = name.as_str(),
            issuer = provider.issuer.as_str(),
            "OpenID Connect provider configured"
        );
        providers.insert(name.clone(), Arc::new(client));
    }
    Ok(Arc::new(providers))
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
        let accounts = account_service(&config, Arc::clone(&store), Arc::clone(&clock)).with_cache(&cache);
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
        });
        // The state adds the caches of rendered bodies to the services' own.
        let caches = state.caches();
        let public_router = shop_api::public_router(state.clone()).map_err(|problem| anyhow::anyhow!(problem))?;
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
            AdminSettings { token: config.admin.token.as_ref().map(|t| t.expose().to_owned()), metrics },
        );
        let mut public_server = tokio::spawn(
            axum::serve(public, public_router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(stop_accepting.clone().cancelled_owned())
                .into_future(),
        );
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

/// The shared cache tier on Redis, when Redis is configured and the shared tier (and caching)
/// is on.
fn shared_cache_tier(
    config: &Config,
    breaker: Option<&Arc<resilience::CircuitBreaker>>,
) -> anyhow::Result<Option<Arc<redis_cache::RedisCache>>> {
    let (Some(url), Some(breaker)) = (&config.redis.url, breaker) else { return Ok(None) };
    if !(config.cache.enabled && config.cache.shared) {
        return Ok(None);
    }
    let tier = redis_cache::RedisCache::new(
        &redis_cache::RedisCacheSettings {
            url: url.expose().to_owned(),
            timeout: Duration::from_millis(config.redis.timeout_ms),
            key_prefix: config.redis.key_prefix.clone(),
        },
        Arc::clone(breaker),
    )
    .map_err(|error| anyhow::anyhow!("redis.url: {error}"))?;
    tracing::info!("shared cache tier: redis");
    Ok(Some(Arc::new(tier)))
}

/// The breaker in front of Redis: after half of 10+ recent calls fail (or all are slower than
/// the command timeout), calls stop for 1 s, doubling up to 30 s while Redis stays down, so an
/// outage costs requests no timeouts once it is known.
fn redis_breaker_config(timeout: Duration) -> resilience::CircuitBreakerConfig {
    resilience::CircuitBreakerConfig {
        window: resilience::SlidingWindow::Count(20),
        minimum_calls: 10,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration: timeout,
        open_wait: resilience::OpenWait::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(30),
        },
        half_open_calls: 1,
        ..resilience::CircuitBreakerConfig::new("redis")
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
