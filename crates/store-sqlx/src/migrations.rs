//! Running, reverting and listing the embedded schema migrations, for either backend.

use anyhow::Context as _;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Database, Pool};

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

/// Applies every pending migration.
pub(crate) async fn up<DB>(pool: &Pool<DB>, migrator: &Migrator) -> anyhow::Result<()>
where
    DB: Database,
    DB::Connection: Migrate,
{
    migrator.run(pool).await.context("failed to apply migrations")
}

/// Reverts the most recently applied migration; returns its version, or `None` if none was applied.
pub(crate) async fn down<DB>(pool: &Pool<DB>, migrator: &Migrator) -> anyhow::Result<Option<i64>>
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
pub(crate) async fn status<DB>(pool: &Pool<DB>, migrator: &Migrator) -> anyhow::Result<Vec<MigrationState>>
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
