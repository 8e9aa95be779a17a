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

use crate::exec::Pooling;
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
    /// Behind PgBouncer in transaction mode: no session state at all. Nothing but the user,
    /// database and application name is sent at connect (a stock PgBouncer refuses other startup
    /// parameters), statements are unnamed, and every statement runs in a transaction that sets
    /// the statement timeout for itself (`set local`), since a session setting would stay on
    /// whichever server connection PgBouncer happened to lend, for other clients to inherit.
    pub pgbouncer: bool,
}

/// How to connect to `url` with the timeout and PgBouncer mode of `settings`, and how
/// statements then run.
pub(crate) fn connect_options(url: &str, settings: &PostgresSettings) -> anyhow::Result<(PgConnectOptions, Pooling)> {
    let mut options =
        PgConnectOptions::from_str(url).context("invalid PostgreSQL database URL")?.application_name("shopkeep");
    let pooling = if settings.pgbouncer {
        options = options.extra_float_digits(None).statement_cache_capacity(0);
        Pooling::transaction(settings.statement_timeout)
    } else {
        let statement_timeout = format!("{}ms", settings.statement_timeout.as_millis());
        options = options.options([("statement_timeout", statement_timeout.as_str())]);
        Pooling::Session
    };
    Ok((options, pooling))
}

impl SqlStore {
    /// Connects to the PostgreSQL database of `settings`.
    pub async fn postgres(settings: &PostgresSettings) -> anyhow::Result<Self> {
        let (options, pooling) = connect_options(&settings.url, settings)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .context("failed to connect to PostgreSQL")?;
        let mut store = Self::new(Pool::Postgres(pool));
        store.pooling = pooling;
        Ok(store)
    }
}
