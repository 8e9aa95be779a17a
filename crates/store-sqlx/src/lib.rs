//! What the SQL storage adapters share, generic over the sqlx database: running, reverting and
//! listing migrations, counting tasks that wait for a pooled connection, and the rules of stock
//! reservations.

#![forbid(unsafe_code)]

pub mod reservations;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;
use shop::StoreError;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

/// Applies every pending migration.
pub async fn migrate_up<DB>(pool: &Pool<DB>, migrator: &Migrator) -> anyhow::Result<()>
where
    DB: Database,
    DB::Connection: Migrate,
{
    migrator.run(pool).await.context("failed to apply migrations")
}

/// Reverts the most recently applied migration; returns its version, or `None` if none was applied.
pub async fn migrate_down<DB>(pool: &Pool<DB>, migrator: &Migrator) -> anyhow::Result<Option<i64>>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let applied = applied_versions(pool, migrator).await?;
    let Some(&latest) = applied.last() else { return Ok(None) };
    let target = applied.iter().rev().nth(1).copied().unwrap_or(0);
    migrator.undo(pool, target).await.context("failed to revert the migration")?;
    Ok(Some(latest))
}

/// Every known migration and whether it is applied, oldest first.
pub async fn migration_status<DB>(pool: &Pool<DB>, migrator: &Migrator) -> anyhow::Result<Vec<MigrationState>>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let applied = applied_versions(pool, migrator).await?;
    Ok(migrator
        .iter()
        .filter(|migration| migration.migration_type.is_up_migration())
        .map(|migration| MigrationState {
            version: migration.version,
            description: migration.description.to_string(),
            applied: applied.contains(&migration.version),
        })
        .collect())
}

async fn applied_versions<DB>(pool: &Pool<DB>, migrator: &Migrator) -> anyhow::Result<Vec<i64>>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let mut conn = pool.acquire().await.context("failed to acquire a database connection")?;
    conn.ensure_migrations_table(&migrator.table_name).await.context("failed to create the migrations table")?;
    let mut versions: Vec<i64> = conn
        .list_applied_migrations(&migrator.table_name)
        .await
        .context("failed to list applied migrations")?
        .into_iter()
        .map(|migration| migration.version)
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Counts the tasks waiting for a pooled connection (sqlx does not report it), for the
/// `db_pool_connections{state="waiting"}` metric.
#[derive(Debug, Clone, Default)]
pub struct PoolWaiters(Arc<AtomicU32>);

impl PoolWaiters {
    /// A connection from `pool`, counting this task as waiting until the pool hands it over
    /// (or the wait is cancelled or times out).
    pub async fn acquire<DB: Database>(&self, pool: &Pool<DB>) -> Result<PoolConnection<DB>, StoreError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        let _waiting = Decrement(&self.0);
        pool.acquire().await.context("failed to acquire a database connection").map_err(StoreError::other)
    }

    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Decrement<'a>(&'a AtomicU32);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
