//! PostgreSQL storage adapter: for shops that outgrow one machine. Statement timeout set on every
//! connection; optional PgBouncer compatibility (no named prepared statements).

#![forbid(unsafe_code)]

mod account_tokens;
mod accounts;
mod carts;
mod catalog;
mod codec;
mod external_logins;
mod idempotency;
mod jobs;
mod mail;
mod notifications;
mod orders;
pub mod provisioning;
mod webhooks;

pub use notifications::listen_for_jobs;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use shop::StoreError;
use shop::ports::{PoolStats, StoreHealth};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
pub use store_sqlx::MigrationState;
use store_sqlx::PoolWaiters;

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connection settings for [`PostgresStore::connect`].
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    pub max_connections: u32,
    /// Connections kept open even when idle, so the first requests after a lull are fast.
    pub min_connections: u32,
    /// How long a caller waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// The server cancels any statement running longer than this.
    pub statement_timeout: Duration,
    /// Behind PgBouncer in transaction mode: disable the prepared-statement cache.
    pub pgbouncer: bool,
}

/// The PostgreSQL implementation of every storage port.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    waiting: PoolWaiters,
}

impl PostgresStore {
    pub async fn connect(settings: &PostgresSettings) -> anyhow::Result<Self> {
        let statement_timeout = format!("{}ms", settings.statement_timeout.as_millis());
        let mut options = PgConnectOptions::from_str(&settings.url)
            .context("invalid PostgreSQL database URL")?
            .application_name("shopkeep")
            .options([("statement_timeout", statement_timeout.as_str())]);
        if settings.pgbouncer {
            options = options.statement_cache_capacity(0);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .context("failed to connect to PostgreSQL")?;
        Ok(Self { pool, waiting: PoolWaiters::default() })
    }

    /// Applies every pending migration.
    pub async fn migrate_up(&self) -> anyhow::Result<()> {
        store_sqlx::migrate_up(&self.pool, &MIGRATOR).await
    }

    /// Reverts the most recently applied migration; returns its version, or `None` if none was applied.
    pub async fn migrate_down(&self) -> anyhow::Result<Option<i64>> {
        store_sqlx::migrate_down(&self.pool, &MIGRATOR).await
    }

    /// Every known migration and whether it is applied.
    pub async fn migration_status(&self) -> anyhow::Result<Vec<MigrationState>> {
        store_sqlx::migration_status(&self.pool, &MIGRATOR).await
    }

    /// A pooled connection, counted as "waiting" until the pool hands it over.
    async fn connection(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        self.waiting.acquire(&self.pool).await
    }

    /// Runs one statement; returns the rows affected.
    async fn execute(
        &self,
        sql: &'static str,
        bind: impl for<'q> FnOnce(PgQuery<'q>) -> PgQuery<'q> + Send,
    ) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let result = bind(sqlx::query(sql)).execute(&mut *conn).await.map_err(codec::error("failed to write"))?;
        Ok(result.rows_affected())
    }
}

/// The query type the write helper hands to its binder.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

#[async_trait]
impl StoreHealth for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        sqlx::query("select 1").execute(&mut *conn).await.map(|_| ()).map_err(codec::error("ping failed"))
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            waiting: self.waiting.count(),
            max_size: self.pool.options().get_max_connections(),
        }
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
