//! Opening the embedded SQLite database: WAL journal, `synchronous=NORMAL`, foreign keys on,
//! reads through a memory map, and a busy timeout, so concurrent writers (each in a `BEGIN IMMEDIATE` transaction) queue instead
//! of failing. Also the pragmas a test or `shopkeep doctor` may want to see.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{Pool, SqlStore};

/// The SQLite schema migrations, embedded in the binary.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The most of the database file each connection maps into memory (256 MiB).
const MMAP_SIZE: u64 = 256 * 1024 * 1024;

/// Connection settings for [`SqlStore::sqlite`].
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

impl SqlStore {
    /// Opens (creating when missing) the SQLite database of `settings`.
    pub async fn sqlite(settings: &SqliteSettings) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(&settings.url)
            .context("invalid SQLite database URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(settings.busy_timeout)
            // Read the database through a shared memory map rather than `pread` into each
            // connection's small page cache: profiling search at 20k products showed a third
            // of its time copying pages from the kernel. Address space, not memory: pages are
            // the OS page cache's, shared by every connection.
            .pragma("mmap_size", MMAP_SIZE.to_string());
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
        Ok(Self::new(Pool::Sqlite(pool)))
    }

    /// SQLite's journal mode and whether foreign keys are enforced, as a connection sees them;
    /// an error on PostgreSQL.
    pub async fn sqlite_pragmas(&self) -> anyhow::Result<(String, bool)> {
        let Pool::Sqlite(pool) = &self.pool else { anyhow::bail!("not an SQLite database") };
        let mut conn = pool.acquire().await.context("failed to acquire a database connection")?;
        let journal_mode: String =
            sqlx::query_scalar("pragma journal_mode").fetch_one(&mut *conn).await.context("pragma journal_mode")?;
        let foreign_keys: bool =
            sqlx::query_scalar("pragma foreign_keys").fetch_one(&mut *conn).await.context("pragma foreign_keys")?;
        Ok((journal_mode, foreign_keys))
    }
}
