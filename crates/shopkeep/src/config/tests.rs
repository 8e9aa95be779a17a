//! Tests of loading and validating the whole configuration.

#![allow(clippy::unwrap_used)]

use super::*;

fn with_toml(toml: &str) -> Result<Config, ConfigErrors> {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("shopkeep.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(Some(&path))
}

#[test]
fn defaults_are_valid_and_embedded() {
    let config = with_toml("").unwrap();
    assert_eq!(config.backend(), Ok(Backend::Sqlite));
    assert!(config.migrate_on_start());
    assert_eq!(config.listen(), "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.shutdown_timeout(), Duration::from_secs(30));
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = with_toml(
        r#"
        [server]
        listen = "nowhere"
        admin_listen = "0.0.0.0:9090"
        [http]
        allowed_origins = ["*", "https://ok.example"]
        body_limit_bytes = 10
        [database]
        url = "mysql://x"
        [log]
        format = "xml"
        "#,
    )
    .unwrap_err();
    let text = errors.to_string();
    for expected in
        ["server.listen", "admin.token", "http.allowed_origins", "body_limit_bytes", "database.url", "log.format"]
    {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert_eq!(errors.0.len(), 6, "{text}");
}

#[test]
fn unknown_keys_and_wrong_types_are_errors() {
    let errors = with_toml("[server]\nlisten = 5\nbogus = true\n").unwrap_err();
    assert!(errors.to_string().contains("bogus") || errors.to_string().contains("listen"), "{errors}");
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let directory = tempfile::tempdir().unwrap();
    let secret_path = directory.path().join("token");
    std::fs::write(&secret_path, "a-very-long-admin-token\n").unwrap();
    let config = with_toml(&format!(
        "[admin]\ntoken_file = {:?}\n[database]\nurl = \"postgres://shop:hunter2hunter2@db/shop\"\n",
        secret_path.display().to_string()
    ))
    .unwrap();
    assert_eq!(config.admin.token.as_ref().map(Secret::expose), Some("a-very-long-admin-token"));
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("a-very-long-admin-token"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres://shop:%5Bredacted%5D@db/shop") || shown.contains("[redacted]"), "{shown}");
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn oidc_providers_are_validated_and_their_secrets_never_print() {
    let directory = tempfile::tempdir().unwrap();
    let secret_path = directory.path().join("client-secret");
    std::fs::write(&secret_path, "a-client-secret\n").unwrap();
    let config = with_toml(&format!(
        r#"
        [oidc.providers.google]
        issuer = "https://accounts.google.com"
        client_id = "shop"
        client_secret_file = {:?}
        redirect_url = "https://shop.example/api/v1/auth/oidc/google/callback"
        "#,
        secret_path.display().to_string()
    ))
    .unwrap();
    let google = &config.oidc.providers["google"];
    assert_eq!(google.client_secret.as_ref().map(Secret::expose), Some("a-client-secret"));
    assert!(!config.to_redacted_toml().contains("a-client-secret"));
    let errors = with_toml(
        r#"
        [oidc.providers."Bad Name"]
        issuer = "http://idp.example"
        redirect_url = "https://shop.example/elsewhere"
        scopes = ["email profile"]
        "#,
    )
    .unwrap_err()
    .to_string();
    for problem in ["the name must be", "must be an https:// URL", "client_id: is required", "redirect_url", "scopes"] {
        assert!(errors.contains(problem), "{problem} missing:\n{errors}");
    }
}

#[test]
fn a_payment_provider_needs_a_secure_url_and_a_secret() {
    let errors = with_toml("[payments]\nurl = \"http://payments.example\"\n[orders]\nsettle_after_secs = 7200\n")
        .unwrap_err()
        .to_string();
    for problem in ["payments.url: must be an https://", "payments.secret: is required", "orders.settle_after_secs"] {
        assert!(errors.contains(problem), "{problem} missing:\n{errors}");
    }
    let config = with_toml("[payments]\nurl = \"https://payments.example\"\nsecret = \"sk_live_abc\"\n").unwrap();
    assert!(!config.to_redacted_toml().contains("sk_live_abc"));
}

#[test]
fn recurring_jobs_take_cron_schedules() {
    let config = with_toml("[jobs.schedules]\n\"mail.purge_outbox\" = \"30 3 * * *\"\n").unwrap();
    assert_eq!(config.jobs.schedules["mail.purge_outbox"], "30 3 * * *");
    let errors = with_toml("[jobs.schedules]\n\"mail.purge\" = \"@daily\"\n\"sessions.purge\" = \"61 * * * *\"\n")
        .unwrap_err()
        .to_string();
    assert!(errors.contains("no such recurring job"), "{errors}");
    assert!(errors.contains("is not a cron expression"), "{errors}");
}

#[test]
fn a_secret_and_its_file_together_are_refused() {
    let errors =
        with_toml("[admin]\ntoken = \"a-long-enough-token\"\ntoken_file = \"/run/secrets/token\"\n").unwrap_err();
    assert!(errors.to_string().contains("not both"), "{errors}");
}

#[test]
fn absurd_values_are_refused_before_they_can_panic() {
    let errors = with_toml(
        "[accounts]\nsession_purge_interval_secs = 9000000000000000000\n[database]\nacquire_timeout_secs = 99999999999\n[http]\nmax_in_flight = 999999999999\n",
    )
    .unwrap_err();
    let text = errors.to_string();
    for key in ["session_purge_interval_secs", "acquire_timeout_secs", "max_in_flight"] {
        assert!(text.contains(key), "{key} missing:\n{text}");
    }
}

#[test]
fn missing_secret_file_is_a_problem() {
    let errors = with_toml("[admin]\ntoken_file = \"/nonexistent/token\"\n").unwrap_err();
    assert!(errors.to_string().contains("admin.token_file"), "{errors}");
}

#[test]
fn orders_are_read_into_the_order_settings_with_their_defaults() {
    let defaults = OrderSettings::default();
    let config = with_toml("[orders]\nsettle_after_secs = 90\nabandoned_cart_ttl_days = 7\n").unwrap();
    assert_eq!(config.orders.settle_after, time::Duration::seconds(90));
    assert_eq!(config.orders.abandoned_cart_ttl, time::Duration::days(7));
    assert_eq!(config.orders.pending_payment_timeout, defaults.pending_payment_timeout);
    assert_eq!(config.orders.idempotency_ttl, defaults.idempotency_ttl);
    assert_eq!(config.orders.idempotency_lock, defaults.idempotency_lock);
    assert_eq!(config.orders.payment_event_retention, defaults.payment_event_retention);
    let shown = config.to_redacted_toml();
    for line in ["settle_after_secs = 90", "abandoned_cart_ttl_days = 7", "pending_payment_timeout_minutes = 30"] {
        assert!(shown.contains(line), "{line} missing:\n{shown}");
    }
    let orders = shown.split("[orders]\n").nth(1).and_then(|rest| rest.split("\n[").next()).unwrap();
    assert_eq!(orders.lines().count(), 6, "the six keys, no shop_name:\n{orders}");
    let errors = with_toml("[orders]\nshop_name = \"x\"\n").unwrap_err().to_string();
    assert!(errors.contains("unknown field: found `shop_name`"), "{errors}");
    let errors = with_toml("[orders]\nidempotency_ttl_hours = 9000000000000000000\n").unwrap_err().to_string();
    assert!(errors.contains("orders.idempotency_ttl_hours: must be between 1 and 720"), "{errors}");
}

#[test]
fn rate_limits_are_read_into_the_limiter_settings_by_scope() {
    use shop_api::RateLimitScope;
    let config = with_toml(
        "[rate_limits]\nlockout_secs = 60\ntrusted_proxies = [\"10.0.0.0/8\"]\n[rate_limits.mail_per_account]\ncount = 1\nperiod_secs = 600\n",
    )
    .unwrap();
    let limits = &config.rate_limits;
    assert_eq!(limits.quotas[RateLimitScope::MailPerAccount], resilience::Quota::new(1, Duration::from_secs(600)));
    assert_eq!(limits.quotas[RateLimitScope::PerIp], RateLimitScope::PerIp.default_quota());
    assert_eq!(limits.lockout_duration, Duration::from_secs(60));
    let shown = config.to_redacted_toml();
    assert!(shown.contains("[rate_limits.mail_per_account]\ncount = 1\nperiod_secs = 600\n"), "{shown}");
    assert!(shown.contains("lockout_secs = 60"), "{shown}");
    let errors = with_toml(
        "[rate_limits]\non_redis_failure = \"maybe\"\ntrusted_proxies = [\"proxy\"]\nstaff = { count = 0, period_secs = 60 }\n[server]\nlisten = \"nowhere\"\n",
    )
    .unwrap_err();
    let text = errors.to_string();
    for problem in [
        "rate_limits.on_redis_failure: \"maybe\" must be open or closed",
        "rate_limits.trusted_proxies: \"proxy\" is not an address or CIDR range",
        "rate_limits.staff: count must be 1-10000000 and period_secs 1-86400",
        "server.listen",
    ] {
        assert!(text.contains(problem), "{problem} missing:\n{text}");
    }
    assert_eq!(errors.0.len(), 4, "{text}");
    let unknown = with_toml("[rate_limits.per_ipp]\ncount = 1\nperiod_secs = 1\n").unwrap_err().to_string();
    assert!(unknown.contains("unknown field: found `per_ipp`"), "{unknown}");
}

/// `accounts`, `jobs` and `http` take their defaults from the settings' owners: these are the
/// values the README's configuration table gives, so a change there shows here.
#[test]
fn owner_defaults_are_the_documented_ones() {
    let rendered = Config::default().to_redacted_toml();
    for line in [
        "session_absolute_ttl_hours = 720",
        "session_idle_ttl_hours = 168",
        "link_base_url = \"http://localhost:8080\"",
        "verification_ttl_hours = 48",
        "password_reset_ttl_minutes = 30",
        "login_challenge_ttl_minutes = 15",
        "guest_idle_ttl_hours = 24",
        "login_ttl_minutes = 10",
        "batch_size = 16",
        "poll_interval_ms = 1000",
        "lease_secs = 60",
        "job_timeout_secs = 300",
        "retry_base_secs = 30",
        "retry_max_secs = 3600",
        "succeeded_retention_hours = 24",
        "dead_retention_days = 30",
        "cors_max_age_secs = 86400",
        "body_limit_bytes = 65536",
        "request_timeout_secs = 15",
        "max_in_flight = 512",
        "adaptive_concurrency = false",
        "min_in_flight = 8",
        "catalog_max_age_secs = 60",
    ] {
        assert!(rendered.lines().any(|rendered| rendered == line), "{line} not in\n{rendered}");
    }
    let config = Config::default();
    assert_eq!(config.accounts.login_challenge_roles, ["staff", "admin"]);
    assert_eq!(config.jobs.shutdown_timeout_secs, 30);
    assert!(config.http.allowed_origins.is_empty() && !config.http.https);
}

#[test]
fn the_search_section_is_checked_and_becomes_the_service_settings() {
    let config = with_toml("[search]\nlanguage = \"german\"\nname_boost = 5\ntypo_fallback_below = 3\n").unwrap();
    let settings = config.search.settings();
    assert_eq!(settings.language, shop::search::Language::German);
    assert_eq!(settings.boosts.name, 5);
    assert_eq!(settings.typo_fallback_below, 3);
    let errors = with_toml(
        "[search]\nlanguage = \"klingon\"\ndescription_boost = 1000\none_typo_min_len = 6\ntwo_typos_min_len = 4\n",
    )
    .unwrap_err();
    let text = errors.to_string();
    for expected in ["search.language", "search.description_boost", "search.two_typos_min_len"] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert_eq!(errors.0.len(), 3, "{text}");
}

#[test]
fn the_cache_section_is_checked_and_becomes_the_cache_settings() {
    let config = with_toml(
        "[cache]\ncapacity_mb = 8\nttl_ms = 30000\nttl_jitter = 0.2\nmax_staleness_ms = 250\nlease_ms = 50\n",
    )
    .unwrap();
    let settings = config.cache.settings();
    assert!(settings.enabled);
    assert_eq!(settings.capacity_bytes, 8 * 1024 * 1024);
    assert_eq!(settings.ttl, time::Duration::seconds(30));
    assert_eq!(settings.jitter, 0.2);
    assert_eq!(settings.max_staleness, time::Duration::milliseconds(250));
    assert_eq!(settings.lease, time::Duration::milliseconds(50));
    assert!(config.cache.shared, "the shared tier is on whenever Redis is configured");
    let errors = with_toml(
        "[cache]\ncapacity_mb = 0\nttl_ms = 0\nttl_jitter = 0.9\nmax_staleness_ms = 1\nnegative_ttl_ms = 0\nlease_ms = 0\n",
    )
    .unwrap_err();
    let text = errors.to_string();
    for expected in [
        "cache.capacity_mb",
        "cache.ttl_ms",
        "cache.ttl_jitter",
        "cache.max_staleness_ms",
        "cache.negative_ttl_ms",
        "cache.lease_ms",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert_eq!(errors.0.len(), 6, "{text}");
}

#[test]
fn pgbouncer_settings_are_checked() {
    let errors = with_toml(
        r#"
        [database]
        url = "postgres://shop@db/shop"
        direct_url = "postgres://shop@db-direct/shop"
        "#,
    )
    .unwrap_err();
    assert!(errors.to_string().contains("database.direct_url: only used with database.pgbouncer"), "{errors}");
    let errors = with_toml(
        r#"
        [database]
        url = "sqlite://shop.db"
        pgbouncer = true
        "#,
    )
    .unwrap_err();
    assert!(errors.to_string().contains("database.pgbouncer: only for PostgreSQL"), "{errors}");
    let errors = with_toml(
        r#"
        [database]
        url = "postgres://shop@bouncer:6432/shop"
        pgbouncer = true
        direct_url = "mysql://db/shop"
        "#,
    )
    .unwrap_err();
    assert!(errors.to_string().contains("database.direct_url"), "{errors}");
    let config = with_toml(
        r#"
        [database]
        url = "postgres://shop@bouncer:6432/shop"
        pgbouncer = true
        direct_url = "postgres://shop:secret@db:5432/shop"
        "#,
    )
    .unwrap();
    assert_eq!(config.database.session_url(), Some("postgres://shop:secret@db:5432/shop"));
    assert!(!format!("{config:?}").contains("secret@"), "the direct URL is a secret");
}

#[test]
fn replica_settings_are_checked_and_their_passwords_redacted() {
    let config = with_toml(
        r#"
        [database]
        url = "postgres://shop@db/shop"
        replica_url = "postgres://shop:hunter2@replica-1/shop, postgres://shop:hunter3@replica-2/shop"
        replica_max_lag_ms = 500
        "#,
    )
    .unwrap();
    assert_eq!(config.database.replica_urls().len(), 2);
    assert_eq!(config.database.replica_urls()[1], "postgres://shop:hunter3@replica-2/shop");
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
    let errors = with_toml(
        r#"
        [database]
        url = "sqlite://shop.db"
        replica_url = "mysql://replica/shop"
        replica_check_interval_ms = 2000
        "#,
    )
    .unwrap_err();
    let text = errors.to_string();
    for expected in [
        "database.replica_url: read replicas are for PostgreSQL",
        "database.replica_url: mysql://replica/shop must start with postgres://",
        "database.replica_check_interval_ms: must not exceed",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}
