//! Building the parts of an instance from its configuration: the store (with replicas), the
//! services, the outbound clients (payments, webhooks, identity providers) and the shared cache tier.

use std::sync::Arc;
use std::time::Duration;

use shop::accounts::{AccountService, AccountSettings, PasswordHasher};
use shop::{Clock, Store};
use store_sqlx::{PostgresSettings, SqlStore, SqliteSettings};

use crate::config::{Backend, Config};

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
pub(super) fn with_replicas(config: &Config, store: Arc<SqlStore>) -> anyhow::Result<Arc<SqlStore>> {
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
pub(super) fn identity_providers(
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

/// The shared cache tier on Redis, when Redis is configured and the shared tier (and caching)
/// is on.
pub(super) fn shared_cache_tier(
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
pub(super) fn redis_breaker_config(timeout: Duration) -> resilience::CircuitBreakerConfig {
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
