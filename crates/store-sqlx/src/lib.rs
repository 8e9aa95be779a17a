//! Shopkeep's one SQL storage adapter: every repository port implemented once, for SQLite (the
//! embedded default) and PostgreSQL (scale-out), with a small dialect seam for what truly differs.

#![forbid(unsafe_code)]

mod account_tokens;
mod accounts;
mod carts;
mod catalog;
mod codec;
mod dialect;
mod exec;
mod external_logins;
mod flags;
mod idempotency;
mod jobs;
mod mail;
mod migrations;
mod orders;
pub mod postgres;
mod replicas;
pub mod reservations;
mod search;
mod search_index;
mod sqlite;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;
use async_trait::async_trait;
use shop::StoreError;
use shop::ports::{PoolStats, StoreHealth};
use sqlx::{PgPool, SqlitePool};

pub use migrations::MigrationState;
pub use postgres::{PostgresSettings, listen_for_jobs, provisioning};
pub use replicas::{ReplicaSettings, ReplicaStatus};
pub use sqlite::SqliteSettings;

use crate::dialect::Dialect;
use crate::exec::{Connection, Executor as _, Row, Statement};

/// The storage adapter: implements every repository port of `shop` on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    pool: Pool,
    waiting: PoolWaiters,
    /// Announces committed job inserts (their queue) to this process's worker. SQLite has no
    /// NOTIFY and a worker in another process polls; on PostgreSQL nobody subscribes (workers
    /// LISTEN), and an announcement without a receiver is dropped.
    jobs_enqueued: tokio::sync::broadcast::Sender<String>,
    /// How product and category text is analysed for the search index.
    analyzer: shop::search::Analyzer,
    /// This process's cache generations, bumped after every catalog write this store commits
    /// (the database's own counter is bumped by triggers, for the other instances).
    generations: Arc<shop::cache::Generations>,
    /// PostgreSQL: whether connections are server sessions or PgBouncer's transaction-mode
    /// stand-ins.
    pooling: exec::Pooling,
    /// PostgreSQL read replicas for catalog and search reads, when configured.
    replicas: Option<Arc<replicas::Replicas>>,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl SqlStore {
    fn new(pool: Pool) -> Self {
        let (jobs_enqueued, _) = tokio::sync::broadcast::channel(256);
        Self {
            pool,
            waiting: PoolWaiters::default(),
            jobs_enqueued,
            analyzer: shop::search::Analyzer::default(),
            generations: Arc::default(),
            pooling: exec::Pooling::Session,
            replicas: None,
        }
    }

    /// Analyses catalog text for the search index with `analyzer` (default: English stemming).
    /// An index built with another analysis must be rebuilt.
    pub fn with_search_analyzer(mut self, analyzer: shop::search::Analyzer) -> Self {
        self.analyzer = analyzer;
        self
    }

    /// Called after a transaction that wrote products or categories committed: cached catalog
    /// reads of this process are stale from now on.
    fn catalog_written(&self) {
        self.generations.bump(shop::cache::Family::Catalog);
    }

    /// Called after a transaction that changed users, sessions or API tokens committed: cached
    /// sign-ins of this process are stale from now on (a logout, a role change, a disabled
    /// account take effect at the next request).
    fn accounts_written(&self) {
        self.generations.bump(shop::cache::Family::Accounts);
    }

    /// [`SqlStore::execute_write`], then [`SqlStore::accounts_written`].
    async fn accounts_write(&self, statement: Statement) -> Result<u64, StoreError> {
        let affected = self.execute_write(statement).await?;
        self.accounts_written();
        Ok(affected)
    }

    fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Applies every pending migration.
    pub async fn migrate_up(&self) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Sqlite(pool) => migrations::up(pool, &sqlite::MIGRATOR).await,
            Pool::Postgres(pool) => migrations::up(pool, &postgres::MIGRATOR).await,
        }
    }

    /// Reverts the most recently applied migration; returns its version, or `None` if none was applied.
    pub async fn migrate_down(&self) -> anyhow::Result<Option<i64>> {
        match &self.pool {
            Pool::Sqlite(pool) => migrations::down(pool, &sqlite::MIGRATOR).await,
            Pool::Postgres(pool) => migrations::down(pool, &postgres::MIGRATOR).await,
        }
    }

    /// Every known migration and whether it is applied, oldest first.
    pub async fn migration_status(&self) -> anyhow::Result<Vec<MigrationState>> {
        match &self.pool {
            Pool::Sqlite(pool) => migrations::status(pool, &sqlite::MIGRATOR).await,
            Pool::Postgres(pool) => migrations::status(pool, &postgres::MIGRATOR).await,
        }
    }

    /// A pooled connection, counted as "waiting" until the pool hands it over.
    async fn connection(&self) -> Result<Connection, StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => self.waiting.acquire(pool).await.map(Connection::Sqlite),
            Pool::Postgres(pool) => {
                self.waiting.acquire(pool).await.map(|conn| Connection::Postgres(conn, self.pooling.clone()))
            }
        }
    }

    /// Runs one writing statement; returns the rows affected. In SQLite it runs in its own
    /// `BEGIN IMMEDIATE` transaction (a statement that reads before it writes could otherwise
    /// fail on lock upgrade instead of waiting); in PostgreSQL it runs on its own.
    async fn execute_write(&self, statement: Statement) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        match conn.dialect() {
            Dialect::Sqlite => {
                let mut tx = conn.begin_write().await?;
                let affected = tx.execute(statement).await.map_err(codec::error("failed to write"))?;
                tx.commit().await?;
                Ok(affected)
            }
            Dialect::Postgres => conn.execute(statement).await.map_err(codec::error("failed to write")),
        }
    }

    /// Runs one writing statement that returns rows (`returning …`), in its own transaction
    /// on SQLite as [`SqlStore::execute_write`] does.
    async fn write_returning<R: Row>(&self, statement: Statement, context: &'static str) -> Result<Vec<R>, StoreError> {
        let mut conn = self.connection().await?;
        match conn.dialect() {
            Dialect::Sqlite => {
                let mut tx = conn.begin_write().await?;
                let rows = tx.fetch_all(statement).await.map_err(codec::error(context))?;
                tx.commit().await?;
                Ok(rows)
            }
            Dialect::Postgres => conn.fetch_all(statement).await.map_err(codec::error(context)),
        }
    }

    /// The statement timeout the server applies to this store's statements (`current_setting`),
    /// read the way every statement runs: behind PgBouncer, in a transaction of its own. `None`
    /// on SQLite, which has none (its busy timeout is the driver's).
    pub async fn statement_timeout_in_effect(&self) -> Result<Option<String>, StoreError> {
        if self.dialect() == Dialect::Sqlite {
            return Ok(None);
        }
        let mut conn = self.connection().await?;
        conn.fetch_scalar(exec::sql("select current_setting('statement_timeout')"))
            .await
            .map(Some)
            .map_err(codec::error("failed to read the statement timeout"))
    }

    /// Tells listeners (the in-process worker) that jobs of these queues were committed.
    fn announce_jobs<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        for queue in queues {
            // No receiver (no worker in this process, or PostgreSQL's NOTIFY in use) is fine:
            // polling finds the job.
            let _ = self.jobs_enqueued.send(queue.to_owned());
        }
    }
}

