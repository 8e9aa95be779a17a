//! The `database` and `redis` sections: the SQL store the URL selects, its pool, and the
//! optional Redis that instances share.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{
    Secret, read_secret_file, redacted_url, serialize_optional_redacted_url, serialize_optional_redacted_urls,
    serialize_redacted_url,
};
use super::{Validate, check_ranges};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (embedded) or `postgres://user:password@host/db`. Secret.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: Secret,
    /// A file holding the URL (container secrets); replaces `url`.
    pub url_file: Option<PathBuf>,
    pub max_connections: u32,
    /// PostgreSQL: connections kept open when idle.
    pub min_connections: u32,
    pub acquire_timeout_secs: u64,
    /// PostgreSQL: the server cancels statements running longer than this.
    pub statement_timeout_secs: u64,
    /// SQLite: how long a statement waits for another connection's lock.
    pub busy_timeout_secs: u64,
    /// Apply pending migrations when `serve` starts. Default: on for SQLite, off for PostgreSQL.
    pub migrate_on_start: Option<bool>,
    /// PostgreSQL behind PgBouncer in transaction mode: no session state (unnamed statements,
    /// the statement timeout set per transaction, nothing but user and database at connect).
    pub pgbouncer: bool,
    /// With `pgbouncer`: the PostgreSQL server itself, bypassing PgBouncer, for what needs a
    /// session of its own — migrations (they hold an advisory lock while they run) and LISTEN
    /// for job notifications. Without it, migrations refuse to run and workers only poll. Secret.
    #[serde(serialize_with = "serialize_optional_redacted_url")]
    pub direct_url: Option<Secret>,
    /// PostgreSQL streaming replicas (comma-separated `postgres://…`; env
    /// `DATABASE_REPLICA_URL`) for catalog and search reads while they are proven fresh.
    /// Secret.
    #[serde(serialize_with = "serialize_optional_redacted_urls")]
    pub replica_url: Option<Secret>,
    /// A replica not proven to hold the primary's latest writes within this is not read from.
    pub replica_max_lag_ms: u64,
    /// How often each replica's replay position is compared with the primary's.
    pub replica_check_interval_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://data/shopkeep.db"),
            url_file: None,
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_secs: 5,
            statement_timeout_secs: 10,
            busy_timeout_secs: 5,
            migrate_on_start: None,
            pgbouncer: false,
            direct_url: None,
            replica_url: None,
            replica_max_lag_ms: 1_000,
            replica_check_interval_ms: 100,
        }
    }
}

/// Which database backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl DatabaseConfig {
    /// The backend the URL selects.
    pub fn backend(&self) -> Result<Backend, String> {
        let url = self.url.expose();
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(format!("{} must start with sqlite:, postgres:// or postgresql://", redacted_url(url)))
        }
    }

    /// The URL of a real server session: the database URL itself, or, behind PgBouncer,
    /// `direct_url` (`None` when it is not configured).
    pub fn session_url(&self) -> Option<&str> {
        if self.pgbouncer { self.direct_url.as_ref().map(Secret::expose) } else { Some(self.url.expose()) }
    }

    /// The replica URLs of `replica_url`, in order.
    pub fn replica_urls(&self) -> Vec<String> {
        self.replica_url.as_ref().map_or_else(Vec::new, |urls| {
            urls.expose().split(',').map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned).collect()
        })
    }

    pub(super) fn read_secret_files(&mut self, problems: &mut Vec<String>) {
        if let Some(url) = read_secret_file(self.url_file.as_deref(), "database.url_file", problems) {
            self.url = url;
        }
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        check_ranges(
            problems,
            [
                ("database.max_connections", u64::from(self.max_connections), 1..=1_000),
                ("database.acquire_timeout_secs", self.acquire_timeout_secs, 1..=300),
                ("database.statement_timeout_secs", self.statement_timeout_secs, 1..=3_600),
                ("database.busy_timeout_secs", self.busy_timeout_secs, 1..=300),
                ("database.replica_max_lag_ms", self.replica_max_lag_ms, 10..=3_600_000),
                ("database.replica_check_interval_ms", self.replica_check_interval_ms, 10..=60_000),
            ],
        );
        let replicas = self.replica_urls();
        if self.replica_url.is_some() && replicas.is_empty() {
            problems.push("database.replica_url: names no URL".into());
        }
        if !replicas.is_empty() && self.backend() == Ok(Backend::Sqlite) {
            problems.push("database.replica_url: read replicas are for PostgreSQL".into());
        }
        for url in &replicas {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.push(format!("database.replica_url: {} must start with postgres://", redacted_url(url)));
            }
        }
        if self.replica_check_interval_ms > self.replica_max_lag_ms {
            problems.push(
                "database.replica_check_interval_ms: must not exceed database.replica_max_lag_ms (a replica could \
                 never be proven fresh in time)"
                    .into(),
            );
        }
        if let Err(problem) = self.backend() {
            problems.push(format!("database.url: {problem}"));
        }
        if let Some(direct) = &self.direct_url {
            let direct = direct.expose();
            if !self.pgbouncer {
                problems.push("database.direct_url: only used with database.pgbouncer = true".into());
            } else if !(direct.starts_with("postgres://") || direct.starts_with("postgresql://")) {
                problems.push(format!("database.direct_url: {} must start with postgres://", redacted_url(direct)));
            }
        }
        if self.pgbouncer && self.backend() == Ok(Backend::Sqlite) {
            problems.push("database.pgbouncer: only for PostgreSQL".into());
        }
        if self.min_connections > self.max_connections {
            problems.push("database.min_connections: must not exceed database.max_connections".into());
        }
    }
}

/// Redis, when shops run several instances: shared rate limits (more to come).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; unset (the embedded default) keeps everything in process. Secret.
    #[serde(serialize_with = "serialize_optional_redacted_url")]
    pub url: Option<Secret>,
    /// Each Redis command must answer within this.
    pub timeout_ms: u64,
    /// Prefix of every key, so several shops can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, timeout_ms: 200, key_prefix: "shopkeep".into() }
    }
}

impl Validate for RedisConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("redis+unix://"))
        {
            problems.push(format!("redis.url: {} must start with redis://", redacted_url(url.expose())));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            problems.push("redis.timeout_ms: must be between 1 and 60000".into());
        }
    }
}
