//! SQLite storage adapter: the embedded default. WAL journal, foreign keys on, a busy timeout,
//! and `BEGIN IMMEDIATE` for every write transaction so concurrent writers queue instead of failing.

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
mod orders;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use shop::StoreError;
use shop::ports::{PoolStats, StoreHealth};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
pub use store_sqlx::MigrationState;
use store_sqlx::PoolWaiters;

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connection settings for [`SqliteStore::connect`].
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// `sqlite://path/to/file.db` (the file and its directory are created when missing).
    pub url: String,
    pub max_connections: u32,
    /// How long a caller waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// How long a statement waits for a lock held by another connection.
    pub busy_timeout: Duration,
}

/// The SQLite implementation of every storage port.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    waiting: PoolWaiters,
    /// Announces committed job inserts (their queue) to this process's worker: SQLite has no
    /// NOTIFY, and a worker in another process polls.
    jobs_enqueued: tokio::sync::broadcast::Sender<String>,
}

impl SqliteStore {
    pub async fn connect(settings: &SqliteSettings) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(&settings.url)
            .context("invalid SQLite database URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(settings.busy_timeout);
        if let Some(parent) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("failed to create the database directory {}", parent.display()))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .context("failed to open the SQLite database")?;
        let (jobs_enqueued, _) = tokio::sync::broadcast::channel(256);
        Ok(Self { pool, waiting: PoolWaiters::default(), jobs_enqueued })
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

    /// The journal mode and whether foreign keys are enforced, as a connection sees them.
    pub async fn pragmas(&self) -> anyhow::Result<(String, bool)> {
        let mut conn = self.pool.acquire().await.context("failed to acquire a database connection")?;
        let journal_mode: String =
            sqlx::query_scalar("pragma journal_mode").fetch_one(&mut *conn).await.context("pragma journal_mode")?;
        let foreign_keys: bool =
            sqlx::query_scalar("pragma foreign_keys").fetch_one(&mut *conn).await.context("pragma foreign_keys")?;
        Ok((journal_mode, foreign_keys))
    }

    /// Tells listeners (the in-process worker) that jobs of these queues were committed.
    fn announce_jobs<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        for queue in queues {
            // No receiver (no worker in this process) is fine: polling finds the job.
            let _ = self.jobs_enqueued.send(queue.to_owned());
        }
    }

    /// A pooled connection, counted as "waiting" until the pool hands it over.
    async fn connection(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        self.waiting.acquire(&self.pool).await
    }

    /// A write transaction begun with `BEGIN IMMEDIATE`: the write lock is taken up front, so a
    /// transaction that reads and then writes can never fail on lock upgrade; other writers wait
    /// (up to the busy timeout) instead of failing.
    async fn begin_write(conn: &mut PoolConnection<Sqlite>) -> Result<Transaction<'_, Sqlite>, StoreError> {
        sqlx::Connection::begin_with(&mut **conn, "begin immediate")
            .await
            .context("failed to begin a write transaction")
            .map_err(StoreError::other)
    }
}

/// The query type the write helper hands to its binder.
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

impl SqliteStore {
    /// Runs one statement in its own `BEGIN IMMEDIATE` transaction; returns the rows affected.
    async fn execute_write(
        &self,
        sql: &'static str,
        bind: impl for<'q> FnOnce(SqliteQuery<'q>) -> SqliteQuery<'q> + Send,
    ) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let mut tx = Self::begin_write(&mut conn).await?;
        let result = bind(sqlx::query(sql)).execute(&mut *tx).await.map_err(codec::error("failed to write"))?;
        commit(tx).await?;
        Ok(result.rows_affected())
    }
}

async fn commit(tx: Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    tx.commit().await.context("failed to commit").map_err(StoreError::other)
}

/// Ends a transaction that found nothing to do, releasing its locks now rather than when the
/// connection is next used.
async fn roll_back(tx: Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    tx.rollback().await.context("failed to roll back").map_err(StoreError::other)
}

#[async_trait]
impl StoreHealth for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        sqlx::query("select 1").execute(&mut *conn).await.map(|_| ()).map_err(codec::error("ping failed"))
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        PoolStats {
            size,
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            waiting: self.waiting.count(),
            max_size: self.pool.options().get_max_connections(),
        }
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