#[async_trait]
impl shop::ports::CacheVersions for SqlStore {
    fn generations(&self) -> Arc<shop::cache::Generations> {
        Arc::clone(&self.generations)
    }

    async fn stored_generation(&self, family: shop::cache::Family) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let generation: i64 = conn
            .fetch_scalar(
                exec::sql(
                    "select cast(coalesce(sum(generation), 0) as bigint) from cache_generations where family = $1",
                )
                .bind(family.as_str()),
            )
            .await
            .map_err(codec::error("failed to read the cache generation"))?;
        Ok(codec::count(generation))
    }
}

#[async_trait]
impl StoreHealth for SqlStore {
    fn replicas(&self) -> Vec<shop::ports::ReplicaHealth> {
        self.replica_statuses()
            .into_iter()
            .map(|status| shop::ports::ReplicaHealth {
                name: status.name,
                fresh: status.fresh,
                serving: status.serving,
                lag_seconds: status.lag.map(|lag| lag.as_secs_f64()),
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        conn.execute(exec::sql("select 1")).await.map(|_| ()).map_err(codec::error("ping failed"))
    }

    fn pool_stats(&self) -> PoolStats {
        let (size, idle, max_size) = match &self.pool {
            Pool::Sqlite(pool) => (pool.size(), pool.num_idle(), pool.options().get_max_connections()),
            Pool::Postgres(pool) => (pool.size(), pool.num_idle(), pool.options().get_max_connections()),
        };
        PoolStats { size, idle: u32::try_from(idle).unwrap_or(u32::MAX), waiting: self.waiting.count(), max_size }
    }

    fn backend(&self) -> &'static str {
        self.dialect().name()
    }

    async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// Counts the tasks waiting for a pooled connection (sqlx does not report it), for the
/// `db_pool_connections{state="waiting"}` metric.
#[derive(Debug, Clone, Default)]
struct PoolWaiters(Arc<AtomicU32>);

impl PoolWaiters {
    /// A connection from `pool`, counting this task as waiting until the pool hands it over
    /// (or the wait is cancelled or times out).
    async fn acquire<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> Result<sqlx::pool::PoolConnection<DB>, StoreError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        let _waiting = Decrement(&self.0);
        pool.acquire().await.context("failed to acquire a database connection").map_err(StoreError::other)
    }

    fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Decrement<'a>(&'a AtomicU32);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
