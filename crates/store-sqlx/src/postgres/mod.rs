//! Connecting to PostgreSQL: a statement timeout on every connection and an optional PgBouncer
//! mode (no named prepared statements); creating and dropping databases (`provisioning`); and
//! LISTEN for job notifications (`notifications`).

mod notifications;
pub mod provisioning;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use notifications::listen_for_jobs;

use crate::{Pool, SqlStore};

/// The PostgreSQL schema migrations, embedded in the binary.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The notification channel a worker listens on; the payload is the queue's name.
pub(crate) const JOBS_CHANNEL: &str = "shopkeep_jobs";

/// Connection settings for [`SqlStore::postgres`].
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

impl SqlStore {
    /// Connects to the PostgreSQL database of `settings`.
    pub async fn postgres(settings: &PostgresSettings) -> anyhow::Result<Self> {
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
        Ok(Self::new(Pool::Postgres(pool)))
    }
}
